"""Warm start: workers forked from a server that has imported the SDK (supervisor.forkserver), each
window running supervisor.stub. Real server process, real stub and worker processes, the real SDK
against the fake API; the last tests run the whole supervisor in an isolated tmux server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.forkserver import ForkServer, stub_argv
from supervisor.procs import alive
from tests.helpers import assert_complete, fork_servers, journal_ids, wait_for
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import prepare

KEY = "test-key"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch, fake_api):  # type: ignore[no-untyped-def]
    """Start the fake API with the given arguments and point this process's environment at it
    (the fork server and the stubs inherit it, as they would from the supervisor)."""

    def start(*args: str):  # type: ignore[no-untyped-def]
        api = fake_api(EXAMPLE, *args)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.base_url)
        return api

    return start


@pytest.fixture
def forks(demo_course: Path):  # type: ignore[no-untyped-def]
    """A started fork server on the (prepared) example course; stopped at teardown."""
    prepare(Course.load(demo_course), 1, 1, 4)
    server = ForkServer(demo_course, CourseLayout(demo_course).segments_dir / "forkserver.log")
    yield server
    server.stop(grace=2)
    assert not server.alive()


def start_stub(server: ForkServer, course: Path, procs: list, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        stub_argv(
            server.socket, ["worker", str(course), "--segment", "1", "--orch", "1", "--backend", "anthropic", *extra]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    return proc


def start_forked_worker(forks: ForkServer, course: Path, procs: list) -> tuple[subprocess.Popen, int]:
    """The server started, a stub asking it for orchestrator 1 of segment 1, and the forked
    worker's pid once its progress file names it."""
    forks.start()
    stub = start_stub(forks, course, procs)
    return stub, wait_for(lambda: progress(course).get("worker_pid"), 30, "the forked worker's progress file")


def progress(course: Path) -> dict:
    path = CourseLayout(course).orch_progress(1, 1)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_a_forked_worker_does_the_work_and_reports_through_its_stub(
    forks: ForkServer, demo_course: Path, api_env, procs: list
) -> None:
    api_env("--latency", "0.01")
    forks.start()
    stub = start_stub(forks, demo_course, procs)
    out, err = stub.communicate(timeout=60)
    assert stub.returncode == 0, out + err
    assert "s1-o1 anthropic  done  125/125" in out  # the worker's lines reached the stub's standard output
    report = progress(demo_course)
    assert report["pid"] == stub.pid  # the window's process stands for the worker
    assert report["worker_pid"] != stub.pid and report["state"] == "done"
    assert_complete(Course.load(demo_course))
    wait_for(lambda: not forks.workers(), 10, "the forked worker to be gone")


def test_sigterm_to_the_stub_stops_the_worker_cleanly(
    forks: ForkServer, demo_course: Path, api_env, procs: list
) -> None:
    api_env("--latency", "0.5")
    stub, worker = start_forked_worker(forks, demo_course, procs)
    assert psutil.Process(worker).ppid() == forks.pid
    stub.send_signal(signal.SIGTERM)
    assert stub.wait(10) == 143  # the worker's own status for SIGTERM, passed on
    assert not alive(worker)
    assert progress(demo_course)["state"] == "stopped"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGHUP, -signal.SIGHUP)])
def test_ctrl_c_and_hangup_reach_the_worker_as_in_a_cold_window(
    forks: ForkServer, demo_course: Path, api_env, procs: list, signum: int, status: int
) -> None:
    api_env("--latency", "0.5")
    stub, worker = start_forked_worker(forks, demo_course, procs)
    stub.send_signal(signum)
    # Ctrl-C: the worker stops cleanly (130); a hang-up kills it, and then its stub, by SIGHUP
    assert stub.wait(10) == status
    wait_for(lambda: not alive(worker), 5, "the worker to end")


