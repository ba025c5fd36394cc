"""What a run would cost before it spends anything (``phase5 estimate``, ``phase5 run --dry-run``).

No API call: the requests are built with the same code the ``anthropic`` and ``anthropic-batch``
backends send (:func:`~worker.generators.anthropic_backend.system_blocks`, ``user_prompt``, the
tool schema), one per basket, each agent's cached prefix starting at its first LEGO, as planned.

Tokens are counted as characters / 4 times the model's tokenizer factor (the model table: Claude
4.7 and later count ~30% more tokens for the same text); accented and non-Latin text makes more
tokens per character, so real counts run somewhat higher. ``--count-tokens`` (with a key) asks the
free ``messages.count_tokens`` endpoint about a sample of the real requests and scales every
prompt figure by what it says. Output tokens are modelled, not measured: the asked-for 5-8
candidates (6.5 on average, plus the seed sentence of a culminating LEGO) at the middle of the
length band, as JSON, plus ``thinking_tokens`` per answer on models that think by default.

Repairs: at ``repair_rate`` R, a basket's first answer needs a repair round with probability R,
that one another with probability R, up to ``repair_rounds``: R + R² + ... extra requests per
basket. A repair request sends the conversation so far (the answer and the validator's reasons)
after the same cached prefix, and gets about half the first answer's output.

d windows: at ``window_rate`` W, a basket's phrases leave d windows whose known side alignment
cannot find, and one more request asks the model to point them out in its translation (the
backends' ``--d-windows ask``): W extra requests per basket, each sending the conversation so far
after the same cached prefix, with a short answer. The corpus backend leaves such windows in 4.8%
of the full Spanish course's baskets; a model translates more freely, so W defaults to 0.15.

Caching: the cache breakpoints the backend would place (a prefix shorter than the model's minimum
is not cached: it is paid as input by every request). The skill, shared by every agent, is
written once; the first request of each agent writes its vocabulary; every later request of that
agent, repairs included, reads them. Without caching, every request pays the whole prefix as
input. LEGO #1 sends no request. ``anthropic-batch`` writes with the 1-hour TTL and sends each
agent's first request as a warm-up through the Messages API (at the Messages price).

Time, ``anthropic`` (the same model as the workers' scheduler, :mod:`worker.generators.pacing`):
segments run one after another; in each, the orchestrators launch a stagger apart, the first
request of each prefix goes alone (about a fifth of a latency until its answer begins), then every
basket of the segment is a request that may go at once, as fast as the account's limits admit
(requests, input tokens and output tokens a minute of the tier: whichever allows the fewest
requests a second) and the in-flight cap allows (``--max-in-flight`` per worker: cap / latency
requests a second), and the segment ends ``tail`` latencies after its last request goes (with a
heavy-tailed latency the slowest answer takes twice the median or more), plus one latency for each
repair round.
``anthropic-batch`` sends one batch per round per orchestrator: rounds × ``batch_turnaround``
per segment (most batches end within an hour; the API allows 24 h).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from worker.constants import E_PHRASES_MAX
from worker.cost import PriceTable
from worker.course import Course
from worker.generators import GeneratorOptions
from worker.generators.base import Usage
from worker.generators.model_table import ModelCaps, model_caps
from worker.paths import CourseLayout
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, DEFAULT_SEGMENTS, SegmentPlan, load_plans, make_plans

TOKEN_METHOD = "characters / 4"
CHARS_PER_TOKEN = 4
DEFAULT_THINKING_TOKENS = 800
#: JSON around each phrase in the tool call ({"target": "", "known": ""},) and around the call.
PHRASE_JSON_CHARS = 30
TOOL_CALL_TOKENS = 40
#: The validator's reasons sent back in a repair turn, in tokens (a fixed part and per phrase).
REPAIR_TURN_TOKENS = 80
REPAIR_REASON_TOKENS = 45
REPAIR_PHRASES = 2  # phrases that fail in an answer that needs a repair, on average
REPAIR_OUTPUT_SHARE = 0.5
DEFAULT_LATENCY = 30.0
DEFAULT_TIER = "start"
DEFAULT_TAIL = 2.0
FIRST_WAVE = 0.2  # latencies until the prefix writers' answers have begun (two waves of first requests)
#: Rate limits of the Sonnet pool per tier: requests, input tokens (cache reads excluded), output
#: tokens a minute (the platform's rate-limit page; override with rpm, itpm, otpm).
TIERS = {
    "start": (1_000, 2_000_000, 400_000),
    "build": (5_000, 5_000_000, 1_000_000),
    "scale": (10_000, 10_000_000, 2_000_000),
}
DEFAULT_REPAIR_RATE = 0.2
#: Share of baskets that need the question about d windows' known sides, windows it lists on
#: average, and tokens: the question (a fixed part and per window) and the answer per window.
DEFAULT_WINDOW_RATE = 0.15
WINDOWS_PER_QUESTION = 2.3
WINDOW_QUESTION_TOKENS = 110
WINDOW_LINE_TOKENS = 30
WINDOW_ANSWER_TOKENS = 25
DEFAULT_BATCH_TURNAROUND = 3600.0
DEFAULT_STAGGER = 30.0
API_BACKENDS = ("anthropic", "anthropic-batch")


def tokens(text: str, caps: ModelCaps | None = None) -> int:
    """Estimated tokens of ``text``: characters / 4, times the model's tokenizer factor."""
    factor = caps.tokenizer_factor if caps is not None else 1.0
    return math.ceil(len(text) / CHARS_PER_TOKEN * factor) if text else 0


