"""The ``anthropic`` backend: e-phrases from a model through the Messages API (SPEC §5).

Per basket, one conversation: the skill and the course vocabulary as a cached system prefix, a
user turn naming the LEGO, and a forced ``submit_e_phrases`` tool call. Every phrase is tiled;
failures go back with the validator's reasons for at most ``repair_rounds`` rounds and are then
dropped; :func:`worker.rules.build_basket` makes the basket, so nothing failing GATE leaves here.

:class:`Conversation` holds one basket's exchange independently of how requests travel, so the
Message Batches backend (issue 7) can drive the same prompts, prefix and repair path.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.constants import E_PHRASES_MAX, RECENCY_MIN_POSITION, RECENCY_TARGET
from worker.course import Course, LegoContext
from worker.generators import GeneratorOptions, require_api_key
from worker.generators.base import GeneratedBasket, GenerationError, Usage
from worker.generators.skill import skill_text
from worker.models import Pair
from worker.rules import CheckedPhrase, Rejection, build_basket, check_phrase, phrase_words
from worker.tiler import normalise_phrase

TOOL_NAME = "submit_e_phrases"

#: The forced tool: its input is the only answer read (schemas/OUTPUT_FORMAT.md of the skill).
TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Submit the e-phrases of the operative LEGO, each a target phrase and its translation.",
    "input_schema": {
        "type": "object",
        "properties": {
            "phrases": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "target": {"type": "string", "description": "the phrase in the target language"},
                        "known": {"type": "string", "description": "its natural translation in the known language"},
                    },
                    "required": ["target", "known"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["phrases"],
        "additionalProperties": False,
    },
}
TOOL_CHOICE: dict[str, str] = {"type": "tool", "name": TOOL_NAME}
#: For models that refuse a forced tool call (those that think by default answer 400): the model
#: may then answer prose, which the repair rounds already handle.
TOOL_CHOICE_AUTO: dict[str, str] = {"type": "auto"}
CACHED: dict[str, str] = {"type": "ephemeral"}

#: Candidates asked for: more than a basket keeps, so a few failures cost no repair round.
CANDIDATES = (5, 8)
#: Longest validator reason or error text quoted back to the model or into a note.
MAX_REASON = 300


class EPhrase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    known: str


class ToolInput(BaseModel):
    """The tool input, parsed as data (never executed)."""

    model_config = ConfigDict(extra="forbid")
    phrases: list[EPhrase] = Field(max_length=20)


# -- the prompt ------------------------------------------------------------------------------------


def vocabulary_lines(course: Course, start: int, stop: int) -> str:
    """``position | target | known`` lines for positions ``start..stop-1``."""
    return "\n".join(f"{lego.position} | {lego.target} | {lego.known}" for lego in course.legos[start - 1 : stop - 1])


def vocabulary_block(course: Course, prefix_upto: int) -> str:
    """The cached vocabulary: LEGOs at positions ``1..prefix_upto-1``. Depends on nothing else,
    so it is byte-identical for every request of an agent."""
    last = prefix_upto - 1
    head = (
        f"Course {course.code} ({course.source.target or course.language} for {course.source.known or '?'} speakers). "
        f"Vocabulary: the LEGOs at positions 1-{last}, one per line as position | target | known."
        if last >= 1
        else f"Course {course.code}: no LEGOs before position 1."
    )
    body = vocabulary_lines(course, 1, prefix_upto)
    return f"{head}\n{body}" if body else head


def user_prompt(ctx: LegoContext, prefix_upto: int) -> str:
    """The uncached part: the operative LEGO and what is specific to it."""
    course, n, lego, band = ctx.course, ctx.position, ctx.lego, ctx.band
    lines = [
        f"LEGO_ID: {lego.id}",
        f"Operative LEGO: position {n} | {lego.target} | {lego.known}",
        f"Available vocabulary: positions 1-{n - 1} (A = {n - 1}).",
    ]
    if prefix_upto < n:
        lines.append(f"Besides the vocabulary above, these LEGOs are available (positions {prefix_upto}-{n - 1}):")
        lines.append(vocabulary_lines(course, prefix_upto, n))
    recent = ctx.recent
    if n >= RECENCY_MIN_POSITION and len(recent):
        lo, hi = (round(x * 100) for x in RECENCY_TARGET)
        targets = " · ".join(course.legos[p - 1].target for p in recent)
        lines.append(
            f"Recency applies (N >= {RECENCY_MIN_POSITION}): recent LEGOs are positions"
            f" {recent.start}-{recent.stop - 1}"
            f" ({targets}); {lo}-{hi}% of your non-operative LEGO tiles should come from them."
        )
    else:
        lines.append(f"Recency does not apply (N < {RECENCY_MIN_POSITION}).")
    lines.append(f"Length band for A = {n - 1}: {band.min_words}-{band.max_words} words per target phrase.")
    if ctx.seed_pair is not None:
        lines.append(
            f"Culminating LEGO: e[0] must be the seed sentence, copied exactly: "
            f"target {ctx.seed_pair[0]!r}, known {ctx.seed_pair[1]!r}."
        )
    lo, hi = CANDIDATES
    lines.append(
        f"Write {lo} to {hi} candidate e-phrases (fewer if the vocabulary cannot support natural ones); code keeps"
        f" the best {E_PHRASES_MAX}. Answer only with a {TOOL_NAME} call."
    )
    return "\n".join(lines)


def system_blocks(course: Course, prefix_upto: int, vocabulary: str | None = None) -> list[dict[str, Any]]:
    """The stable prefix: the skill (shared by all agents) and the agent's vocabulary, each a
    cache breakpoint."""
    return [
        {"type": "text", "text": skill_text(), "cache_control": CACHED},
        {"type": "text", "text": vocabulary or vocabulary_block(course, prefix_upto), "cache_control": CACHED},
    ]


# -- one basket's conversation -----------------------------------------------------------------------


def _one_line(text: object, limit: int = MAX_REASON) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _block_param(block: Any) -> dict[str, Any] | None:
    """An answer's content block as a request param, to echo the assistant turn back."""
    if block.type == "text" and block.text:
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return None


