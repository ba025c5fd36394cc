"""``validate``: the rule report for any basket file against its course (docs/DESIGN.md §1 rules 1-5).

Every phrase of every basket is judged, even where the basket's format is wrong: format problems
are reported as well as, not instead of, the rules. The report leads with what a course author
needs first: how many baskets are usable (3-5 e-phrases) and how many are empty.

>>> from pathlib import Path
>>> course = Course.load(Path(__file__).resolve().parents[1] / "examples/courses/spa_demo")
>>> report = validate_baskets(course, {})
>>> report.expected, report.present, report.ok
(125, 0, False)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.checksum import checksum_problem
from worker.constants import (
    D_SIZES,
    E_PHRASES_MAX,
    E_PHRASES_MIN,
    LENGTH_BANDS,
    RECENCY_ACCEPTABLE,
    RECENCY_MIN_POSITION,
)
from worker.course import WARNING_KINDS, Course
from worker.errors import InputError
from worker.models import Basket, Pair, read_json_file
from worker.rules import CheckedPhrase, Rejection, check_phrase, d_phrases, phrase_words
from worker.text import doubled_words, inner_capitals, normalise_phrase, words

#: Problems that make ``validate`` exit 1 (the others are reported figures).
ABSOLUTE_RULES = ("format", "gate", "d_phrases", "culminating_first")

#: Flags a basket may carry in the report (``phase5 report`` and ``redo --where`` use them).
FLAGS = (
    "empty",  # no e-phrase
    "short",  # 1-2 e-phrases
    "out-of-band",  # an e-phrase outside its length band
    "d-left-out",  # d windows without a consistent known side
    "no-seed-sentence",  # culminating, but its seed sentence cannot be e[0] (a data warning)
    "format",
    "gate",
    "d-phrases",
    "culminating-first",
    "variety",
    "doubled-words",
    "inner-capitals",
    "d-known-not-span",
)


@dataclass
class Problem:
    lego_id: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.lego_id}: {self.rule}: {self.detail}"


@dataclass
class BasketCheck:
    """What ``validate`` found in one basket."""

    lego_id: str
    position: int
    e: int  # e-phrases read
    band: str  # the length band's label
    out_of_band: int = 0  # e-phrases outside it (a culminating seed sentence not counted)
    d_windows: int = 0
    d_left_out: int = 0
    flags: list[str] = field(default_factory=list)
    words: list[int] = field(default_factory=list)  # words of each e-phrase the length band counts
    recency: float | None = None  # share of recent LEGOs among its tiles (N >= 50)

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)


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
    culminating_no_seed: int = 0  # culminating baskets whose seed sentence cannot be e[0]
    e_count_pass: int = 0  # baskets with 3-5 e-phrases: usable
    empty: int = 0
    short: int = 0  # 1-2 e-phrases
    d_baskets_pass: int = 0
    d_windows: int = 0  # windows of 2-5 tiles holding the operative LEGO, over all e-phrases
    d_left_out: int = 0  # of those, left out: no target as written or no consistent known side
    d_filled: int = 0  # known sides the model wrote for windows alignment could not give
    d_known_not_span: int = 0  # d known sides that are not a span of their e-phrase's known side
    doubled_e: int = 0  # e-phrases with a doubled word ("to to") that no seed sentence has
    doubled_d: int = 0  # d-phrases with a doubled word their e-phrase lacks
    capitals_e: int = 0  # e-phrases with an inner capital ("y Quiero") no seed sentence has
    capitals_d: int = 0  # d-phrases with an inner capital their e-phrase lacks
    variety_pass: int = 0
    recency_baskets: int = 0
    recency_pass: int = 0
    recency_share_mean: float | None = None
    words_per_band: dict[str, float] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    data_warnings: list[dict[str, str]] = field(default_factory=list)
    languages: dict[str, str] = field(default_factory=dict)
    baskets: dict[str, BasketCheck] = field(default_factory=dict)

    @property
    def usable(self) -> int:
        return self.e_count_pass

    @property
    def usable_share(self) -> float:
        return self.usable / self.expected if self.expected else 0.0

    @property
    def coverage(self) -> float:
        return (self.expected - len(self.missing)) / self.expected if self.expected else 1.0

    @property
    def ok(self) -> bool:
        """Complete coverage and every absolute rule holds."""
        absolute = [p for p in self.problems if p.rule in ABSOLUTE_RULES]
        return not self.missing and not self.extra and not self.duplicates and not absolute

    @property
    def warning_counts(self) -> dict[str, int]:
        return dict(Counter(w["kind"] for w in self.data_warnings))

    def flagged(self) -> list[BasketCheck]:
        return [check for check in self.baskets.values() if check.flags]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("baskets")
        data["problems"] = [asdict(p) for p in self.problems]
        data.update(
            coverage=round(self.coverage, 6),
            ok=self.ok,
            usable=self.usable,
            usable_share=round(self.usable_share, 6),
            absolute_rules=list(ABSOLUTE_RULES),
            data_warning_counts=self.warning_counts,
            flagged=[asdict(check) for check in self.flagged()],
        )
        return data


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f}%)" if whole else "0/0"


def validate_baskets(course: Course, baskets: dict[str, Any], duplicates: list[str] | None = None) -> Report:
    """Check every basket of ``baskets`` (a ``{lego_id: basket}`` map) against ``course``."""
    report = Report(expected=len(course.legos), duplicates=sorted(duplicates or []))
    report.data_warnings = [w.to_json() for w in course.warnings]
    report.languages = course.languages.to_json()
    report.missing = [lego_id for lego_id in course.ids if lego_id not in baskets]
    report.extra = sorted(lego_id for lego_id in baskets if lego_id not in course.by_id)
    words_seen: dict[str, list[int]] = defaultdict(list)
    shares: list[float] = []
    for lego_id in course.ids:
        if lego_id in baskets:
            report.present += 1
            _check_basket(course, lego_id, baskets[lego_id], report, words_seen, shares)
    report.words_per_band = {
        band.label: round(sum(words_seen[band.label]) / len(words_seen[band.label]), 2)
        for band in LENGTH_BANDS
        if words_seen[band.label]
    }
    report.recency_share_mean = round(sum(shares) / len(shares), 4) if shares else None
    return report


# -- reading a basket leniently ---------------------------------------------------------------------


def _pair(item: Any) -> Pair | None:
    """The ``[target, known]`` strings of a phrase as other tools write it: a pair, a longer
    array that starts with them (extra fields are a format problem of their own), or an object
    with ``target``/``known``; else None."""
    if isinstance(item, dict):
        item = [item.get("target"), item.get("known")]
    if isinstance(item, list | tuple) and len(item) >= 2 and all(isinstance(x, str) for x in item[:2]):
        return (item[0], item[1])
    return None


def _read(raw: Any, problem: Any) -> tuple[Pair | None, list[Pair], dict[str, list[Pair]]]:
    """The lego, e-phrases and d-phrases of a raw basket, as far as they can be read; every
    format problem is reported through ``problem`` and the rest is still judged."""
    try:
        Basket.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors()[:3]:
            problem("format", f"{'.'.join(map(str, error['loc'])) or 'basket'}: {error['msg']}")
    if not isinstance(raw, dict):
        return None, [], {}
    lego = _pair(raw.get("lego"))
    e: list[Pair] = []
    raw_e = raw.get("e")
    for index, item in enumerate(raw_e if isinstance(raw_e, list) else []):
        pair = _pair(item)
        if pair is None:
            problem("format", f"e[{index}] is not a [target, known] pair; not judged")
        else:
            e.append(pair)
    d: dict[str, list[Pair]] = {}
    raw_d = raw.get("d")
    raw_d = raw_d if isinstance(raw_d, dict) else {}
    for size in D_SIZES:
        items = raw_d.get(str(size))
        d[str(size)] = [pair for pair in map(_pair, items if isinstance(items, list) else []) if pair is not None]
    return lego, e, d


# -- one basket ---------------------------------------------------------------------------------------


def _check_basket(
    course: Course, lego_id: str, raw: Any, report: Report, words_seen: dict[str, list[int]], shares: list[float]
) -> None:
    ctx = course.context(lego_id)
    check = BasketCheck(lego_id, ctx.position, 0, ctx.band.label)
    report.baskets[lego_id] = check

    def problem(rule: str, detail: str) -> None:
        report.problems.append(Problem(lego_id, rule, detail))
        check.flag(rule.replace("_", "-"))

    lego, e, d = _read(raw, problem)
    if lego is not None and not (same_phrase(lego[0], ctx.lego.target) and same_phrase(lego[1], ctx.lego.known)):
        problem("format", f"lego is {list(lego)}, expected {list(ctx.lego.pair)}")
    check.e = len(e)
    report.e_phrases += len(e)
    checked: list[CheckedPhrase] = []
    for index, pair in enumerate(e):
        result = check_phrase(course, ctx.position, pair)
        if isinstance(result, Rejection):
            problem("gate", f"e[{index}] {pair[0]!r}: {result.reason}")
        else:
            checked.append(result)
    report.gate_phrases_pass += len(checked)
    if len(checked) == len(e):
        report.gate_baskets_pass += 1
    _check_count(report, check, len(e))
    _check_culminating(course, ctx, e, report, check, problem)
    # Length band: a culminating seed sentence is mandated, not chosen, so it is not counted.
    skip_seed = 1 if ctx.seed_pair is not None and e and same_phrase(e[0][0], ctx.seed_pair[0]) else 0
    for pair in e[skip_seed:]:
        count = phrase_words(course, pair)
        words_seen[ctx.band.label].append(count)
        check.words.append(count)
        report.band_phrases += 1
        inside = ctx.band.contains(count)
        report.band_phrases_pass += inside
        check.out_of_band += not inside
    if check.out_of_band:
        check.flag("out-of-band")
    norms = [normalise_phrase(t) for t, _ in e]
    if len(set(norms)) == len(norms):
        report.variety_pass += 1
    else:
        problem("variety", "two e-phrases are the same after normalisation")
    _check_writing(course, e, report, check)
    _check_d(course, checked, d, report, check, problem)
    if ctx.position >= RECENCY_MIN_POSITION:
        counted = checked[skip_seed:] if skip_seed and len(checked) == len(e) else checked
        check.recency = _recency(ctx.recent, counted, report, shares)


def same_phrase(a: str, b: str) -> bool:
    return normalise_phrase(a) == normalise_phrase(b)


def _check_count(report: Report, check: BasketCheck, count: int) -> None:
    if E_PHRASES_MIN <= count <= E_PHRASES_MAX:
        report.e_count_pass += 1
    elif count == 0:
        report.empty += 1
        check.flag("empty")
    elif count < E_PHRASES_MIN:
        report.short += 1
        check.flag("short")


def _check_culminating(
    course: Course, ctx: Any, e: list[Pair], report: Report, check: BasketCheck, problem: Any
) -> None:
    """Rule 3: a culminating basket starts with its seed sentence as written, when that sentence
    passes GATE there; when it cannot, the basket is a data warning, not a failure."""
    if not ctx.lego.culminating:
        return
    report.culminating += 1
    if ctx.seed_pair is None:
        report.culminating_no_seed += 1
        check.flag("no-seed-sentence")
        seed = course.seeds_by_id[ctx.lego.seed_id]
        if e and same_phrase(e[0][0], seed.target):
            problem("culminating_first", f"e[0] is the seed sentence {seed.target!r}, which does not pass GATE here")
        return
    if e and e[0] == ctx.seed_pair:
        report.culminating_first_pass += 1
        return
    first = repr(e[0][0]) if e else "no e-phrases"
    problem("culminating_first", f"e[0] is {first}, expected the seed sentence as written {ctx.seed_pair[0]!r}")


def _check_writing(course: Course, e: list[Pair], report: Report, check: BasketCheck) -> None:
    """Doubled words and inner capitals that no seed sentence has: the marks of glued text."""
    doubled_t, doubled_k, capitals = course.seed_writing
    for target, known in e:
        if doubled_words(target) - doubled_t or doubled_words(known) - doubled_k:
            report.doubled_e += 1
            check.flag("doubled-words")
        if (inner_capitals(target) | inner_capitals(known)) - capitals:
            report.capitals_e += 1
            check.flag("inner-capitals")


def _check_d(
    course: Course,
    checked: list[CheckedPhrase],
    d: dict[str, list[Pair]],
    report: Report,
    check: BasketCheck,
    problem: Any,
) -> None:
    """The d-phrases must be the windows with a consistent known side, targets as written; a
    window alignment leaves out may carry a known side the model wrote (counted as filled)."""
    expected = d_phrases(course, checked)
    check.d_windows = expected.windows
    report.d_windows += expected.windows
    fillable: dict[tuple[int, str], list[CheckedPhrase]] = defaultdict(list)  # its e-phrases, by window
    for w in expected.left_out:
        if w.target is not None:
            fillable[(w.size, w.target)].append(checked[w.phrase])
    wrong: list[str] = []
    filled = 0
    for size in D_SIZES:
        key = str(size)
        want = set(expected.d[key])
        have = d.get(key, [])
        for pair in have:
            sources = fillable.get((size, pair[0]))
            if pair in want:
                continue
            if sources and pair[1].strip():
                filled += 1
                _check_filled(sources, pair, report, check)
                continue
            targets = {t for t, _ in want} | {t for s, t in fillable if s == size}
            if pair[0] in targets:
                wrong.append(f'd["{key}"] {pair[0]!r}: known side {pair[1]!r} is not its aligned block')
            elif any(same_phrase(pair[0], t) for t in targets):
                wrong.append(f'd["{key}"] {pair[0]!r}: not written as in its e-phrase')
            else:
                wrong.append(f'd["{key}"] {pair[0]!r}: not a window of an e-phrase\'s tiling')
        missing = [pair for pair in expected.d[key] if pair not in have]
        if missing:
            wrong.append(f'd["{key}"] missing {missing[0][0]!r} = {missing[0][1]!r}')
    check.d_left_out = len(expected.left_out) - filled
    report.d_left_out += check.d_left_out
    report.d_filled += filled
    if check.d_left_out:
        check.flag("d-left-out")
    if wrong:
        problem("d_phrases", "; ".join(wrong[:2]) + (f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""))
    else:
        report.d_baskets_pass += 1


def _check_filled(sources: list[CheckedPhrase], pair: Pair, report: Report, check: BasketCheck) -> None:
    """A known side the model wrote for a window: is it a span of the known side of an e-phrase
    the window was cut from, and free of doubled words and inner capitals that e-phrase lacks?"""

    def fits(phrase: CheckedPhrase) -> bool:
        return f" {normalise_phrase(pair[1])} " in f" {normalise_phrase(phrase.pair[1])} "

    source = next((phrase for phrase in sources if fits(phrase)), None)
    if source is None:
        report.d_known_not_span += 1
        check.flag("d-known-not-span")
        source = sources[0]
    target, known = source.pair
    if doubled_words(pair[0]) - doubled_words(target) or doubled_words(pair[1]) - doubled_words(known):
        report.doubled_d += 1
        check.flag("doubled-words")
    if inner_capitals(pair[0]) - {w for w, _, _ in words(target)} or inner_capitals(pair[1]) - {
        w for w, _, _ in words(known)
    }:
        report.capitals_d += 1
        check.flag("inner-capitals")


def _recency(recent: range, counted: list[CheckedPhrase], report: Report, shares: list[float]) -> float | None:
    """The basket's recency share (None without a tile to count), added to the report."""
    tiles = [p for c in counted for i, p in enumerate(c.positions) if i != c.operative_index]
    if not tiles:
        return None
    value = sum(p in recent for p in tiles) / len(tiles)
    shares.append(value)
    report.recency_baskets += 1
    report.recency_pass += RECENCY_ACCEPTABLE[0] <= value <= RECENCY_ACCEPTABLE[1]
    return value


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


