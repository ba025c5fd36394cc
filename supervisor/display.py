"""What people see of a run: rows per orchestrator (from the run state, the progress files and the
basket files), shown as a live table on a terminal or as plain lines otherwise.

The supervisor's display and ``phase5 status`` use the same rows, so they always agree. Texts
from outside (error lines, paths) are shown through :func:`worker.safetext.printable`, and rich
renders them as plain ``Text``, never as markup.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from supervisor.procs import names_course
from supervisor.state import OrchState, OrchStatus, RunState, window_name
from worker.paths import CourseLayout
from worker.plan import SegmentPlan
from worker.progress import OrchProgress, WorkerState, read_progress
from worker.safetext import printable

#: A worker gets at least this long to write its first heartbeat (imports and loading the course
#: take a few seconds on a busy machine), so a short --stuck-after does not kill every worker at start.
STARTUP_GRACE = 60.0


def silence(
    progress: OrchProgress | None,
    pid: int | None,
    started_at: float | None,
    stuck_after: float,
    now: float | None = None,
) -> tuple[bool, float]:
    """(stuck?, seconds since the worker ``pid`` last showed life). Life is its own progress file's
    ``updated_at`` (an older attempt's file does not count), else its launch, which gets
    ``max(stuck_after, STARTUP_GRACE)``."""
    now = now or time.time()
    if progress and progress.belongs_to(pid) and progress.updated_at:
        quiet = now - max(progress.updated_at, started_at or 0.0)
        return quiet > stuck_after, quiet
    quiet = now - started_at if started_at else 0.0
    return quiet > max(stuck_after, STARTUP_GRACE), quiet


def duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` / ``-``."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class OrchRow:
    """One orchestrator as shown to people."""

    segment: int
    orch: int
    window: str
    state: OrchStatus
    total: int
    done: int = 0
    attempts: int = 0
    window_id: str | None = None
    pane_pid: int | None = None
    worker_pid: int | None = None  # the process doing the work: the pane's, or a warm start's forked one
    elapsed_s: float | None = None
    eta_s: float | None = None
    rate_per_s: float | None = None
    heartbeat_age_s: float | None = None
    error: str | None = None
    exit_statuses: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)
    agents: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float | None = None  # the worker's recorded spend (its progress file)
    batch: dict[str, Any] | None = None  # anthropic-batch: the current batch and its counts

    def __post_init__(self) -> None:
        self.state = OrchStatus(self.state)  # rows rebuilt from JSON (``status``) carry the text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("elapsed_s", "eta_s", "heartbeat_age_s"):
            if data[key] is not None:
                data[key] = round(data[key], 1)
        return data


def orch_row(
    layout: CourseLayout,
    plan: SegmentPlan,
    orch: int,
    saved: OrchState | None,
    stuck_after: float,
    now: float | None = None,
) -> OrchRow:
    """The row of one orchestrator, from what is on disk and whether its pane's process lives."""
    now = now or time.time()
    batch = plan.orchestrator(orch)
    segment = plan.segment_number
    row = OrchRow(
        segment=segment,
        orch=orch,
        window=window_name(segment, orch),
        state=OrchStatus.PENDING,
        total=len(batch.lego_ids),
    )
    progress = read_progress(layout, segment, orch)
    if saved:
        row.attempts, row.window_id, row.pane_pid = saved.attempts, saved.window_id, saved.pane_pid
        row.exit_statuses, row.error = list(saved.exit_statuses), saved.last_error
        row.state = saved.state
        if saved.started_at:
            row.elapsed_s = (saved.finished_at or now) - saved.started_at
    if progress:
        row.done = progress.done
        row.rate_per_s, row.eta_s = progress.rate_per_s, progress.eta_s
        row.tokens = dict(progress.tokens)
        row.agents = [agent.model_dump() for agent in progress.agents]
        row.cost_usd, row.batch = progress.cost_usd, progress.batch
        row.error = progress.error or row.error
        if progress.belongs_to(row.pane_pid):  # this attempt's worker, not an older one's
            row.worker_pid = progress.worker_pid or row.pane_pid
        if progress.updated_at:
            row.heartbeat_age_s = now - progress.updated_at
    reported_done = progress is not None and progress.state == WorkerState.DONE
    if layout.orch_baskets(segment, orch).exists() and (row.state == OrchStatus.DONE or reported_done):
        row.state, row.done, row.eta_s = OrchStatus.DONE, row.total, 0.0
    elif row.state.active:
        if not names_course(row.pane_pid, layout.root):
            row.state = OrchStatus.STOPPED  # its supervisor died and the window went with it, or it was killed
        else:
            stuck, _ = silence(progress, row.pane_pid, saved.started_at if saved else None, stuck_after, now)
            row.state = OrchStatus.STUCK if stuck else OrchStatus.RUNNING
    return row


def segment_rows(
    layout: CourseLayout, plan: SegmentPlan, state: RunState | None, now: float | None = None
) -> list[OrchRow]:
    saved = state.get_segment(plan.segment_number) if state else None
    stuck_after = state.stuck_after if state else 300.0
    rows = []
    for batch in plan.orchestrator_batches:
        orch_state = saved.get_orch(batch.orchestrator_id) if saved else None
        rows.append(orch_row(layout, plan, batch.orchestrator_id, orch_state, stuck_after, now))
    return rows


_STYLE = {
    "done": "green",
    "running": "cyan",
    "stuck": "bold red",
    "failed": "red",
    "stopped": "yellow",
    "pending": "dim",
}


def rows_table(title: str, rows: Sequence[OrchRow], width: int = 200) -> Table:
    """The orchestrators as a table; columns that say nothing (no spend, no batch, no error) are
    left out, and window id, pid and heartbeat too when ``width`` is under 100 (an 80x24 pane)."""
    cells: dict[str, Any] = {
        "window": lambda r: r.window,
        "state": lambda r: Text(r.state.upper() if r.state == "stuck" else r.state, style=_STYLE.get(r.state, "")),
        "done": lambda r: f"{r.done}/{r.total}",
        "rate/s": lambda r: f"{r.rate_per_s:.1f}" if r.rate_per_s else "-",
        "eta": lambda r: duration(r.eta_s),
        "elapsed": lambda r: duration(r.elapsed_s),
        "tries": lambda r: str(r.attempts),
    }
    if width >= 100:
        cells["beat"] = lambda r: duration(r.heartbeat_age_s) if r.state.active else "-"
        cells["win"] = lambda r: r.window_id or "-"
        cells["pid"] = lambda r: str(r.pane_pid or "-")
    if any(r.cost_usd for r in rows):
        cells["spend"] = lambda r: f"${r.cost_usd:.2f}" if r.cost_usd else "-"
    if any(batch_text(r) for r in rows):
        cells["batch"] = lambda r: batch_text(r) or "-"
    if any(r.error for r in rows):
        cells["last error"] = lambda r: (r.error or "")[:120]
    table = Table(title=Text(printable(title)), title_justify="left", expand=False, pad_edge=False)
    for name in cells:
        table.add_column(name, no_wrap=name != "last error", overflow="fold" if name == "last error" else "ellipsis")
    for r in rows:
        table.add_row(*(_cell(cell(r)) for cell in cells.values()))
    return table


def _cell(value: str | Text) -> Text:
    """A table cell as plain text: a string given to rich is read as markup, and error texts
    come from outside (``[/red]`` in one would end the table's rendering with a MarkupError)."""
    return value if isinstance(value, Text) else Text(printable(value))


def batch_text(r: OrchRow) -> str:
    """``r2 in_progress: 120 processing, 0 succeeded, 0 errored, 0 expired`` of a batch worker."""
    b = r.batch
    if not b or not b.get("id"):
        return ""
    return (
        f"r{b.get('round')} {b.get('status')}: {b.get('processing', 0)} processing, {b.get('succeeded', 0)}"
        f" succeeded, {b.get('errored', 0)} errored, {b.get('expired', 0)} expired"
    )


def plain_row(r: OrchRow) -> str:
    text = f"{r.window} {r.state.upper() if r.state == 'stuck' else r.state} {r.done}/{r.total}"
    if r.state.active:
        text += f" eta {duration(r.eta_s)}"
    if r.attempts > 1:
        text += f" (attempt {r.attempts})"
    if r.cost_usd:
        text += f" ${r.cost_usd:.4f}"
    if r.batch and r.batch.get("id") and r.state.active:
        text += f" batch {batch_text(r)}"
    return text


class Display:
    """The supervisor's output: :meth:`event` for things that happen, :meth:`rows` for the table."""

    def event(self, line: str) -> None:
        raise NotImplementedError

    def rows(self, title: str, rows: Sequence[OrchRow]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PlainDisplay(Display):
    """Lines with a clock time; the progress line at most every ``every`` seconds or on a change."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.every = every
        self._last_line = ""
        self._last_time = 0.0

    def event(self, line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {printable(line)}", file=self.stream, flush=True)

    def rows(self, title: str, rows: Sequence[OrchRow]) -> None:
        states = ", ".join(plain_row(r) for r in rows)
        changed = [(r.window, r.state) for r in rows] != getattr(self, "_last_states", None)
        if changed or time.monotonic() - self._last_time >= self.every:
            line = f"{title}: {states}"
            if line != self._last_line or time.monotonic() - self._last_time >= self.every:
                self.event(line)
                self._last_line, self._last_time = line, time.monotonic()
        self._last_states = [(r.window, r.state) for r in rows]


class LiveDisplay(Display):
    """A rich live table of the segment's orchestrators under the last events."""

    def __init__(self, console: Console | None = None, keep: int = 8) -> None:
        self.console = console or Console()
        self.events: list[str] = []
        self.keep = keep
        self._table: Table | None = None
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def event(self, line: str) -> None:
        self.events = [*self.events, f"{time.strftime('%H:%M:%S')} {printable(line)}"][-self.keep :]
        self._refresh()

    def rows(self, title: str, rows: Sequence[OrchRow]) -> None:
        self._table = rows_table(title, rows, self.console.width)
        self._refresh()

    def _refresh(self) -> None:
        parts: list[Any] = [Text("\n".join(self.events))]
        if self._table is not None:
            parts.append(self._table)
        self.live.update(Group(*parts), refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_display(plain: bool = False) -> Display:
    """A live table on a terminal, plain lines otherwise (pipes, files, CI, no TERM)."""
    if not plain and sys.stdout.isatty():
        return LiveDisplay()
    return PlainDisplay()
