"""How the fake API treats each model id, as the real API does (for ``scripts/fake_anthropic.py``).

Written from the platform documentation on its own, not from the project's model table
(``worker/data/models.json``): the fake stands for the real API, so a wrong row in the project's
table shows up as 400s here instead of agreeing with itself.

Per model: whether a forced ``tool_choice`` is refused (400), whether non-default sampling
parameters are refused (400), whether structured output and strict tools are accepted, whether
the model thinks by default (answers start with a ``thinking`` block carrying a signature that
must come back unchanged before a ``tool_result`` turn, and thinking counts toward
``max_tokens``), the minimum cacheable prefix, and the tokenizer factor (tokens per 4 characters).
A model id not listed behaves as a permissive older model: everything accepted, no thinking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any


class RequestRefused(Exception):
    """A 400 ``invalid_request_error`` with this message."""


@dataclass(frozen=True)
class Behaviour:
    forced_tool: bool = True
    sampling: bool = True
    structured_output: bool = True
    strict_tools: bool = True
    thinks: bool = False
    min_cache_tokens: int | None = None  # None: the server's --min-cache-tokens
    tokenizer: float = 1.0


#: The documented behaviour of today's models (platform docs, 2026-11).
BEHAVIOURS: dict[str, Behaviour] = {
    "claude-sonnet-5-5": Behaviour(forced_tool=False, sampling=False, thinks=True, min_cache_tokens=512, tokenizer=1.3),
    "claude-opus-5-5": Behaviour(forced_tool=False, sampling=False, thinks=True, min_cache_tokens=512, tokenizer=1.3),
    "claude-haiku-5-5": Behaviour(forced_tool=False, sampling=False, thinks=True, min_cache_tokens=512, tokenizer=1.3),
    "claude-sonnet-5": Behaviour(forced_tool=True, sampling=False, thinks=True, min_cache_tokens=1024, tokenizer=1.3),
    "claude-haiku-4-5": Behaviour(forced_tool=True, sampling=True, thinks=False, min_cache_tokens=4096, tokenizer=1.0),
    "claude-sonnet-4-5": Behaviour(forced_tool=True, sampling=True, thinks=False, min_cache_tokens=1024, tokenizer=1.0),
}
PERMISSIVE = Behaviour()

#: JSON-schema keywords structured output and strict tools refuse.
UNSUPPORTED_KEYWORDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "maxItems",
)
_SECRET = b"phase5-fake-thinking"


def behaviour(model: str) -> Behaviour:
    return BEHAVIOURS.get(model, PERMISSIVE)


def signature(model: str, thinking: str) -> str:
    """A thinking block's signature: bound to the model and the text, as the real one is."""
    digest = hmac.new(_SECRET, f"{model}\x00{thinking}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def check_request(body: dict[str, Any], model: str, refuse_forced: bool = False) -> str:
    """Refuse (:class:`RequestRefused`) what the model refuses; else the answer's shape:
    ``"json"`` (structured output), ``"forced_tool"``, ``"auto_tool"`` or ``"text"`` (no tools),
    with ``"+strict"`` when the tool is strict."""
    how = behaviour(model)
    _check_sampling(body, model, how)
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if fmt is not None:
        if not how.structured_output:
            raise RequestRefused(f"output_config.format: {model} does not support structured outputs")
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise RequestRefused('output_config.format: expected {"type": "json_schema", "schema": {...}}')
        _check_schema(fmt["schema"], "output_config.format.schema")
    tools = body.get("tools") or []
    strict = False
    for index, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("strict"):
            if not how.strict_tools:
                raise RequestRefused(f"tools.{index}.strict: {model} does not support strict tools")
            _check_schema(tool.get("input_schema") or {}, f"tools.{index}.input_schema")
            strict = True
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    forced = kind in ("tool", "any")
    if forced and (refuse_forced or not how.forced_tool):
        raise RequestRefused(
            f"tool_choice: forced tool use is not supported with {model} (thinking); use tool_choice auto"
            " or structured outputs (fake)"
        )
    _check_breakpoints(body)
    _check_thinking(body, model, how)
    if fmt is not None:
        return "json"
    if not tools or kind == "none":
        return "text"
    return ("forced_tool" if forced else "auto_tool") + ("+strict" if strict else "")


def _check_sampling(body: dict[str, Any], model: str, how: Behaviour) -> None:
    if how.sampling:
        return
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1.0:
        raise RequestRefused(f"temperature: {model} accepts only the default sampling parameters")
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            raise RequestRefused(f"{name}: {model} accepts only the default sampling parameters")


def _check_schema(schema: Any, where: str) -> None:
    """What structured outputs require of a schema: every object closed, no bounds."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            _check_schema(item, f"{where}.{i}")
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        raise RequestRefused(f"{where}: additionalProperties must be false for every object")
    for keyword in UNSUPPORTED_KEYWORDS:
        if keyword in schema:
            raise RequestRefused(f"{where}: {keyword} is not supported")
    if schema.get("minItems", 0) not in (0, 1):
        raise RequestRefused(f"{where}: minItems other than 0 or 1 is not supported")
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                _check_schema(sub, f"{where}.{key}.{name}")
        elif key in ("items", "anyOf", "allOf", "oneOf"):
            _check_schema(value, f"{where}.{key}")


def cache_controls(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    system = body.get("system")
    blocks: list[Any] = list(body.get("tools") or []) + (system if isinstance(system, list) else [])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks.extend(content)
    for block in blocks:
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
            found.append(block["cache_control"])
    return found


def _check_breakpoints(body: dict[str, Any]) -> None:
    controls = cache_controls(body)
    if len(controls) > 4:
        raise RequestRefused(f"cache_control: at most 4 blocks may have it, this request has {len(controls)}")
    for control in controls:
        if control.get("type") != "ephemeral" or control.get("ttl", "5m") not in ("5m", "1h"):
            raise RequestRefused('cache_control: expected {"type": "ephemeral"} with ttl "5m" or "1h"')


def _check_thinking(body: dict[str, Any], model: str, how: Behaviour) -> None:
    """Thinking blocks sent back must be this model's, unchanged; on a model that thinks, an
    assistant turn answered by a ``tool_result`` must still hold its thinking blocks."""
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "thinking":
                text, sig = block.get("thinking"), block.get("signature")
                if not isinstance(text, str) or sig != signature(model, text):
                    raise RequestRefused(
                        f"messages.{index}.content: invalid signature in thinking block (changed, or from another"
                        " model or conversation)"
                    )
        following = messages[index + 1] if index + 1 < len(messages) else None
        answers_tool = isinstance(following, dict) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in following.get("content") or []
        )
        has_tool_use = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks)
        has_thinking = any(isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in blocks)
        if how.thinks and answers_tool and has_tool_use and not has_thinking:
            raise RequestRefused(
                f"messages.{index}.content: with thinking, an assistant turn whose tool use is answered must"
                " start with its thinking blocks, sent back unchanged"
            )


def thinking_text(topic: str, tokens: int, factor: float) -> str:
    """Deterministic filler of about ``tokens`` tokens for the fake model's thinking."""
    sentence = f"Checking which available LEGOs combine naturally with {topic}. "
    chars = max(1, int(tokens * 4 / factor))
    return (sentence * (chars // len(sentence) + 1))[:chars]
