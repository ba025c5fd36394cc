"""The ``anthropic`` backend with the real SDK over real HTTP to ``scripts/fake_anthropic.py``.

Every fault the fake injects is handled: retried by the SDK (429 after its ``retry-after``, 500,
a hang past the timeout), repaired with the validator's reasons (prose, malformed input, future
vocabulary, a missing operative LEGO, a refusal, an answer cut at max_tokens) or dropped; nothing
failing GATE is ever returned. Requests are built from the model table, so the fake (which treats
each model id as the real API does) answers none of them 400.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.worker.conftest import KEY
from worker.course import Course
from worker.errors import Phase5Error
from worker.generators import GeneratorOptions, make_generator
from worker.generators.anthropic_backend import AnthropicGenerator
from worker.generators.base import GeneratedBasket, GenerationError
from worker.generators.model_table import MODELS_ENV
from worker.report import ABSOLUTE_RULES, validate_baskets

MODEL = "claude-sonnet-5-5"  # the default: structured output, thinks by default, refuses forced tools
#: Short timeouts and few retries keep the SDK's backoff small here.
# The d windows question has its own tests (test_window_fill.py): here one request a basket, plus repairs.
FAST = GeneratorOptions(model=MODEL, timeout=1.0, max_retries=3, repair_rounds=2, fill_windows=False)
#: Models of a test table (``$PHASE5_MODELS``) whose answers travel as a tool call: the fake does
#: not know them and accepts everything, so prose and malformed answers can happen there.
TOOL_MODELS = {
    "test-auto-tool": {"structured_output": False, "strict_tools": False, "forced_tool_choice": False},
    "test-forced-tool": {"structured_output": False, "strict_tools": False, "forced_tool_choice": True},
}
ROW = {"sampling_params": True, "thinking_default": False, "min_cache_tokens": 1024, "tokenizer_factor": 1.0}


@pytest.fixture
def tool_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model table that adds :data:`TOOL_MODELS` (and, answering by a forced tool while it
    thinks, ``claude-sonnet-5`` without structured output)."""
    path = tmp_path / "models.json"
    rows = {name: {**ROW, **flags} for name, flags in TOOL_MODELS.items()}
    rows["claude-sonnet-5"] = {
        **ROW,
        "structured_output": False,
        "strict_tools": True,
        "forced_tool_choice": True,
        "sampling_params": False,
        "thinking_default": True,
        "tokenizer_factor": 1.3,
    }
    path.write_text(json.dumps({"models": rows}))
    monkeypatch.setenv(MODELS_ENV, str(path))


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
    assert report.gate_phrases_pass == report.e_phrases > 200  # real sentences only: the corpus has ~224

    log = server.requests()
    assert len(log) == sum(b.requests for b in baskets.values()) == len(course.ids) - 1  # LEGO #1: no request
    assert {r["status"] for r in log} == {200} and {r["shape"] for r in log} == {"json"}
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
    # The skill, shared by the ten agents, is written once: the first request went alone, the
    # others waited for its answer to begin and read it.
    firsts = sorted((min(records, key=lambda r: r["n"]) for records in by_agent.values()), key=lambda r: r["n"])
    assert firsts[0]["usage"]["cache_read_input_tokens"] == 0
    assert all(r["usage"]["cache_read_input_tokens"] > 5000 for r in firsts[1:])
    writes = sum(r["usage"]["cache_creation_input_tokens"] for r in log)
    reads = sum(r["usage"]["cache_read_input_tokens"] for r in log)
    uncached = sum(r["usage"]["input_tokens"] for r in log)
    assert reads / (reads + writes + uncached) > 0.9

    # Usage per basket is the sum of what the server reported for that LEGO.
    for lego_id, basket in baskets.items():
        served = [r["usage"] for r in for_lego(server, lego_id)]
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            assert getattr(basket.usage, field) == sum(u[field] for u in served)
        assert (basket.usage.total > 0) == (lego_id != course.ids[0])
    assert KEY not in server.log.read_text() and KEY not in server.stderr.read_text()


