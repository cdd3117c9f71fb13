"""The one exception type that the CLI turns into a single line on stderr and exit code 2."""


class BadInput(ValueError):
    """User input that cannot be used: the message names the problem and the fix."""
