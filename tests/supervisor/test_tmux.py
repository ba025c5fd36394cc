"""The tmux layer on a real, isolated tmux server (libtmux's ``server`` fixture)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from supervisor.tmux import CourseSession, worker_environment, worker_secrets

pytestmark = pytest.mark.tmux

SECRET = 'sk-ant-test-0123456789-it\'s-"quoted" $HOME #{session_name}'


def test_dead_panes_stay_visible_with_their_exit_status(server, tmp_path: Path, p5) -> None:
    session = CourseSession(tmp_path / "spa_demo", server.socket_name)
    assert session.name.startswith("phase5-spa_demo-") and not session.exists()
    assert session.ensure() and session.exists() and not session.ensure()
    quick = session.launch("s1-o1", [sys.executable, "-c", "raise SystemExit(4)"], tmp_path)
    killed = session.launch("s1-o2", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path)
    assert quick.window_id != killed.window_id
    # the pane's process is the command itself (no shell in between)
    # (just after the fork it may still show the tmux server's argv: wait for the exec)
    p5.wait_for(
        lambda: psutil.Process(killed.pane_pid).cmdline()[1:3] == ["-c", "import time; time.sleep(600)"],
        10,
        "the window's command to start",
    )
    psutil.Process(killed.pane_pid).kill()
    pane = lambda name: session.pane(name)  # noqa: E731
    p5.wait_for(lambda: pane("s1-o1") and pane("s1-o1").dead, 10, "s1-o1 to die")
    p5.wait_for(lambda: pane("s1-o2") and pane("s1-o2").dead, 10, "s1-o2 to die")
    session.reap()  # tmux 3.3a may have missed a SIGCHLD: collect the exit statuses now
    p5.wait_for(lambda: pane("s1-o1").exit_text != "?" and pane("s1-o2").exit_text != "?", 10, "exit statuses")
    assert pane("s1-o1").exit_text == "4"
    assert pane("s1-o2").exit_text == "signal 9"
    assert [p.window_name for p in session.panes()] == ["supervisor", "s1-o1", "s1-o2"]
    session.kill_window(quick.window_id)
    assert session.pane("s1-o1") is None
    session.kill()
    assert not session.exists() and session.panes() == []


def test_reap_returns_when_the_server_misses_every_sigchld(server, tmp_path: Path, p5) -> None:
    """A tmux server that never gets SIGCHLD (started with it blocked: the worst case of the
    missed signals :meth:`CourseSession.reap` is for) never sees a job end; the nudge must not
    wait for it (a foreground ``run-shell`` did, and the supervisor hung on it)."""

    def block_sigchld() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})

    started = subprocess.run(
        ["tmux", "-L", server.socket_name, "new-session", "-d", "-s", "deaf"], preexec_fn=block_sigchld, timeout=10
    )
    assert started.returncode == 0
    blocked = psutil.Process(int(server.cmd("display-message", "-p", "#{pid}").stdout[0]))
    mask = next(
        line for line in Path(f"/proc/{blocked.pid}/status").read_text().splitlines() if line.startswith("SigBlk")
    )
    assert int(mask.split()[1], 16) & (1 << (signal.SIGCHLD - 1)), "the server should start deaf to SIGCHLD"
    session = CourseSession(tmp_path / "spa_demo", server.socket_name)
    session.ensure()
    quick = session.launch("s1-o1", [sys.executable, "-c", "raise SystemExit(4)"], tmp_path)
    p5.wait_for(lambda: psutil.Process(quick.pane_pid).status() == psutil.STATUS_ZOMBIE, 10, "an unreaped pane process")
    done = threading.Event()
    nudge = threading.Thread(target=lambda: (session.reap(), done.set()), daemon=True)
    nudge.start()
    assert done.wait(10), "reap() waited for a job the server cannot see end"
    session.kill()


def test_secrets_reach_worker_windows_only_and_never_a_command_line(server, tmp_path: Path, p5) -> None:
    # A server that was started without the key (as a user's default server would be).
    server.new_session(session_name="someone-else")
    session = CourseSession(tmp_path / "spa_demo", server.socket_name)
    session.ensure()
    environ = {"ANTHROPIC_API_KEY": SECRET, "PHASE5_TEST_DELAY": "1", "HOME": "/nowhere", "PHASE5_TMUX_SOCKET": "x"}
    assert worker_environment(environ) == {"ANTHROPIC_API_KEY": SECRET, "PHASE5_TEST_DELAY": "1"}
    assert worker_secrets(environ) == {"ANTHROPIC_API_KEY": SECRET}
    session.sync_environment(environ)
    out, plain = tmp_path / "seen.txt", tmp_path / "plain.txt"
    script = (
        "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text("
        "os.environ.get('ANTHROPIC_API_KEY', '') + '|' + os.environ.get('PHASE5_TEST_DELAY', '')); time.sleep(600)"
    )
    info = session.launch("s1-o1", [sys.executable, "-c", script, str(out)], tmp_path, env=worker_secrets(environ))
    other = session.launch("supervisor-view", [sys.executable, "-c", script, str(plain)], tmp_path)
    try:
        p5.wait_for(lambda: out.exists() and out.read_text(), 10, "the worker window's process to report")
        p5.wait_for(lambda: plain.exists() and plain.read_text(), 10, "the other window's process to report")
        assert out.read_text() == f"{SECRET}|1"
        assert plain.read_text() == "|1"  # the session's variables, but not the key
        # ...and it is on no command line: not in ps, not in tmux's pane start commands, and in
        # no environment of tmux (the session's marks it for removal; the global one lacks it)
        for proc in psutil.process_iter(["cmdline"]):
            assert "sk-ant-test" not in " ".join(proc.info["cmdline"] or [])
        starts = server.cmd("list-panes", "-a", "-F", "#{pane_start_command}").stdout
        assert starts and not any("sk-ant-test" in line for line in starts)
        for scope in (["-g"], ["-t", "someone-else"], ["-t", f"={session.name}"]):
            assert not any("sk-ant-test" in line for line in server.cmd("show-environment", *scope).stdout)
        # a later sync without the variables removes them from the session, and masks them in the
        # server's global environment (as when the server was started by a run that had them)
        server.cmd("set-environment", "-g", "PHASE5_TEST_DELAY", "9")
        session.sync_environment({})
        assert not [n for n in session.environment_names() if n.startswith(("ANTHROPIC_", "PHASE5_"))]
        check = session.launch("s1-o3", [sys.executable, "-c", script, str(out)], tmp_path)
        p5.wait_for(lambda: out.read_text() == "|", 10, "a new window without the variables")
        psutil.Process(check.pane_pid).kill()
    finally:
        psutil.Process(info.pane_pid).kill()
        psutil.Process(other.pane_pid).kill()
        session.kill()


def test_a_line_break_in_a_value_is_refused(server, tmp_path: Path) -> None:
    from worker.errors import Phase5Error

    session = CourseSession(tmp_path / "spa_demo", server.socket_name)
    session.ensure()
    with pytest.raises(Phase5Error, match="line break"):
        session.set_environment({"PHASE5_X": "a\nset-option -g status off"})
    session.kill()
