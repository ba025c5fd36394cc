"""What the supervisor says of a worker comes from the worker: the reason it gave for ending
(not tmux's "Pane is dead" line), a bad input making the run exit 2; a fork server that cannot
answer (stopped by SIGSTOP) is noticed before the next launch and the workers start cold, with a
line in the log, instead of each window waiting a minute for it. Real tmux, real workers, the real
SDK against the fake API for the warm start."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import fork_servers
from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"


def test_a_worker_refusing_its_input_is_reported_in_its_own_words(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    assert p5.phase5("prepare", str(course)).returncode == 0
    layout.agent_journal(1, 2, 1).mkdir()  # a folder where the journal should be
    result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    print(result.stdout[-1200:])
    assert result.returncode == 2, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if "run failed:" in line]
    assert failed and "agent_01_journal.jsonl: Is a directory" in failed[0]
    assert "Pane is dead" not in result.stdout
    status = p5.phase5("status", str(course))
    assert "agent_01_journal.jsonl: Is a directory" in status.stdout
    layout.agent_journal(1, 2, 1).rmdir()
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_a_stopped_fork_server_turns_warm_start_off(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.2")
    env = p5.test_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=api.base_url)
    argv = [sys.executable, "-m", "supervisor.cli", "run", str(course), "--backend", "anthropic", "--stagger", "0"]
    argv += ["--poll", "0.2", "--plain", "--model", "claude-sonnet-5", "--segments", "2", "--orchestrators", "2"]
    argv += ["--agents", "3", "--tmux-socket", server.socket_name]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        p5.wait_for(lambda: fork_servers(run.pid), 30, "the fork server")
        stopped = fork_servers(run.pid)[0]
        p5.wait_for(lambda: p5.journal_lines(course, 1) >= 1, 60, "segment 1 under way")
        stopped.send_signal(signal.SIGSTOP)
        began = time.monotonic()
        out, err = run.communicate(timeout=180)
        took = time.monotonic() - began
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    print(out[-1500:])
    assert run.returncode == 0, out + err
    assert f"warm start off: the fork server (pid {stopped.pid}) is stopped (SIGSTOP?); workers start cold" in out
    assert took < 45, took  # a stub waiting for a stopped server would take a minute per window
    assert not psutil.pid_exists(stopped.pid) or stopped.status() == psutil.STATUS_ZOMBIE
    p5.assert_valid(course)
    p5.assert_clean(course, server)
