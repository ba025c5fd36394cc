"""Helpers for the supervisor tests: real `phase5` processes, a real isolated tmux server per test
(libtmux's ``server`` fixture), and checks that a test leaves no process or session behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.state import RunState
from tests.helpers import journal_ids, wait_for  # noqa: F401 (tests use them as p5.journal_ids, p5.wait_for)
from worker.paths import CourseLayout

#: A script the supervisor runs in place of a worker, not a test module (``--doctest-modules``
#: would import it).
collect_ignore = ["standin_worker.py"]

#: Fast, deterministic runs: offline backend, no stagger, quick polls.
FAST = ["--backend", "corpus", "--stagger", "0", "--poll", "0.2", "--plain"]


def test_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHASE5_", "ANTHROPIC_")) and k not in ("TMUX", "TMUX_PANE")
    }
    env.update(extra)
    return env


def phase5(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90.0, **kwargs: object
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args],
        capture_output=True,
        text=True,
        env=env or test_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def start_run(course: Path, server, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """`phase5 run COURSE` with :data:`FAST` on the test's tmux server, in the background."""
    argv = ["run", str(course), *FAST, "--tmux-socket", server.socket_name, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env or test_env(),
    )


def course_processes(course: Path) -> list[psutil.Process]:
    """Every process whose command line names the course folder (the test's own excluded)."""
    root = str(course.resolve())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(root in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def journal_lines(course: Path, segment: int, orch: int | None = None) -> int:
    layout = CourseLayout(course)
    folder = layout.orch_dir(segment, orch) if orch else layout.segment_dir(segment)
    return sum(len(p.read_text().splitlines()) for p in folder.rglob("agent_*_journal.jsonl"))


def run_state(course: Path) -> RunState | None:
    return RunState.load(CourseLayout(course))


def session_name(course: Path) -> str:
    from supervisor.tmux import session_name as name

    return name(course)


def assert_clean(course: Path, server) -> None:  # type: ignore[no-untyped-def]
    """No process of the run and no tmux session of the run is left."""
    wait_for(lambda: not course_processes(course), 20, "every process of the run to end")
    wait_for(lambda: not server.has_session(session_name(course)), 20, "the run's tmux session to close")


def assert_valid(course: Path) -> None:
    result = phase5("validate", str(course))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "coverage 100.0%" in result.stdout


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts in the background; whatever still runs at the end is killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def cleanup_course(demo_course: Path) -> Iterator[Path]:
    """The demo course; after the test, any process still naming it is killed (a failed test must
    not leave workers behind for the others)."""
    yield demo_course
    for proc in course_processes(demo_course):
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.fixture
def p5():  # type: ignore[no-untyped-def]
    """These helpers as a namespace (test modules cannot import a conftest under importlib mode)."""
    return sys.modules[__name__]
