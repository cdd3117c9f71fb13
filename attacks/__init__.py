"""Attack recipes, one module each. Importing this package imports every module in it, which
registers its attacks in ``attacks.base.ATTACKS``: a new attack is one new file."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