def test_every_fault_at_once_saves_no_gate_failure(api, course: Course, tool_models: None) -> None:
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
        "--fault",
        "refusal:0.03",
    )
    options = GeneratorOptions(model="test-auto-tool", timeout=1.0, max_retries=3, repair_rounds=2, fill_windows=False)
    baskets, _ = run_agents(course, options, course.ids, agents=10)
    assert len(baskets) == 125 and not absolute_problems(course, baskets)

    log = server.requests()
    faults = {r["fault"] for r in log}
    assert {"429", "500", "hang", "prose", "malformed", "future", "no_operative", "refusal"} <= faults
    assert not any(r.get("fault_suppressed") for r in log)  # tool_choice auto, not strict: all can happen
    for record in log:
        later = [r for r in log if r["lego_id"] == record["lego_id"] and r["n"] > record["n"]]
        if record["fault"] in ("429", "500", "hang"):  # retried by the SDK: same round, next attempt
            assert any(r["round"] == record["round"] and r["attempt"] == record["attempt"] + 1 for r in later)
        elif record["fault"] in ("prose", "malformed", "refusal") and record["round"] < options.repair_rounds:
            assert any(r["round"] == record["round"] + 1 for r in later)  # a repair round followed
    # Counted: retries in notes, repairs per basket, dropped phrases with their reasons.
    notes = [n for b in baskets.values() for n in b.notes]
    assert any(n == "retried after 429" for n in notes) and any(n == "retried after timeout" for n in notes)
    assert any("(stop_reason refusal)" in n for n in notes) and any("prose instead" in n for n in notes)
    assert sum(b.repair_rounds for b in baskets.values()) == sum(1 for r in log if r["repair"] and r["attempt"] == 1)
    reasons = " ".join(r.reason for b in baskets.values() for r in b.rejected)
    assert "does not contain the operative LEGO" in reasons and "not available before position" in reasons
    assert KEY not in server.log.read_text()


def test_structured_output_rules_out_prose_and_malformed_answers(api, course: Course) -> None:
    """The default model answers through structured output: the fake honours the schema, so the
    prose and malformed faults it draws cannot happen (as with the real API), and nothing is wasted."""
    server = api("--seed", "3", "--fault", "prose:0.3", "--fault", "malformed:0.3")
    baskets, _ = run_agents(course, FAST, course.ids[:40], agents=4)
    assert len(baskets) == 40 and not absolute_problems(course, baskets)
    log = server.requests()
    assert sum(1 for r in log if r.get("fault_suppressed")) > 10
    assert {r["status"] for r in log} == {200} and {r["shape"] for r in log} == {"json"}
    assert sum(b.repair_rounds for b in baskets.values()) == 0
    assert not any("prose" in n or "malformed" in n for b in baskets.values() for n in b.notes)


def test_twenty_baskets_ten_threads_run_concurrently(api, course: Course) -> None:
    server = api("--latency", "0.2")
    ids = course.ids[20:40]
    started = time.monotonic()
    baskets, _ = run_agents(course, FAST, ids, agents=10, threads=10)
    elapsed = time.monotonic() - started
    assert len(baskets) == 20 and len(server.requests()) == 20
    # Serial: 4 s. Concurrent: the skill's writer first (its answer begins after 10% of 0.2 s), then
    # the other agents' first requests, then their second ones.
    assert elapsed < 2.0, f"20 baskets of 0.2 s each on 10 threads took {elapsed:.2f} s"


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
    ("model", "fault", "reason"),
    [
        ("test-auto-tool", "prose", "the answer was prose, not a submit_e_phrases call"),
        ("test-forced-tool", "malformed", "the tool input does not fit the schema"),
        (MODEL, "future", "not available before position"),
        (MODEL, "no_operative", "does not contain the operative LEGO"),
        (MODEL, "refusal", "the answer stopped as a refusal"),
        ("claude-sonnet-5", "future", "not available before position"),  # a forced tool while it thinks
    ],
)
def test_content_fault_gets_a_repair_round_with_the_reason(
    api, course: Course, tool_models: None, model: str, fault: str, reason: str
) -> None:
    server = api("--fault-first", f"{fault}:1")
    lego_id = "S0012L02"
    basket = one(
        course, lego_id, GeneratorOptions(model=model, timeout=1.0, max_retries=3, repair_rounds=2, fill_windows=False)
    )
    first, repair = for_lego(server, lego_id)
    assert (first["fault"], first["repair"], repair["repair"]) == (fault, False, True)
    assert reason in repair["repair_text"] and repair["status"] == 200
    assert basket.repair_rounds == 1 and basket.requests == 2
    assert not absolute_problems(course, {lego_id: basket})
    if fault in ("future", "no_operative"):  # the failing phrase was dropped, with the validator's reason
        assert [r.reason for r in basket.rejected if reason in r.reason]
        assert all(pair not in basket.basket.e for pair in (r.pair for r in basket.rejected))


