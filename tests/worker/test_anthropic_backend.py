"""The ``anthropic`` backend with the real SDK over real HTTP to ``scripts/fake_anthropic.py``.

Every fault the fake injects is handled: retried by the SDK (429 after its ``retry-after``, 500,
a hang past the timeout), repaired with the validator's reasons (prose, malformed input, future
vocabulary, a missing operative LEGO) or dropped; nothing failing GATE is ever returned.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from worker.course import Course
from worker.errors import Phase5Error
from worker.generators import GeneratorOptions, make_generator
from worker.generators.anthropic_backend import AnthropicGenerator
from worker.generators.base import GeneratedBasket, GenerationError
from worker.report import ABSOLUTE_RULES, validate_baskets

KEY = "test-key"
MODEL = "claude-haiku-4-5"  # current, takes a forced tool_choice and temperature; the fake ignores it
#: Short timeouts and few retries keep the SDK's backoff small here.
FAST = GeneratorOptions(model=MODEL, timeout=1.0, max_retries=3, repair_rounds=2)


@pytest.fixture
def course(demo_course: Path) -> Course:
    return Course.load(demo_course)


@pytest.fixture
def api(fake_api, demo_course: Path, monkeypatch: pytest.MonkeyPatch):
    """Start a fake server with the given arguments and point the SDK at it."""

    def start(*args: str):
        server = fake_api(demo_course, *args)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        return server

    return start


def run_agents(
    course: Course, options: GeneratorOptions, ids: list[str], agents: int, threads: int = 10
) -> tuple[dict[str, GeneratedBasket], dict[str, int]]:
    """Generate ``ids`` as ``agents`` agents in canonical order, concurrently; each agent's
    prefix starts at its first LEGO. Returns the baskets and each LEGO's prefix_upto."""
    size = -(-len(ids) // agents)
    batches = [ids[i : i + size] for i in range(0, len(ids), size)]
    prefix = {lego_id: course.by_id[batch[0]].position for batch in batches for lego_id in batch}
    generator = make_generator("anthropic", course, options)
    try:

        def agent(batch: list[str]) -> list[GeneratedBasket]:
            return [generator.generate(course.context(i), prefix_upto=prefix[i]) for i in batch]

        with ThreadPoolExecutor(threads) as pool:
            results = [b for done in pool.map(agent, batches) for b in done]
    finally:
        generator.close()
    return {b.lego_id: b for b in results}, prefix


def absolute_problems(course: Course, baskets: dict[str, GeneratedBasket]) -> list[str]:
    report = validate_baskets(course, {i: b.basket.to_json() for i, b in baskets.items()})
    return [str(p) for p in report.problems if p.rule in ABSOLUTE_RULES]


def one(course: Course, lego_id: str, options: GeneratorOptions = FAST) -> GeneratedBasket:
    generator = AnthropicGenerator(course, options)
    try:
        return generator.generate(course.context(lego_id))
    finally:
        generator.close()


def for_lego(server, lego_id: str) -> list[dict]:
    return [r for r in server.requests() if r.get("lego_id") == lego_id]


# -- whole course ------------------------------------------------------------------------------------


def test_clean_run_validates_caches_and_records_usage(api, course: Course) -> None:
    server = api()
    baskets, prefix = run_agents(course, FAST, course.ids, agents=10)
    assert len(baskets) == len(course.ids) == 125
    report = validate_baskets(course, {i: b.basket.to_json() for i, b in baskets.items()})
    assert report.ok, [str(p) for p in report.problems][:5]
    assert report.gate_phrases_pass == report.e_phrases > 250

    log = server.requests()
    assert len(log) == sum(b.requests for b in baskets.values()) == len(course.ids) - 1  # LEGO #1: no request
    by_agent: dict[int, list[dict]] = defaultdict(list)
    for record in log:
        by_agent[prefix[record["lego_id"]]].append(record)
    # The stable prefix (skill + vocabulary) is byte-identical within an agent, different between agents.
    hashes = {upto: {r["prefix_hash"] for r in records} for upto, records in by_agent.items()}
    assert all(len(h) == 1 for h in hashes.values()) and len({h.pop() for h in hashes.values()}) == 10
    for records in by_agent.values():  # the first request writes the cache, the others read all of it
        first, *rest = sorted(records, key=lambda r: r["n"])
        assert first["usage"]["cache_creation_input_tokens"] > 0
        assert rest and all(r["usage"]["cache_creation_input_tokens"] == 0 for r in rest)
        assert all(r["usage"]["cache_read_input_tokens"] >= 1000 for r in rest)

    # Usage per basket is the sum of what the server reported for that LEGO.
    for lego_id, basket in baskets.items():
        served = [r["usage"] for r in for_lego(server, lego_id)]
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            assert getattr(basket.usage, field) == sum(u[field] for u in served)
        assert (basket.usage.total > 0) == (lego_id != course.ids[0])
    assert KEY not in server.log.read_text() and KEY not in server.stderr.read_text()


def test_every_fault_at_once_saves_no_gate_failure(api, course: Course) -> None:
    server = api(
        "--seed",
        "7",
        "--retry-after",
        "0.1",
        "--hang-seconds",
        "4",
        "--fault",
        "429:0.06",
        "--fault",
        "500:0.05",
        "--fault",
        "hang:0.03",
        "--fault",
        "prose:0.06",
        "--fault",
        "malformed:0.06",
        "--fault",
        "future:0.12",
        "--fault",
        "no_operative:0.12",
    )
    baskets, _ = run_agents(course, FAST, course.ids, agents=10)
    assert len(baskets) == 125 and not absolute_problems(course, baskets)

    log = server.requests()
    faults = {r["fault"] for r in log}
    assert {"429", "500", "hang", "prose", "malformed", "future", "no_operative"} <= faults
    for record in log:
        later = [r for r in log if r["lego_id"] == record["lego_id"] and r["n"] > record["n"]]
        if record["fault"] in ("429", "500", "hang"):  # retried by the SDK: same round, next attempt
            assert any(r["round"] == record["round"] and r["attempt"] == record["attempt"] + 1 for r in later)
        elif record["fault"] in ("prose", "malformed") and record["round"] < FAST.repair_rounds:
            assert any(r["round"] == record["round"] + 1 for r in later)  # a repair round followed
    # Counted: retries in notes, repairs per basket, dropped phrases with their reasons.
    notes = [n for b in baskets.values() for n in b.notes]
    assert any(n == "retried after 429" for n in notes) and any(n == "retried after timeout" for n in notes)
    assert sum(b.repair_rounds for b in baskets.values()) == sum(1 for r in log if r["repair"] and r["attempt"] == 1)
    reasons = " ".join(r.reason for b in baskets.values() for r in b.rejected)
    assert "does not contain the operative LEGO" in reasons and "not available before position" in reasons
    assert KEY not in server.log.read_text()


def test_twenty_baskets_ten_threads_run_concurrently(api, course: Course) -> None:
    server = api("--latency", "0.2")
    ids = course.ids[20:40]
    started = time.monotonic()
    baskets, _ = run_agents(course, FAST, ids, agents=10, threads=10)
    elapsed = time.monotonic() - started
    assert len(baskets) == 20 and len(server.requests()) == 20
    assert elapsed < 2.0, f"20 baskets of 0.2 s each on 10 threads took {elapsed:.2f} s"  # serial: 4 s


# -- each fault alone ---------------------------------------------------------------------------------


def test_429_is_retried_after_its_retry_after(api, course: Course) -> None:
    server = api("--fault-first", "429:2", "--retry-after", "0.4")
    basket = one(course, "S0005L02")
    records = for_lego(server, "S0005L02")
    assert [r["status"] for r in records] == [429, 429, 200]
    assert [r["retry_count"] for r in records] == ["0", "1", "2"]
    gaps = [b["t"] - a["t"] for a, b in zip(records, records[1:], strict=False)]
    assert all(gap >= 0.39 for gap in gaps), gaps
    assert basket.notes.count("retried after 429") == 2 and basket.requests == 1 and basket.basket.e


def test_500_is_retried(api, course: Course) -> None:
    server = api("--fault-first", "500:1")
    basket = one(course, "S0005L02")
    assert [r["status"] for r in for_lego(server, "S0005L02")] == [500, 200]
    assert "retried after 500" in basket.notes and basket.basket.e


def test_hang_times_out_and_is_retried(api, course: Course) -> None:
    server = api("--fault-first", "hang:1", "--hang-seconds", "8")
    started = time.monotonic()
    basket = one(course, "S0005L02")
    assert time.monotonic() - started < 5  # the client's 1 s timeout, not the server's 8 s hang
    assert [r["status"] for r in for_lego(server, "S0005L02")] == ["hang", 200]
    assert "retried after timeout" in basket.notes and basket.basket.e


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("prose", "the answer was prose, not a submit_e_phrases call"),
        ("malformed", "the tool input does not fit the schema"),
        ("future", "not available before position"),
        ("no_operative", "does not contain the operative LEGO"),
    ],
)
def test_content_fault_gets_a_repair_round_with_the_reason(api, course: Course, fault: str, reason: str) -> None:
    server = api("--fault-first", f"{fault}:1")
    lego_id = "S0012L02"
    basket = one(course, lego_id)
    first, repair = for_lego(server, lego_id)
    assert (first["fault"], first["repair"], repair["repair"]) == (fault, False, True)
    assert reason in repair["repair_text"]
    assert basket.repair_rounds == 1 and basket.requests == 2
    assert not absolute_problems(course, {lego_id: basket})
    if fault in ("future", "no_operative"):  # the failing phrase was dropped, with the validator's reason
        assert [r.reason for r in basket.rejected if reason in r.reason]
        assert all(pair not in basket.basket.e for pair in (r.pair for r in basket.rejected))


