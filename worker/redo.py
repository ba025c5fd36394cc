"""Redo: regenerate chosen baskets of a finished course and put them into ``lego_baskets.json``,
every other basket left as it is, byte for byte.

A redo is one or more segments appended to the course's plan (``segment_04.json`` after a plan of
three), marked with a :class:`~worker.plan.RedoInfo`. They run through the same machinery as the
course's own segments (tmux windows, workers, journals, resume, budget); their journals say which
backend and model made each basket, when, and in which redo. Once every segment of a redo is
merged, :func:`apply_redo` replaces those baskets in ``lego_baskets.json`` by cutting the old
basket's text out of the file and setting the new one in its place (:func:`splice`), so the rest
of the file does not change by a byte; then the redo is marked applied, and the final merge
(:func:`worker.merge.merge_final`) applies it again whenever it rebuilds the file.

>>> splice('{\\n "a": {\\n  "x": 1\\n },\\n "b": [\\n  2\\n ]\\n}\\n', {"a": {"x": 3}})
'{\\n "a": {\\n  "x": 3\\n },\\n "b": [\\n  2\\n ]\\n}\\n'
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.atomic import write_json
from worker.checks import segment_file_problem
from worker.checksum import write_basket_text
from worker.course import Course
from worker.errors import InputError, Phase5Error
from worker.paths import LEGO_ID, CourseLayout
from worker.plan import DEFAULT_AGENTS, DEFAULT_ORCHESTRATORS, RedoInfo, SegmentPlan, load_plans, make_plans
from worker.report import FLAGS, load_basket_file, validate_baskets
from worker.safetext import quote_id

#: What ``--where`` takes: any flag of the report, or ``flagged`` for a basket with any flag.
WHERE = ("flagged", *FLAGS)
DEFAULT_REDO_SEGMENTS = 1


# -- choosing the baskets ---------------------------------------------------------------------------


def final_baskets(course: Course) -> tuple[dict[str, Any], str]:
    """``lego_baskets.json`` as a map and as text; a redo works on a finished run's file."""
    path = CourseLayout(course.root).final_baskets
    if not path.exists():
        raise Phase5Error(f"{path}: not there yet; finish the run first (phase5 run), then redo baskets of it")
    baskets, duplicates = load_basket_file(path)
    if duplicates:
        raise InputError(path, f"{duplicates[0]} occurs twice; fix the file (or run `phase5 merge-final`) first")
    return baskets, path.read_text(encoding="utf-8")


def select_where(course: Course, baskets: Mapping[str, Any], where: Iterable[str]) -> list[str]:
    """The canonical ids, in course order, whose basket carries one of the flags ``where``
    (``flagged``: any flag), as ``validate`` judges ``baskets``; a basket missing from them counts
    as empty."""
    wanted = set(where)
    unknown = wanted - set(WHERE)
    if unknown:
        raise Phase5Error(f"--where {sorted(unknown)[0]!r}: choose among {', '.join(WHERE)}")
    report = validate_baskets(course, dict(baskets))
    chosen = []
    for lego_id in course.ids:
        check = report.baskets.get(lego_id)
        flags = set(check.flags) if check is not None else {"empty"}
        if flags & wanted or ("flagged" in wanted and flags):
            chosen.append(lego_id)
    return chosen


_ID_SEPARATORS = re.compile(r"[\s,]+")


def parse_ids(text: str, course: Course, where: str) -> list[str]:
    """LEGO ids written one per line or separated by commas or spaces (``#`` starts a comment),
    checked against the course, deduplicated, in course order. A duplicate LEGO's id is refused
    with the id of the canonical LEGO whose basket it shares."""
    found: set[str] = set()
    for line in text.splitlines():
        for item in _ID_SEPARATORS.split(line.split("#", 1)[0]):
            if not item:
                continue
            if not LEGO_ID.match(item):
                raise Phase5Error(f"{where}: {quote_id(item)} is not a LEGO id like S0001L01")
            if item not in course.by_id:
                canonical = course.canonical_of.get(item)
                if canonical is not None:
                    raise Phase5Error(
                        f"{where}: {item} repeats {canonical} (same target and known text) and has no basket"
                        f" of its own; redo {canonical}"
                    )
                raise Phase5Error(f"{where}: {item} is not a LEGO of this course")
            found.add(item)
    if not found:
        raise Phase5Error(f"{where}: no LEGO id given")
    return [lego_id for lego_id in course.ids if lego_id in found]


# -- the redo's segments ------------------------------------------------------------------------------


