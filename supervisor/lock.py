"""One supervisor per course: an ``fcntl.flock`` on ``/tmp/phase5-<uid>/<course id>.lock``.

The kernel drops the lock when its holder dies (even by SIGKILL), so a dead supervisor never
blocks the next ``run``. The lock lives outside the course folder, which a person may delete
while the run goes on (the supervisor notices, :meth:`RunLock.still_held`, and stops); its name
comes from the folder's resolved path, so every command finds it.

The file records the holder (pid, its process's start time, the course) for messages and for
``stop``. The record is only a claim: anyone who can write the file can write any pid into it,
so before a pid is signalled :func:`supervisor_process` checks that it is this course's
supervisor: a ``phase5 run`` command line, the start time the record gives, and the lock file
open in that very process. A record that fails the check is set aside and the holder is looked
for by the open file instead; a pid that belongs to anything else is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from worker.errors import Phase5Error
from worker.paths import CourseLayout, course_id

START_TIME_TOLERANCE = 0.05  # seconds: psutil's create_time of one process, computed twice
LOCK_ROOT = Path("/tmp")  # the same for every process of the user, whatever its environment
LAUNCH_WAIT = 30.0  # seconds a run waits for another one starting the same course (--detach waits up to 15)


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


def lock_dir() -> Path:
    """Where the locks of the runs live: ``/tmp/phase5-<uid>`` (mode 0700), outside the course
    folder, so that deleting ``phase5_segments`` mid-run does not free the course for a second
    supervisor. Not ``$TMPDIR``: a detached supervisor gets its environment from the tmux server,
    and a ``run`` from another shell must find the same lock. A folder of that name that another
    user owns, or others may write, is refused."""
    folder = LOCK_ROOT / f"phase5-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise Phase5Error(f"{folder}: not a private folder of this user (owner, mode or a link); remove it")
    return folder


def lock_path(root: Path) -> Path:
    """The lock file of the course folder ``root`` (one per folder: its code and a path hash)."""
    return lock_dir() / f"{course_id(root)}.lock"


class _Flock:
    """An exclusive ``flock`` on a file that exists only while it is held: created on
    :meth:`take`, unlinked on :meth:`drop` (so no lock file outlives its run). A holder checks,
    once it has the lock, that the path still names the file it locked: one who locked a file
    that its last holder had just unlinked tries again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def take(self) -> bool:
        """Try once; True when held."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if self.names(fd):
                self.fd = fd
                return True
            os.close(fd)  # unlinked by its last holder after we opened it: the lock is the new file's

    def names(self, fd: int | None = None) -> bool:
        """Does the path still name the file locked (``fd``, default the held one)?"""
        fd = self.fd if fd is None else fd
        try:
            return fd is not None and os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def write(self, text: str) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode("utf-8"), 0)

    def drop(self) -> None:
        if self.fd is None:
            return
        if self.names():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


class RunLock:
    """The course's supervisor lock. Use as a context manager, or :meth:`acquire`/:meth:`release`."""

    def __init__(self, layout: CourseLayout) -> None:
        self.layout = layout
        self.path = lock_path(layout.root)
        self._lock = _Flock(self.path)

    @property
    def held(self) -> bool:
        return self._lock.fd is not None

    def acquire(self, wait: float = 1.0) -> None:
        """Take the lock or raise :class:`AlreadyRunning`. ``wait`` rides over the instant in
        which ``status`` probes the lock (:func:`holder`)."""
        deadline = time.monotonic() + wait
        while not self._lock.take():
            if time.monotonic() >= deadline:
                raise AlreadyRunning(
                    f"{self.layout.root}: a supervisor is already running (pid {holder(self.layout) or '?'})"
                )
            time.sleep(0.05)
        me = psutil.Process()
        record = {"pid": me.pid, "started_at": me.create_time(), "course": str(self.layout.root.resolve())}
        self._lock.write(json.dumps(record) + "\n")

    def still_held(self) -> bool:
        """Is the lock file still there, the one this supervisor holds (nobody removed it)?"""
        return self.held and self._lock.names()

    def release(self) -> None:
        self._lock.drop()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class LaunchLock:
    """Held by ``run --detach`` from its check that no supervisor runs until the one it starts
    holds the :class:`RunLock` (and by a foreground ``run`` while it takes that lock), so that
    two runs started at the same moment cannot both pass the check: the second waits, then
    finds the first's supervisor and says it is already running."""

    def __init__(self, layout: CourseLayout) -> None:
        self._lock = _Flock(lock_dir() / f"{course_id(layout.root)}.launch")

    def __enter__(self) -> LaunchLock:
        deadline = time.monotonic() + LAUNCH_WAIT
        while not self._lock.take():
            if time.monotonic() >= deadline:
                raise AlreadyRunning(f"{self._lock.path}: another `phase5 run` is starting this course")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.drop()


def holder(layout: CourseLayout) -> int | None:
    """The pid the lock's record names while a live process holds the lock (-1 when the record
    is unreadable), or None when nobody holds it. A claim, for messages: verify it with
    :func:`supervisor_process` before acting on it.

    Probes with a shared lock taken and dropped at once, so it never blocks a holder."""
    path = lock_path(layout.root)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; the probe needs the open file
    except FileNotFoundError:
        return None
    with handle:
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
    path = lock_path(layout.root)
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
