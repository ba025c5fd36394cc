"""What a run would cost before it spends anything (``phase5 estimate``, ``phase5 run --dry-run``).

No API call: the requests are built with the same code the ``anthropic`` and ``anthropic-batch``
backends send (:func:`~worker.generators.anthropic_backend.system_blocks`, ``user_prompt``, the
tool schema), one per basket, each agent's cached prefix starting at its first LEGO, as planned.

Tokens are counted as characters / 4 (the rule of thumb for English; accented and non-Latin text
makes more tokens per character, and the API adds a few hundred tokens of tool-use overhead,
so real counts run somewhat higher). Output tokens are modelled, not measured: the asked-for 5-8
candidates (6.5 on average, plus the seed sentence of a culminating LEGO) at the middle of the
length band, in the tool-call JSON.

Repairs: at ``repair_rate`` R, a basket's first answer needs a repair round with probability R,
that one another with probability R, up to ``repair_rounds``: R + R² + ... extra requests per
basket. A repair request sends the conversation so far (the answer and the validator's reasons)
after the same cached prefix, and gets about half the first answer's output.

Caching: the first request of each agent writes its prefix (skill + tool + its vocabulary) to
the cache; every later request of that agent, repairs included, reads it. Without caching, every
request pays the whole prefix as input. LEGO #1 sends no request.

Time: ``anthropic`` runs a segment's agents in parallel, each one request after another, at
most ``concurrency`` in flight: latency × max(ceil(requests / concurrency), the longest agent's
requests), per segment, plus the launch stagger; segments run one after another.
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
from worker.paths import CourseLayout
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, DEFAULT_SEGMENTS, SegmentPlan, load_plans, make_plans

TOKEN_METHOD = "characters / 4"
CHARS_PER_TOKEN = 4
#: JSON around each phrase in the tool call ({"target": "", "known": ""},) and around the call.
PHRASE_JSON_CHARS = 30
TOOL_CALL_TOKENS = 40
#: The validator's reasons sent back in a repair turn, in tokens (a fixed part and per phrase).
REPAIR_TURN_TOKENS = 80
REPAIR_REASON_TOKENS = 45
REPAIR_PHRASES = 2  # phrases that fail in an answer that needs a repair, on average
REPAIR_OUTPUT_SHARE = 0.5
DEFAULT_LATENCY = 30.0
DEFAULT_REPAIR_RATE = 0.2
DEFAULT_BATCH_TURNAROUND = 3600.0
DEFAULT_STAGGER = 30.0
API_BACKENDS = ("anthropic", "anthropic-batch")


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass
class EstimateOptions:
    model: str = GeneratorOptions().model
    repair_rate: float = DEFAULT_REPAIR_RATE
    repair_rounds: int = GeneratorOptions().repair_rounds
    concurrency: int | None = None  # None: every agent of a segment at once (orchestrators x agents)
    latency: float = DEFAULT_LATENCY
    batch_turnaround: float = DEFAULT_BATCH_TURNAROUND
    stagger: float = DEFAULT_STAGGER
    segments: int | None = None  # plan shape when the course is not prepared
    orchestrators: int | None = None
    agents: int | None = None


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

    def usage(self) -> Usage:
        return Usage(
            input_tokens=round(self.input),
            output_tokens=round(self.output),
            cache_creation_input_tokens=round(self.cache_write),
            cache_read_input_tokens=round(self.cache_read),
        )

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
    with_cache: Tokens = field(default_factory=Tokens)
    without_cache: Tokens = field(default_factory=Tokens)
    segments: list[SegmentFigures] = field(default_factory=list)
    backends: dict[str, Any] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return self.first_requests + self.repair_requests

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


def estimate(
    course: Course, options: EstimateOptions, table: PriceTable, backends: tuple[str, ...] = API_BACKENDS
) -> Estimate:
    # The prompt pieces live with the backend, which imports the SDK (~1.5 s and ~50 MB a process):
    # import it when an estimate is made, not whenever the command line is loaded (every worker,
    # supervisor and status window loads it).
    from worker.generators.anthropic_backend import CANDIDATES, TOOL, system_blocks, user_prompt

    plans, source = plans_for_estimate(course, options)
    rate, rounds = options.repair_rate, options.repair_rounds
    repairs_per_basket = sum(rate**k for k in range(1, rounds + 1))
    seeds = course.source.seeds
    target_cpw = _chars_per_word([s.target for s in seeds]) if seeds else 6.0
    known_cpw = _chars_per_word([s.known for s in seeds]) if seeds else 6.0
    tool_tokens = tokens(json.dumps(TOOL, ensure_ascii=False))
    phrases = sum(CANDIDATES) / 2
    result = Estimate(
        course=str(course.root),
        model=options.model,
        baskets=len(course.legos),
        no_request=0,
        plan={
            "source": source,
            "segments": len(plans),
            "orchestrators": max((len(p.orchestrator_batches) for p in plans), default=0),
            "agents": max((len(b.agent_batches) for p in plans for b in p.orchestrator_batches), default=0),
        },
    )
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
                prefix = tool_tokens + sum(tokens(block["text"]) for block in system_blocks(course, first))
                agent_requests = 0.0
                for lego_id in ids:
                    ctx = course.context(lego_id)
                    if ctx.position == 1:
                        result.no_request += 1
                        continue
                    user = tokens(user_prompt(ctx, first))
                    words = (ctx.band.min_words + ctx.band.max_words) / 2
                    count = phrases + (1 if ctx.seed_pair else 0)
                    output = (
                        TOOL_CALL_TOKENS
                        + count * (words * (target_cpw + known_cpw) + PHRASE_JSON_CHARS) / CHARS_PER_TOKEN
                    )
                    repair_in = user + output + REPAIR_TURN_TOKENS + REPAIR_PHRASES * REPAIR_REASON_TOKENS
                    repair_out = output * REPAIR_OUTPUT_SHARE
                    cached_first = agent_requests == 0
                    result.first_requests += 1
                    result.repair_requests += repairs_per_basket
                    agent_requests += 1 + repairs_per_basket
                    result.without_cache.add(Tokens(input=prefix + user, output=output))
                    result.without_cache.add(Tokens(input=prefix + repair_in, output=repair_out), repairs_per_basket)
                    result.with_cache.add(
                        Tokens(
                            input=user,
                            output=output,
                            cache_write=prefix if cached_first else 0,
                            cache_read=0 if cached_first else prefix,
                        )
                    )
                    result.with_cache.add(
                        Tokens(input=repair_in, output=repair_out, cache_read=prefix), repairs_per_basket
                    )
                seg.requests += agent_requests
                seg.longest_agent = max(seg.longest_agent, agent_requests)
        basket_count = plan.total_legos
        seg.batch_rounds = 1 + sum(1 for k in range(1, rounds + 1) if basket_count * rate**k >= 0.5)
        result.segments.append(seg)
    _price_and_time(result, options, table, backends)
    result.assumptions = {
        "token_count": TOKEN_METHOD,
        "output_per_request": f"{phrases:g} candidate phrases (+ the seed sentence when culminating) at the"
        f" middle of the length band, as tool-call JSON; at most {E_PHRASES_MAX} are kept",
        "repair_rate": rate,
        "repair_rounds": rounds,
        "repairs_per_basket": round(repairs_per_basket, 4),
        "cache": "the first request of each agent writes its prefix, the others read it",
        "concurrency": options.concurrency,
        "latency_s": options.latency,
        "stagger_s": options.stagger,
        "batch_turnaround_s": options.batch_turnaround,
        "batch_discount": table.batch_discount,
        "prices": table.source,
    }
    return result


def _price_and_time(result: Estimate, options: EstimateOptions, table: PriceTable, backends: tuple[str, ...]) -> None:
    with_cache, without_cache = result.with_cache.usage(), result.without_cache.usage()
    for backend in backends:
        batch = backend == "anthropic-batch"
        time_s = 0.0
        for seg in result.segments:
            time_s += options.stagger * max(0, seg.orchestrators - 1)
            if batch:
                time_s += seg.batch_rounds * options.batch_turnaround
            else:
                parallel = min(options.concurrency or seg.agents, seg.agents) or 1
                time_s += options.latency * max(math.ceil(seg.requests / parallel), math.ceil(seg.longest_agent))
        result.backends[backend] = {
            "cost_usd": {
                "with_cache": round(table.cost(with_cache, options.model, batch=batch), 4),
                "without_cache": round(table.cost(without_cache, options.model, batch=batch), 4),
            },
            "time_s": round(time_s, 1),
            **({"batch_rounds": sum(s.batch_rounds for s in result.segments)} if batch else {}),
        }


def format_estimate(est: Estimate) -> str:
    """The estimate as a few lines for people."""

    def n(value: float) -> str:
        return f"{value:,.0f}"

    def hours(seconds: float) -> str:
        return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"

    w, wo, a = est.with_cache, est.without_cache, est.assumptions
    plan = est.plan
    lines = [
        f"estimate for {est.course} ({est.model}; no API call; tokens counted as {a['token_count']})",
        f"  plan: {plan['segments']} segments x {plan['orchestrators']} orchestrators x {plan['agents']} agents"
        f" ({plan['source']})",
        f"  baskets {est.baskets} ({est.no_request} without a request: LEGO #1)",
        f"  requests {n(est.requests)}: {est.first_requests} first + {est.repair_requests:,.1f} repairs"
        f" (repair rate {a['repair_rate']:g}, up to {a['repair_rounds']} rounds)",
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
            how = f"concurrency {a['concurrency'] or 'all agents'}, latency {a['latency_s']:g} s"
        lines.append(
            f"  {backend:<16} ${cost['with_cache']:,.2f} with cache (${cost['without_cache']:,.2f}"
            f" without); time {hours(figures['time_s'])} ({how})"
        )
    lines.append(f"  prices: {', '.join(a['prices'])}")
    return "\n".join(lines)
