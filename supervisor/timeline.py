"""A run's timeline for people: per supervisor run (``phase5 run``, a resume, ``phase5 redo``),
one row per orchestrator window, one bar per launch (relaunches are bars of their own), with
when its first request went out, when it was stuck, and how it ended.

Read from ``supervisor.log`` (every launch, relaunch, STUCK, failure and end, to the second),
sharpened with ``run_state.json`` (the last launch of each window, to the millisecond) and the
agents' journals (each basket's first request and save, since journals carry them). A course
without a log (an older run) gets one bar per window from the run state alone.

>>> runs = parse_log(["2026-01-02 10:00:00 supervisor pid 7 on spa: 3 segments, backend corpus, tmux session x",
...                   "2026-01-02 10:00:01 s1-o1: launched in window @1, pid 9",
...                   "2026-01-02 10:00:05 s1-o1: done (12 baskets)"])
>>> [(w.name, [(b.end - b.start, b.outcome) for b in w.bars]) for w in runs[0].windows]
[('s1-o1', [(4.0, 'done')])]
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.events import LOG_NAME
from supervisor.state import RunState
from worker.paths import CourseLayout
from worker.provenance import Provenance

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")
_START = re.compile(r"^supervisor pid (\d+) on .*?: (.*?), backend ([^,\s]+)")
_WINDOW = re.compile(r"^(s(\d+)-o(\d+)): (.*)$")
_FAILED = re.compile(r"^failed \(exit ([^)]*)\)")
_MERGED = re.compile(r"^segment (\d+)(?: \(redo (\d+)\))? merged")
_STOPPING = re.compile(r": stopping the workers")
_ENDED = re.compile(r"^(?:done in |redo \d+ done in |run failed)")


@dataclass
class Bar:
    """One launch of an orchestrator's worker."""

    start: float
    end: float | None = None
    outcome: str = "running"  # done, failed, stuck (killed to relaunch), stopped, running
    first_request: float | None = None
    stuck: list[tuple[float, float | None]] = field(default_factory=list)  # (from, to) without a heartbeat
    adopted: bool = False  # a live window a new supervisor took over
    detail: str = ""


@dataclass
class WindowRow:
    name: str
    segment: int
    orch: int
    bars: list[Bar] = field(default_factory=list)

    @property
    def open_bar(self) -> Bar | None:
        return self.bars[-1] if self.bars and self.bars[-1].end is None else None


@dataclass
class TimelineRun:
    """One supervisor's run."""

    start: float
    what: str  # "3 segments", "redo 1: 12 baskets (where empty), segment 4"
    backend: str
    pid: int | None = None
    end: float | None = None
    outcome: str = "interrupted"  # done, failed, stopped, interrupted (the supervisor died)
    windows: list[WindowRow] = field(default_factory=list)
    merged: list[tuple[float, str]] = field(default_factory=list)  # segment ends: (time, label)

    def window(self, name: str, segment: int, orch: int) -> WindowRow:
        for row in self.windows:
            if row.name == name:
                return row
        row = WindowRow(name, segment, orch)
        self.windows.append(row)
        self.windows.sort(key=lambda r: (r.segment, r.orch))
        return row

    @property
    def last(self) -> float:
        """The run's end, or its last known moment."""
        times = [self.start, *(t for t, _ in self.merged)]
        for row in self.windows:
            for bar in row.bars:
                times += [bar.start, *(t for t in (bar.end, bar.first_request) if t is not None)]
        return self.end if self.end is not None else max(times)

    @property
    def launches(self) -> int:
        return sum(1 for row in self.windows for bar in row.bars if not bar.adopted)

    @property
    def relaunches(self) -> int:
        return sum(max(0, len(row.bars) - 1) for row in self.windows)

    @property
    def stuck(self) -> int:
        return sum(len(bar.stuck) for row in self.windows for bar in row.bars)


