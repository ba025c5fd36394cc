"""The fake API treats each model id as the real API does: each behaviour checked with the real
SDK over HTTP (``scripts/fake_anthropic.py`` on 127.0.0.1), without the project's backend in
between, so that the backend's tests meet an API that refuses what the real one refuses."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import anthropic
import pytest

KEY = "test-key"
SYSTEM_TEXT = "You write short practice phrases for a Spanish course. " * 200  # ~2,700 tokens (x1.3 on 5.x)
SCHEMA = {
    "type": "object",
    "properties": {"phrases": {"type": "array", "items": {"type": "object", "properties": {}, "required": []}}},
    "required": ["phrases"],
    "additionalProperties": False,
}
CLOSED = json.loads(json.dumps(SCHEMA))
CLOSED["properties"]["phrases"]["items"]["additionalProperties"] = False
TOOL = {"name": "submit_e_phrases", "description": "Submit.", "input_schema": CLOSED}


@pytest.fixture
def client(fake_api, demo_course: Path):
    """Factory: the real SDK client against a fake server started with ``args``."""
    made: list[anthropic.Anthropic] = []

    def start(*args: str) -> tuple[anthropic.Anthropic, object]:
        server = fake_api(demo_course, *args)
        sdk = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=2, timeout=5.0)
        made.append(sdk)
        return sdk, server

    yield start
    for sdk in made:
        sdk.close()


def ask(lego: str = "S0028L04", **extra: object) -> dict:
    """A request body for ``lego`` (the fake answers the LEGO named by the LEGO_ID line with real
    sentences of the course: this one has many)."""
    body: dict = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": f"LEGO_ID: {lego}\nWrite phrases."}],
    }
    body.update(extra)
    return body


def test_forced_tool_choice_is_refused_where_the_real_api_refuses_it(client) -> None:
    sdk, _ = client()
    for model in ("claude-sonnet-5-5", "claude-opus-5-5"):
        for choice in ({"type": "tool", "name": "submit_e_phrases"}, {"type": "any"}):
            with pytest.raises(anthropic.BadRequestError, match="forced tool use is not supported"):
                sdk.messages.create(**ask(model=model, tools=[TOOL], tool_choice=choice))
    for model in ("claude-sonnet-5", "claude-haiku-4-5"):
        forced = {"type": "tool", "name": TOOL["name"]}
        message = sdk.messages.create(**ask(model=model, tools=[TOOL], tool_choice=forced))
        assert any(b.type == "tool_use" for b in message.content)
    auto = sdk.messages.create(**ask(tools=[TOOL], tool_choice={"type": "auto"}))
    assert auto.stop_reason == "tool_use"


def test_sampling_parameters_are_refused_where_the_real_api_refuses_them(client) -> None:
    sdk, _ = client()
    for model in ("claude-sonnet-5-5", "claude-sonnet-5", "claude-opus-5-5"):
        with pytest.raises(anthropic.BadRequestError, match="temperature"):
            sdk.messages.create(**ask(model=model), extra_body={"temperature": 0.3})
        with pytest.raises(anthropic.BadRequestError, match="top_p"):
            sdk.messages.create(**ask(model=model), extra_body={"top_p": 0.9})
    assert sdk.messages.create(**ask(model="claude-haiku-4-5"), extra_body={"temperature": 0.3}).content


def test_structured_output_is_honoured_and_bad_schemas_refused(client) -> None:
    sdk, server = client("--fault-first", "prose:1")
    fmt = {"format": {"type": "json_schema", "schema": CLOSED}}
    message = sdk.messages.create(**ask(output_config=fmt))
    text = "".join(b.text for b in message.content if b.type == "text")
    assert json.loads(text)["phrases"] and message.stop_reason == "end_turn"
    assert server.requests()[-1]["fault_suppressed"] is True  # a drawn prose fault cannot break the schema
    with pytest.raises(anthropic.BadRequestError, match="additionalProperties must be false"):
        sdk.messages.create(**ask(output_config={"format": {"type": "json_schema", "schema": SCHEMA}}))
    bounded = json.loads(json.dumps(CLOSED))
    bounded["properties"]["phrases"]["maxItems"] = 8
    with pytest.raises(anthropic.BadRequestError, match="maxItems is not supported"):
        sdk.messages.create(**ask(output_config={"format": {"type": "json_schema", "schema": bounded}}))


def test_thinking_blocks_carry_signatures_that_must_come_back_unchanged(client) -> None:
    sdk, _ = client()
    tools = {"tools": [TOOL], "tool_choice": {"type": "tool", "name": TOOL["name"]}}
    first = sdk.messages.create(**ask(model="claude-sonnet-5", **tools))
    thinking, use = first.content[0], first.content[-1]
    assert thinking.type == "thinking" and thinking.signature and use.type == "tool_use"
    assert first.usage.output_tokens > 600  # thinking counts as output

    def follow_up(assistant: list[dict], model: str = "claude-sonnet-5") -> anthropic.types.Message:
        messages = [
            *ask()["messages"],
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Try again."}]},
        ]
        choice = tools["tool_choice"] if model == "claude-sonnet-5" else {"type": "auto"}
        return sdk.messages.create(**ask(model=model, messages=messages, tools=[TOOL], tool_choice=choice))

    use_param = {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}
    kept = {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}
    assert follow_up([kept, use_param]).content  # sent back unchanged: accepted
    with pytest.raises(anthropic.BadRequestError, match="must start with its thinking blocks"):
        follow_up([use_param])  # dropped
    with pytest.raises(anthropic.BadRequestError, match="invalid signature"):
        follow_up([{**kept, "thinking": kept["thinking"] + " (edited)"}, use_param])
    with pytest.raises(anthropic.BadRequestError, match="invalid signature"):
        follow_up([kept, use_param], model="claude-opus-5-5")  # another model's thinking
    plain = sdk.messages.create(**ask(model="claude-haiku-4-5"))
    assert plain.content[0].type != "thinking"  # models that do not think by default


def test_thinking_counts_toward_max_tokens(client) -> None:
    sdk, _ = client("--thinking-tokens", "800")
    fmt = {"format": {"type": "json_schema", "schema": CLOSED}}
    cut = sdk.messages.create(**ask(max_tokens=850, output_config=fmt))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 850
    with pytest.raises(ValueError):
        json.loads("".join(b.text for b in cut.content if b.type == "text"))
    whole = sdk.messages.create(**ask(max_tokens=4000, output_config=fmt))
    assert whole.stop_reason == "end_turn" and whole.usage.output_tokens < 4000


def cached_system(ttl: str | None = None) -> list[dict]:
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": SYSTEM_TEXT, "cache_control": control}]


def test_minimum_cacheable_length_per_model(client) -> None:
    sdk, _ = client()
    usage = {}
    for model in ("claude-sonnet-5-5", "claude-haiku-4-5"):  # ~3,500 tokens / ~2,700 tokens
        first = sdk.messages.create(**ask(model=model, system=cached_system()))
        second = sdk.messages.create(**ask(model=model, system=cached_system()))
        usage[model] = (first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens)
    assert usage["claude-sonnet-5-5"][0] > 3000 and usage["claude-sonnet-5-5"][1] == usage["claude-sonnet-5-5"][0]
    assert usage["claude-haiku-4-5"] == (0, 0)  # under Haiku 4.5's 4,096: silently not cached
    hour = sdk.messages.create(**ask(model="claude-opus-5-5", system=cached_system("1h")))
    assert hour.usage.cache_creation.ephemeral_1h_input_tokens == hour.usage.cache_creation_input_tokens > 0


def test_cache_is_readable_only_once_the_writers_answer_has_begun(client) -> None:
    """Latency 0.6 s, answers begin after 50%: two requests sent together both write; a third sent
    once the first's stream has begun reads."""
    sdk, _ = client("--latency", "0.6", "--first-token", "0.5")
    results: dict[str, anthropic.types.Message] = {}
    begun = threading.Event()

    def streamed(name: str) -> None:
        with sdk.messages.stream(**ask(system=cached_system())) as stream:
            for event in stream:
                if event.type == "message_start":
                    begun.set()
            results[name] = stream.get_final_message()

    together = [threading.Thread(target=streamed, args=(name,)) for name in ("a", "b")]
    for thread in together:
        thread.start()
    assert begun.wait(5)
    late = threading.Thread(target=streamed, args=("c",))
    late.start()
    for thread in [*together, late]:
        thread.join(10)
    assert results["a"].usage.cache_creation_input_tokens > 0 and results["b"].usage.cache_creation_input_tokens > 0
    assert results["c"].usage.cache_creation_input_tokens == 0 and results["c"].usage.cache_read_input_tokens > 0


