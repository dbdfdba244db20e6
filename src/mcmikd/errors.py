"""Errors a user can act on: each message is one line that names the culprit and the fix."""


class McmiError(Exception):
    """Base class for errors that should be shown to the user as one line, without a traceback."""


class ConfigError(McmiError, ValueError):
    """A config key, type or value is wrong (unknown model/method, incompatible pair, ...)."""


class DataError(McmiError, OSError):
    """A dataset folder or file is missing or corrupt."""


class OutputError(McmiError, OSError):
    """An output file cannot be written (read-only or full file system, missing permission)."""


class DamagedFileError(McmiError, OSError):
    """A file the workflow wrote does not match the record written with it, or is not valid JSON."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's span several), or its type's name."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
