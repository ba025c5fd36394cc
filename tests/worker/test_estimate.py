"""``phase5 estimate``: requests, tokens with and without caching, cost and time, from the prompts
the backends would send, without calling any API; checked against what the fake server counts
for the same requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from worker.cost import PriceTable
from worker.course import Course
from worker.estimate import EstimateOptions, agent_prefix, estimate
from worker.generators.model_table import model_caps
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
    # The skill is written once, each agent's first request writes its vocabulary, the rest read
    # them; without a cache, all is input. Counted with the model's tokenizer factor (1.3).
    agents = load_plans(course)[0].orchestrator_batches[0].agent_batches
    parts = [agent_prefix(course, course.by_id[ids[0]].position, model_caps(MODEL)) for ids in agents]
    assert all(skill == parts[0][0] > 5000 and uncached == 0 for skill, _, uncached in parts)
    assert est.with_cache.cache_write == pytest.approx(parts[0][0] + sum(own for _, own, _ in parts))
    wo, w = est.without_cache, est.with_cache
    assert wo.input == pytest.approx(w.input + w.cache_write + w.cache_read)
    assert wo.output == w.output > 0
    assert est.assumptions["tokenizer_factor"] == 1.3 and est.assumptions["thinking_tokens"] == 800
    anthropic, batch = est.backends["anthropic"], est.backends["anthropic-batch"]
    assert anthropic["cost_usd"]["with_cache"] < anthropic["cost_usd"]["without_cache"]
    # Batches: half price, but 1-hour cache writes and each agent's first request (the warm-up)
    # at the Messages price.
    table_cost = table.cost(est.agent_firsts.usage(one_hour=True), MODEL) + table.cost(
        est.with_cache.minus(est.agent_firsts).usage(one_hour=True), MODEL, batch=True
    )
    assert batch["cost_usd"]["with_cache"] == pytest.approx(table_cost, abs=1e-4)
    messages_cost = anthropic["cost_usd"]["with_cache"]
    assert messages_cost / 2 < batch["cost_usd"]["with_cache"] < messages_cost


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


def test_wall_time_follows_the_limits_and_the_in_flight_cap(course: Course) -> None:
    """The scheduler's model of time: per segment, the launch stagger, the prefix writers' first
    wave, the requests at the rate the account's limits and the in-flight cap allow, and the tail."""
    table = PriceTable.load()
    base = {"model": MODEL, "repair_rate": 0.0, "window_rate": 0.0, "latency": 10.0, "stagger": 0.0}
    one = estimate(course, EstimateOptions(**base, concurrency=1), table)
    requests = one.first_requests
    assert one.backends["anthropic"]["time_s"] == pytest.approx(10 * (0.2 + 2.0) + requests * 10, abs=0.1)
    assert one.backends["anthropic"]["limited_by"] == "in-flight cap"
    # Unbounded in flight: the tier's limits set the rate; here its output tokens a minute.
    free = estimate(course, EstimateOptions(**base, concurrency=10_000), table)
    anthropic = free.backends["anthropic"]
    per_request_out = free.with_cache.output / requests
    assert anthropic["limited_by"] == "output tokens"
    assert anthropic["requests_per_minute"] == pytest.approx(400_000 / per_request_out, rel=1e-3)
    assert anthropic["time_s"] == pytest.approx(10 * 2.2 + requests * per_request_out / (400_000 / 60), abs=0.1)
    # A higher tier lifts it; a request limit set low binds instead.
    build = estimate(course, EstimateOptions(**base, concurrency=10_000, tier="build"), table)
    assert build.backends["anthropic"]["time_s"] < anthropic["time_s"]
    few = estimate(course, EstimateOptions(**base, concurrency=10_000, rpm=60), table)
    limited = few.backends["anthropic"]
    assert limited["limited_by"] == "requests" and limited["requests_per_minute"] == 60
    # Segments run one after another, each with its launch stagger.
    plans = estimate(
        course,
        EstimateOptions(
            model=MODEL,
            repair_rate=0.0,
            window_rate=0.0,
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
    of requests (warm-ups and batch), and prompt tokens within a few percent (both count characters
    / 4 times the tokenizer factor; the server counts the JSON of the blocks)."""
    est = estimate(course, EstimateOptions(model=MODEL, repair_rate=0.0, window_rate=0.0), PriceTable.load())
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
            "--d-windows",
            "leave",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answered = [r for r in server.requests() if r.get("op") in ("batch_request", "message")]
    assert len(answered) == est.first_requests
    prompt = sum(
        r["usage"]["input_tokens"] + r["usage"]["cache_creation_input_tokens"] + r["usage"]["cache_read_input_tokens"]
        for r in answered
    )
    assert prompt == pytest.approx(est.without_cache.input, rel=0.05)
    read = sum(r["usage"]["cache_read_input_tokens"] for r in answered)
    assert read == pytest.approx(est.with_cache.cache_read, rel=0.05)
    output = sum(r["usage"]["output_tokens"] for r in answered)
    assert output == pytest.approx(est.with_cache.output, rel=0.3)  # modelled: 6.5 phrases, the fake writes 3-4


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


def test_count_tokens_scales_the_prompt_figures(demo_course: Path, fake_api) -> None:
    server = fake_api(demo_course)
    env = {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": server.base_url}
    plain = CliRunner().invoke(main, ["estimate", str(demo_course), "--json"], env=env)
    counted = CliRunner().invoke(main, ["estimate", str(demo_course), "--json", "--count-tokens"], env=env)
    assert plain.exit_code == counted.exit_code == 0, counted.output
    before, after = json.loads(plain.stdout), json.loads(counted.stdout)
    factor = after["assumptions"]["prompt_factor"]
    assert 0.9 < factor < 1.2 and after["assumptions"]["token_count"].startswith("count_tokens on 5 sampled requests")
    scaled = before["tokens"]["without_cache"]["input"] * factor
    assert after["tokens"]["without_cache"]["input"] == pytest.approx(scaled, rel=0.01)
    assert [r["op"] for r in server.requests()] == ["count_tokens"] * 5  # nothing generated
    keyless = CliRunner().invoke(main, ["estimate", str(demo_course), "--count-tokens"], env={"ANTHROPIC_API_KEY": ""})
    assert keyless.exit_code == 2 and "ANTHROPIC_API_KEY" in keyless.output


def test_full_spanish_course(spa_course: Path) -> None:
    est = estimate(Course.load(spa_course), EstimateOptions(model=MODEL, concurrency=30, latency=30), PriceTable.load())
    assert est.baskets == 1766 and est.first_requests == 1765
    assert est.with_cache.cache_read > 10 * est.with_cache.cache_write  # caching carries most of the prompt
    cost = est.backends["anthropic"]["cost_usd"]
    assert cost["with_cache"] < cost["without_cache"] / 2
