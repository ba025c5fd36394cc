"""What the parts of one supervisor run share: the course, the options, the tmux session, the
event log, the teardown, the run state and the fork server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.detach import prepare_session
from supervisor.events import EventLog
from supervisor.forkserver import ForkServer
from supervisor.options import RunOptions
from supervisor.signals import StopSignals
from supervisor.state import RunState
from supervisor.teardown import Teardown
from supervisor.tmux import CourseSession
from worker.course import Course
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

    @property
    def root(self) -> Path:
        return self.session.course_root

    @property
    def layout(self) -> CourseLayout:
        return self.teardown.layout

    def save(self) -> None:
        self.state.save(self.layout)

    def ensure_session(self, always: bool = False) -> None:
        """The session and its first window: at the start (``always``), and again before a
        launch when it is gone (closing the last dead window of a session ends it)."""
        if always or not self.session.exists():
            prepare_session(self.session, self.options, self.log.path, self.cwd)
