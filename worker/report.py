"""``validate``: the rule report for any basket file against its course (SPEC §1 rules 1-5).

>>> from pathlib import Path
>>> course = Course.load(Path(__file__).resolve().parents[1] / "examples/courses/spa_demo")
>>> report = validate_baskets(course, {})
>>> report.expected, report.present, report.ok
(125, 0, False)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.checksum import checksum_problem
from worker.constants import (
    E_PHRASES_MAX,
    E_PHRASES_MIN,
    LENGTH_BANDS,
    RECENCY_ACCEPTABLE,
    RECENCY_MIN_POSITION,
)
from worker.course import Course
from worker.errors import InputError
from worker.models import Basket, read_json_file
from worker.rules import CheckedPhrase, Rejection, check_phrase, d_phrases, phrase_words, same_phrase
from worker.tiler import normalise_phrase

#: Problems that make ``validate`` exit 1 (the others are reported figures).
ABSOLUTE_RULES = ("format", "gate", "d_phrases", "culminating_first")


@dataclass
class Problem:
    lego_id: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.lego_id}: {self.rule}: {self.detail}"


@dataclass
class Report:
    expected: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    e_phrases: int = 0
    gate_phrases_pass: int = 0
    gate_baskets_pass: int = 0
    band_phrases: int = 0
    band_phrases_pass: int = 0
    culminating: int = 0
    culminating_first_pass: int = 0
    e_count_pass: int = 0  # baskets with 3-5 e-phrases
    d_baskets_pass: int = 0
    variety_pass: int = 0
    recency_baskets: int = 0
    recency_pass: int = 0
    recency_share_mean: float | None = None
    words_per_band: dict[str, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    data_warnings: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return (self.expected - len(self.missing)) / self.expected if self.expected else 1.0

    @property
    def ok(self) -> bool:
        """Complete coverage and every absolute rule holds."""
        absolute = [p for p in self.problems if p.rule in ABSOLUTE_RULES]
        return not self.missing and not self.extra and not self.duplicates and not absolute

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = [asdict(p) for p in self.problems]
        data.update(coverage=round(self.coverage, 6), ok=self.ok, absolute_rules=list(ABSOLUTE_RULES))
        return data


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else "0/0"


def validate_baskets(course: Course, baskets: dict[str, Any], duplicates: list[str] | None = None) -> Report:
    """Check every basket of ``baskets`` (a ``{lego_id: basket}`` map) against ``course``."""
    report = Report(expected=len(course.legos), duplicates=sorted(duplicates or []))
    report.data_warnings = [str(w) for w in course.warnings]
    report.missing = [lego_id for lego_id in course.ids if lego_id not in baskets]
    report.extra = sorted(lego_id for lego_id in baskets if lego_id not in course.by_id)
    words: dict[str, list[int]] = defaultdict(list)
    shares: list[float] = []
    for lego_id in course.ids:
        if lego_id in baskets:
            report.present += 1
            _check_basket(course, lego_id, baskets[lego_id], report, words, shares)
    report.words_per_band = {
        band.label: round(sum(words[band.label]) / len(words[band.label]), 2)
        for band in LENGTH_BANDS
        if words[band.label]
    }
    report.recency_share_mean = round(sum(shares) / len(shares), 4) if shares else None
    return report


def _check_basket(
    course: Course, lego_id: str, raw: Any, report: Report, words: dict[str, list[int]], shares: list[float]
) -> None:
    problem = lambda rule, detail: report.problems.append(Problem(lego_id, rule, detail))  # noqa: E731
    try:
        basket = Basket.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        problem("format", f"{'.'.join(map(str, error['loc'])) or 'basket'}: {error['msg']}")
        return
    ctx = course.context(lego_id)
    if not (same_phrase(basket.lego[0], ctx.lego.target) and same_phrase(basket.lego[1], ctx.lego.known)):
        problem("format", f"lego is {list(basket.lego)}, expected {list(ctx.lego.pair)}")
    report.e_phrases += len(basket.e)
    checked: list[CheckedPhrase] = []
    for index, pair in enumerate(basket.e):
        result = check_phrase(course, ctx.position, pair)
        if isinstance(result, Rejection):
            problem("gate", f"e[{index}] {pair[0]!r}: {result.reason}")
        else:
            checked.append(result)
    report.gate_phrases_pass += len(checked)
    if len(checked) == len(basket.e):
        report.gate_baskets_pass += 1
    # Length band: the seed sentence of a culminating basket is mandated, not chosen, so it is not counted.
    skip_seed = 1 if ctx.lego.culminating and basket.e else 0
    for pair in basket.e[skip_seed:]:
        count = phrase_words(course, pair)
        words[ctx.band.label].append(count)
        report.band_phrases += 1
        report.band_phrases_pass += ctx.band.contains(count)
    if ctx.lego.culminating and ctx.seed_pair is not None:  # a culminating LEGO has its seed pair
        report.culminating += 1
        seed_texts = {normalise_phrase(course.seeds_by_id[ctx.lego.seed_id].target), normalise_phrase(ctx.seed_pair[0])}
        if basket.e and normalise_phrase(basket.e[0][0]) in seed_texts:
            report.culminating_first_pass += 1
        else:
            first = repr(basket.e[0][0]) if basket.e else "no e-phrases"
            problem("culminating_first", f"e[0] is {first}, expected the seed sentence {ctx.seed_pair[0]!r}")
    if E_PHRASES_MIN <= len(basket.e) <= E_PHRASES_MAX:
        report.e_count_pass += 1
    norms = [normalise_phrase(t) for t, _ in basket.e]
    if len(set(norms)) == len(norms):
        report.variety_pass += 1
    else:
        problem("variety", "two e-phrases are the same after normalisation")
    computed = d_phrases(course, checked)
    # Equal as written (the usual case: the same code wrote them) means equal once normalised;
    # only a difference needs the normalised comparison.
    if computed == basket.d or _normalised(computed) == _normalised(basket.d):
        report.d_baskets_pass += 1
    else:
        problem("d_phrases", _d_difference(_normalised(computed), _normalised(basket.d)))
    if ctx.position >= RECENCY_MIN_POSITION:
        recent = ctx.recent
        counted = checked[skip_seed:] if skip_seed and len(checked) == len(basket.e) else checked
        tiles = [p for c in counted for i, p in enumerate(c.positions) if i != c.operative_index]
        if tiles:
            value = sum(p in recent for p in tiles) / len(tiles)
            shares.append(value)
            report.recency_baskets += 1
            report.recency_pass += RECENCY_ACCEPTABLE[0] <= value <= RECENCY_ACCEPTABLE[1]


def _normalised(d: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    return {size: {(normalise_phrase(t), normalise_phrase(k)) for t, k in d.get(size, [])} for size in d}


def _d_difference(expected: dict[str, set], actual: dict[str, set]) -> str:
    for size in sorted(set(expected) | set(actual), key=int):
        missing = expected.get(size, set()) - actual.get(size, set())
        extra = actual.get(size, set()) - expected.get(size, set())
        if missing or extra:
            parts = []
            if extra:
                parts.append(f"not a window of a tiling: {sorted(extra)[0][0]!r}")
            if missing:
                parts.append(f"missing {sorted(missing)[0][0]!r}")
            return f'd["{size}"] ' + "; ".join(parts)
    return "d-phrases differ"


# -- basket files ---------------------------------------------------------------------------------


def load_basket_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A basket map from a bare ``{lego_id: basket}`` file or a ``{"baskets": {...}}`` wrapper,
    and the ids that occur more than once in it."""
    import json

    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen and isinstance(value, dict) and "e" in value:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:  # parsed once; a failure is parsed again by read_json_file, which words it as one clear line
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=pairs_hook)
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        read_json_file(path)
        raise
    mismatch = checksum_problem(path)
    if mismatch:
        raise InputError(path, f"{mismatch}; `phase5 run` rebuilds it (or delete the .sha256 file to read it as it is)")
    if isinstance(data, dict) and isinstance(data.get("baskets"), dict):
        data = data["baskets"]
    if not isinstance(data, dict):
        raise InputError(path, "expected a {lego_id: basket} map")
    return data, duplicates


