"""One supervisor per course: an ``fcntl.flock`` on ``phase5_segments/run.lock``.

The kernel drops the lock when its holder dies (even by SIGKILL), so a dead supervisor never
blocks the next ``run``; the file keeps the holder's pid for messages and for ``stop``.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from types import TracebackType

from worker.errors import Phase5Error
from worker.lock import FileLock
from worker.paths import CourseLayout


class AlreadyRunning(Phase5Error):
    """Another supervisor holds the course: one line, exit 2."""


class RunLock:
    """The course's supervisor lock. Use as a context manager, or :meth:`acquire`/:meth:`release`."""

    def __init__(self, layout: CourseLayout) -> None:
        self.path = layout.run_lock
        self._lock = FileLock(self.path)
        self.held = False

    def acquire(self, wait: float = 1.0) -> None:
        """Take the lock or raise :class:`AlreadyRunning`. ``wait`` rides over the instant in
        which ``status`` probes the lock (:func:`holder`)."""
        deadline = time.monotonic() + wait
        while True:
            if self._lock.__enter__():
                self.held = True
                return
            self._lock.__exit__()
            if time.monotonic() >= deadline:
                raise AlreadyRunning(
                    f"{self.path.parent.parent}: a supervisor is already running (pid {self._lock.owner()})"
                )
            time.sleep(0.05)

    def release(self) -> None:
        if self.held:
            self._lock.__exit__()
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder(layout: CourseLayout) -> int | None:
    """The pid of the live supervisor holding the course's lock, or None when none does.

    Probes with a shared lock taken and dropped at once, so it never blocks a holder."""
    path: Path = layout.run_lock
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
