"""What a worker's tmux pane shows: one progress bar per agent, the orchestrator's rate and ETA,
retries, errors and tokens, readable in an 80x24 pane; plain lines when stdout is not a terminal.

Error texts come from outside (API errors, model answers): they are shown through
:func:`worker.safetext.printable` and never as rich markup."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from worker.orchestrator import Orchestrator
from worker.safetext import printable


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


def headline(orch: Orchestrator) -> str:
    s = orch.settings
    usage = orch.usage
    tokens = ""
    if usage.total:
        tokens = (
            f"  tok in {usage.input_tokens} out {usage.output_tokens}"
            f" cache r/w {usage.cache_read_input_tokens}/{usage.cache_creation_input_tokens}"
        )
    retries = sum(max(0, a.status.attempts - 1) for a in orch.agents)
    cost = f"  ${orch.cost_usd:.4f}" if orch.cost_usd else ""
    if s.max_cost is not None:
        cost += f" of ${s.max_cost:.4f}"
    line = (
        f"s{s.segment}-o{s.orch} {s.backend}  {orch.state}  {orch.done}/{orch.total}"
        f"  {orch.rate:.1f}/s  eta {_eta(orch.eta)}  retries {retries}{tokens}{cost}"
    )
    if orch.batch_session is not None:
        line += "\n" + orch.batch_session.status.line()
    return line


class PaneDisplay:
    """Live display for a terminal; call :meth:`update` often, :meth:`close` at the end."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stdout)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}", style="yellow", markup=False),  # notes hold error texts
            console=self.console,
            expand=True,
        )
        self.tasks: dict[int, TaskID] = {}
        self.live: Live | None = None
        self.head = Text()

    def update(self, orch: Orchestrator) -> None:
        if self.live is None:
            self.live = Live(Group(self.head, self.progress), console=self.console, refresh_per_second=4)
            self.live.start()
        self.head.plain = printable(headline(orch), keep_newlines=True)
        for agent in orch.agents:
            st = agent.status
            note = st.state if st.state not in ("running", "done") else ""
            if st.attempts > 1:
                note += f" try {st.attempts}"
            if st.last_error and st.state != "done":
                note += f" {printable(st.last_error)[:40]}"
            if agent.number not in self.tasks:
                self.tasks[agent.number] = self.progress.add_task(agent.label, total=st.total, note="")
            self.progress.update(self.tasks[agent.number], completed=st.done, note=note.strip())

    def close(self, orch: Orchestrator) -> None:
        self.update(orch)
        if self.live:
            self.live.stop()
        if orch.error:
            self.console.print(Text(printable(orch.error), style="red"))


class PlainPaneDisplay:
    """Line output for logs: a line every few seconds and when the state changes."""

    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stdout
        self.every = every
        self._last = 0.0
        self._last_state = ""

    def update(self, orch: Orchestrator) -> None:
        now = time.monotonic()
        if now - self._last >= self.every or orch.state != self._last_state:
            print(printable(headline(orch), keep_newlines=True), file=self.stream, flush=True)
            self._last, self._last_state = now, orch.state

    def close(self, orch: Orchestrator) -> None:
        print(printable(headline(orch), keep_newlines=True), file=self.stream, flush=True)
        if orch.error:
            print(f"error: {printable(orch.error)}", file=self.stream, flush=True)