def format_report(report: Report, limit: int = 20) -> str:
    """The report as lines for people."""
    r = report
    lines = [
        f"baskets   expected {r.expected}, present {r.present}, missing {len(r.missing)}, extra {len(r.extra)},"
        f" duplicate ids {len(r.duplicates)}, coverage {100 * r.coverage:.1f}%",
        f"e-phrases {r.e_phrases}",
        f"GATE      phrases {share(r.gate_phrases_pass, r.e_phrases)}, baskets {share(r.gate_baskets_pass, r.present)}",
        f"d-phrases baskets correct {share(r.d_baskets_pass, r.present)}",
        f"culminating first {share(r.culminating_first_pass, r.culminating)}",
        f"length band phrases in band {share(r.band_phrases_pass, r.band_phrases)}"
        " (culminating seed sentences not counted)",
        "mean target words per band: "
        + (", ".join(f"{label}: {mean}" for label, mean in r.words_per_band.items()) or "-"),
        f"3-5 e-phrases baskets {share(r.e_count_pass, r.present)}",
        f"variety   baskets without repeated phrases {share(r.variety_pass, r.present)}",
        f"recency   (N >= 50) baskets within 25-55% {share(r.recency_pass, r.recency_baskets)}, mean share "
        + (f"{100 * r.recency_share_mean:.1f}%" if r.recency_share_mean is not None else "-"),
    ]
    if r.missing:
        lines.append(f"missing: {', '.join(r.missing[:limit])}{' ...' if len(r.missing) > limit else ''}")
    if r.extra:
        lines.append(f"extra (not canonical LEGOs of this course): {', '.join(r.extra[:limit])}")
    if r.duplicates:
        lines.append(f"duplicate ids: {', '.join(r.duplicates[:limit])}")
    for p in r.problems[:limit]:
        lines.append(f"problem   {p}")
    if len(r.problems) > limit:
        lines.append(f"... and {len(r.problems) - limit} more problems (--json lists all)")
    for w in r.data_warnings:
        lines.append(f"data warning {w}")
    lines.append(
        "result    "
        + ("PASS" if r.ok else "FAIL")
        + " (coverage and absolute rules: "
        + ", ".join(ABSOLUTE_RULES)
        + ")"
    )
    return "\n".join(lines)


def basket_problems(course: Course, baskets: dict[str, Any], expected_ids: list[str]) -> list[str]:
    """Why a set of baskets (an agent's, an orchestrator's) is not acceptable: ids missing or
    extra, and every absolute-rule problem. Empty when the baskets may be saved and merged."""
    problems = [f"{i}: missing" for i in expected_ids if i not in baskets]
    wanted = set(expected_ids)
    problems += [f"{i}: not expected here" for i in baskets if i not in wanted]
    report = Report()
    for lego_id in expected_ids:
        if lego_id in baskets:
            _check_basket(course, lego_id, baskets[lego_id], report, defaultdict(list), [])
    problems += [str(p) for p in report.problems if p.rule in ABSOLUTE_RULES]
    return problems