def test_cache_lifetime_scales_with_time(client) -> None:
    sdk, _ = client("--time-scale", "600")  # 5 minutes become 0.5 s
    assert sdk.messages.create(**ask(system=cached_system())).usage.cache_creation_input_tokens > 0
    assert sdk.messages.create(**ask(system=cached_system())).usage.cache_read_input_tokens > 0
    time.sleep(0.6)  # the lifetime itself is what is tested: it must pass
    assert sdk.messages.create(**ask(system=cached_system())).usage.cache_creation_input_tokens > 0


def test_spend_limit_429_has_no_retry_after_and_keeps_failing(client) -> None:
    sdk, server = client("--fault-first", "500:1", "--fault-first", "spend_limit:1")
    raw = sdk.with_options(max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        raw.messages.create(**ask())
    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError) as caught:
            raw.messages.create(**ask())
        assert caught.value.response.headers.get("retry-after") is None
        assert caught.value.body["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    with pytest.raises(anthropic.RateLimitError):
        raw.messages.batches.create(requests=[{"custom_id": "a", "params": ask()}])
    assert [r["status"] for r in server.requests()] == [500, 429, 429, 429]


def test_count_tokens_counts_as_a_request_would(client) -> None:
    sdk, _ = client()
    body = ask(system=cached_system())
    counted = sdk.messages.count_tokens(model=body["model"], system=body["system"], messages=body["messages"])
    answered = sdk.messages.create(**body).usage
    total = answered.input_tokens + answered.cache_creation_input_tokens + answered.cache_read_input_tokens
    assert abs(counted.input_tokens - total) <= 2


def test_replay_answers_a_basket_files_phrases_first(client, tmp_path: Path) -> None:
    phrases = [["Hablo español.", "I speak Spanish."], ["No quiero hablar.", "I don't want to talk."]]
    replay = tmp_path / "earlier.json"
    replay.write_text(json.dumps({"S0028L04": {"lego": ["x", "y"], "e": phrases, "d": {}}}))
    sdk, server = client("--replay", str(replay))
    fmt = {"format": {"type": "json_schema", "schema": CLOSED}}
    first = sdk.messages.create(**ask(output_config=fmt))
    assert [[p["target"], p["known"]] for p in json.loads(first.content[-1].text)["phrases"]] == phrases
    other = sdk.messages.create(**ask("S0006L02", output_config=fmt))
    assert json.loads(other.content[-1].text)["phrases"] != [{"target": t, "known": k} for t, k in phrases]
    assert [r.get("replayed") for r in server.requests()] == [True, None]
