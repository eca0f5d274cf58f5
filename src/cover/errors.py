"""User-facing errors.

Every problem the user can fix (bad file, bad option, bad config) is raised as a
:class:`CoverError` with a one-line message naming the file or key and the problem.
The command line prints that line and exits non-zero without a traceback.
"""

import errno


class CoverError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class ConfigError(CoverError):
    """An invalid configuration key, type or value."""


class DataError(CoverError):
    """A file that cannot be read or used, or a dataset that is empty."""


class TrainingInterrupted(CoverError):
    """A run stopped by SIGTERM/SIGINT after checkpointing its current step."""


#: ``errno`` of a file-system refusal the user fixes by choosing another path -> what it means.
_PATH_PROBLEMS = {
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "it is a folder",
}


def path_error(error: OSError) -> CoverError | None:
    """The one-line error for a file or folder the file system refused, or ``None`` for other errors.

    A command that cannot create its ``--out`` folder (below a file, in a read-only or full
    place) fails in whichever step first writes there; this maps every such failure to one
    message, so no command needs its own check.

    Args:
        error: An ``OSError`` raised while running a command.

    Returns:
        A :class:`CoverError` naming the path and the reason, or ``None`` when ``error`` names no
        path or is not one of the refusals in :data:`_PATH_PROBLEMS`.
    """
    reason = _PATH_PROBLEMS.get(error.errno)
    if reason is None or error.filename is None:
        return None
    return CoverError(
        f"{error.filename}: cannot be created or written ({reason}); check the path, or choose another --out"
    )