def test_a_killed_stub_takes_its_worker_with_it_and_a_new_one_resumes(
    forks: ForkServer, demo_course: Path, api_env, procs: list
) -> None:
    api_env("--latency", "0.2")
    forks.start()
    stub = start_stub(forks, demo_course, procs)
    wait_for(lambda: sum(journal_ids(demo_course).values()) >= 4, 30, "a few saved baskets")
    worker = progress(demo_course)["worker_pid"]
    stub.kill()
    stub.wait(5)
    wait_for(lambda: not alive(worker), 5, "the orphaned worker to end itself")
    assert not forks.workers()
    again = start_stub(forks, demo_course, procs)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, out + err
    assert max(journal_ids(demo_course).values()) == 1  # nothing saved was made twice
    assert_complete(Course.load(demo_course))


def test_a_killed_worker_ends_its_stub_with_a_failure(
    forks: ForkServer, demo_course: Path, api_env, procs: list
) -> None:
    api_env("--latency", "0.5")
    stub, worker = start_forked_worker(forks, demo_course, procs)
    os.kill(worker, signal.SIGKILL)
    assert stub.wait(10) == 1
    assert f"worker pid {worker} ended without an exit status" in stub.stderr.read()


def test_without_a_server_the_stub_becomes_a_cold_worker(
    demo_course: Path, api_env, procs: list, tmp_path: Path
) -> None:
    api_env("--latency", "0.01")
    prepare(Course.load(demo_course), 1, 1, 4)
    server = ForkServer(demo_course, tmp_path / "log")
    server.folder = tmp_path  # never started: no socket there
    stub = start_stub(server, demo_course, procs)
    out, err = stub.communicate(timeout=60)
    assert stub.returncode == 0, out + err
    report = progress(demo_course)
    assert report["pid"] == report["worker_pid"] == stub.pid  # the stub exec'd the worker itself
    assert_complete(Course.load(demo_course))


# -- the supervisor with warm start, in an isolated tmux server ----------------------------------------

RUN = [
    "--backend",
    "anthropic",
    "--stagger",
    "0.1",
    "--poll",
    "0.2",
    "--plain",
    "--segments",
    "2",
    "--orchestrators",
    "2",
    "--agents",
    "3",
    # one request in flight per agent: a worker's work lasts long enough to be killed half-way
    "--max-in-flight",
    "3",
]


