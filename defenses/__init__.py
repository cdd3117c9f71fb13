"""Defenses. Importing this package registers every defense in ``defenses.base.REGISTRY``."""
from defenses import adversarial  # noqa: F401
from defenses import gan  # noqa: F401
from defenses import detection  # noqa: F401