def headline(report: Report) -> str:
    """One line: PASS/FAIL, then how many baskets a learner can use and how many are empty."""
    r = report
    return (
        f"{'PASS' if r.ok else 'FAIL'}  usable (3-5 e-phrases) {share(r.usable, r.expected)},"
        f" empty {share(r.empty, r.expected)}, short (1-2) {r.short}, baskets {r.present}/{r.expected}"
    )


def format_report(report: Report, limit: int = 20, warnings_shown: int = 5) -> str:
    """The report as lines for people (``--json`` has everything)."""
    r = report
    lines = [
        headline(r),
        f"course    {r.languages.get('description', '?')} (languages from {r.languages.get('source', '?')})",
        f"baskets   expected {r.expected}, present {r.present}, missing {len(r.missing)}, extra {len(r.extra)},"
        f" duplicate ids {len(r.duplicates)}, coverage {100 * r.coverage:.1f}%",
        f"e-phrases {r.e_phrases}",
        f"GATE      phrases {share(r.gate_phrases_pass, r.e_phrases)}, baskets {share(r.gate_baskets_pass, r.present)}",
        f"d-phrases baskets correct {share(r.d_baskets_pass, r.present)}; windows {r.d_windows}, left out"
        f" {r.d_left_out} (no consistent known side), known sides written by the model {r.d_filled}"
        f" (not a span of their e-phrase's known side: {r.d_known_not_span})",
        f"culminating first {share(r.culminating_first_pass, r.culminating - r.culminating_no_seed)}"
        f" ({r.culminating_no_seed} without a usable seed sentence: data warnings)",
        f"length band phrases in band {share(r.band_phrases_pass, r.band_phrases)}"
        " (culminating seed sentences not counted)",
        "mean target words per band: "
        + (", ".join(f"{label}: {mean}" for label, mean in r.words_per_band.items()) or "-"),
        f"3-5 e-phrases baskets {share(r.e_count_pass, r.present)}",
        f"variety   baskets without repeated phrases {share(r.variety_pass, r.present)}",
        f"writing   doubled words no source has: e {r.doubled_e}, d {r.doubled_d};"
        f" inner capitals no source has: e {r.capitals_e}, d {r.capitals_d}",
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
    lines.extend(format_warnings(r.data_warnings, warnings_shown))
    lines.append(
        "result    "
        + ("PASS" if r.ok else "FAIL")
        + " (coverage and absolute rules: "
        + ", ".join(ABSOLUTE_RULES)
        + ")"
    )
    return "\n".join(lines)


def format_warnings(warnings: list[dict[str, str]], shown: int = 5) -> list[str]:
    """Data warnings for people: a count per kind with its meaning, then the first ``shown``."""
    if not warnings:
        return []
    counts = Counter(w["kind"] for w in warnings)
    lines = [
        f"data warnings {len(warnings)}: "
        + "; ".join(f"{count} {WARNING_KINDS.get(kind, kind)}" for kind, count in counts.items())
    ]
    lines += [f"  data warning {w['where']}: {w['message']}" for w in warnings[:shown]]
    if len(warnings) > shown:
        lines.append(f"  ... and {len(warnings) - shown} more data warnings (--json lists all)")
    return lines


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
