"""Parameters declared once (``benchmark.core.params``): every registered attack and defense
records exactly what it declares, refuses what it does not, and ``checked_params`` agrees with
what building records."""
import pytest

import attacks  # noqa: F401  (fills the registries)
import defenses  # noqa: F401
from benchmark.core import params as check
from benchmark.core.params import Param, Parameterised
from benchmark.core.registry import ATTACKS, DEFENSES

CLASSES = sorted([*ATTACKS, *DEFENSES], key=lambda cls: (cls.__module__, cls.name))


@pytest.fixture(params=CLASSES, ids=lambda cls: cls.name)
def cls(request):
    return request.param


def test_records_what_it_declares_in_declaration_order(cls):
    built = cls(**cls.test_params)
    assert list(built.params) == list(cls.parameters)
    assert built.describe()["params"] == built.params


def test_checked_params_are_what_building_records(cls):
    assert cls.checked_params(**cls.test_params) == cls(**cls.test_params).params


def test_unknown_names_are_refused_with_the_ones_it_takes(cls):
    with pytest.raises(ValueError, match=r"unknown parameter 'no_such_param': .* takes "):
        cls(no_such_param=1)
    with pytest.raises(ValueError, match="unknown parameter"):
        cls.checked_params(no_such_param=1)


def test_declarations_extend_the_bases_and_the_hook_runs_last():
    class Base(Parameterised):
        name = "base"
        parameters = {"a": Param(0.5, check.fraction, high=0.6), "b": Param(None, check.integer, optional=True)}

    class Child(Base):
        parameters = {"c": Param("x", check.choice, options=("x", "y")), "a": Param(0.1, check.fraction)}

        def _derive(self):
            if self.b is None:
                self.b = self.params["b"] = 2 * len(self.c)

    assert list(Child.parameters) == ["a", "b", "c"]
    assert Base().params == {"a": 0.5, "b": None}
    child = Child(c="y")
    assert child.params == {"a": 0.1, "b": 2, "c": "y"} and (child.a, child.b, child.c) == (0.1, 2, "y")
    assert Child(b=3).params["b"] == 3 and Child.checked_params() == {"a": 0.1, "b": 2, "c": "x"}
    with pytest.raises(ValueError, match=r"a must be a number in \(0, 0.6\]"):
        Base(a=0.7)
    with pytest.raises(ValueError, match="unknown parameter 'd': base takes a, b, c"):
        Child(d=1)