def test_failures_are_dropped_after_the_repair_rounds(api, course: Course, tool_models: None) -> None:
    server = api("--fault-first", "prose:5")
    lego_id = "S0012L04"  # culminating: its seed sentence is e[0] whatever the model says
    options = GeneratorOptions(model="test-auto-tool", timeout=1.0, max_retries=1, repair_rounds=2, fill_windows=False)
    basket = one(course, lego_id, options)
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
                "stop_reason": "end_turn",
                "content": [
                    {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
                    {"type": "text", "text": json.dumps({"phrases": phrases})},
                ],
                "usage": {"input_tokens": 10, "output_tokens": 5},
            }
        )

    assert conversation.take(answer("El tren sale.", "El tren sale a las ocho."))  # a future LEGO: repair
    assistant, repair = conversation.messages[-2:]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"}
    assert "not available before position 26" in str(repair["content"])
    assert not conversation.take(answer("El tren sale.", "El tren sale mañana."))
    result = conversation.result()
    assert [e[0] for e in result.basket.e] == ["El tren sale.", "El tren sale mañana."]
    assert [r.pair[0] for r in result.rejected] == ["El tren sale a las ocho."]
    assert (result.requests, result.repair_rounds, result.usage.input_tokens) == (2, 1, 20)


def test_raw_events_make_the_sdk_s_message() -> None:
    """The backend puts the SDK's raw stream events together itself (cheaper than its
    ``MessageStream``): the Message is the one the SDK's own accumulation makes, thinking with
    its signature, text, a tool call's input from its JSON pieces, stop reason and final usage."""
    from anthropic._models import construct_type
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import RawMessageStreamEvent

    from worker.generators.anthropic_backend import accumulate

    usage = {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 900}
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [], "usage": usage}
    raw = [
        {"type": "message_start", "message": {**start, "stop_reason": None, "stop_sequence": None}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Los "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "gatos."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": '{"phrases": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "[]}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t1", "name": "x", "input": {}},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a": [1,'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " 2]}"}},
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 57},
        },
        {"type": "message_stop"},
    ]
    events = [construct_type(type_=RawMessageStreamEvent, value=e) for e in raw]
    snapshot, bufs = None, {}
    for event in events:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    ours = [construct_type(type_=RawMessageStreamEvent, value=e) for e in raw]
    message, partial = ours[0].message, {}
    ended = [accumulate(message, event, partial) for event in ours[1:]]
    assert ended == [False] * (len(ours) - 2) + [True]
    assert [b.model_dump() for b in message.content] == [b.model_dump() for b in snapshot.content]
    assert message.content[2].input == {"a": [1, 2]} and message.content[0].signature == "c2ln"
    assert (
        (message.stop_reason, message.usage.output_tokens)
        == ("tool_use", 57)
        == (
            snapshot.stop_reason,
            snapshot.usage.output_tokens,
        )
    )
    assert message.usage.model_dump() == snapshot.usage.model_dump()


def test_a_request_body_is_the_sdks_json_with_each_agents_prefix_encoded_once(
    course: Course, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What goes on the wire is the body as the SDK would encode it (compact UTF-8 JSON); an
    agent's system blocks, the same list for all its requests, are encoded once."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    generator = AnthropicGenerator(course, GeneratorOptions(model=MODEL))
    try:
        first = generator.conversation(course.context(course.ids[5]), 3).params()
        second = generator.conversation(course.context(course.ids[6]), 3).params()
        other = generator.conversation(course.context(course.ids[7]), 7).params()
        assert first["system"] is second["system"] and first["system"] is not other["system"]
        for body in (first, second, other, {**first, "stream": True}):
            data = generator.encode(body)
            assert json.loads(data) == body
            assert data == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        encoded = generator._encoded_systems[id(first["system"])][1]
        assert len(generator._encoded_systems) == 2 and encoded in generator.encode(second)
        changed = {**first, "system": [dict(block) for block in first["system"]]}  # not the agent's list
        assert json.loads(generator.encode(changed)) == changed
    finally:
        generator.close()
