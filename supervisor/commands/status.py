"""``phase5 status``: where a course's run stands, from the files alone (no tmux needed)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from supervisor.commands.common import course_argument, echo, echo_json, json_option, load_course
from supervisor.display import duration, plain_row, rows_table, segment_rows
from supervisor.lock import holder
from supervisor.state import RunState, RunStatus, SegmentStatus
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import SegmentPlan, load_plans
from worker.safetext import printable


def status_report(course: Course, plans: list[SegmentPlan]) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-ready dict."""
    layout = CourseLayout(course.root)
    state = RunState.load(layout)
    pid = holder(layout)
    now = time.time()
    segments: list[dict[str, Any]] = []
    for plan in plans:
        rows = segment_rows(layout, plan, state, now)
        saved_segment = state.get_segment(plan.segment_number) if state else None
        saved = saved_segment.state if saved_segment else SegmentStatus.PENDING
        merged = layout.segment_baskets(plan.segment_number).exists() and saved in (
            SegmentStatus.MERGED,
            SegmentStatus.PENDING,
        )
        seg_state = (
            SegmentStatus.MERGED
            if merged or saved == SegmentStatus.MERGED
            else (SegmentStatus.RUNNING if any(r.state.active for r in rows) else saved)
        )
        segments.append(
            {
                "segment": plan.segment_number,
                "redo": plan.redo.number if plan.redo else None,
                "state": seg_state,
                "total": plan.total_legos,
                "done": plan.total_legos if seg_state == "merged" else sum(r.done for r in rows),
                "orchestrators": [r.to_json() for r in rows],
            }
        )
    total = sum(s["total"] for s in segments)
    done = sum(s["done"] for s in segments)
    spend = sum(float(o.get("cost_usd") or 0.0) for s in segments for o in s["orchestrators"])
    run_state: str = state.state if state else "not started"
    if state and state.state in (RunStatus.RUNNING, RunStatus.STARTING) and pid is None:
        run_state = "interrupted"  # the supervisor died: `phase5 run` resumes
    return {
        "course": str(course.root),
        "languages": course.languages.to_json(),
        "state": run_state,
        "supervisor_pid": pid if pid and pid > 0 else None,
        "supervisor_alive": pid is not None,
        "session": state.session if state else None,
        "tmux_socket": state.tmux_socket if state else None,
        "backend": state.backend if state else None,
        "started_at": state.run_started_at if state else None,
        "elapsed_s": round(((state.finished_at or now) - state.run_started_at), 1) if state else None,
        "retries": state.retries if state else 0,
        "total": total,
        "done": done,
        "cost_usd": round(spend, 6),  # spend so far, as the workers' progress files report it
        "final_file": layout.final_baskets.exists(),
        "message": state.message if state else None,
        "summary": state.summary if state else None,
        "segments": segments,
    }


def _header(report: dict[str, Any]) -> str:
    who = f"supervisor pid {report['supervisor_pid']}" if report["supervisor_alive"] else "no supervisor running"
    languages = report.get("languages") or {}
    return (
        f"{report['course']} ({languages.get('description', '?')}): {report['state']},"
        f" {report['done']}/{report['total']} baskets, {who},"
        f" elapsed {duration(report['elapsed_s'])}, retries {report['retries']}"
        + (f", spend ${report['cost_usd']:.4f}" if report.get("cost_usd") else "")
        + (f", session {report['session']}" if report["session"] else "")
    )


def _label(segment: dict[str, Any]) -> str:
    return f"segment {segment['segment']}" + (f" (redo {segment['redo']})" if segment.get("redo") else "")


def _rows(segment: dict[str, Any]) -> list[Any]:
    from supervisor.display import OrchRow

    return [OrchRow(**row) for row in segment["orchestrators"]]


def plain_text(report: dict[str, Any], agents: bool = False) -> str:
    lines = [_header(report)]
    if report["message"]:
        lines.append(f"  last: {report['message']}")
    for seg in report["segments"]:
        lines.append(f"  {_label(seg)}: {seg['state']} {seg['done']}/{seg['total']}")
        if seg["state"] == "merged":
            continue
        for row in _rows(seg):
            extra = ""
            if row.state.active:
                forked = f" (worker {row.worker_pid})" if row.worker_pid not in (None, row.pane_pid) else ""
                extra = f"  window {row.window_id} pid {row.pane_pid}{forked}"
            error = f"  error: {row.error}" if row.error and row.state != "done" else ""
            lines.append(f"    {plain_row(row)}{extra}{error}")
            if agents:
                for agent in row.agents:
                    if agent.get("state") != "done":
                        lines.append(
                            f"      agent {agent.get('agent'):02d} {agent.get('state')} "
                            f"{agent.get('done')}/{agent.get('total')} attempts {agent.get('attempts')}"
                            + (f" error: {agent['last_error']}" if agent.get("last_error") else "")
                        )
    summary = report.get("summary")
    if summary:
        lines.append(
            f"  summary: {summary['baskets']}/{summary['expected']} baskets, valid {summary['valid']},"
            f" wall time {summary['wall_time_s']} s, retries {summary['retries']}"
        )
    return "\n".join(lines)


def rich_view(report: dict[str, Any], width: int = 200) -> Group:
    parts: list[Any] = [Text(printable(_header(report)), style="bold")]
    if report["message"]:
        parts.append(Text(f"last: {printable(report['message'])}", style="dim"))
    for seg in report["segments"]:
        if seg["state"] == "merged" or (
            seg["state"] == "pending" and not any(o["attempts"] for o in seg["orchestrators"])
        ):
            parts.append(Text(f"{_label(seg)}: {seg['state']} {seg['done']}/{seg['total']}"))
        else:
            parts.append(rows_table(f"{_label(seg)}: {seg['state']} {seg['done']}/{seg['total']}", _rows(seg), width))
    return Group(*parts)


@click.command("status")
@course_argument
@click.option("--watch", is_flag=True, help="Refresh until interrupted (plain: until the run ends).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option("--agents", "show_agents", is_flag=True, help="List the agents that are not done.")
@json_option
def status_command(
    course: str, courses_dir: str | None, watch: bool, interval: float, show_agents: bool, as_json: bool
) -> None:
    """Segments, orchestrators and agents of COURSE's run: state (pending, running, done, failed,
    stuck, stopped), progress, attempts, window ids, pane PIDs, elapsed and ETA. Reads the files
    only: works from any terminal, without tmux."""
    loaded = load_course(course, courses_dir)
    plans = load_plans(loaded, include_redo=True)
    if as_json and not watch:
        echo_json(status_report(loaded, plans))
        return
    if not watch:
        echo(plain_text(status_report(loaded, plans), show_agents))
        return
    if sys.stdout.isatty() and not as_json:
        try:
            console = Console()
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(rich_view(status_report(loaded, plans), console.width), refresh=True)
                    time.sleep(interval)  # a display refresh, not synchronisation
        except KeyboardInterrupt:
            return
    while True:  # not a terminal: a block per refresh, until no supervisor runs
        report = status_report(loaded, plans)
        echo_json(report) if as_json else echo(plain_text(report, show_agents) + "\n")
        if not report["supervisor_alive"]:
            return
        time.sleep(interval)


COMMANDS = [status_command]
