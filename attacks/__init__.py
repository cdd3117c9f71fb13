"""Attack recipes. Importing this package registers every attack in ``attacks.base.REGISTRY``."""
from attacks import noise  # noqa: F401
from attacks import shilling  # noqa: F401
from attacks import gradient  # noqa: F401
from attacks import pga  # noqa: F401