class Conversation:
    """One basket's exchange: :meth:`params` is the next request, :meth:`take` reads its answer,
    :meth:`result` builds the validated basket. Transport-free, so batches can reuse it."""

    def __init__(
        self,
        ctx: LegoContext,
        prefix_upto: int,
        options: GeneratorOptions,
        system: list[dict[str, Any]],
        backend: str = "anthropic",
    ):
        self.ctx = ctx
        self.prefix_upto = prefix_upto
        self.options = options
        self.system = system
        self.backend = backend  # recorded in the journal: the cost report prices batches apart
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user_prompt(ctx, prefix_upto)}]
        self.accepted: list[CheckedPhrase] = []
        self.rejected: list[Rejection] = []
        self.usage = Usage()
        self.requests = 0
        self.repair_rounds = 0
        self.notes: list[str] = []
        self._seen = {normalise_phrase(ctx.seed_pair[0])} if ctx.seed_pair else set()

    def snapshot(self) -> dict[str, Any]:
        """The state between two requests, as JSON (the batch backend keeps it in its state file
        so a restarted worker can take the answer of a batch it re-attaches to). The system
        blocks are not in it: they are rebuilt from ``prefix_upto``, byte for byte."""
        return {
            "lego_id": self.ctx.lego.id,
            "prefix_upto": self.prefix_upto,
            "messages": self.messages,
            "accepted": [list(p.pair) for p in self.accepted],
            "rejected": [[list(r.pair), r.reason] for r in self.rejected],
            "usage": self.usage.to_json(),
            "requests": self.requests,
            "repair_rounds": self.repair_rounds,
            "notes": self.notes,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to a :meth:`snapshot`'s state; accepted phrases are checked again (the checks
        are deterministic, so they pass again and rebuild the tilings)."""
        self.messages = list(snapshot["messages"])
        self.rejected = [Rejection((pair[0], pair[1]), reason) for pair, reason in snapshot["rejected"]]
        self.usage = Usage.from_json(snapshot["usage"])
        self.requests = int(snapshot["requests"])
        self.repair_rounds = int(snapshot["repair_rounds"])
        self.notes = list(snapshot["notes"])
        for target, known in snapshot["accepted"]:
            self._check((target, known), set())

    @property
    def wanted(self) -> int:
        """Phrases still wanted to fill the basket (the seed sentence takes one place)."""
        return E_PHRASES_MAX - (1 if self.ctx.seed_pair else 0) - len(self.accepted)

    def params(self, forced: bool = True) -> dict[str, Any]:
        """The request body (also the ``params`` of a batch request)."""
        body: dict[str, Any] = {
            "model": self.options.model,
            "max_tokens": self.options.max_tokens,
            "system": self.system,
            "tools": [TOOL],
            "tool_choice": TOOL_CHOICE if forced else TOOL_CHOICE_AUTO,
            "messages": list(self.messages),
        }
        if self.options.temperature is not None:
            body["temperature"] = self.options.temperature
        return body

    def take(self, message: Any) -> bool:
        """Read one answer; True when a repair round should follow (its turn is then appended)."""
        self.requests += 1
        self.usage = self.usage + _usage(message)
        round_name = f"round {self.requests}"
        uses = [b for b in message.content if b.type == "tool_use"]
        echoed = [p for p in map(_block_param, message.content) if p is not None]
        problem: str | None = None
        failures: list[Rejection] = []
        if not any(b.name == TOOL_NAME for b in uses):
            problem = f"the answer was prose, not a {TOOL_NAME} call"
            self.notes.append(f"{round_name}: prose instead of the tool call")
        else:
            try:
                inputs = [ToolInput.model_validate(b.input) for b in uses if b.name == TOOL_NAME]
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(map(str, error["loc"])) or "input"
                cut = " (the answer was cut at max_tokens)" if message.stop_reason == "max_tokens" else ""
                problem = f"the tool input does not fit the schema: {where}: {error['msg']}{cut}"
                self.notes.append(f"{round_name}: malformed tool input ({_one_line(where, 60)})")
            else:
                kept_before = set(self._seen)
                for phrase in (p for tool_input in inputs for p in tool_input.phrases):
                    failure = self._check((phrase.target, phrase.known), kept_before)
                    if failure is not None:
                        failures.append(failure)
                if failures:
                    self.notes.append(f"{round_name}: {len(failures)} phrase(s) failed the checks")
        self.rejected.extend(failures)
        failed = problem is not None or bool(failures)
        if not failed or self.wanted <= 0:
            return False
        if self.repair_rounds >= self.options.repair_rounds:
            self.notes.append(f"dropped what still failed after {self.repair_rounds} repair round(s)")
            return False
        self.repair_rounds += 1
        self._append_repair(echoed, uses, problem, failures)
        return True

    def _check(self, pair: Pair, kept_before: set[str]) -> Rejection | None:
        """GATE, more than the LEGO alone, and not a repeat within the answer; keeps the phrase
        when it passes. The seed sentence and phrases kept in earlier rounds are skipped: the
        skill lets the model resend its whole list."""
        norm = normalise_phrase(pair[0])
        if norm in kept_before:
            return None
        result = check_phrase(self.ctx.course, self.ctx.position, pair)
        if isinstance(result, Rejection):
            return result
        if result.tiles < 2:
            return Rejection(pair, "only the LEGO itself: combine it with available LEGOs")
        if norm in self._seen:
            return Rejection(pair, "same as another e-phrase of this basket")
        self._seen.add(norm)
        self.accepted.append(result)
        return None

    def _append_repair(
        self, echoed: list[dict[str, Any]], uses: Sequence[Any], problem: str | None, failures: list[Rejection]
    ) -> None:
        kept = len(self.accepted)
        if problem is not None:
            shape = '{"phrases": [{"target": ..., "known": ...}]}'
            text = f"Not accepted: {problem}. Call {TOOL_NAME} again with {shape}."
        else:
            listed = "\n".join(
                f"{i}. {f.pair[0]!r} / {f.pair[1]!r}: {_one_line(f.reason)}" for i, f in enumerate(failures, 1)
            )
            text = (
                f"{kept} phrase(s) passed and are kept. These failed:\n{listed}\n"
                f"Call {TOOL_NAME} again with up to {self.wanted} replacement phrase(s) only (not the kept ones):"
                " use whole LEGOs from the vocabulary plus the operative LEGO; leave out what you cannot fix."
            )
        # Every tool_use needs a tool_result in the next user turn; the first carries the reasons.
        content: list[dict[str, Any]] = [
            {
                "type": "tool_result",
                "tool_use_id": b.id,
                "content": text if i == 0 else "See the first result.",
                **({"is_error": True} if problem is not None else {}),
            }
            for i, b in enumerate(uses)
        ]
        if not content:
            content = [{"type": "text", "text": text}]
        self.messages.append({"role": "assistant", "content": echoed or [{"type": "text", "text": "(no answer)"}]})
        self.messages.append({"role": "user", "content": content})

    def result(self) -> GeneratedBasket:
        """The validated basket from the best accepted phrases."""
        room = E_PHRASES_MAX - (1 if self.ctx.seed_pair else 0)
        chosen = choose(self.ctx, self.accepted, room)
        built = build_basket(self.ctx, [p.pair for p in chosen])
        return GeneratedBasket(
            lego_id=self.ctx.lego.id,
            basket=built.basket,
            usage=self.usage,
            requests=self.requests,
            repair_rounds=self.repair_rounds,
            rejected=self.rejected + built.rejected,
            notes=self.notes,
            backend=self.backend,
            model=self.options.model,
        )


def choose(ctx: LegoContext, phrases: list[CheckedPhrase], k: int) -> list[CheckedPhrase]:
    """The best ``k`` phrases: most in the length band, then recency share nearest its target
    (from N >= 50), then the model's own order. At most C(20, 5) subsets, usually C(8, 5)."""
    if len(phrases) <= k:
        return list(phrases)
    band, course = ctx.band, ctx.course
    recent, op = ctx.recent, ctx.position
    in_band = [band.contains(phrase_words(course, p.pair)) for p in phrases]
    tiles = [[q for q in p.positions if q != op] for p in phrases]
    lo, hi = RECENCY_TARGET

    def score(combo: tuple[int, ...]) -> tuple[int, float, int]:
        distance = 0.0
        if op >= RECENCY_MIN_POSITION:
            total = sum(len(tiles[i]) for i in combo)
            share = sum(q in recent for i in combo for q in tiles[i]) / total if total else 0.0
            distance = max(lo - share, share - hi, 0.0)
        return (sum(in_band[i] for i in combo), -distance, -sum(combo))

    best = max(itertools.combinations(range(len(phrases)), k), key=score)
    return [phrases[i] for i in best]


