"""User-facing errors: the command line prints these as one line and exits non-zero."""


class Flow3dError(Exception):
    """An error caused by the user's input (a file, a value, a config key), not by a bug.

    The message must be one line that names the offending file or key and the problem.
    """


class ConfigError(Flow3dError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class DataError(Flow3dError):
    """An input file cannot be used (missing, malformed, empty, NaN)."""


class TrainingError(Flow3dError):
    """Training cannot continue (NaN or inf loss, ...)."""