def test_failures_are_dropped_after_the_repair_rounds(api, course: Course) -> None:
    server = api("--fault-first", "prose:5")
    lego_id = "S0012L04"  # culminating: its seed sentence is e[0] whatever the model says
    basket = one(course, lego_id, GeneratorOptions(model=MODEL, timeout=1.0, max_retries=1, repair_rounds=2))
    assert [r["round"] for r in for_lego(server, lego_id)] == [0, 1, 2]  # then no third repair
    assert basket.repair_rounds == 2 and any("dropped" in n for n in basket.notes)
    assert basket.basket.e == [course.seed_phrase("S0012")]
    assert not absolute_problems(course, {lego_id: basket})


def test_errors_left_after_the_sdk_retries_raise_one_line(api, course: Course) -> None:
    server = api("--fault-first", "500:5")
    with pytest.raises(GenerationError) as caught:
        one(course, "S0005L02", GeneratorOptions(model=MODEL, timeout=1.0, max_retries=1))
    message = str(caught.value)
    assert message.startswith("S0005L02: API error 500 api_error after 2 attempt(s): Internal server error")
    assert "\n" not in message
    assert KEY not in message and len(server.requests()) == 2


def test_missing_key_is_one_line_before_anything_starts(course: Course, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens; nothing is sent
    with pytest.raises(Phase5Error) as caught:
        make_generator("anthropic", course, FAST)
    assert "ANTHROPIC_API_KEY" in str(caught.value) and "\n" not in str(caught.value)


def test_prefix_is_byte_identical_across_an_agents_requests(api, course: Course) -> None:
    server = api()
    generator = AnthropicGenerator(course, FAST)
    try:
        ids = course.ids[40:44]
        systems = [generator.conversation(course.context(i), prefix_upto=41).params()["system"] for i in ids]
        for lego_id in ids:
            generator.generate(course.context(lego_id), prefix_upto=41)
        generator.generate(course.context(ids[0]), prefix_upto=30)  # another agent's prefix
    finally:
        generator.close()
    assert all(s == systems[0] for s in systems) and systems[0][1]["text"].splitlines()[-1].startswith("40 | ")
    hashes = [r["prefix_hash"] for r in server.requests()]
    assert len(set(hashes[:4])) == 1 and hashes[4] != hashes[0]


def test_resent_kept_phrases_are_not_failures(course: Course, monkeypatch: pytest.MonkeyPatch) -> None:
    """The skill lets the model resend its whole list in a repair round: phrases kept earlier are
    skipped, not counted as duplicates (and cost no further round)."""
    from anthropic.types import Message

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    generator = AnthropicGenerator(course, FAST)
    try:
        conversation = generator.conversation(course.context("S0012L02"))  # "sale", position 26
    finally:
        generator.close()

    def answer(*targets: str) -> Message:
        phrases = [{"target": t, "known": "..."} for t in targets]
        return Message.model_validate(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "stop_reason": "tool_use",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "submit_e_phrases", "input": {"phrases": phrases}}
                ],
                "usage": {"input_tokens": 10, "output_tokens": 5},
            }
        )

    assert conversation.take(answer("El tren sale.", "El tren sale a las ocho."))  # a future LEGO: repair
    assert "not available before position 26" in str(conversation.messages[-1]["content"])
    assert not conversation.take(answer("El tren sale.", "El tren sale mañana."))
    result = conversation.result()
    assert [e[0] for e in result.basket.e] == ["El tren sale.", "El tren sale mañana."]
    assert [r.pair[0] for r in result.rejected] == ["El tren sale a las ocho."]
    assert (result.requests, result.repair_rounds, result.usage.input_tokens) == (2, 1, 20)


def test_a_model_refusing_a_forced_tool_call_gets_tool_choice_auto(api, course: Course) -> None:
    server = api("--refuse-forced-tool")
    generator = AnthropicGenerator(course, FAST)
    try:
        first = generator.generate(course.context("S0005L02"))
        second = generator.generate(course.context("S0006L02"))
    finally:
        generator.close()
    assert "the model refused a forced tool call: tool_choice auto from now on" in first.notes
    assert first.basket.e and second.basket.e and not second.notes
    statuses = [r["status"] for r in server.requests()]
    assert statuses.count(400) == 1 and statuses[-1] == 200  # refused once, never again
