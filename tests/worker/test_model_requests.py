"""Requests built from the model table (``worker/data/models.json``): what each model accepts,
the cache breakpoints, ``max_tokens`` with room for thinking, and the spend limit that stops a
worker cleanly. The integration tests use the real SDK against ``scripts/fake_anthropic.py``, which
treats each model id as the real API does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import helpers
from tests.worker.conftest import KEY
from worker.cost import PriceTable
from worker.course import Course
from worker.errors import Phase5Error
from worker.generators import GeneratorOptions, check_backend
from worker.generators.anthropic_backend import (
    ANSWER_TOKENS,
    THINKING_TOKENS,
    AnthropicGenerator,
    estimate_tokens,
    system_blocks,
)
from worker.generators.base import SpendLimitReached
from worker.generators.corpus import corpus_index
from worker.generators.model_table import ModelCaps, model_caps, model_table
from worker.generators.skill import skill_text
from worker.plan import prepare

# -- the table and the request it builds ----------------------------------------------------------------


def test_every_priced_model_is_in_the_model_table_and_back() -> None:
    assert set(model_table()) == set(PriceTable.load().models)


@pytest.mark.parametrize("model", sorted(model_table()))
def test_request_shape_follows_the_table(course: Course, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    caps = model_caps(model)
    generator = AnthropicGenerator(course, GeneratorOptions(model=model))
    try:
        body = generator.conversation(course.context("S0012L02"), prefix_upto=20).params()
    finally:
        generator.close()
    assert body["model"] == model and "temperature" not in body
    assert body["max_tokens"] == ANSWER_TOKENS + (THINKING_TOKENS if caps.thinking_default else 0)
    if caps.structured_output:
        assert body["output_config"]["format"]["type"] == "json_schema" and "tools" not in body
        assert body["messages"][0]["content"].endswith('Answer only with the JSON object {"phrases": [...]}.')
    if not caps.forced_tool_choice:
        assert body.get("tool_choice", {"type": "auto"})["type"] == "auto"


def test_tool_requests_are_strict_and_forced_only_where_accepted(course: Course, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    row = {"structured_output": False, "sampling_params": True, "thinking_default": False}
    row |= {"min_cache_tokens": 1024, "tokenizer_factor": 1.0}
    rows = {
        "strict-auto": {**row, "strict_tools": True, "forced_tool_choice": False},
        "loose-forced": {**row, "strict_tools": False, "forced_tool_choice": True},
    }
    (tmp_path / "m.json").write_text(json.dumps({"models": rows}))
    monkeypatch.setenv("PHASE5_MODELS", str(tmp_path / "m.json"))
    bodies = {}
    for model in rows:
        generator = AnthropicGenerator(course, GeneratorOptions(model=model, temperature=0.2))
        bodies[model] = generator.conversation(course.context("S0012L02")).params()
        generator.close()
    strict, forced = bodies["strict-auto"], bodies["loose-forced"]
    assert strict["tools"][0]["strict"] is True and strict["tool_choice"] == {"type": "auto"}
    assert "strict" not in forced["tools"][0] and forced["tool_choice"] == {"type": "tool", "name": "submit_e_phrases"}
    assert strict["temperature"] == forced["temperature"] == 0.2  # these models accept it
    assert strict["messages"][0]["content"].endswith("Answer only with a submit_e_phrases call.")


def test_options_a_model_refuses_are_one_line_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(Phase5Error, match=r"^--temperature: claude-sonnet-5-5 refuses sampling parameters"):
        check_backend("anthropic", GeneratorOptions(model="claude-sonnet-5-5", temperature=0.3))
    check_backend("anthropic", GeneratorOptions(model="claude-haiku-4-5", temperature=0.3))  # accepted there
    with pytest.raises(Phase5Error, match="'claude-sonnet-9' is not in the model table"):
        check_backend("anthropic-batch", GeneratorOptions(model="claude-sonnet-9"))
    check_backend("corpus", GeneratorOptions(model="claude-sonnet-9"))  # offline: no model involved


def test_breakpoints_cover_the_prefix_only_from_the_models_minimum(course: Course) -> None:
    caps = model_caps("claude-haiku-4-5")  # 4,096 tokens at least
    skill = estimate_tokens(skill_text(), caps)
    vocabulary = 100 - 1  # the agent starting at position 100
    short, long = system_blocks(course, 5, caps), system_blocks(course, vocabulary + 1, caps)
    assert skill >= caps.min_cache_tokens  # the skill alone reaches it: its own breakpoint, shared by agents
    assert all("cache_control" in block for block in short + long)
    # A model with a higher minimum: the skill alone falls short, so it is merged into the agent's
    # prefix (one breakpoint after the vocabulary) once both together reach it; below, none.
    bigger = ModelCaps(**{**caps.__dict__, "min_cache_tokens": skill + 200})
    merged, none = system_blocks(course, 120, bigger), system_blocks(course, 2, bigger)
    assert "cache_control" not in merged[0] and merged[1]["cache_control"] == {"type": "ephemeral"}
    assert not any("cache_control" in block for block in none)
    assert system_blocks(course, 120, caps, ttl="1h")[1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


# -- against the fake API, model by model ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-sonnet-5", "claude-haiku-4-5"])
def test_each_model_is_sent_only_what_it_accepts(api, course: Course, model: str) -> None:
    server = api("--fault", "future:0.3", "--fault", "no_operative:0.1", "--seed", "4")
    generator = AnthropicGenerator(course, GeneratorOptions(model=model, timeout=2.0, max_retries=2))
    try:
        # LEGOs the course's own sentences can practise (the fake writes only real sentences)
        ids = [i for i in course.ids[59:] if len(corpus_index(course).candidates(course.by_id[i].position)) >= 2]
        baskets = [generator.generate(course.context(i), prefix_upto=60) for i in ids[:16]]
    finally:
        generator.close()
    log = server.requests()
    assert all(b.basket.e for b in baskets) and sum(b.repair_rounds for b in baskets) >= 3
    assert {r["status"] for r in log} == {200}, [r.get("error") for r in log if r["status"] != 200]
    assert not any(r.get("cut") for r in log)  # max_tokens left room for the thinking
    reads = sum(r["usage"]["cache_read_input_tokens"] for r in log)
    total = reads + sum(r["usage"]["cache_creation_input_tokens"] + r["usage"]["input_tokens"] for r in log)
    assert reads / total > 0.85


def test_too_few_max_tokens_for_the_thinking_is_a_repair_cause(api, course: Course) -> None:
    server = api("--thinking-tokens", "700")
    options = GeneratorOptions(model="claude-sonnet-5-5", max_tokens=750, timeout=2.0, repair_rounds=1)
    generator = AnthropicGenerator(course, options)
    try:
        basket = generator.generate(course.context("S0028L04"))  # many real sentences: a long answer
    finally:
        generator.close()
    assert [r["stop_reason"] for r in server.requests()] == ["max_tokens", "max_tokens"]
    assert "round 1: cut at max_tokens" in basket.notes and basket.repair_rounds == 1
    assert "(the answer was cut at max_tokens)" in server.requests()[1]["repair_text"]
    assert {r["status"] for r in server.requests()} == {200}  # the cut answer's thinking went back intact


def test_spend_limit_is_not_retried(api, course: Course) -> None:
    server = api("--fault-first", "spend_limit:1")
    generator = AnthropicGenerator(course, GeneratorOptions(max_retries=4))
    try:
        with pytest.raises(SpendLimitReached, match=r"spend limit is reached \(429 enforced_spend_limit_reached: "):
            generator.generate(course.context("S0012L02"))
    finally:
        generator.close()
    assert [r["status"] for r in server.requests()] == [429]  # one attempt, despite 4 retries allowed


def test_spend_limit_stops_a_worker_cleanly_then_it_resumes(api, demo_course: Path, procs: list) -> None:
    course = Course.load(demo_course)
    prepare(course, segments=1, orchestrators=1, agents=3)
    limited = api("--fault", "spend_limit:0.02", "--seed", "2")
    proc = helpers.start_worker(course, "--backend", "anthropic", procs=procs)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    pattern = r"budget reached: the API's spend limit is reached \(429 enforced_spend_limit_reached: .*\); run again"
    pattern += r" once it is raised\n"
    assert re.fullmatch(pattern, err), err
    saved = helpers.journal_ids(course.root)
    assert 1 < sum(saved.values()) < len(course.ids) and max(saved.values()) == 1
    spend_limited = [r for r in limited.requests() if r["status"] == 429]
    assert spend_limited and all(r["retry_count"] == "0" for r in spend_limited)  # never retried
    limited.stop()

    api()  # the limit raised
    proc = helpers.start_worker(course, "--backend", "anthropic", procs=procs)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    helpers.assert_complete(course)
    counts = helpers.journal_ids(course.root)
    assert set(counts) == set(course.ids) and max(counts.values()) == 1  # nothing made twice


def test_replayed_answers_and_what_the_repairs_lift(api, demo_course: Path, procs: list, tmp_path: Path) -> None:
    """``--replay``: the first answers are an earlier run's e-phrases, errors included (here every
    other basket's phrases are another LEGO's, so they fail GATE or miss the operative LEGO); the
    repair rounds make up for them, and the cost report says by how much."""
    from click.testing import CliRunner

    from supervisor.cli import main
    from worker.generators import make_generator

    course = Course.load(demo_course)
    prepare(course, segments=1, orchestrators=1, agents=3)
    corpus = make_generator("corpus", course)
    earlier = {i: corpus.generate(course.context(i)).basket.to_json() for i in course.ids}
    ids = course.ids
    for index, lego_id in enumerate(ids[2:], start=2):
        if index % 2:
            earlier[lego_id]["e"] = earlier[ids[(index + 40) % len(ids)]]["e"]  # someone else's phrases
    replay = tmp_path / "earlier.json"
    replay.write_text(json.dumps(earlier, ensure_ascii=False))
    server = api("--replay", str(replay))
    proc = helpers.start_worker(course, "--backend", "anthropic", procs=procs)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    helpers.assert_complete(course)
    first = [r for r in server.requests() if r.get("round") == 0]
    assert first and all(r.get("replayed") for r in first) and any(r["repair"] for r in server.requests())
    report = CliRunner().invoke(main, ["cost", str(course.root), "--json"])
    gain = json.loads(report.stdout)["repairs"]
    assert gain["baskets"] == len(ids) - 1 and gain["repaired"] > 20
    # the fake writes only real sentences (the corpus's spans), so repairs lift as far as those go
    assert gain["full_final"] > gain["full_first"]
    text = CliRunner().invoke(main, ["cost", str(course.root)]).stdout
    assert f"{gain['full_first']} from first answers alone, {gain['full_final']} after repairs" in text
