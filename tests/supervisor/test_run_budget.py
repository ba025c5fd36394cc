"""`phase5 run` with the API backends' cost controls: `--dry-run` prints the estimate and starts
nothing; `--max-cost` reaches the workers, and a worker's exit status 4 stops the whole run
cleanly ("budget reached"), not retried, resumable; `status` and the run summary show the spend.
Real supervisor, real workers in an isolated tmux server, the real SDK against the fake API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.paths import CourseLayout

KEY = "test-key"
#: The fake API reads the example course in the checkout: a server naming the test's copy would
#: count as a process of the run.
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"
BATCH = [
    "--backend",
    "anthropic-batch",
    "--stagger",
    "0",
    "--poll",
    "0.2",
    "--plain",
    "--poll-interval",
    "0.05",
    "--model",
    "claude-sonnet-5",
    "--segments",
    "1",
    "--orchestrators",
    "2",
    "--agents",
    "2",
]


def test_dry_run_prints_the_estimate_and_starts_nothing(demo_course: Path, p5) -> None:
    result = p5.phase5("run", str(demo_course), "--backend", "anthropic", "--dry-run", "--d-windows", "leave")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "requests 154" in out and "anthropic-batch" in out and "with cache" in out and "dry run" in out
    assert not CourseLayout(demo_course).segments_dir.exists()  # no plan, no state, no session


@pytest.mark.tmux
@pytest.mark.slow
def test_max_cost_stops_the_run_cleanly_then_it_resumes(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--batch-delay", "0.1", "--fault", "future:0.3", "--seed", "2")  # repairs to stop
    env = p5.test_env(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.base_url)
    stopped = p5.phase5(
        "run", str(course), *BATCH, "--max-cost", "0.01", "--tmux-socket", server.socket_name, env=env, timeout=120
    )
    assert stopped.returncode == 4, stopped.stdout + stopped.stderr
    assert "budget reached: $" in stopped.stdout and "of $0.0100" in stopped.stdout
    state = p5.run_state(course)
    assert state.state == "stopped" and state.retries == 0  # not retried
    assert all(o.attempts == 1 for s in state.segments for o in s.orchs)
    p5.assert_clean(course, server)
    saved = p5.journal_ids(course)
    assert saved and max(saved.values()) == 1
    creates = [r for r in api.requests() if r.get("op") == "batch_create"]
    assert len(creates) == 2  # one batch per orchestrator; the spend stopped the repair rounds
    status = json.loads(p5.phase5("status", str(course), "--json").stdout)
    assert status["cost_usd"] >= 0.01
    assert all(o["batch"]["round"] == 1 for o in status["segments"][0]["orchestrators"])

    resumed = p5.phase5("run", str(course), *BATCH, "--tmux-socket", server.socket_name, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    p5.assert_valid(course)
    counts = p5.journal_ids(course)
    assert max(counts.values()) == 1 and saved.keys() <= counts.keys()
    summary = p5.run_state(course).summary
    assert summary["cost_usd"] >= status["cost_usd"] and "spend $" in resumed.stdout
    p5.assert_clean(course, server)
