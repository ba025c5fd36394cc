"""Errors that the CLI turns into one clear line and exit status 2."""

from __future__ import annotations

import errno
from pathlib import Path

from worker.exitcodes import ExitCode


class Phase5Error(Exception):
    """Bad input or a refused operation: one line for the user, exit status 2, nothing written.

    >>> str(InputError("lego_pairs.json", "S0003L02: empty target"))
    'lego_pairs.json: S0003L02: empty target'
    """

    exit_code: int = ExitCode.BAD_INPUT


class InputError(Phase5Error):
    """A file that cannot be used, naming the file and what is wrong in it."""

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class NoSpace(Phase5Error):
    """The disk or quota is full: one line, exit 5; the run is stopped and resumes once there is space."""

    exit_code = ExitCode.NO_SPACE


def as_phase5_error(exc: OSError, where: str | Path | None = None) -> Phase5Error:
    """An :class:`OSError` as the one-line error the CLI prints: :class:`NoSpace` for a full disk.
    ``where`` names the place when the error does not (a write to an open file names no file)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(os_error_text(exc, where))
    return Phase5Error(os_error_text(exc, where))


def os_error_text(exc: OSError, where: str | Path | None = None) -> str:
    """An :class:`OSError` as one line naming the file and what is wrong, with what to do when
    that is clear (``/c/spa/phase5_segments: Permission denied (read-only or immutable folder?)``)."""
    where = exc.filename if exc.filename is not None else (where or "")
    what = exc.strerror or str(exc)
    hint = {
        errno.EACCES: " (read-only or immutable folder?)",
        errno.EPERM: " (read-only or immutable folder?)",
        errno.EROFS: "",
        errno.ENOSPC: " (free some space, then run the same command again: nothing saved is lost)",
        errno.EISDIR: " (a folder where phase5 keeps a file: move it away)",
        errno.ENOTDIR: " (a file where phase5 keeps a folder: move it away)",
    }.get(exc.errno or 0, "")
    return f"{where}: {what}{hint}" if where else f"{what}{hint}"
