"""The ``anthropic`` backend: e-phrases from a model through the Messages API (docs/DESIGN.md §5).

Per basket, one conversation: the skill and the course vocabulary as a cached system prefix, a
user turn naming the LEGO, and an answer that is one JSON object ``{"phrases": [{"target",
"known"}]}``. Every request is built from the model table (:mod:`worker.generators.model_table`):
structured output (``output_config.format``) where the model has it, else a tool (strict where
the model has strict tools, forced only where a forced ``tool_choice`` is accepted); sampling
parameters only where accepted; ``max_tokens`` with room for thinking on models that think by
default. Answers are read by content block type (thinking, text, tool_use); every phrase is tiled;
failures go back with the validator's reasons for at most ``repair_rounds`` rounds (the assistant
content sent back unchanged, thinking blocks and their signatures included) and are then
dropped; :func:`worker.rules.build_basket` makes the basket, so nothing failing GATE leaves here.

Requests stream, so the moment an answer begins is known: the first request of a cached prefix
goes alone and the others wait for its answer to begin (:mod:`worker.generators.prefix_gate`),
so each prefix is written once. A spend-limit answer is never retried: it raises
:class:`~worker.generators.base.SpendLimitReached`, which stops the worker cleanly (exit 4).

:class:`Conversation` holds one basket's exchange independently of how requests travel, so the
Message Batches backend drives the same prompts, prefix and repair path.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from contextvars import ContextVar
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.align import find_piece
from worker.constants import E_PHRASES_MAX, RECENCY_MIN_POSITION, RECENCY_TARGET
from worker.course import Course, LegoContext
from worker.generators import GeneratorOptions, check_backend
from worker.generators.base import Cancelled, GeneratedBasket, GenerationError, SpendLimitReached, Usage
from worker.generators.hedging import Hedger, Race
from worker.generators.model_table import ModelCaps, model_caps
from worker.generators.pacing import Cost, Pacer
from worker.generators.prefix_gate import PrefixGate, Turn
from worker.generators.skill import skill_text
from worker.models import Pair
from worker.rules import BuiltBasket, CheckedPhrase, Rejection, build_basket, check_phrase, phrase_words
from worker.tiler import normalise_phrase

TOOL_NAME = "submit_e_phrases"

#: The answer's shape (schemas/OUTPUT_FORMAT.md of the skill): the structured-output schema, and
#: the tool's input schema where the answer travels as a tool call. Only what structured output
#: accepts: ``additionalProperties: false``, no length or count bounds.
OUTPUT_SCHEMA: dict[str, Any] = {
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
}
TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Submit the e-phrases of the operative LEGO, each a target phrase and its translation.",
    "input_schema": OUTPUT_SCHEMA,
}
TOOL_CHOICE_FORCED: dict[str, str] = {"type": "tool", "name": TOOL_NAME}
TOOL_CHOICE_AUTO: dict[str, str] = {"type": "auto"}

#: Output tokens for the answer itself (5-8 phrases as JSON need ~300-500), and the room added
#: for adaptive thinking on models that think by default (thinking counts toward max_tokens).
ANSWER_TOKENS = 1024
THINKING_TOKENS = 8192
#: Once this many answers are seen, a model that thinks by default is asked for 1.5 times the
#: largest output seen (at least MIN_OUTPUT_ROOM) instead of the whole room: the API reserves
#: max_tokens of the output-tokens rate limit for each request until its answer ends, so asking for
#: far more than answers take caps how many requests fit in flight. Each cut answer doubles the
#: margin (up to the whole room).
LEARN_OUTPUT_AFTER = 5
OUTPUT_MARGIN = 1.5
MIN_OUTPUT_ROOM = 1024
#: Cache lifetimes by TTL name, in seconds.
CACHE_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
#: Characters per token of the estimate that places cache breakpoints (the tokenizer factor of the
#: model table scales it).
CHARS_PER_TOKEN = 4

#: Candidates asked for: more than a basket keeps, so a few failures cost no repair round.
CANDIDATES = (5, 8)
#: Longest validator reason or error text quoted back to the model or into a note.
MAX_REASON = 300
#: Most d windows asked about in the one request for their known sides.
MAX_WINDOWS = 20


class EPhrase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    known: str


class Answer(BaseModel):
    """The answer's JSON, parsed as data (never executed)."""

    model_config = ConfigDict(extra="forbid")
    phrases: list[EPhrase] = Field(max_length=20)


# -- the prompt ------------------------------------------------------------------------------------


def request_max_tokens(options: GeneratorOptions, caps: ModelCaps) -> int:
    """``--max-tokens``, or room for the answer plus, on a model that thinks by default, for its
    thinking (which counts toward ``max_tokens``: too little and the answer is cut)."""
    if options.max_tokens is not None:
        return options.max_tokens
    return ANSWER_TOKENS + (THINKING_TOKENS if caps.thinking_default else 0)


