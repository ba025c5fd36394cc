"""``phase5 estimate``: requests, tokens with and without caching, cost and time, from the prompts
the backends would send, without calling any API; checked against what the fake server counts
for the same requests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from worker.cost import PriceTable
from worker.course import Course
from worker.estimate import EstimateOptions, estimate, tokens
from worker.generators.anthropic_backend import TOOL, system_blocks
from worker.plan import load_plans, prepare

MODEL = "claude-sonnet-5"


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=1, agents=4)
    return loaded


def test_requests_tokens_and_cache_follow_the_plan(course: Course) -> None:
    table = PriceTable.load()
    est = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0), table)
    assert est.no_request == 1 and est.first_requests == len(course.legos) - 1  # LEGO #1 sends none
    assert est.repair_requests == 0 and est.plan["source"] == "prepared"
    # Each agent's first request writes its prefix; the rest read it; without a cache, all is input.
    agents = load_plans(course)[0].orchestrator_batches[0].agent_batches
    prefixes = [
        tokens(json.dumps(TOOL, ensure_ascii=False))
        + sum(tokens(b["text"]) for b in system_blocks(course, course.by_id[ids[0]].position))
        for ids in agents
    ]
    assert est.with_cache.cache_write == sum(prefixes)
    wo, w = est.without_cache, est.with_cache
    assert wo.input == pytest.approx(w.input + w.cache_write + w.cache_read)
    assert wo.output == w.output > 0
    anthropic, batch = est.backends["anthropic"], est.backends["anthropic-batch"]
    assert batch["cost_usd"]["with_cache"] == pytest.approx(anthropic["cost_usd"]["with_cache"] / 2, abs=1e-4)
    assert anthropic["cost_usd"]["with_cache"] < anthropic["cost_usd"]["without_cache"]


def test_repairs_add_expected_requests_and_rounds(course: Course) -> None:
    table = PriceTable.load()
    base = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0), table)
    est = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.5, repair_rounds=2), table)
    assert est.repair_requests == pytest.approx(est.first_requests * (0.5 + 0.25))
    assert est.with_cache.input > base.with_cache.input and est.with_cache.output > base.with_cache.output
    assert est.backends["anthropic-batch"]["batch_rounds"] == 3
    assert base.backends["anthropic-batch"]["batch_rounds"] == 1
    none = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.5, repair_rounds=0), table)
    assert none.repair_requests == 0


def test_wall_time_at_a_concurrency_and_latency(course: Course) -> None:
    table = PriceTable.load()
    one = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0, concurrency=1, latency=10, stagger=0), table)
    assert one.backends["anthropic"]["time_s"] == 10 * one.first_requests
    # Four agents at once: bounded by the busiest agent's chain of requests (32, 31, 31, 31 baskets;
    # LEGO #1, in the first agent, needs no request).
    four = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0, concurrency=30, latency=10), table)
    assert four.backends["anthropic"]["time_s"] == 10 * math.ceil(four.segments[0].longest_agent) == 310
    # Segments run one after another, each with its launch stagger.
    plans = estimate(
        course,
        EstimateOptions(
            model=MODEL,
            repair_rate=0.0,
            latency=10,
            stagger=5,
            segments=2,
            orchestrators=2,
            agents=2,
            batch_turnaround=100,
        ),
        table,
    )
    assert plans.plan["source"].startswith("not prepared") and len(plans.segments) == 2
    assert plans.backends["anthropic-batch"]["time_s"] == 2 * (100 + 5)


def test_estimate_matches_what_the_fake_server_counts(course: Course, fake_api, monkeypatch, tmp_path) -> None:
    """The same requests, sent for real (batch backend, no faults, so no repairs): the same number
    of requests, and prompt tokens within a few percent (both count characters / 4; the server
    counts the JSON of the blocks, and shares the skill's cache between agents)."""
    est = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0), PriceTable.load())
    server = fake_api(course.root, "--batch-delay", "0.05")
    env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "test-key"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "worker",
            str(course.root),
            "--segment",
            "1",
            "--orch",
            "1",
            "--backend",
            "anthropic-batch",
            "--poll-interval",
            "0.05",
            "--model",
            MODEL,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answered = [r for r in server.requests() if r.get("op") == "batch_request"]
    assert len(answered) == est.first_requests
    prompt = sum(
        r["usage"]["input_tokens"] + r["usage"]["cache_creation_input_tokens"] + r["usage"]["cache_read_input_tokens"]
        for r in answered
    )
    assert prompt == pytest.approx(est.without_cache.input, rel=0.05)
    read = sum(r["usage"]["cache_read_input_tokens"] for r in answered)
    assert read >= est.with_cache.cache_read  # the server also shares the skill prefix between agents


def test_command_calls_no_api(demo_course: Path) -> None:
    env = {"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}  # nothing listens there
    result = CliRunner().invoke(
        main,
        ["estimate", str(demo_course), "--json", "--concurrency", "30", "--latency", "30"],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baskets"] == 125 and data["baskets_without_request"] == 1
    assert set(data["backends"]) == {"anthropic", "anthropic-batch"}
    assert data["tokens"]["with_cache"]["cache_read"] > 0 and data["assumptions"]["token_count"] == "characters / 4"
    text = CliRunner().invoke(main, ["estimate", str(demo_course), "--backend", "anthropic"], env=env)
    assert text.exit_code == 0 and "anthropic " in text.stdout and "anthropic-batch" not in text.stdout
    assert "tokens with cache" in text.stdout and "without cache" in text.stdout
    bad = CliRunner().invoke(main, ["estimate", str(demo_course), "--model", "nope"], env=env)
    assert bad.exit_code == 2 and "no price for model 'nope'" in bad.output
    assert not (demo_course / "phase5_segments").exists()  # an estimate writes nothing


def test_full_spanish_course(spa_course: Path) -> None:
    est = estimate(Course.load(spa_course), EstimateOptions(model=MODEL, concurrency=30, latency=30), PriceTable.load())
    assert est.baskets == 1766 and est.first_requests == 1765
    assert est.with_cache.cache_read > 10 * est.with_cache.cache_write  # caching carries most of the prompt
    cost = est.backends["anthropic"]["cost_usd"]
    assert cost["with_cache"] < cost["without_cache"] / 2