def _usage(message: Any) -> Usage:
    usage = getattr(message, "usage", None)
    if usage is None:
        return Usage()
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
    )


# -- the generator ------------------------------------------------------------------------------------

#: HTTP attempts of the current call, recorded by the client middleware (one list per thread).
_ATTEMPTS: ContextVar[list[str] | None] = ContextVar("phase5_attempts", default=None)


def _record_attempts(request: Any, call_next: Any) -> Any:
    """Client middleware, run once per HTTP attempt inside the SDK's retry loop: notes every
    failed attempt, so the SDK's own retries are counted in the basket's notes."""
    seen = _ATTEMPTS.get()
    try:
        response = call_next(request)
    except anthropic.APITimeoutError:
        if seen is not None:
            seen.append("timeout")
        raise
    except anthropic.APIConnectionError:
        if seen is not None:
            seen.append("connection error")
        raise
    if seen is not None and response.status_code >= 400:
        seen.append(str(response.status_code))
    return response


class AnthropicGenerator:
    """:class:`~worker.generators.base.Generator` on the Messages API; thread-safe."""

    name = "anthropic"

    def __init__(self, course: Course, options: GeneratorOptions) -> None:
        require_api_key(self.name)
        self.course = course
        self.options = options
        _ = course.tiler  # build the shared tiler once, before threads use it
        # The key is passed explicitly so the SDK reads no other credential (profiles, tokens);
        # the base URL comes from ANTHROPIC_BASE_URL, which the SDK reads itself.
        self._client = anthropic.Anthropic(
            api_key=os.environ["ANTHROPIC_API_KEY"],
            max_retries=options.max_retries,
            timeout=options.timeout,
            middleware=[_record_attempts],
        )
        self._vocabulary: dict[int, str] = {}
        self._lock = threading.Lock()
        self._forced_tool = True  # until the model refuses a forced tool call

    def system(self, prefix_upto: int) -> list[dict[str, Any]]:
        """The cached system blocks for an agent starting at ``prefix_upto`` (built once each)."""
        with self._lock:
            text = self._vocabulary.get(prefix_upto)
            if text is None:
                text = self._vocabulary[prefix_upto] = vocabulary_block(self.course, prefix_upto)
        return system_blocks(self.course, prefix_upto, text)

    def conversation(self, ctx: LegoContext, prefix_upto: int | None = None) -> Conversation:
        upto = ctx.position if prefix_upto is None else max(1, min(prefix_upto, ctx.position))
        return Conversation(ctx, upto, self.options, self.system(upto), backend=self.name)

    def generate(self, ctx: LegoContext, prefix_upto: int | None = None) -> GeneratedBasket:
        conversation = self.conversation(ctx, prefix_upto)
        if ctx.position == 1:
            # Nothing to combine LEGO #1 with: its basket is empty (or the seed), no request.
            conversation.notes.append("no available vocabulary: no request")
            return conversation.result()
        while True:
            message = self._send(ctx, conversation)
            if not conversation.take(message):
                return conversation.result()

    def _send(self, ctx: LegoContext, conversation: Conversation) -> Any:
        attempts: list[str] = []
        token = _ATTEMPTS.set(attempts)
        try:
            message = self._create(conversation)
        except anthropic.APIStatusError as exc:
            if exc.status_code == 400 and self._forced_tool and "tool_choice" in str(exc):
                self._forced_tool = False  # for every later request of this run too
                conversation.notes.append("the model refused a forced tool call: tool_choice auto from now on")
                return self._send(ctx, conversation)
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            kind = f" {error.get('type')}" if isinstance(error, dict) and error.get("type") else ""
            detail = error.get("message") if isinstance(error, dict) and error.get("message") else exc
            raise GenerationError(self._reason(ctx, f"API error {exc.status_code}{kind}", detail, attempts)) from None
        except anthropic.APITimeoutError as exc:
            raise GenerationError(self._reason(ctx, "API timeout", exc, attempts)) from None
        except anthropic.APIError as exc:
            raise GenerationError(self._reason(ctx, "API unreachable", exc, attempts)) from None
        finally:
            _ATTEMPTS.reset(token)
        for failure in attempts:
            conversation.notes.append(f"retried after {failure}")
        return message

    def _create(self, conversation: Conversation) -> Any:
        body = conversation.params(forced=self._forced_tool)
        # SDK 2.x has no ``temperature`` argument (newer models drop it); send it as body data.
        extra = {"temperature": body.pop("temperature")} if "temperature" in body else None
        return self._client.messages.create(**body, extra_body=extra)

    def _reason(self, ctx: LegoContext, what: str, exc: object, attempts: list[str]) -> str:
        tries = f" after {len(attempts)} attempt(s)" if attempts else ""
        detail = _one_line(getattr(exc, "message", None) or exc, 160)
        key = os.environ.get("ANTHROPIC_API_KEY")
        if key:
            detail = detail.replace(key, "[key]")  # an error text must never carry the key
        return f"{ctx.lego.id}: {what}{tries}: {detail}"

    def close(self) -> None:
        self._client.close()
