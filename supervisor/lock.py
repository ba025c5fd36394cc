"""One supervisor per course: an ``fcntl.flock`` on ``phase5_segments/run.lock``.

The kernel drops the lock when its holder dies (even by SIGKILL), so a dead supervisor never
blocks the next ``run``. The file records the holder (pid, its process's start time, the course)
for messages and for ``stop``. The record is only a claim: anyone who can write the folder can
write any pid into it, so before a pid is signalled :func:`supervisor_process` checks that it is
this course's supervisor: a ``phase5 run`` command line, the start time the record gives, and the
lock file open in that very process. A record that fails the check is set aside and the holder is
looked for by the open file instead; a pid that belongs to anything else is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from worker.errors import Phase5Error
from worker.lock import FileLock
from worker.paths import CourseLayout

START_TIME_TOLERANCE = 0.05  # seconds: psutil's create_time of one process, computed twice


class AlreadyRunning(Phase5Error):
    """Another supervisor holds the course: one line, exit 2."""


@dataclass(frozen=True)
class LockRecord:
    """What the holder wrote into the lock file (an older version wrote only the pid)."""

    pid: int
    started_at: float | None = None  # the holder process's start time (psutil create_time)
    course: str | None = None

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        text = text.strip()
        if text.isdigit():
            return cls(int(text))
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), float(data["started_at"]), str(data["course"]))
        except (ValueError, TypeError, KeyError, RecursionError):
            return None


def read_record(path: Path) -> LockRecord | None:
    try:
        return LockRecord.parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


class RunLock:
    """The course's supervisor lock. Use as a context manager, or :meth:`acquire`/:meth:`release`."""

    def __init__(self, layout: CourseLayout) -> None:
        self.layout = layout
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
                me = psutil.Process()
                record = {"pid": me.pid, "started_at": me.create_time(), "course": str(self.layout.root.resolve())}
                self._lock.write(json.dumps(record) + "\n")
                return
            self._lock.__exit__()
            if time.monotonic() >= deadline:
                holder_record = read_record(self.path)
                pid = holder_record.pid if holder_record else "?"
                raise AlreadyRunning(f"{self.path.parent.parent}: a supervisor is already running (pid {pid})")
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
    """The pid the lock's record names while a live process holds the lock (-1 when the record
    is unreadable), or None when nobody holds it. A claim, for messages: verify it with
    :func:`supervisor_process` before acting on it.

    Probes with a shared lock taken and dropped at once, so it never blocks a holder."""
    path: Path = layout.run_lock
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            record = LockRecord.parse(handle.read().decode("utf-8", errors="replace"))
            return record.pid if record else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def supervisor_process(layout: CourseLayout) -> psutil.Process | None:
    """The live supervisor holding this course's lock, verified; None when none does.

    The recorded pid is taken when its process is a ``phase5 run``, started when the record says,
    and has the lock file open. Otherwise (an edited record) the holder is looked for among the
    processes that have the lock file open."""
    path = layout.run_lock
    if holder(layout) is None:
        return None
    record = read_record(path)
    if record is not None:
        proc = _verified(record.pid, path, record.started_at)
        if proc is not None:
            return proc
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and _runs_phase5(proc.info.get("cmdline") or []):
            found = _verified(proc.pid, path, None)
            if found is not None:
                return found
    return None


def _verified(pid: int, lock_path: Path, started_at: float | None) -> psutil.Process | None:
    """``pid`` as a process when it is a ``phase5 run`` that has ``lock_path`` open (and was
    started at ``started_at``, when given)."""
    if pid <= 0 or pid == os.getpid():
        return None
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if started_at is not None and abs(proc.create_time() - started_at) > START_TIME_TOLERANCE:
            return None
        if not _runs_phase5(proc.cmdline()):
            return None
        wanted = os.path.realpath(lock_path)
        if any(f.path == wanted for f in proc.open_files()):
            return proc
    return None


def _runs_phase5(cmdline: list[str]) -> bool:
    """A ``phase5 run`` command line: the installed script or ``python -m supervisor.cli``."""
    program = any(arg == "supervisor.cli" or os.path.basename(arg) == "phase5" for arg in cmdline[:3])
    return program and "run" in cmdline
