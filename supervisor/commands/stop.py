"""``phase5 stop``: stop a course's run cleanly, keep every file so ``phase5 run`` resumes."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import click

from supervisor import procs
from supervisor.commands.common import course_argument, echo, echo_json, json_option, load_course
from supervisor.lock import holder, supervisor_process
from supervisor.options import tmux_socket_option
from supervisor.state import RunState, RunStatus
from supervisor.teardown import stop_everything
from supervisor.tmux import CourseSession
from worker.paths import CourseLayout, course_arg
from worker.safetext import quote_id


def stop_run(root: Path, socket: str | None, grace: float, wait: float = 30.0) -> dict[str, Any]:
    """SIGTERM the supervisor and wait for it; then kill every process tree and window of the
    session, the session, and any worker of the course left without a window. The supervisor is
    signalled only when :func:`supervisor_process` verifies it (never a pid on the lock's word)."""
    layout = CourseLayout(root)
    done: dict[str, Any] = {
        "supervisor_pid": None,
        "supervisor": "not running",
        "killed": [],
        "windows": 0,
        "session": None,
    }
    claimed = holder(layout)
    supervisor = supervisor_process(layout)
    if supervisor is not None:
        done["supervisor_pid"] = supervisor.pid
        supervisor.send_signal(signal.SIGTERM)  # psutil: never a pid reused since the check
        # it stops its workers itself; give it time for their grace periods
        deadline = time.monotonic() + wait + grace
        while holder(layout) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if holder(layout) is not None:
            procs.kill_tree(supervisor.pid, grace)
            done["supervisor"] = "killed"
        else:
            done["supervisor"] = "stopped"
    elif claimed is not None:
        # The lock is held, but its record names no process that is this course's supervisor
        # (edited, or written by something else): nothing is signalled on its word.
        done["supervisor"] = (
            f"not signalled: the run's lock names pid {quote_id(claimed)}, which is not this course's supervisor"
        )
    state = RunState.load(layout)
    session = CourseSession(root, socket or (state.tmux_socket if state else None))
    had_session = session.exists()
    done["killed"], done["left"], done["windows"] = stop_everything(root, session, grace)
    done["session"] = session.name if had_session else None
    state = RunState.load(layout)
    if state is not None and state.state in (RunStatus.RUNNING, RunStatus.STARTING):
        state.mark_stopped()
        state.message = "stopped by `phase5 stop`"
        state.save(layout)
    return done


@click.command("stop")
@course_argument
@tmux_socket_option
@click.option(
    "--grace", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Seconds between SIGTERM and SIGKILL."
)
@json_option
def stop_command(course: str, courses_dir: str | None, tmux_socket: str | None, grace: float, as_json: bool) -> None:
    """Stop COURSE's run: the supervisor (SIGTERM), every process tree and window of its tmux
    session, and the session. All files are kept: `phase5 run` resumes where it stopped."""
    loaded = load_course(course, courses_dir)
    result = stop_run(loaded.root.resolve(), tmux_socket, grace)
    if as_json:
        echo_json(result)
        return
    echo(
        f"supervisor: {result['supervisor']}"
        + (f" (pid {result['supervisor_pid']})" if result["supervisor_pid"] else "")
    )
    echo(
        f"processes killed: {len(result['killed'])}; windows closed: {result['windows']};"
        f" session: {result['session'] or 'none'}"
    )
    if result["left"]:
        echo(f"still alive (could not kill): {', '.join(map(str, result['left']))}")
    echo(f"files kept; resume with: phase5 run {course_arg(loaded.root)}")


COMMANDS = [stop_command]
