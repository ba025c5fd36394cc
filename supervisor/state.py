"""The run state: what the supervisor knows beyond the basket files (SPEC §3, "run state").

``phase5_segments/run_state.json`` (atomic JSON) holds, per segment and orchestrator, the tmux
window id and pane PID, attempts, state, times and exit statuses, plus the supervisor's pid, the
run's start, retries and backend. The basket files stay the truth about what is done: a resumed
run rebuilds its plan from them and uses this file for ids, pids and counters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.atomic import write_json
from worker.errors import InputError
from worker.models import read_json_file
from worker.paths import CourseLayout

OrchStateName = Literal["pending", "running", "done", "failed", "stuck", "stopped"]
SegmentStateName = Literal["pending", "running", "merged", "failed", "stopped"]
RunStateName = Literal["starting", "running", "done", "failed", "stopped"]


def window_name(segment: int, orch: int) -> str:
    """The tmux window name of an orchestrator: short, and tells them apart at a glance."""
    return f"s{segment}-o{orch}"


class OrchState(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    segment: int
    orch: int
    state: OrchStateName = "pending"
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
    state: SegmentStateName = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    orchs: list[OrchState] = Field(default_factory=list)

    def orch(self, number: int) -> OrchState:
        for item in self.orchs:
            if item.orch == number:
                return item
        item = OrchState(segment=self.segment, orch=number)
        self.orchs.append(item)
        self.orchs.sort(key=lambda o: o.orch)
        return item


class RunState(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    course: str
    session: str
    tmux_socket: str | None = None
    state: RunStateName = "starting"
    backend: str = "corpus"
    supervisor_pid: int | None = None
    first_started_at: float = Field(default_factory=time.time)
    run_started_at: float = Field(default_factory=time.time)  # this supervisor's start
    finished_at: float | None = None
    retries: int = 0  # orchestrator relaunches after a failure or a stuck heartbeat
    stuck_after: float = 300.0
    segments: list[SegmentState] = Field(default_factory=list)
    summary: dict | None = None
    message: str | None = None  # the last notable event, one line (for ``status``)

    def segment(self, number: int) -> SegmentState:
        for item in self.segments:
            if item.segment == number:
                return item
        item = SegmentState(segment=number)
        self.segments.append(item)
        self.segments.sort(key=lambda s: s.segment)
        return item

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
