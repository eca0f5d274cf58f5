"""User-facing errors.

Every problem the user can fix (bad file, bad option, bad config) is raised as a
:class:`CoverError` with a one-line message naming the file or key and the problem.
The command line prints that line and exits non-zero without a traceback.
"""


class CoverError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class ConfigError(CoverError):
    """An invalid configuration key, type or value."""


class DataError(CoverError):
    """A file that cannot be read or used, or a dataset that is empty."""


class TrainingInterrupted(CoverError):
    """A run stopped by SIGTERM/SIGINT after checkpointing its current step."""
