"""The one registry: name -> class for every pluggable concept. ``ATTACKS`` and ``DEFENSES`` load
their package on the first lookup, so any layer can find a class by name without importing the
package that holds it (the adaptive ``evasive`` attack finds its detector this way)."""
from __future__ import annotations

import importlib


class Registry:
    """Classes registered by their ``name`` attribute; ``package`` is imported before a lookup
    so that every module of it has registered its classes."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package, self.classes = kind, package, {}

    def register(self, cls):
        """Class decorator: make ``cls`` available by ``cls.name`` in suites and the CLI."""
        if cls.name in self.classes:
            raise ValueError(f"{self.kind} name '{cls.name}' registered twice")
        self.classes[cls.name] = cls
        return cls

    def _load(self) -> dict:
        importlib.import_module(self.package)
        return self.classes

    def names(self) -> list[str]:
        return sorted(self._load())

    def get_class(self, name: str):
        classes = self._load()
        if name not in classes:
            raise ValueError(f"unknown {self.kind} '{name}': choose one of {', '.join(sorted(classes))}")
        return classes[name]

    def build(self, name: str, **params):
        """An instance of the class called ``name``; unknown names and bad parameters raise
        ``ValueError``."""
        return self.get_class(name)(**params)

    def __iter__(self):
        return iter(self._load().values())

    def __contains__(self, name) -> bool:
        return name in self._load()


ATTACKS = Registry("attack", "attacks")
DEFENSES = Registry("defense", "defenses")