def _stamp(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def parse_log(lines: Iterable[str]) -> list[TimelineRun]:
    """The runs of a supervisor log, oldest first."""
    runs: list[TimelineRun] = []
    for raw in lines:
        match = _LINE.match(raw.rstrip("\n"))
        if not match:
            continue
        at, message = _stamp(match.group(1)), match.group(2)
        start = _START.match(message)
        if start:
            if runs:
                _close(runs[-1], runs[-1].last, "stopped")
            runs.append(TimelineRun(start=at, what=start.group(2), backend=start.group(3), pid=int(start.group(1))))
            continue
        if not runs:
            continue
        run = runs[-1]
        window = _WINDOW.match(message)
        if window:
            row = run.window(window.group(1), int(window.group(2)), int(window.group(3)))
            _window_event(row, at, window.group(4))
            continue
        merged = _MERGED.match(message)
        if merged:
            label = f"segment {merged.group(1)}" + (f" (redo {merged.group(2)})" if merged.group(2) else "")
            run.merged.append((at, label))
        elif _STOPPING.search(message):
            run.outcome = "stopped" if not message.startswith("error") else "failed"
            _close(run, at, "stopped")
            run.end = at
        elif _ENDED.match(message):
            run.outcome = "failed" if message.startswith("run failed") else "done"
            _close(run, at, "stopped")
            run.end = at
    return runs


def _window_event(row: WindowRow, at: float, event: str) -> None:
    bar = row.open_bar
    if event.startswith("launched in window"):
        if bar is not None:
            _end(bar, at, "stopped")
        row.bars.append(Bar(start=at))
        return
    if event.startswith("adopted the live window"):
        if bar is None:
            row.bars.append(Bar(start=at, adopted=True))
        return
    if bar is None:
        return
    failed = _FAILED.match(event)
    if event.startswith("STUCK"):
        bar.stuck.append((at, None))
    elif event.startswith("heartbeat back") and bar.stuck and bar.stuck[-1][1] is None:
        bar.stuck[-1] = (bar.stuck[-1][0], at)
    elif event.startswith("done"):
        _end(bar, at, "done")
    elif failed:
        _end(bar, at, "stuck" if failed.group(1) == "stuck" else "failed")
        bar.detail = event


def _end(bar: Bar, at: float, outcome: str) -> None:
    bar.end, bar.outcome = at, outcome
    if bar.stuck and bar.stuck[-1][1] is None:
        bar.stuck[-1] = (bar.stuck[-1][0], at)


def _close(run: TimelineRun, at: float, outcome: str) -> None:
    """Every bar still open ends at ``at`` with ``outcome``."""
    for row in run.windows:
        bar = row.open_bar
        if bar is not None:
            _end(bar, at, outcome)


def sharpen(runs: list[TimelineRun], state: RunState | None, found: Provenance | None) -> None:
    """Times to the millisecond where the run state and the journals have them: the last launch
    of each window (run state), the first request and last save of each bar (journals)."""
    if state is not None and runs:
        last = runs[-1]
        for seg in state.segments:
            for orch in seg.orchs:
                row = next((r for r in last.windows if r.name == orch.window), None)
                bar = row.bars[-1] if row and row.bars else None
                if bar is None:
                    continue
                if orch.started_at and abs(orch.started_at - bar.start) < 1.5:
                    bar.start = orch.started_at
                if orch.finished_at and bar.end is not None and abs(orch.finished_at - bar.end) < 1.5:
                    bar.end = orch.finished_at
    if found is None:
        return
    starts: dict[str, list[float]] = {}
    for made in found.records():
        if made.started is not None:
            starts.setdefault(made.window, []).append(made.started)
    for run in runs:
        for row in run.windows:
            times = sorted(starts.get(row.name, []))
            for bar in row.bars:
                end = (bar.end if bar.end is not None else run.last) + 1.0
                inside = [t for t in times if bar.start - 1.0 <= t <= end]
                if inside:
                    bar.first_request = max(inside[0], bar.start)


def from_state(state: RunState) -> list[TimelineRun]:
    """A course without a supervisor log: one run, one bar per window from the run state."""
    run = TimelineRun(start=state.run_started_at, what=f"{len(state.segments)} segments", backend=state.backend)
    run.end, run.outcome = state.finished_at, str(state.state)
    for seg in state.segments:
        for orch in seg.orchs:
            if orch.started_at is None:
                continue
            outcome = {"done": "done", "failed": "failed", "stopped": "stopped"}.get(str(orch.state), "running")
            row = run.window(orch.window, orch.segment, orch.orch)
            row.bars.append(Bar(start=orch.started_at, end=orch.finished_at, outcome=outcome))
    return [run] if run.windows else []


def timeline(course_root: Path, found: Provenance | None = None) -> list[TimelineRun]:
    """Every run of the course, oldest first (empty when it never ran)."""
    layout = CourseLayout(course_root)
    state = RunState.load(layout)
    log = layout.segments_dir / LOG_NAME
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    runs = parse_log(lines)
    if not runs:
        runs = from_state(state) if state is not None else []
    sharpen(runs, state, found)
    return runs
