"""The API key lives only where it is needed: in the run's worker windows (and, with --detach, the
supervisor's own window, which hands it on), and in the fork server. Not in the tmux server's
environment (which every later session inherits), not in the run's session environment, not in
the window that follows the log, not on any command line; and the tmux server's command line does
not name the course. Real tmux server started by the run itself, real workers, the real SDK
against the fake API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.tmux import session_name
from tests.helpers import fork_servers
from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

KEY = "sk-ant-isolation-test-7f3a9c"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"
SMALL = ["--segments", "1", "--orchestrators", "2", "--agents", "2"]
API = ["--backend", "anthropic", "--stagger", "0", "--poll", "0.2", "--plain", "--model", "claude-sonnet-5"]


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")


def holds_key(pid: int) -> bool:
    return KEY in environ(pid)


def pane_pids(server, name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    lines = server.cmd("list-panes", "-s", "-t", f"={name}", "-F", "#{window_name} #{pane_pid} #{pane_dead}").stdout
    return {w: int(p) for w, p, dead in (line.split() for line in lines) if dead == "0"}


def check_tmux_holds_no_key(server, course: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = session_name(course)
    tmux_pid = int(server.cmd("display-message", "-p", "#{pid}").stdout[0])
    tmux_cmdline = " ".join(psutil.Process(tmux_pid).cmdline())
    print("tmux server:", tmux_cmdline)
    assert course.name not in tmux_cmdline and name not in tmux_cmdline and "spa" not in tmux_cmdline
    assert not holds_key(tmux_pid)
    for scope in (["-g"], ["-t", f"={name}"]):
        assert not any(KEY in line for line in server.cmd("show-environment", *scope).stdout), scope
    seen = tmp_path / "other_session.env"
    server.cmd("new-session", "-d", "-s", "someone-else", f"env > {seen}; sleep 60")
    p5_wait(lambda: seen.exists() and seen.stat().st_size > 0)
    assert KEY not in seen.read_text()
    for proc in psutil.process_iter(["cmdline"]):
        assert KEY not in " ".join(proc.info["cmdline"] or [])


def p5_wait(condition) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import wait_for

    wait_for(condition, 20, "a condition")


def test_detached_run_started_without_a_tmux_server(cleanup_course: Path, server, p5, fake_api, tmp_path) -> None:
    course = cleanup_course
    assert not server.is_alive()  # the run starts the tmux server itself
    api = fake_api(EXAMPLE, "--latency", "0.4")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    args = ["run", str(course), *API, *SMALL, "--tmux-socket", server.socket_name, "--detach"]
    started = p5.phase5(*args, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    name = session_name(course)
    p5.wait_for(lambda: {"s1-o1", "s1-o2"} <= set(pane_pids(server, name)), 30, "both worker windows")
    panes = pane_pids(server, name)
    print({w: holds_key(pid) for w, pid in panes.items()})
    assert holds_key(panes["s1-o1"]) and holds_key(panes["s1-o2"])  # the workers (their stubs)
    assert holds_key(panes["supervisor"])  # the detached supervisor, which hands it on
    servers = fork_servers(panes["supervisor"])
    assert servers and holds_key(servers[0].pid)  # the fork server, whose children are the workers
    check_tmux_holds_no_key(server, course, tmp_path)
    p5.wait_for(lambda: p5.run_state(course) and p5.run_state(course).state == "done", 120, "the run to finish")
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_the_log_window_of_a_foreground_run_has_no_key(cleanup_course: Path, server, p5, fake_api, tmp_path) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.4")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    run = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "run", str(course), *API, *SMALL, "--tmux-socket", server.socket_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        name = session_name(course)
        p5.wait_for(lambda: {"s1-o1", "s1-o2", "supervisor"} <= set(pane_pids(server, name)), 30, "the windows")
        panes = pane_pids(server, name)
        assert holds_key(panes["s1-o1"]) and holds_key(panes["s1-o2"])
        assert "tail" in psutil.Process(panes["supervisor"]).cmdline() and not holds_key(panes["supervisor"])
        check_tmux_holds_no_key(server, course, tmp_path)
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert KEY not in (CourseLayout(course).segments_dir / "supervisor.log").read_text()
    p5.assert_valid(course)
    p5.assert_clean(course, server)