@dataclass
class Redo:
    """One redo: its segments, in order."""

    plans: list[SegmentPlan]

    @property
    def info(self) -> RedoInfo:
        info = self.plans[0].redo
        assert info is not None
        return info

    @property
    def number(self) -> int:
        return self.info.number

    @property
    def ids(self) -> list[str]:
        return [lego_id for plan in self.plans for lego_id in plan.lego_ids]

    @property
    def segments(self) -> list[int]:
        return [plan.segment_number for plan in self.plans]

    @property
    def applied(self) -> bool:
        return self.info.applied_at is not None

    def describe(self, backend: bool = True) -> str:
        """``redo 2: 286 baskets (where empty), backend anthropic, model m, segment 5``."""
        info = self.info
        made = (f", backend {info.backend}" if backend else "") + (f", model {info.model}" if info.model else "")
        segments = f"segment{'s' if len(self.plans) > 1 else ''} {', '.join(map(str, self.segments))}"
        return f"redo {info.number}: {len(self.ids)} baskets ({info.selection}){made}, {segments}"


def redos(course: Course) -> list[Redo]:
    """The course's redos, by number."""
    groups: dict[int, list[SegmentPlan]] = {}
    for plan in load_plans(course, include_redo=True):
        if plan.redo is not None:
            groups.setdefault(plan.redo.number, []).append(plan)
    return [Redo(groups[number]) for number in sorted(groups)]


def unfinished(course: Course) -> Redo | None:
    """The redo that is not yet applied to ``lego_baskets.json``, if any (there is at most one:
    a new redo waits until the last one is finished)."""
    pending = [redo for redo in redos(course) if not redo.applied]
    return pending[-1] if pending else None


def write_redo(
    course: Course,
    ids: list[str],
    backend: str,
    model: str | None,
    selection: str,
    segments: int | None = None,
    orchestrators: int | None = None,
    agents: int | None = None,
) -> Redo:
    """Plan a new redo of ``ids``: segments numbered after every existing one, split as ``prepare``
    splits a course (default one segment of 3 orchestrators of 10 agents, fewer when there are
    fewer baskets)."""
    if not ids:
        raise Phase5Error("nothing to redo: no basket selected")
    existing = load_plans(course, include_redo=True)
    if not any(plan.redo is None for plan in existing):
        raise Phase5Error(f"{CourseLayout(course.root).segments_dir}: no plan; run `phase5 run` first")
    done = redos(course)
    info = RedoInfo(
        number=(done[-1].number + 1) if done else 1,
        backend=backend,
        model=model,
        selection=selection,
        created_at=time.time(),
    )
    first = max(plan.segment_number for plan in existing) + 1
    plans = make_plans(
        ids,
        min(segments or DEFAULT_REDO_SEGMENTS, len(ids)),
        orchestrators or DEFAULT_ORCHESTRATORS,
        agents or DEFAULT_AGENTS,
    )
    layout = CourseLayout(course.root)
    for offset, plan in enumerate(plans):
        plan.segment_number = first + offset
        plan.total_segments = None
        plan.redo = info
        for batch in plan.orchestrator_batches:
            layout.orch_dir(plan.segment_number, batch.orchestrator_id).mkdir(parents=True, exist_ok=True)
        write_json(layout.segment_plan(plan.segment_number), plan.model_dump(exclude_none=True), indent=2)
    return Redo(plans)


# -- putting the baskets into lego_baskets.json -------------------------------------------------------


@dataclass
class Applied:
    """What :func:`apply_redo` changed in ``lego_baskets.json``."""

    redo: int
    ids: list[str]  # the baskets of the redo
    before: dict[str, Any] = field(default_factory=dict)  # their baskets as they were
    changed: list[str] = field(default_factory=list)  # of those, the ones whose basket differs now
    kept: int = 0  # baskets of the file left as they were, byte for byte
    rewritten: bool = False  # the file could not be cut apart and was written whole (same content)


