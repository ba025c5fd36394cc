"""``phase5 attach``: show a person one orchestrator's window (or the one that needs a look)."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from supervisor.commands.common import course_argument, load_course
from supervisor.display import OrchRow, segment_rows
from supervisor.options import tmux_socket_option
from supervisor.state import RunState, window_name
from supervisor.tmux import CourseSession
from worker.errors import Phase5Error
from worker.paths import CourseLayout
from worker.plan import load_plans


def pick_window(rows: list[OrchRow]) -> OrchRow | None:
    """The running window that most needs a look: a stuck one, else the slowest (longest ETA,
    then least done)."""
    stuck = [r for r in rows if r.state == "stuck"]
    if stuck:
        return stuck[0]
    running = [r for r in rows if r.state == "running"]
    if not running:
        return None
    return max(
        running,
        key=lambda r: (r.eta_s if r.eta_s is not None else float("inf"), -(r.done / r.total if r.total else 1.0)),
    )


@click.command("attach")
@course_argument
@click.option("--segment", type=click.IntRange(min=1), default=None, help="Segment of the window to show.")
@click.option("--orch", type=click.IntRange(min=1), default=None, help="Orchestrator of the window to show.")
@tmux_socket_option
def attach_command(
    course: str, courses_dir: str | None, segment: int | None, orch: int | None, tmux_socket: str | None
) -> None:
    """Attach to COURSE's tmux session at one orchestrator's window (switch client when already in
    tmux). Without --segment/--orch: the running window that is stuck, else the slowest."""
    loaded = load_course(course, courses_dir)
    layout = CourseLayout(loaded.root)
    state = RunState.load(layout)
    session = CourseSession(loaded.root, tmux_socket or (state.tmux_socket if state else None))
    if not session.exists():
        raise Phase5Error(
            f"no tmux session {session.name}"
            + (f" on socket {session.socket_name}" if session.socket_name else "")
            + "; start one with `phase5 run COURSE --detach`"
        )
    if (segment is None) != (orch is None):
        raise Phase5Error("give both --segment and --orch, or neither")
    panes = session.panes()
    if segment is not None and orch is not None:
        wanted = window_name(segment, orch)
        target = next((p for p in panes if p.window_name == wanted), None)
        if target is None:
            raise Phase5Error(f"no window {wanted} in session {session.name} (it is not running)")
    else:
        rows = [r for plan in load_plans(loaded, include_redo=True) for r in segment_rows(layout, plan, state)]
        pick = pick_window(rows)
        by_id = {p.window_id: p for p in panes}
        target = by_id.get(pick.window_id or "") if pick else None
        target = (
            target or next((p for p in panes if p.window_name == "supervisor"), None) or (panes[0] if panes else None)
        )
    window_id = target.window_id if target else None
    inside = bool(os.environ.get("TMUX"))
    if window_id:
        session.select_window(window_id)
    argv = session.attach_argv(window_id, inside)
    if inside:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode == 0:
            return
        # another tmux server than the one this pane belongs to: nest, as tmux suggests
        argv = session.attach_argv(None, False)
        os.environ.pop("TMUX", None)
    if not inside:
        argv = session.attach_argv(None, False)  # the window is selected: attach to its session
    if not sys.stdin.isatty():
        where = f" (window {target.window_name} {window_id} is selected)" if target else ""
        raise Phase5Error(f"attach needs a terminal{where}; from one, run: {' '.join(argv)}")
    os.execvp(argv[0], argv)


COMMANDS = [attach_command]
