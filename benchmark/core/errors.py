"""The exceptions that the CLI turns into a single line on stderr instead of a traceback."""


class BadInput(ValueError):
    """User input that cannot be used (exit code 2): the message names the problem and the fix."""


class BackendLost(RuntimeError):
    """The run's backend went away mid-run (exit code 1), e.g. the Ray node the driver was attached
    to died: the cells finished before are on disk, and ``--resume`` completes the run."""