def estimate_tokens(text: str, caps: ModelCaps) -> int:
    """Tokens of ``text`` for this model: characters / 4 times the model's tokenizer factor."""
    return math.ceil(len(text) / CHARS_PER_TOKEN * caps.tokenizer_factor) if text else 0


def course_line(course: Course) -> str:
    """How the prompt names the course and its languages (one line)."""
    unspaced = "" if course.spaced else f" {course.target_language.name} is written without spaces between words."
    return f"Course {course.code}: {course.description}.{unspaced}"


def vocabulary_lines(course: Course, start: int, stop: int) -> str:
    """``position | target | known`` lines for positions ``start..stop-1``."""
    return "\n".join(f"{lego.position} | {lego.target} | {lego.known}" for lego in course.legos[start - 1 : stop - 1])


def vocabulary_block(course: Course, prefix_upto: int) -> str:
    """The cached vocabulary: LEGOs at positions ``1..prefix_upto-1``. Depends on nothing else,
    so it is byte-identical for every request of an agent."""
    last = prefix_upto - 1
    head = (
        f"{course_line(course)} Vocabulary: the LEGOs at positions 1-{last}, one per line as position | target | known."
        if last >= 1
        else f"{course_line(course)} No LEGOs before position 1."
    )
    body = vocabulary_lines(course, 1, prefix_upto)
    return f"{head}\n{body}" if body else head


def answer_instruction(caps: ModelCaps) -> str:
    """The last line of a user turn: how the answer travels for this model."""
    if caps.output_mode == "json_schema":
        return 'Answer only with the JSON object {"phrases": [...]}.'
    return f"Answer only with a {TOOL_NAME} call."


def user_prompt(ctx: LegoContext, prefix_upto: int, caps: ModelCaps | None = None) -> str:
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
        f" the best {E_PHRASES_MAX}. {answer_instruction(caps or model_caps(GeneratorOptions().model))}"
    )
    return "\n".join(lines)


def tools_for(caps: ModelCaps) -> list[dict[str, Any]]:
    """The tools of a request (none with structured output)."""
    if caps.output_mode == "json_schema":
        return []
    return [{**TOOL, "strict": True} if caps.strict_tools else TOOL]


def system_blocks(
    course: Course, prefix_upto: int, caps: ModelCaps, ttl: str = "5m", vocabulary: str | None = None
) -> list[dict[str, Any]]:
    """The stable prefix: the skill (shared by all agents), then the agent's vocabulary.

    A cache breakpoint caches the whole prefix before it, and only when that prefix reaches the
    model's minimum (shorter is silently not cached). So the skill gets its own breakpoint only
    when it reaches the minimum alone (then agents share it); the vocabulary's breakpoint covers
    skill and vocabulary together, merged, whenever they reach it; below it, no breakpoint."""
    skill = skill_text()
    vocabulary = vocabulary or vocabulary_block(course, prefix_upto)
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
    tools = sum(estimate_tokens(json.dumps(t), caps) for t in tools_for(caps))
    skill_tokens = tools + estimate_tokens(skill, caps)
    whole = skill_tokens + estimate_tokens(vocabulary, caps)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": skill}, {"type": "text", "text": vocabulary}]
    if skill_tokens >= caps.min_cache_tokens:
        blocks[0]["cache_control"] = control
    if whole >= caps.min_cache_tokens:
        blocks[1]["cache_control"] = control
    return blocks


def cache_keys(system: list[dict[str, Any]], prefix_upto: int) -> list[Hashable]:
    """The gate's keys of a request's cached prefixes: the skill's, then the agent's."""
    keys: list[Hashable] = []
    if system and "cache_control" in system[0]:
        keys.append(("skill",))
    if len(system) > 1 and "cache_control" in system[1]:
        keys.append(("agent", prefix_upto))
    return keys


# -- one basket's conversation -----------------------------------------------------------------------