def apply_redo(course: Course, redo: Redo) -> Applied:
    """Put the redo's baskets (from its merged segment files, each complete and valid) into
    ``lego_baskets.json`` in place of the old ones, then mark the redo applied."""
    layout = CourseLayout(course.root)
    new: dict[str, Any] = {}
    for plan in redo.plans:
        problem = segment_file_problem(course, plan.segment_number, plan)
        if problem is not None:
            raise Phase5Error(f"{plan.label}: its merged file is not complete and valid ({problem}); nothing applied")
        new.update(load_basket_file(layout.segment_baskets(plan.segment_number))[0])
    old, text = final_baskets(course)
    result = Applied(
        redo.number,
        redo.ids,
        before={i: old[i] for i in redo.ids if i in old},
        changed=[i for i in redo.ids if old.get(i) != new[i]],
        kept=len(old) - len(new),
    )
    try:
        spliced = splice(text, new)
    except ValueError:
        spliced = None
    expected = {**old, **new}
    if spliced is None or json.loads(spliced) != _wrapped_like(text, expected):
        # Not a file this tool can cut apart (another tool's layout): the same content, written whole.
        spliced = json.dumps(_wrapped_like(text, expected), ensure_ascii=False, indent=1) + "\n"
        result.rewritten = True
    write_final(layout, spliced)
    applied_at = time.time()
    for plan in redo.plans:
        assert plan.redo is not None
        plan.redo.applied_at = applied_at
        write_json(layout.segment_plan(plan.segment_number), plan.model_dump(exclude_none=True), indent=2)
    return result


def write_final(layout: CourseLayout, text: str) -> None:
    """``lego_baskets.json`` replaced by ``text``, atomically, and its checksum file with it."""
    write_basket_text(layout.final_baskets, text)


def _wrapped_like(text: str, baskets: dict[str, Any]) -> Any:
    """``baskets`` in the shape of the file ``text``: a bare map, or ``{"baskets": ...}`` with the
    wrapper's other keys."""
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("baskets"), dict):
        return {**data, "baskets": baskets}
    return baskets


# -- cutting a JSON object apart --------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_KEY = re.compile(r'"(?:[^"\\]|\\.)*"')


def _skip(text: str, at: int) -> int:
    """The offset of the first character at or after ``at`` that is not JSON white space."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def member_spans(text: str, start: int = 0) -> dict[str, tuple[int, int]]:
    """The ``[start, end)`` offsets in ``text`` of each member's value of the JSON object at
    ``start`` (after white space). ValueError when there is no object there."""
    at = _skip(text, start)
    if text[at : at + 1] != "{":
        raise ValueError("not a JSON object")
    spans: dict[str, tuple[int, int]] = {}
    at = _skip(text, at + 1)
    if text[at : at + 1] == "}":
        return spans
    while True:
        match = _KEY.match(text, at)
        if match is None:
            raise ValueError(f"a key expected at offset {at}")
        key = json.loads(match.group())
        at = _skip(text, match.end())
        if text[at : at + 1] != ":":
            raise ValueError(f"':' expected at offset {at}")
        at = _skip(text, at + 1)
        _, end = _DECODER.raw_decode(text, at)
        spans[key] = (at, end)
        at = _skip(text, end)
        if text[at : at + 1] == "}":
            return spans
        if text[at : at + 1] != ",":
            raise ValueError(f"',' or '}}' expected at offset {at}")
        at = _skip(text, at + 1)


def splice(text: str, replacements: Mapping[str, Any]) -> str:
    """``text`` (a basket file: a bare ``{lego_id: basket}`` map or ``{"baskets": {...}}``) with
    the values of ``replacements`` set in place of the old ones, each written as the old one was
    (over several lines with the file's indent, or on one line; ASCII escapes or not), and every
    other byte of the file as it was. ValueError when a replaced id is not in the file or the file
    is not such an object."""
    spans = member_spans(text)
    wrapper = spans.get("baskets")
    if wrapper is not None and not any(LEGO_ID.match(key) for key in spans):
        spans = member_spans(text, wrapper[0])
    missing = [key for key in replacements if key not in spans]
    if missing:
        raise ValueError(f"{missing[0]} is not in the file")
    ascii_only = text.isascii() and "\\u" in text
    out: list[str] = []
    at = 0
    for key, (start, end) in sorted(spans.items(), key=lambda item: item[1][0]):
        if key in replacements:
            out += [text[at:start], _written_like(text, start, end, replacements[key], ascii_only)]
            at = end
    out.append(text[at:])
    return "".join(out)


def _written_like(text: str, start: int, end: int, value: Any, ascii_only: bool) -> str:
    """``value`` as JSON laid out like the old value at ``[start, end)`` of ``text``: over several
    lines, indented one step (the old value's own) more than its key's line, or on one line."""
    old = text[start:end]
    if "\n" not in old:
        return json.dumps(value, ensure_ascii=ascii_only)
    line_start = text.rfind("\n", 0, start) + 1
    key_indent = text[line_start : _skip_blanks(text, line_start)]
    inner = old[old.index("\n") + 1 :]
    step = inner[: len(inner) - len(inner.lstrip(" \t"))][len(key_indent) :] or " "
    return json.dumps(value, ensure_ascii=ascii_only, indent=step).replace("\n", "\n" + key_indent)


def _skip_blanks(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t":
        at += 1
    return at