@pytest.mark.tmux
@pytest.mark.slow
def test_a_warm_run_forks_its_workers_in_windows_and_leaves_nothing(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.02")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    result = p5.phase5("run", str(course), *RUN, "--tmux-socket", server.socket_name, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (CourseLayout(course).segments_dir / "supervisor.log").read_text()
    assert "warm start: fork server pid" in log
    for path in CourseLayout(course).segments_dir.rglob("orch_*_progress.json"):
        report = json.loads(path.read_text())
        assert report["pid"] != report["worker_pid"]  # forked, not started cold
    p5.assert_valid(course)
    p5.assert_clean(course, server)  # the fork server names the course: it is gone too


@pytest.mark.tmux
@pytest.mark.slow
def test_a_killed_forked_worker_is_relaunched_and_nothing_is_made_twice(
    cleanup_course: Path, server, p5, fake_api, started: list
) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.15")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    run = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "run", str(course), *RUN, "--tmux-socket", server.socket_name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    started.append(run)
    path = CourseLayout(course).orch_progress(1, 1)
    victim = p5.wait_for(
        lambda: path.exists() and json.loads(path.read_text()).get("worker_pid"), 60, "segment 1's first worker"
    )
    status = json.loads(p5.phase5("status", str(course), "--json").stdout)
    row = status["segments"][0]["orchestrators"][0]
    assert row["worker_pid"] == victim != row["pane_pid"]  # both pids, for a person looking at the worker
    p5.wait_for(lambda: p5.journal_lines(course, 1, 1) >= 2, 60, "a few saved baskets")
    os.kill(victim, signal.SIGKILL)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    assert "s1-o1: failed" in out and "relaunching it alone" in out
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


@pytest.mark.tmux
@pytest.mark.slow
def test_supervisor_killed_its_forked_workers_go_on_and_a_new_run_adopts_them(
    cleanup_course: Path, server, p5, fake_api, started: list
) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    # Segment 2's workers must still be running when the new supervisor looks (~10 rounds of
    # latency after the kill): the killed server's exit and the new supervisor's start take
    # 2-4 s on a loaded machine.
    api = fake_api(EXAMPLE, "--latency", "0.6")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    argv = [sys.executable, "-m", "supervisor.cli", "run", str(course), *RUN, "--tmux-socket", server.socket_name]
    run = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    started.append(run)
    p5.wait_for(
        lambda: layout.segment_baskets(1).exists() and p5.journal_lines(course, 2) > 0,
        90,
        "segment 1 merged and segment 2 under way",
    )
    fork_server = fork_servers(run.pid)
    assert len(fork_server) == 1
    forked = {json.loads(path.read_text())["worker_pid"] for path in layout.segment_dir(2).glob("orch_*_progress.json")}
    run.kill()
    run.communicate(timeout=10)
    fork_server[0].wait(5)  # the server ends with its supervisor...
    assert any(alive(pid) for pid in forked)  # ...its workers go on in their windows
    again = p5.phase5("run", str(course), *RUN, "--tmux-socket", server.socket_name, env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "adopted the live window" in again.stdout, again.stdout
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)
    assert not any(alive(pid) for pid in forked)


@pytest.mark.tmux
@pytest.mark.slow
def test_detached_warm_run_stopped_then_resumed(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.3")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    detached = p5.phase5("run", str(course), *RUN, "--tmux-socket", server.socket_name, "--detach", env=env)
    assert detached.returncode == 0, detached.stdout + detached.stderr
    p5.wait_for(lambda: p5.journal_lines(course, 1) > 0, 60, "a saved basket")
    stopped = p5.phase5("stop", str(course), "--tmux-socket", server.socket_name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    p5.assert_clean(course, server)  # supervisor, fork server, stubs and forked workers: all gone
    saved = p5.journal_ids(course)
    again = p5.phase5("run", str(course), *RUN, "--tmux-socket", server.socket_name, env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    counts = p5.journal_ids(course)
    assert max(counts.values()) == 1 and saved.keys() <= counts.keys()
    p5.assert_valid(course)
    p5.assert_clean(course, server)


@pytest.mark.tmux
@pytest.mark.slow
def test_a_frozen_forked_worker_is_shown_stuck_stopped_and_replaced(
    cleanup_course: Path, server, p5, fake_api, started: list
) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--latency", "0.3")
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "run",
            str(course),
            *RUN,
            "--tmux-socket",
            server.socket_name,
            "--stuck-after",
            "2",
            "--restart-stuck",
            "--grace",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    started.append(run)
    path = CourseLayout(course).orch_progress(1, 1)
    frozen = p5.wait_for(
        lambda: path.exists() and json.loads(path.read_text()).get("worker_pid"), 60, "segment 1's first worker"
    )
    os.kill(frozen, signal.SIGSTOP)  # no heartbeat, no signal handling: only SIGKILL or SIGCONT move it
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    assert "s1-o1: STUCK" in out and "stray worker process" in out  # the frozen one, found by its progress file
    assert not alive(frozen)
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_the_fork_server_starts_first_and_is_stopped_when_the_course_is_refused(
    demo_course: Path, tmp_path: Path, api_env
) -> None:
    """``phase5 run`` starts the fork server before it loads the course (its imports are the
    longest part of a start), only in a folder that already has a plan folder; when loading then
    refuses the course, the server is stopped: nothing is left running, nothing written."""
    from supervisor.options import RunOptions
    from supervisor.runner import early_fork_server

    api_env("--latency", "0.01")
    options = RunOptions(backend="anthropic")
    bare = tmp_path / "not_a_course"
    bare.mkdir()
    assert early_fork_server(bare, options) is None and not any(bare.iterdir())
    assert early_fork_server(demo_course, options) is None  # no plan folder yet: the runner starts it
    prepare(Course.load(demo_course), 1, 1, 2)
    server = early_fork_server(demo_course, options)
    assert server is not None and server.alive()
    server.stop(grace=2)
    assert not server.alive()
    (demo_course / "lego_pairs.json").write_text("{ not json")
    before = {p.pid for p in psutil.process_iter()}
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", str(demo_course), "--backend", "anthropic", "--plain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "lego_pairs.json" in result.stderr, result.stderr
    started = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before]
    assert not [p for p in started if "supervisor.forkserver" in " ".join(p.info["cmdline"] or [])]