def _one_line(text: object, limit: int = MAX_REASON) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _block_param(block: Any) -> dict[str, Any]:
    """An answer's content block as a request param, unchanged, to send the assistant turn back
    (a thinking block must keep its text and signature byte for byte)."""
    kind = block.type
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return dict(block.to_dict())


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
        caps: ModelCaps | None = None,
    ):
        self.ctx = ctx
        self.prefix_upto = prefix_upto
        self.options = options
        self.caps = caps or model_caps(options.model)
        self.system = system
        self.backend = backend  # recorded in the journal: the cost report prices batches apart
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user_prompt(ctx, prefix_upto, self.caps)}]
        self.accepted: list[CheckedPhrase] = []
        self.rejected: list[Rejection] = []
        self.usage = Usage()
        self.interactive_usage: Usage | None = None  # the batch backend's warm-up request
        self.requests = 0
        self.repair_rounds = 0
        self.first_answer_kept: int | None = None  # phrases the first answer alone gave
        self.notes: list[str] = []
        # After the phrases, at most once: the d windows alignment left without a known side,
        # with the e-phrase translation each was cut from, and the pieces the model pointed out.
        self.phase = "phrases"
        self.windows_asked: dict[str, str] = {}  # window target -> its e-phrase's known side
        self.filled: dict[str, str] = {}  # window target -> a piece of that known side, as written
        self._seen = {normalise_phrase(ctx.seed_pair[0])} if ctx.seed_pair else set()

    @property
    def cache_keys(self) -> list[Hashable]:
        return cache_keys(self.system, self.prefix_upto)

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
            **({"interactive_usage": self.interactive_usage.to_json()} if self.interactive_usage else {}),
            "requests": self.requests,
            "repair_rounds": self.repair_rounds,
            "first_answer_kept": self.first_answer_kept,
            "notes": self.notes,
            "phase": self.phase,
            "windows_asked": self.windows_asked,
            "filled": self.filled,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to a :meth:`snapshot`'s state; accepted phrases are checked again (the checks
        are deterministic, so they pass again and rebuild the tilings)."""
        self.messages = list(snapshot["messages"])
        self.rejected = [Rejection((pair[0], pair[1]), reason) for pair, reason in snapshot["rejected"]]
        self.usage = Usage.from_json(snapshot["usage"])
        interactive = snapshot.get("interactive_usage")
        self.interactive_usage = Usage.from_json(interactive) if interactive else None
        self.requests = int(snapshot["requests"])
        self.repair_rounds = int(snapshot["repair_rounds"])
        kept = snapshot.get("first_answer_kept")
        self.first_answer_kept = int(kept) if kept is not None else None
        self.notes = list(snapshot["notes"])
        self.phase = str(snapshot.get("phase") or "phrases")
        self.windows_asked = dict(snapshot.get("windows_asked") or {})
        self.filled = dict(snapshot.get("filled") or {})
        for target, known in snapshot["accepted"]:
            self._check((target, known), set())

    @property
    def wanted(self) -> int:
        """Phrases still wanted to fill the basket (the seed sentence takes one place)."""
        return E_PHRASES_MAX - (1 if self.ctx.seed_pair else 0) - len(self.accepted)

    def params(self) -> dict[str, Any]:
        """The request body (also the ``params`` of a batch request), built from the model table."""
        caps = self.caps
        body: dict[str, Any] = {
            "model": self.options.model,
            "max_tokens": request_max_tokens(self.options, caps),
            "system": self.system,
            "messages": list(self.messages),
        }
        if caps.output_mode == "json_schema":
            body["output_config"] = {"format": {"type": "json_schema", "schema": OUTPUT_SCHEMA}}
        else:
            body["tools"] = tools_for(caps)
            body["tool_choice"] = TOOL_CHOICE_FORCED if caps.forced_tool_choice else TOOL_CHOICE_AUTO
        if self.options.temperature is not None and caps.sampling_params:
            body["temperature"] = self.options.temperature
        return body

    def take(self, message: Any) -> bool:
        """Read one answer; True when another request should follow (a repair round, or the one
        asking for the known sides of d windows; its turn is then appended)."""
        self.requests += 1
        self.usage = self.usage + usage_of(message)
        round_name = f"round {self.requests}"
        blocks = list(message.content)
        uses = [b for b in blocks if b.type == "tool_use"]
        problem, answers = self._read(message, blocks, uses, round_name)
        if self.phase == "windows":
            self._take_windows(problem, answers)
            return False
        failures: list[Rejection] = []
        kept_before = set(self._seen)
        for phrase in (p for answer in answers for p in answer.phrases):
            failure = self._check((phrase.target, phrase.known), kept_before)
            if failure is not None:
                failures.append(failure)
        if failures:
            self.notes.append(f"{round_name}: {len(failures)} phrase(s) failed the checks")
        if self.first_answer_kept is None:
            self.first_answer_kept = len(self.accepted)
        self.rejected.extend(failures)
        failed = problem is not None or bool(failures)
        if not failed or self.wanted <= 0:
            return self._ask_windows(blocks, uses)
        if self.repair_rounds >= self.options.repair_rounds:
            self.notes.append(f"dropped what still failed after {self.repair_rounds} repair round(s)")
            return self._ask_windows(blocks, uses)
        self.repair_rounds += 1
        self._append_turn(blocks, uses, self._repair_text(problem, failures), is_error=problem is not None)
        return True

    def _ask_windows(self, blocks: list[Any], uses: Sequence[Any]) -> bool:
        """When the basket's phrases leave d windows whose known side alignment cannot find (the
        translation reorders, or does not use a LEGO's gloss), one short request asks the model
        to point out, in its own translation, the words that render each; True when asked. The
        answers are taken only as unbroken pieces of that translation (:meth:`_take_windows`)."""
        if not self.options.fill_windows or not self.accepted:
            return False
        built = self._built()
        asked: dict[str, str] = {}
        for window in built.left_out:
            if window.target is not None and len(asked) < MAX_WINDOWS:
                asked.setdefault(window.target, built.phrases[window.phrase].pair[1])
        if not asked:
            return False
        self.phase, self.windows_asked = "windows", asked
        listed = "\n".join(
            f"{i}. {t!r}, from the phrase you translated {k!r}" for i, (t, k) in enumerate(asked.items(), 1)
        )
        text = (
            f"Your phrases are kept. Code cut these pieces out of them for short practice, but cannot tell which"
            f" words of your translation render each:\n{listed}\nPlease {self._how()}, one object per piece:"
            ' "target" the piece exactly as listed, "known" the words of your translation that render it, copied'
            " as one unbroken piece of that translation, exactly as written there. Leave out a piece that no"
            " unbroken piece of your translation renders. Write no new phrases."
        )
        self._append_turn(blocks, uses, text, is_error=False)
        return True

    def _take_windows(self, problem: str | None, answers: list[Answer]) -> None:
        """The model's known sides for the windows asked about, each kept only as an unbroken
        piece of the translation its window was cut from (as written there): never new text."""
        if problem is not None:
            self.notes.append(f"window known sides not used: {_one_line(problem, 120)}")
            return
        known = self.ctx.course.known_language
        for phrase in (p for answer in answers for p in answer.phrases):
            sentence = self.windows_asked.get(phrase.target)
            piece = find_piece(sentence, phrase.known, known.spaced, known.code) if sentence else None
            if piece is not None:
                self.filled[phrase.target] = piece
        self.notes.append(f"known sides of {len(self.filled)}/{len(self.windows_asked)} d window(s) from the model")

    def _read(
        self, message: Any, blocks: list[Any], uses: list[Any], round_name: str
    ) -> tuple[str | None, list[Answer]]:
        """The answer's JSON objects, or what is wrong with the answer (a repair's reason), by
        content block type: thinking blocks are the model's own and skipped here."""
        stop = message.stop_reason
        if stop == "refusal":
            self.notes.append(f"{round_name}: the model refused (stop_reason refusal)")
            return "the answer stopped as a refusal; these are language-practice phrases", []
        cut = " (the answer was cut at max_tokens)" if stop == "max_tokens" else ""
        if cut:
            self.notes.append(f"{round_name}: cut at max_tokens")
        if self.caps.output_mode == "json_schema":
            text = "".join(b.text for b in blocks if b.type == "text")
            try:
                return None, [Answer.model_validate_json(text)]
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(map(str, error["loc"])) or "answer"
                if not cut:
                    self.notes.append(f"{round_name}: malformed JSON answer ({_one_line(where, 60)})")
                return f"the answer is not the JSON object asked for: {where}: {error['msg']}{cut}", []
        ours = [b for b in uses if b.name == TOOL_NAME]
        if not ours:
            if not cut:
                self.notes.append(f"{round_name}: prose instead of the tool call")
            return f"the answer was prose, not a {TOOL_NAME} call{cut}", []
        try:
            return None, [Answer.model_validate(b.input) for b in ours]
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"])) or "input"
            if not cut:
                self.notes.append(f"{round_name}: malformed tool input ({_one_line(where, 60)})")
            return f"the tool input does not fit the schema: {where}: {error['msg']}{cut}", []

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

    def _append_turn(self, blocks: list[Any], uses: Sequence[Any], text: str, is_error: bool) -> None:
        """The assistant's answer sent back unchanged, then ``text`` (the validator's reasons, or
        the windows question). An answer with nothing but thinking (cut before it wrote anything)
        is not sent back: the text is added to the last user turn instead, so no turn ends in a
        bare thinking block."""
        echoed = [_block_param(b) for b in blocks]
        if not any(b["type"] in ("text", "tool_use") for b in echoed):
            last = self.messages[-1]
            last_content = last["content"]
            parts = [{"type": "text", "text": last_content}] if isinstance(last_content, str) else list(last_content)
            self.messages[-1] = {"role": "user", "content": [*parts, {"type": "text", "text": text}]}
            return
        # Every tool_use needs a tool_result in the next user turn; the first carries the reasons.
        content: list[dict[str, Any]] = [
            {
                "type": "tool_result",
                "tool_use_id": b.id,
                "content": text if i == 0 else "See the first result.",
                **({"is_error": True} if is_error else {}),
            }
            for i, b in enumerate(uses)
        ]
        if not content:
            content = [{"type": "text", "text": text}]
        self.messages.append({"role": "assistant", "content": echoed})
        self.messages.append({"role": "user", "content": content})

    def _how(self) -> str:
        """How to answer, as the request's shape asks."""
        return (
            'answer again with the JSON object {"phrases": [{"target": ..., "known": ...}]}'
            if self.caps.output_mode == "json_schema"
            else f'call {TOOL_NAME} again with {{"phrases": [{{"target": ..., "known": ...}}]}}'
        )

    def _repair_text(self, problem: str | None, failures: list[Rejection]) -> str:
        how = self._how()
        if problem is not None:
            return f"Not accepted: {problem}. Please {how}."
        listed = "\n".join(
            f"{i}. {f.pair[0]!r} / {f.pair[1]!r}: {_one_line(f.reason)}" for i, f in enumerate(failures, 1)
        )
        return (
            f"{len(self.accepted)} phrase(s) passed and are kept. These failed:\n{listed}\n"
            f"Please {how}, with up to {self.wanted} replacement phrase(s) only (not the kept ones):"
            " use whole LEGOs from the vocabulary plus the operative LEGO; leave out what you cannot fix."
        )

    def _built(self, filled: dict[str, str] | None = None) -> BuiltBasket:
        """The basket from the best accepted phrases (the seed sentence first, when it passes)."""
        room = E_PHRASES_MAX - (1 if self.ctx.seed_pair else 0)
        return build_basket(self.ctx, [p.pair for p in choose(self.ctx, self.accepted, room)], filled)

    def result(self) -> GeneratedBasket:
        """The validated basket from the best accepted phrases, with the windows' known sides the
        model pointed out."""
        room = E_PHRASES_MAX - (1 if self.ctx.seed_pair else 0)
        chosen = choose(self.ctx, self.accepted, room)
        built = self._built(self.filled)
        seed = len(built.basket.e) - len(chosen)  # the seed sentence, when it passed
        first = None if self.first_answer_kept is None else seed + min(room, self.first_answer_kept)
        return GeneratedBasket(
            lego_id=self.ctx.lego.id,
            basket=built.basket,
            usage=self.usage,
            interactive_usage=self.interactive_usage,
            requests=self.requests,
            repair_rounds=self.repair_rounds,
            first_answer_e=first,
            rejected=self.rejected + built.rejected,
            notes=self.notes,
            backend=self.backend,
            model=self.options.model,
            d_left_out=len(built.left_out),
            d_filled=built.filled,
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


def usage_of(message: Any) -> Usage:
    """An answer's usage (a batch result's message or a streamed one), the 1-hour writes apart."""
    usage = getattr(message, "usage", None)
    if usage is None:
        return Usage()
    split = getattr(usage, "cache_creation", None)
    return Usage(
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        cache_creation_1h_input_tokens=(getattr(split, "ephemeral_1h_input_tokens", 0) or 0) if split else 0,
    )


# -- the transport ------------------------------------------------------------------------------------

#: HTTP attempts of the current call, recorded by the client middleware (one list per thread).
_ATTEMPTS: ContextVar[list[str] | None] = ContextVar("phase5_attempts", default=None)

#: The error code of the tier's monthly spend cap, and how a limit the organisation set begins.
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"
ORG_SPEND_LIMIT_TEXT = "You have reached your specified"


def spend_limit_text(status: int, body: Any) -> str | None:
    """The error's message when an answer says a spend limit is reached, else None."""
    if status not in (400, 429) or not isinstance(body, dict):
        return None
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    if (status == 429 and code == SPEND_LIMIT_CODE) or (status == 400 and message.startswith(ORG_SPEND_LIMIT_TEXT)):
        return f"{status} {code or error.get('type') or 'error'}: {message}"
    return None


#: Called with (HTTP status, response headers) of every attempt: rate-limit readers hook here.
ResponseHook = Callable[[int, Any], None]


def connection_limits(in_flight: int) -> Any:
    """Keep-alive connections for every request a worker may have in flight (the SDK keeps 100)."""
    import httpx2  # the SDK's HTTP client

    return httpx2.Limits(max_connections=max(1000, in_flight + 16), max_keepalive_connections=in_flight + 16)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_bytes(value: Any) -> bytes:
    """JSON as the SDK encodes a request body (compact, UTF-8, no NaN)."""
    return _ENCODER.encode(value).encode()


def accumulate(message: Any, event: Any, partial: dict[int, list[str]]) -> bool:
    """Apply one raw stream event after ``message_start`` to ``message`` (the SDK's Message of
    that event, completed in place): blocks as they start, their text, thinking, signature and
    tool input as they arrive, the stop reason and final usage. ``partial`` holds tool inputs'
    JSON pieces until their block stops. True at ``message_stop``."""
    kind = event.type
    if kind == "content_block_start":
        message.content.append(event.content_block)
    elif kind == "content_block_delta":
        block, delta = message.content[event.index], event.delta
        if delta.type == "text_delta":
            block.text += delta.text
        elif delta.type == "input_json_delta":
            partial.setdefault(event.index, []).append(delta.partial_json)
        elif delta.type == "thinking_delta":
            block.thinking += delta.thinking
        elif delta.type == "signature_delta":
            block.signature = delta.signature
    elif kind == "content_block_stop":
        pieces = partial.pop(event.index, None)
        if pieces is not None:
            text = "".join(pieces)
            message.content[event.index].input = json.loads(text) if text else {}
    elif kind == "message_delta":
        message.stop_reason = event.delta.stop_reason
        message.stop_sequence = event.delta.stop_sequence
        for name in ("output_tokens", "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = getattr(event.usage, name, None)
            if value is not None:
                setattr(message.usage, name, value)
    return kind == "message_stop"


class AnthropicGenerator:
    """:class:`~worker.generators.base.Generator` on the Messages API; thread-safe."""

    name = "anthropic"
    cache_ttl = "5m"

    def __init__(self, course: Course, options: GeneratorOptions) -> None:
        check_backend(self.name, options)
        self.course = course
        self.options = options
        self.caps = model_caps(options.model)
        _ = course.tiler  # build the shared tiler once, before threads use it
        self.hooks: list[ResponseHook] = []
        # The key is passed explicitly so the SDK reads no other credential (profiles, tokens);
        # the base URL comes from ANTHROPIC_BASE_URL, which the SDK reads itself.
        self._client = anthropic.Anthropic(
            api_key=os.environ["ANTHROPIC_API_KEY"],
            max_retries=options.max_retries,
            timeout=options.timeout,
            middleware=[self._middleware],
            http_client=anthropic.DefaultHttpxClient(limits=connection_limits(options.max_in_flight)),
        )
        self.gate = PrefixGate(CACHE_TTL_SECONDS[self.cache_ttl])
        #: The worker's requests in flight and the account's limits (the orchestrator gives it the
        #: run's shared buckets); the hooks hear every answer.
        self.pacer = Pacer(options.max_in_flight)
        self.hedger = Hedger()
        self.stop = threading.Event()  # set by the orchestrator when it stops: waits end at once
        #: Each agent's system blocks (its cached prefix), built and JSON-encoded once: by
        #: prefix_upto, and the encoding by the blocks' identity (see :meth:`encode`).
        self._systems: dict[int, list[dict[str, Any]]] = {}
        self._encoded_systems: dict[int, tuple[list[dict[str, Any]], bytes]] = {}
        self._lock = threading.Lock()
        self._margin = OUTPUT_MARGIN

    def system(self, prefix_upto: int) -> list[dict[str, Any]]:
        """The cached system blocks for an agent starting at ``prefix_upto`` (built once each;
        the same list for every request of the agent, never changed)."""
        with self._lock:
            blocks = self._systems.get(prefix_upto)
        if blocks is None:
            built = system_blocks(self.course, prefix_upto, self.caps, self.cache_ttl)
            with self._lock:
                blocks = self._systems.setdefault(prefix_upto, built)
                self._encoded_systems.setdefault(id(blocks), (blocks, _json_bytes(blocks)))
        return blocks

    def encode(self, body: dict[str, Any]) -> bytes:
        """The request body as the SDK would send it (compact UTF-8 JSON), the system blocks
        (the ~50 KB cached prefix) encoded once per agent instead of once per request: encoding
        them was a tenth of a worker's CPU."""
        parts = []
        for key, value in body.items():
            entry = self._encoded_systems.get(id(value)) if key == "system" else None
            data = entry[1] if entry is not None and entry[0] is value else _json_bytes(value)
            parts.append(_json_bytes(key) + b":" + data)
        return b"{" + b",".join(parts) + b"}"

    def conversation(self, ctx: LegoContext, prefix_upto: int | None = None) -> Conversation:
        upto = ctx.position if prefix_upto is None else max(1, min(prefix_upto, ctx.position))
        return Conversation(ctx, upto, self.options, self.system(upto), backend=self.name, caps=self.caps)

    def generate(self, ctx: LegoContext, prefix_upto: int | None = None) -> GeneratedBasket:
        conversation = self.conversation(ctx, prefix_upto)
        if ctx.position == 1:
            # Nothing to combine LEGO #1 with: its basket is empty (or the seed), no request.
            conversation.notes.append("no available vocabulary: no request")
            return conversation.result()
        while True:
            message = self.send(conversation)
            if not conversation.take(message):
                return conversation.result()

    # -- one request --------------------------------------------------------------------------------

    def output_room(self, full: int) -> int:
        """``max_tokens`` for the next request: the whole room until a few answers of the run are
        seen (by any of its workers: they share the figure), then a margin over the largest output
        seen (see :data:`LEARN_OUTPUT_AFTER`)."""
        if self.options.max_tokens is not None or not self.caps.thinking_default:
            return full
        seen, largest = self.pacer.buckets.outputs()
        if seen < LEARN_OUTPUT_AFTER:
            return full
        with self._lock:
            margin = self._margin
        return min(full, max(MIN_OUTPUT_ROOM, math.ceil(margin * largest)))

    def _learn(self, message: Any) -> None:
        if message.stop_reason == "max_tokens":
            with self._lock:
                self._margin *= 2
        output = getattr(getattr(message, "usage", None), "output_tokens", 0) or 0
        self.pacer.buckets.note_output(output)

    def request_cost(self, body: dict[str, Any], writer: bool) -> Cost:
        """What the request takes from the account's limits: its uncached input (the prefix too
        when it writes it; cache reads do not count) and its ``max_tokens``."""
        text = json.dumps(body["messages"], ensure_ascii=False)
        if writer:
            text += "".join(block["text"] for block in body["system"])
        return Cost(input_tokens=estimate_tokens(text, self.caps), output_tokens=body["max_tokens"])

    def send(self, conversation: Conversation) -> Any:
        """One request of a conversation, streamed, through the prefix gate and the pacer; the
        answer as a Message. Raises :class:`GenerationError` past the SDK's retries,
        :class:`SpendLimitReached`, or :class:`Cancelled` when the worker stops meanwhile."""
        lego_id = conversation.ctx.lego.id
        attempts: list[str] = []
        token = _ATTEMPTS.set(attempts)
        try:
            with self.gate.enter(conversation.cache_keys, self.stop) as turn:
                body = conversation.params()
                body["max_tokens"] = self.output_room(body["max_tokens"])
                cost = self.request_cost(body, turn.writer)
                if self.stop.is_set() or not self.pacer.take(cost, self.stop):
                    raise Cancelled(f"{lego_id}: the worker is stopping")
                message = self._race(conversation, body, cost, turn)
        except (SpendLimitReached, Cancelled):
            raise
        except anthropic.APIStatusError as exc:
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            kind = f" {error.get('type')}" if isinstance(error, dict) and error.get("type") else ""
            detail = error.get("message") if isinstance(error, dict) and error.get("message") else exc
            what = f"API error {exc.status_code}{kind}"
            raise GenerationError(self._reason(lego_id, what, detail, attempts)) from None
        except anthropic.APITimeoutError as exc:
            raise GenerationError(self._reason(lego_id, "API timeout", exc, attempts)) from None
        except anthropic.APIError as exc:
            raise GenerationError(self._reason(lego_id, "API unreachable", exc, attempts)) from None
        except Exception as exc:  # the stream broke mid-answer (the HTTP layer's own errors)
            raise GenerationError(self._reason(lego_id, "answer stream broke", exc, attempts)) from None
        finally:
            _ATTEMPTS.reset(token)
        for failure in attempts:
            conversation.notes.append(f"retried after {failure}")
        return message

    def _race(self, conversation: Conversation, body: dict[str, Any], cost: Cost, turn: Turn) -> Any:
        """The request, and a duplicate if it is among the slowest (:mod:`worker.generators.hedging`;
        a request that writes a cached prefix only once its answer has begun, when the duplicate
        reads what it wrote); the first answer to end."""
        started = time.monotonic()
        race = Race()
        self.hedger.watch(race, lambda: self._hedge(body, cost, race, turn.writer))
        try:
            message = self._stream(body, turn, race, "first")
        except Exception:
            if not race.hedged or not race.done.wait(self.options.timeout) or race.winner is None:
                raise
            message = race.winner  # this one failed; its duplicate answered
        finally:
            self.hedger.forget(race)
            used = race.winner.usage.output_tokens or 0 if race.winner is not None else 0
            self.pacer.give_back(max(0.0, cost.output_tokens - used))
        self.hedger.record(time.monotonic() - started)
        self._learn(message)
        if race.launched:
            self._count_duplicate(conversation, race, message)
        return message

    def _hedge(self, body: dict[str, Any], cost: Cost, race: Race, writer: bool) -> None:
        """The duplicate of a slow request (on a hedge thread), if the account has room right now
        and, for a request writing a cached prefix, its answer has begun (the prefix is written:
        the duplicate reads it, it does not write it again)."""
        if writer and "first" not in race.snapshots:
            return
        if race.done.is_set():
            return
        if not self.pacer.try_take(cost):
            self.hedger.without_room += 1
            return
        if not race.launch():
            self.pacer.give_back(cost.output_tokens)
            return
        try:
            self._stream(body, None, race, "hedge")
            if race.winner_role == "hedge":
                self.hedger.won()
        except Exception:
            pass
        finally:
            used = race.winner.usage.output_tokens or 0 if race.winner is not None else 0
            self.pacer.give_back(max(0.0, cost.output_tokens - used))

    def _count_duplicate(self, conversation: Conversation, race: Race, message: Any) -> None:
        """A duplicate went out: one more request, and what the closed stream cost (its input as
        reported when it began; its output at most the answer taken)."""
        loser = next((role for role in race.streams if role != race.winner_role), None)
        snapshot = race.snapshots.get(loser) if loser else None
        if snapshot is None:  # closed before its answer began: its cost is not known, at most the answer's
            snapshot = message.usage
        cost = Usage(
            input_tokens=snapshot.input_tokens or 0,
            output_tokens=message.usage.output_tokens or 0,
            cache_creation_input_tokens=snapshot.cache_creation_input_tokens or 0,
            cache_read_input_tokens=snapshot.cache_read_input_tokens or 0,
        )
        conversation.usage = conversation.usage + cost
        conversation.requests += 1
        winner = "the duplicate" if race.winner_role == "hedge" else "the original"
        conversation.notes.append(f"slow request duplicated; {winner} answered first, the other was closed")

    def _stream(self, body: dict[str, Any], turn: Turn | None, race: Race, role: str) -> Any:
        """One streamed request in ``race``: its final Message, or (when the other stream of the
        race ended first and closed this one) the winner's. The SDK's raw events are put together
        here (:func:`accumulate`): its ``MessageStream`` helper would cost a third more CPU per
        request, which a worker with dozens in flight feels."""
        # Sent through the SDK's own ``post`` (its retries, timeouts, middleware and stream
        # decoding, as ``messages.create`` does) with the body already encoded (:meth:`encode`).
        content = self.encode({**body, "stream": True})
        try:
            with self._client.post(
                "/v1/messages",
                content=content,
                cast_to=anthropic.types.Message,
                stream=True,
                stream_cls=anthropic.Stream[anthropic.types.RawMessageStreamEvent],
            ) as stream:
                if not race.register(role, stream):
                    return race.winner
                message, ended = None, False
                partial: dict[int, list[str]] = {}
                for event in stream:
                    if event.type == "message_start":
                        message = event.message
                        race.snapshots[role] = message.usage.model_copy()
                        if turn is not None:
                            turn.begun()  # the cache entries this request writes are readable from now
                    elif message is not None:
                        ended = accumulate(message, event, partial) or ended
                if message is None or not ended:
                    raise anthropic.APIConnectionError(
                        message="the answer stream ended before its message_stop event", request=stream.response.request
                    )
        except Exception:
            if race.done.is_set() and race.winner_role != role:
                return race.winner  # closed because the other answered first
            raise
        race.finish(role, message)
        return race.winner

    def _middleware(self, request: Any, call_next: Any) -> Any:
        """Client middleware, run once per HTTP attempt inside the SDK's retry loop: counts
        failed attempts into the basket's notes, hands every answer's status and headers to the
        hooks, and stops a spend-limit answer from being retried."""
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
        status = response.status_code
        self.pacer.observe(status, response.headers)
        for hook in self.hooks:
            hook(status, response.headers)
        if status in (400, 429):
            http = response.http_response
            http.read()
            try:
                body = json.loads(http.content or b"null")
            except ValueError:
                body = None
            limit = spend_limit_text(status, body)
            if limit is not None:
                detail = _one_line(self._scrub(limit), 200)
                raise SpendLimitReached(f"the API's spend limit is reached ({detail}); run again once it is raised")
        if seen is not None and status >= 400:
            seen.append(str(status))
        return response

    def _scrub(self, text: str) -> str:
        key = os.environ.get("ANTHROPIC_API_KEY")
        return text.replace(key, "[key]") if key else text  # an error text must never carry the key

    def _reason(self, lego_id: str, what: str, exc: object, attempts: list[str]) -> str:
        tries = f" after {len(attempts)} attempt(s)" if attempts else ""
        detail = self._scrub(_one_line(getattr(exc, "message", None) or exc, 160))
        return f"{lego_id}: {what}{tries}: {detail}"

    def close(self) -> None:
        self.hedger.close()
        self._client.close()
        self.pacer.buckets.close()


def warm_answer_types() -> None:
    """Build the SDK's validators for what answers bring (a message, the events of a stream, a
    thinking block): done once in the warm-start server before it forks, so each worker shares
    them instead of building its own (~several MB and tens of ms each). No request is made."""
    from anthropic._models import construct_type
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import Message, RawMessageStreamEvent

    usage = {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message: dict[str, Any] = {
        "id": "msg_warm",
        "type": "message",
        "role": "assistant",
        "model": "warm",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "{}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    snapshot = None
    for event in events:
        parsed = construct_type(type_=RawMessageStreamEvent, value=event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs={})  # type: ignore[arg-type]
    Message.model_validate({**message, "content": [{"type": "text", "text": "{}"}], "stop_reason": "end_turn"})
    Answer.model_validate_json('{"phrases": [{"target": "a", "known": "b"}]}')
