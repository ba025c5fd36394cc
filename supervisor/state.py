"""The run state: what the supervisor knows beyond the basket files (docs/DESIGN.md, "Run state").

``phase5_segments/run_state.json`` (atomic JSON) holds, per segment and orchestrator, the tmux
window id and pane PID, attempts, state, times and exit statuses, plus the supervisor's pid, the
run's start, retries and backend. The basket files stay the truth about what is done: a resumed
run rebuilds its plan from them and uses this file for ids, pids and counters.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.atomic import write_json
from worker.errors import InputError
from worker.models import read_json_file
from worker.paths import CourseLayout


class OrchStatus(enum.StrEnum):
    """Where an orchestrator stands in this supervisor's run (see :mod:`supervisor.lifecycle`)."""

    PENDING = "pending"  # to launch
    RUNNING = "running"  # its window's worker runs (launched or adopted)
    STUCK = "stuck"  # running, but no heartbeat for --stuck-after seconds
    DONE = "done"  # its orchestrator file is in and valid
    FAILED = "failed"  # out of attempts (or bad input): its dead pane stays for people to read
    STOPPED = "stopped"  # the run was stopped (signal, `phase5 stop`, budget) before it finished

    @property
    def active(self) -> bool:
        """Has it a worker that may still be running?"""
        return self in ACTIVE


#: The states in which an orchestrator's worker may be running.
ACTIVE: frozenset[OrchStatus] = frozenset({OrchStatus.RUNNING, OrchStatus.STUCK})


class SegmentStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    MERGED = "merged"  # its segment file is written
    FAILED = "failed"
    STOPPED = "stopped"


class RunStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


def window_name(segment: int, orch: int) -> str:
    """The tmux window name of an orchestrator: short, and tells them apart at a glance."""
    return f"s{segment}-o{orch}"


class OrchState(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    segment: int
    orch: int
    state: OrchStatus = OrchStatus.PENDING
    window_id: str | None = None
    pane_id: str | None = None
    pane_pid: int | None = None
    attempts: int = 0  # launches over all supervisor runs
    run_attempts: int = 0  # launches by the current supervisor (the bound of --max-attempts)
    started_at: float | None = None
    finished_at: float | None = None
    exit_statuses: list[str] = Field(default_factory=list)  # "0", "1", "signal 9", "killed (stuck)" ...
    last_error: str | None = None
    adopted: bool = False

    @property
    def window(self) -> str:
        return window_name(self.segment, self.orch)


class SegmentState(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    segment: int
    state: SegmentStatus = SegmentStatus.PENDING
    started_at: float | None = None
    finished_at: float | None = None
    orchs: list[OrchState] = Field(default_factory=list)

    def get_orch(self, number: int) -> OrchState | None:
        return next((item for item in self.orchs if item.orch == number), None)

    def orch(self, number: int) -> OrchState:
        """The saved orchestrator ``number`` (KeyError when there is none)."""
        found = self.get_orch(number)
        if found is None:
            raise KeyError(f"segment {self.segment} has no orchestrator {number} in the run state")
        return found

    def ensure_orch(self, number: int) -> OrchState:
        """Orchestrator ``number``, added when missing (the supervisor's, never a reader's)."""
        found = self.get_orch(number)
        if found is not None:
            return found
        item = OrchState(segment=self.segment, orch=number)
        self.orchs.append(item)
        self.orchs.sort(key=lambda o: o.orch)
        return item


class RunState(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    course: str
    session: str
    tmux_socket: str | None = None
    state: RunStatus = RunStatus.STARTING
    backend: str = "corpus"
    supervisor_pid: int | None = None
    first_started_at: float = Field(default_factory=time.time)
    run_started_at: float = Field(default_factory=time.time)  # this supervisor's start
    finished_at: float | None = None
    retries: int = 0  # orchestrator relaunches after a failure or a stuck heartbeat
    stuck_after: float = 300.0
    segments: list[SegmentState] = Field(default_factory=list)
    summary: dict[str, Any] | None = None
    message: str | None = None  # the last notable event, one line (for ``status``)

    def get_segment(self, number: int) -> SegmentState | None:
        return next((item for item in self.segments if item.segment == number), None)

    def segment(self, number: int) -> SegmentState:
        """The saved segment ``number`` (KeyError when there is none)."""
        found = self.get_segment(number)
        if found is None:
            raise KeyError(f"segment {number} is not in the run state")
        return found

    def ensure_segment(self, number: int) -> SegmentState:
        """Segment ``number``, added when missing (the supervisor's, never a reader's)."""
        found = self.get_segment(number)
        if found is not None:
            return found
        item = SegmentState(segment=number)
        self.segments.append(item)
        self.segments.sort(key=lambda s: s.segment)
        return item

    def mark_stopped(self, status: RunStatus = RunStatus.STOPPED) -> None:
        """The run as ended with ``status``: every orchestrator that had not finished, and the
        segment in progress, as stopped (their files are kept; the next ``run`` resumes them)."""
        for seg in self.segments:
            for orch in seg.orchs:
                if orch.state.active or orch.state == OrchStatus.PENDING:
                    orch.state = OrchStatus.STOPPED
            if seg.state == SegmentStatus.RUNNING:
                seg.state = SegmentStatus.STOPPED
        self.state, self.finished_at = status, time.time()

    def save(self, layout: CourseLayout) -> None:
        write_json(layout.run_state, self.model_dump(mode="json"), indent=1)

    @classmethod
    def load(cls, layout: CourseLayout) -> RunState | None:
        """The saved state, or None when there is none (or it cannot be read: the files rebuild it)."""
        path: Path = layout.run_state
        if not path.exists():
            return None
        try:
            return cls.model_validate(read_json_file(path))
        except (InputError, ValidationError):
            return None
