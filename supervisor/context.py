"""What the parts of one supervisor run share: the course, the options, the tmux session, the
event log, the teardown, the run state and the fork server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supervisor.detach import prepare_session
from supervisor.events import EventLog
from supervisor.forkserver import ForkServer
from supervisor.lock import RunLock
from supervisor.options import RunOptions
from supervisor.signals import StopSignals
from supervisor.state import RunState
from supervisor.teardown import Teardown
from supervisor.tmux import CourseSession
from worker.course import Course
from worker.errors import Phase5Error
from worker.paths import CourseLayout


@dataclass
class RunContext:
    course: Course
    options: RunOptions
    session: CourseSession
    log: EventLog
    signals: StopSignals
    teardown: Teardown
    state: RunState
    forks: ForkServer | None
    cwd: Path
    lock: RunLock | None = None
    folder: tuple[int, int] | None = field(default=None, init=False)  # phase5_segments' (device, inode)

    @property
    def root(self) -> Path:
        return self.session.course_root

    @property
    def layout(self) -> CourseLayout:
        return self.teardown.layout

    def __post_init__(self) -> None:
        self.folder = _identity(self.layout.segments_dir)

    def save(self) -> None:
        self.state.save(self.layout)

    def check_files(self) -> None:
        """Stop (a one-line error) when ``phase5_segments`` or the run's lock file was deleted or
        replaced while the run goes on: the files the workers resume from are gone, and so is
        the proof that this is the only supervisor. ``phase5 run`` then starts from what is left."""
        if _identity(self.layout.segments_dir) != self.folder:
            raise Phase5Error(
                f"{self.layout.segments_dir}: deleted or replaced while the run was going"
                " (`phase5 run` starts again from what is there now)"
            )
        if self.lock is not None and not self.lock.still_held():
            raise Phase5Error(f"{self.lock.path}: the run's lock file was removed")

    def stop_using_fork_server(self, why: str) -> None:
        """Warm start off for the rest of the run: the server is ended and workers start cold."""
        if self.forks is None:
            return
        self.log(f"warm start off: the fork server (pid {self.forks.pid}) {why}; workers start cold from now on")
        self.forks.stop(0.0)
        self.forks = self.teardown.forks = None

    def ensure_session(self, always: bool = False) -> None:
        """The session and its first window: at the start (``always``), and again before a
        launch when it is gone (closing the last dead window of a session ends it)."""
        if always or not self.session.exists():
            prepare_session(self.session, self.options, self.log.path, self.cwd)


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        info = folder.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