@dataclass
class EstimateOptions:
    model: str = GeneratorOptions().model
    repair_rate: float = DEFAULT_REPAIR_RATE
    repair_rounds: int = GeneratorOptions().repair_rounds
    window_rate: float = DEFAULT_WINDOW_RATE  # 0 when the backends leave such windows out (--d-windows leave)
    concurrency: int | None = None  # requests in flight at most in a segment (None: max_in_flight x orchestrators)
    latency: float = DEFAULT_LATENCY
    tier: str = DEFAULT_TIER
    rpm: float | None = None  # the tier's limits, overridden
    itpm: float | None = None
    otpm: float | None = None
    max_in_flight: int = GeneratorOptions().max_in_flight
    tail: float = DEFAULT_TAIL
    batch_turnaround: float = DEFAULT_BATCH_TURNAROUND
    stagger: float = DEFAULT_STAGGER
    segments: int | None = None  # plan shape when the course is not prepared
    orchestrators: int | None = None
    agents: int | None = None
    thinking_tokens: int = DEFAULT_THINKING_TOKENS  # per answer, on models that think by default
    prompt_factor: float = 1.0  # measured by --count-tokens: real prompt tokens / this estimate's
    prompt_method: str | None = None  # how prompt_factor was measured


@dataclass
class Tokens:
    """Expected tokens, as floats (expected values of repair requests are fractional)."""

    input: float = 0.0
    output: float = 0.0
    cache_write: float = 0.0
    cache_read: float = 0.0

    def add(self, other: Tokens, times: float = 1.0) -> None:
        self.input += other.input * times
        self.output += other.output * times
        self.cache_write += other.cache_write * times
        self.cache_read += other.cache_read * times

    def usage(self, one_hour: bool = False) -> Usage:
        """As API usage; ``one_hour``: the cache writes were made with the 1-hour TTL."""
        return Usage(
            input_tokens=round(self.input),
            output_tokens=round(self.output),
            cache_creation_input_tokens=round(self.cache_write),
            cache_read_input_tokens=round(self.cache_read),
            cache_creation_1h_input_tokens=round(self.cache_write) if one_hour else 0,
        )

    def minus(self, other: Tokens) -> Tokens:
        return Tokens(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def to_json(self) -> dict[str, int]:
        return {k: round(v) for k, v in asdict(self).items()}


@dataclass
class SegmentFigures:
    segment: int
    orchestrators: int
    agents: int
    baskets: int
    requests: float = 0.0
    longest_agent: float = 0.0  # expected requests of the busiest agent
    batch_rounds: int = 0


@dataclass
class Estimate:
    course: str
    model: str
    baskets: int
    no_request: int
    plan: dict[str, Any]
    first_requests: int = 0
    repair_requests: float = 0.0
    window_requests: float = 0.0  # asking for the known sides of d windows alignment cannot find
    with_cache: Tokens = field(default_factory=Tokens)
    without_cache: Tokens = field(default_factory=Tokens)
    agent_firsts: Tokens = field(default_factory=Tokens)  # of with_cache: each agent's first request
    segments: list[SegmentFigures] = field(default_factory=list)
    backends: dict[str, Any] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return self.first_requests + self.repair_requests + self.window_requests

    def to_json(self) -> dict[str, Any]:
        return {
            "course": self.course,
            "model": self.model,
            "baskets": self.baskets,
            "baskets_without_request": self.no_request,
            "plan": self.plan,
            "requests": {
                "first": self.first_requests,
                "repairs": round(self.repair_requests, 1),
                "d_windows": round(self.window_requests, 1),
                "total": round(self.requests, 1),
            },
            "tokens": {"with_cache": self.with_cache.to_json(), "without_cache": self.without_cache.to_json()},
            "backends": self.backends,
            "segments": [
                asdict(s) | {"requests": round(s.requests, 1), "longest_agent": round(s.longest_agent, 1)}
                for s in self.segments
            ],
            "assumptions": self.assumptions,
        }


def plans_for_estimate(course: Course, options: EstimateOptions) -> tuple[list[SegmentPlan], str]:
    """The prepared plan, or the one ``prepare`` would write (nothing is written)."""
    shape = (options.segments, options.orchestrators, options.agents)
    if CourseLayout(course.root).plan_files() and shape == (None, None, None):
        return load_plans(course), "prepared"
    plans = make_plans(
        course.ids,
        options.segments or DEFAULT_SEGMENTS,
        options.orchestrators or DEFAULT_ORCHESTRATORS,
        options.agents or DEFAULT_AGENTS,
    )
    return plans, "not prepared: the plan prepare would write"


def _chars_per_word(texts: list[str]) -> float:
    words = sum(len(t.split()) for t in texts)
    return sum(len(t) for t in texts) / words if words else 6.0


def agent_prefix(course: Course, first: int, caps: ModelCaps) -> tuple[float, float, float]:
    """(skill part, agent part, uncached part) of the prefix of the agent starting at ``first``,
    in tokens, as the backend's breakpoints cache it: the skill's own breakpoint (shared by every
    agent) when it reaches the model's minimum alone, the agent's after its vocabulary when the
    whole prefix does; what no breakpoint covers is paid as input by every request."""
    from worker.generators.anthropic_backend import system_blocks, tools_for

    blocks = system_blocks(course, first, caps)
    tools = sum(tokens(json.dumps(tool, ensure_ascii=False), caps) for tool in tools_for(caps))
    skill, vocabulary = (tokens(block["text"], caps) for block in blocks)
    if "cache_control" in blocks[1]:
        if "cache_control" in blocks[0]:
            return tools + skill, vocabulary, 0.0
        return 0.0, tools + skill + vocabulary, 0.0
    return 0.0, 0.0, tools + skill + vocabulary


def estimate(
    course: Course,
    options: EstimateOptions,
    table: PriceTable,
    backends: tuple[str, ...] = API_BACKENDS,
    plans: list[SegmentPlan] | None = None,
) -> Estimate:
    """The estimate for the course's plan, or for ``plans`` (a redo's: some of its baskets)."""
    # The prompt pieces live with the backend, which imports the SDK (~1.5 s and ~50 MB a process):
    # import it when an estimate is made, not whenever the command line is loaded (every worker,
    # supervisor and status window loads it).
    from worker.generators.anthropic_backend import CANDIDATES, user_prompt

    caps = model_caps(options.model)
    if plans is None:
        plans, source = plans_for_estimate(course, options)
    else:
        source = "the chosen baskets"
    rate, rounds = options.repair_rate, options.repair_rounds
    repairs_per_basket = sum(rate**k for k in range(1, rounds + 1))
    seeds = course.source.seeds
    target_cpw = _chars_per_word([s.target for s in seeds]) if seeds else 6.0
    known_cpw = _chars_per_word([s.known for s in seeds]) if seeds else 6.0
    thinking = options.thinking_tokens if caps.thinking_default else 0
    scale = options.prompt_factor
    phrases = sum(CANDIDATES) / 2
    result = Estimate(
        course=str(course.root),
        model=options.model,
        baskets=sum(len(plan.lego_ids) for plan in plans),
        no_request=0,
        plan={
            "source": source,
            "segments": len(plans),
            "orchestrators": max((len(p.orchestrator_batches) for p in plans), default=0),
            "agents": max((len(b.agent_batches) for p in plans for b in p.orchestrator_batches), default=0),
        },
    )
    skill_written = False
    for plan in plans:
        seg = SegmentFigures(
            plan.segment_number,
            len(plan.orchestrator_batches),
            sum(len(b.agent_batches) for b in plan.orchestrator_batches),
            plan.total_legos,
        )
        for batch in plan.orchestrator_batches:
            for ids in batch.agent_batches:
                first = course.by_id[ids[0]].position
                skill, own, uncached = (part * scale for part in agent_prefix(course, first, caps))
                prefix = skill + own + uncached
                agent_requests = 0.0
                for lego_id in ids:
                    ctx = course.context(lego_id)
                    if ctx.position == 1:
                        result.no_request += 1
                        continue
                    user = tokens(user_prompt(ctx, first, caps), caps) * scale
                    words = (ctx.band.min_words + ctx.band.max_words) / 2
                    count = phrases + (1 if ctx.seed_pair else 0)
                    answer = (
                        TOOL_CALL_TOKENS
                        + count * (words * (target_cpw + known_cpw) + PHRASE_JSON_CHARS) / CHARS_PER_TOKEN
                    ) * caps.tokenizer_factor
                    output = answer + thinking
                    repair_in = user + answer + REPAIR_TURN_TOKENS + REPAIR_PHRASES * REPAIR_REASON_TOKENS
                    repair_out = answer * REPAIR_OUTPUT_SHARE + thinking
                    windows_in = user + answer + WINDOW_QUESTION_TOKENS + WINDOWS_PER_QUESTION * WINDOW_LINE_TOKENS
                    windows_out = WINDOWS_PER_QUESTION * WINDOW_ANSWER_TOKENS * caps.tokenizer_factor + thinking
                    writes_agent = agent_requests == 0
                    result.first_requests += 1
                    result.repair_requests += repairs_per_basket
                    result.window_requests += options.window_rate
                    agent_requests += 1 + repairs_per_basket + options.window_rate
                    result.without_cache.add(Tokens(input=prefix + user, output=output))
                    result.without_cache.add(Tokens(input=prefix + repair_in, output=repair_out), repairs_per_basket)
                    result.without_cache.add(Tokens(input=prefix + windows_in, output=windows_out), options.window_rate)
                    written = (own if writes_agent else 0.0) + (skill if not skill_written else 0.0)
                    first_request = Tokens(
                        input=user + uncached, output=output, cache_write=written, cache_read=skill + own - written
                    )
                    skill_written = skill_written or skill > 0
                    result.with_cache.add(first_request)
                    if writes_agent:
                        result.agent_firsts.add(first_request)
                    result.with_cache.add(
                        Tokens(input=repair_in + uncached, output=repair_out, cache_read=skill + own),
                        repairs_per_basket,
                    )
                    result.with_cache.add(
                        Tokens(input=windows_in + uncached, output=windows_out, cache_read=skill + own),
                        options.window_rate,
                    )
                seg.requests += agent_requests
                seg.longest_agent = max(seg.longest_agent, agent_requests)
        basket_count = plan.total_legos
        seg.batch_rounds = 1 + sum(1 for k in range(1, rounds + 1) if basket_count * rate**k >= 0.5)
        result.segments.append(seg)
    _price_and_time(result, options, table, backends)
    result.assumptions = {
        "token_count": options.prompt_method or TOKEN_METHOD,
        "tokenizer_factor": caps.tokenizer_factor,
        "prompt_factor": round(scale, 4),
        "output_per_request": f"{phrases:g} candidate phrases (+ the seed sentence when culminating) at the"
        f" middle of the length band, as JSON; at most {E_PHRASES_MAX} are kept",
        "thinking_tokens": thinking,
        "repair_rate": rate,
        "repair_rounds": rounds,
        "repairs_per_basket": round(repairs_per_basket, 4),
        "window_rate": options.window_rate,
        "cache": "the skill is written once, each agent's first request writes its vocabulary, the others read"
        f" them (prefixes under {caps.min_cache_tokens} tokens are not cached)",
        "concurrency": options.concurrency,
        "max_in_flight": options.max_in_flight,
        "latency_s": options.latency,
        "tail_latencies": options.tail,
        "rate_limits_per_minute": dict(zip(LIMIT_NAMES, limits(options), strict=True)),
        "stagger_s": options.stagger,
        "batch_turnaround_s": options.batch_turnaround,
        "batch_discount": table.batch_discount,
        "prices": table.source,
    }
    return result


LIMIT_NAMES = ("requests", "input_tokens", "output_tokens")
#: The request fields the token-count endpoint takes.
COUNTED_FIELDS = ("model", "system", "messages", "tools", "tool_choice", "output_config")


def limits(options: EstimateOptions) -> tuple[float, float, float]:
    rpm, itpm, otpm = TIERS[options.tier]
    return (options.rpm or rpm, options.itpm or itpm, options.otpm or otpm)


def request_rate(result: Estimate, options: EstimateOptions) -> tuple[float, str]:
    """Requests a second the account admits, and which limit sets it: input tokens count the
    uncached input and the cache writes (cache reads do not count), output tokens what answers
    take."""
    rpm, itpm, otpm = limits(options)
    total = result.requests or 1.0
    w = result.with_cache
    per_request_in = (w.input + w.cache_write) / total
    per_request_out = w.output / total
    rates = {
        "requests": rpm / 60,
        "input tokens": itpm / 60 / per_request_in if per_request_in else math.inf,
        "output tokens": otpm / 60 / per_request_out if per_request_out else math.inf,
    }
    which = min(rates, key=lambda name: rates[name])
    return rates[which], which


def _price_and_time(result: Estimate, options: EstimateOptions, table: PriceTable, backends: tuple[str, ...]) -> None:
    model = options.model
    without_cache = result.without_cache.usage()
    limit_rate, binding = request_rate(result, options)
    repair_rounds = max((s.batch_rounds - 1 for s in result.segments), default=0)
    for backend in backends:
        batch = backend == "anthropic-batch"
        time_s = 0.0
        rates = []
        for seg in result.segments:
            time_s += options.stagger * max(0, seg.orchestrators - 1)
            if batch:
                time_s += seg.batch_rounds * options.batch_turnaround
                continue
            in_flight = options.concurrency or options.max_in_flight * seg.orchestrators
            rate = min(limit_rate, in_flight / options.latency) if options.latency > 0 else limit_rate
            rates.append(rate)
            sending = seg.requests / rate if rate > 0 else 0.0
            time_s += options.latency * (FIRST_WAVE + options.tail + repair_rounds) + sending
        if batch:  # 1-hour writes; each agent's first request is a warm-up at the Messages price
            warm = result.agent_firsts
            with_cache = table.cost(warm.usage(one_hour=True), model) + table.cost(
                result.with_cache.minus(warm).usage(one_hour=True), model, batch=True
            )
        else:
            with_cache = table.cost(result.with_cache.usage(), model)
        figures: dict[str, Any] = {
            "cost_usd": {
                "with_cache": round(with_cache, 4),
                "without_cache": round(table.cost(without_cache, model, batch=batch), 4),
            },
            "time_s": round(time_s, 1),
        }
        if batch:
            figures["batch_rounds"] = sum(s.batch_rounds for s in result.segments)
        else:
            rate = min(rates) if rates else limit_rate
            figures["requests_per_minute"] = round(60 * rate, 1)
            figures["limited_by"] = binding if rate >= limit_rate - 1e-9 else "in-flight cap"
            figures["in_flight"] = round(rate * options.latency, 1)
        result.backends[backend] = figures


def measure_prompt_factor(course: Course, options: EstimateOptions, sample: int = 5) -> tuple[float, str]:
    """Ask the free ``messages.count_tokens`` endpoint (a key is needed; nothing is generated or
    billed) about ``sample`` real first requests of agents spread over the plan, and return how
    many more (or fewer) prompt tokens it counts than this module's estimate of the same requests,
    with a line saying so."""
    import os

    import anthropic

    from worker.errors import Phase5Error
    from worker.generators.anthropic_backend import Conversation, system_blocks, tools_for, user_prompt

    caps = model_caps(options.model)
    plans, _ = plans_for_estimate(course, options)
    agents = [ids for plan in plans for batch in plan.orchestrator_batches for ids in batch.agent_batches]
    firsts = [(ids[0], next(i for i in ids if course.by_id[i].position > 1)) for ids in agents if len(ids) > 1]
    chosen = firsts[:: max(1, len(firsts) // sample)][:sample]
    counted = estimated = 0.0
    client = anthropic.Anthropic(api_key=os.environ.get("ANTHROPIC_API_KEY"), max_retries=4)
    try:
        for owner, lego_id in chosen:
            upto, ctx = course.by_id[owner].position, course.context(lego_id)
            system = system_blocks(course, upto, caps)
            body = Conversation(ctx, upto, GeneratorOptions(model=options.model), system, caps=caps).params()
            counted += client.messages.count_tokens(**{k: body[k] for k in COUNTED_FIELDS if k in body}).input_tokens
            pieces = [b["text"] for b in system] + [user_prompt(ctx, upto, caps)]
            pieces += [json.dumps(tool, ensure_ascii=False) for tool in tools_for(caps)]
            estimated += sum(tokens(piece, caps) for piece in pieces)
    except anthropic.APIError as exc:
        raise Phase5Error(f"--count-tokens: the token-count endpoint failed: {exc}") from None
    finally:
        client.close()
    factor = counted / estimated if estimated else 1.0
    return factor, f"count_tokens on {len(chosen)} sampled requests (x{factor:.3f} over characters / 4 x tokenizer)"


def format_estimate(est: Estimate) -> str:
    """The estimate as a few lines for people."""

    def n(value: float) -> str:
        return f"{value:,.0f}"

    def hours(seconds: float) -> str:
        return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"

    w, wo, a = est.with_cache, est.without_cache, est.assumptions
    plan = est.plan
    thinking = f", thinking {a['thinking_tokens']} tokens an answer" if a["thinking_tokens"] else ""
    lines = [
        f"estimate for {est.course} ({est.model}; tokens counted as {a['token_count']}, tokenizer"
        f" x{a['tokenizer_factor']:g}{thinking})",
        f"  plan: {plan['segments']} segments x {plan['orchestrators']} orchestrators x {plan['agents']} agents"
        f" ({plan['source']})",
        f"  baskets {est.baskets} ({est.no_request} without a request: LEGO #1)",
        f"  requests {n(est.requests)}: {est.first_requests} first + {est.repair_requests:,.1f} repairs"
        f" (repair rate {a['repair_rate']:g}, up to {a['repair_rounds']} rounds)"
        f" + {est.window_requests:,.1f} asking for d windows' known sides (rate {a['window_rate']:g})",
        f"  tokens without cache: input {n(wo.input)}, output {n(wo.output)}",
        f"  tokens with cache:    input {n(w.input)}, cache write {n(w.cache_write)}, cache read {n(w.cache_read)},"
        f" output {n(w.output)}",
    ]
    for backend, figures in est.backends.items():
        cost = figures["cost_usd"]
        if backend == "anthropic-batch":
            how = (
                f"{figures['batch_rounds']} batch rounds x {hours(a['batch_turnaround_s'])} turnaround"
                f" (discount x{a['batch_discount']:g})"
            )
        else:
            how = (
                f"{figures['requests_per_minute']:,.0f} requests a minute, limited by {figures['limited_by']};"
                f" ~{figures['in_flight']:,.0f} in flight at {a['latency_s']:g} s a request"
            )
        lines.append(
            f"  {backend:<16} ${cost['with_cache']:,.2f} with cache (${cost['without_cache']:,.2f}"
            f" without); time {hours(figures['time_s'])} ({how})"
        )
    lines.append(f"  prices: {', '.join(a['prices'])}")
    return "\n".join(lines)
