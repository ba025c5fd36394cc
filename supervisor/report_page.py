"""The review page of a course (``phase5 report``): one self-contained HTML file, no server and
no network (inline CSS, SVG and a little script), with

- the summary: coverage, usable and empty baskets, the rule figures of ``validate``, the
  languages, the backends and models that made the baskets, tokens and cost (from the journals),
  wall time and the redos;
- charts: words per e-phrase against each length band, e-phrases per basket, the recency share;
- every flagged basket with its phrases, which backend and model made it and its repair rounds,
  filterable by flag and searchable by id or text;
- the data warnings of the course;
- the timeline of every run (:mod:`supervisor.timeline`).

Everything that came from a file (phrases, ids, error texts, paths) is escaped, with control and
bidi characters shown as escapes (:func:`worker.safetext.printable`): a course file cannot add
markup, script or a link to the page.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from supervisor.charts import band_chart, histogram, share_chart, timeline_chart
from supervisor.state import RunState
from supervisor.timeline import TimelineRun, timeline
from worker.atomic import write_text
from worker.constants import LENGTH_BANDS, RECENCY_ACCEPTABLE, RECENCY_TARGET
from worker.cost import PriceTable, course_spend
from worker.course import WARNING_KINDS, Course
from worker.paths import CourseLayout
from worker.plan import RedoInfo
from worker.provenance import Provenance, provenance
from worker.report import FLAGS, BasketCheck, Report, validate_baskets
from worker.rules import phrase_words
from worker.safetext import printable


def asset(name: str) -> str:
    """The page's style sheet or script (``supervisor/report_assets``, shipped as package data),
    inlined: the page needs no other file and no network."""
    return resources.files("supervisor").joinpath("report_assets", name).read_text(encoding="utf-8")


def esc(value: object) -> str:
    """Text from anywhere, safe as HTML text or attribute value."""
    return html.escape(printable(value), quote=True)


@dataclass
class PageFacts:
    """What the command says about the page it wrote (and the tests check)."""

    flagged: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    charts: int = 0
    runs: int = 0


def build_page(course: Course, baskets: dict[str, Any], source: Path, table: PriceTable) -> tuple[str, PageFacts]:
    """The page for ``baskets`` (read from ``source``) of ``course``, and its facts."""
    report = validate_baskets(course, baskets)
    found = provenance(course)
    runs = timeline(course.root, found)
    flagged = report.flagged()
    facts = PageFacts(
        flagged=[check.lego_id for check in flagged],
        empty=[check.lego_id for check in flagged if "empty" in check.flags],
        runs=len(runs),
    )
    charts = _charts(report)
    facts.charts = len(charts)
    parts = [
        _head(course),
        "<body>",
        _header(course, source),
        _summary(course, report, found, runs, table),
        '<section id="charts"><h2>Charts</h2><div class="charts">' + "".join(charts) + "</div></section>",
        _empty_list(facts.empty),
        _flagged(course, baskets, report, flagged, found),
        _warnings(report),
        _timelines(runs),
        f"<footer>phase5 report · {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</footer>",
        f"<script>{asset('report.js')}</script>",
        "</body></html>",
    ]
    return "\n".join(parts), facts


# -- pieces --------------------------------------------------------------------------------------------


def _head(course: Course) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>phase5 report: {esc(course.root.name)}</title><style>{asset('report.css')}</style></head>"
    )


def _header(course: Course, source: Path) -> str:
    """The course, and the basket file named as the course's own when it is one of its files."""
    if source.resolve().is_relative_to(course.root.resolve()):
        source = source.resolve().relative_to(course.root.resolve())
    return (
        f"<header><h1>{esc(course.root.name)} <span class=sub>{esc(course.description)}</span></h1>"
        f"<p class=muted>baskets from {esc(source)} · report made {esc(time.strftime('%Y-%m-%d %H:%M'))}</p></header>"
    )


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (
        f'<div class="card {tone}"><div class=label>{esc(label)}</div><div class=value>{esc(value)}</div>'
        + (f"<div class=note>{esc(note)}</div>" if note else "")
        + "</div>"
    )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _summary(course: Course, r: Report, found: Provenance, runs: list[TimelineRun], table: PriceTable) -> str:
    spend = course_spend(course, found.plans, table)["run"] if found.plans else None
    made: Counter[str] = Counter()
    for lego_id in r.baskets:
        current = found.current(lego_id)
        made[current.made_by if current is not None else "no journal record"] += 1
    wall = sum(run.last - run.start for run in runs)
    state = RunState.load(CourseLayout(course.root))
    cards = [
        _card("result", "PASS" if r.ok else "FAIL", "coverage and the absolute rules", "ok" if r.ok else "bad"),
        _card("baskets", f"{r.present}/{r.expected}", f"coverage {100 * r.coverage:.1f}%"),
        _card("usable (3-5 e-phrases)", str(r.usable), _pct(r.usable, r.expected), "ok"),
        _card("empty", str(r.empty), _pct(r.empty, r.expected), "bad" if r.empty else ""),
        _card("short (1-2)", str(r.short), _pct(r.short, r.expected), "warn" if r.short else ""),
        _card("flagged baskets", str(len(r.flagged())), "listed below"),
        _card("GATE", _pct(r.gate_phrases_pass, r.e_phrases), f"{r.gate_phrases_pass}/{r.e_phrases} e-phrases pass"),
        _card(
            "length band",
            _pct(r.band_phrases_pass, r.band_phrases),
            f"{r.band_phrases_pass}/{r.band_phrases} e-phrases in their band (seed sentences not counted)",
        ),
        _card(
            "culminating first",
            _pct(r.culminating_first_pass, r.culminating - r.culminating_no_seed),
            f"{r.culminating_first_pass}/{r.culminating - r.culminating_no_seed};"
            f" {r.culminating_no_seed} without a usable seed sentence",
        ),
        _card(
            "recency (N >= 50)",
            _pct(r.recency_pass, r.recency_baskets),
            f"{r.recency_pass}/{r.recency_baskets} baskets within 25-55%"
            + (f", mean {100 * r.recency_share_mean:.0f}%" if r.recency_share_mean is not None else ""),
        ),
        _card("d windows", str(r.d_windows), f"{r.d_left_out} left out (no consistent known side)"),
        _card("data warnings", str(len(r.data_warnings)), "listed below" if r.data_warnings else ""),
    ]
    if spend is not None:
        tokens = spend["tokens"]
        cards.append(
            _card(
                "cost",
                f"${spend['cost_usd']:.4f}",
                f"{spend['requests']} requests; tokens in {tokens['input_tokens']:,}, out {tokens['output_tokens']:,},"
                f" cache write {tokens['cache_creation_input_tokens']:,}, read {tokens['cache_read_input_tokens']:,}",
            )
        )
    cards.append(
        _card(
            "wall time",
            _duration(wall) if runs else "-",
            f"{len(runs)} supervisor run(s), {sum(run.relaunches for run in runs)} relaunches,"
            f" {sum(run.stuck for run in runs)} stuck"
            + (f"; since the first start {_duration(_since_first(state))}" if state else ""),
        )
    )
    made_rows = "".join(f"<tr><td>{esc(name)}</td><td class=num>{n}</td></tr>" for name, n in made.most_common())
    languages = r.languages
    redo_rows = "".join(_redo_row(plan.redo, plan.total_legos) for plan in found.plans if plan.redo is not None)
    return (
        '<section id="summary"><h2>Summary</h2><div class="cards">'
        + "".join(cards)
        + "</div><div class=cols>"
        + f"<div><h3>Languages</h3><p>{esc(languages.get('description', '?'))}"
        f" <span class=muted>(target {esc(languages.get('target', '?'))}, known {esc(languages.get('known', '?'))};"
        f" from {esc(languages.get('source', '?'))})</span></p>"
        + "<h3>Mean target words per band</h3><p>"
        + esc(", ".join(f"{label}: {mean}" for label, mean in r.words_per_band.items()) or "-")
        + "</p></div>"
        + "<div><h3>Made by (the baskets in the file)</h3><table class=small>"
        + "<tr><th>backend and model</th><th>baskets</th></tr>"
        + made_rows
        + "</table></div>"
        + (
            "<div><h3>Redos</h3><table class=small><tr><th></th><th>chosen</th><th>made by</th><th>baskets</th>"
            "<th>applied</th></tr>" + redo_rows + "</table></div>"
            if redo_rows
            else ""
        )
        + "</div></section>"
    )


def _redo_row(redo: RedoInfo, baskets: int) -> str:
    applied = time.strftime("%Y-%m-%d %H:%M", time.localtime(redo.applied_at)) if redo.applied_at else "not applied"
    return (
        f"<tr><td>redo {redo.number}</td><td>{esc(redo.selection)}</td>"
        f"<td>{esc(redo.backend)} {esc(redo.model or '')}</td><td class=num>{baskets}</td><td>{esc(applied)}</td></tr>"
    )


def _since_first(state: RunState) -> float:
    return (state.finished_at or time.time()) - state.first_started_at


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def _charts(r: Report) -> list[str]:
    by_band: dict[str, Counter[int]] = {band.label: Counter() for band in LENGTH_BANDS}
    e_counts: Counter[int] = Counter()
    shares: list[float] = []
    for check in r.baskets.values():
        by_band[check.band].update(check.words)
        e_counts[min(check.e, 6)] += 1
        if check.recency is not None:
            shares.append(check.recency)
    rows = [(band.label, band.min_words, band.max_words, dict(by_band[band.label])) for band in LENGTH_BANDS]
    tones = {0: "bad", 1: "warn", 2: "warn", 3: "ok", 4: "ok", 5: "ok", 6: "warn"}
    bars = [("6+" if n == 6 else str(n), e_counts[n], tones[n]) for n in range(7) if n < 6 or e_counts[n]]
    return [
        _figure(
            "Words per e-phrase by length band",
            band_chart(rows, "words per e-phrase against each length band"),
            "Each row is a band (by available vocabulary); shaded: the words the band asks for. Culminating seed"
            " sentences are not counted.",
        ),
        _figure(
            "e-phrases per basket",
            histogram(bars, "e-phrases per basket"),
            "3-5 is usable; fewer is allowed only where the vocabulary cannot support more.",
        ),
        _figure(
            "Recency share (N >= 50)",
            share_chart(shares, "recency share per basket", RECENCY_ACCEPTABLE, RECENCY_TARGET),
            "Target 30-50% (dark), acceptable 25-55% (light).",
        ),
    ]


def _figure(title: str, svg: str, caption: str) -> str:
    return (
        f"<figure><figcaption><b>{esc(title)}</b><br><span class=muted>{esc(caption)}</span></figcaption>{svg}</figure>"
    )


def _empty_list(empty: list[str]) -> str:
    links = " ".join(f'<a href="#{esc(lego_id)}">{esc(lego_id)}</a>' for lego_id in empty)
    return f'<section id="empty"><h2>Empty baskets ({len(empty)})</h2><p class=ids>{links or "none"}</p></section>'


def _flagged(course: Course, baskets: dict[str, Any], r: Report, flagged: list[BasketCheck], found: Provenance) -> str:
    counts = Counter(flag for check in flagged for flag in check.flags)
    boxes = "".join(
        f'<label class="chip {esc(flag)}"><input type=checkbox class=flag value="{esc(flag)}" checked>'
        f" {esc(flag)} <span class=count>{counts[flag]}</span></label>"
        for flag in FLAGS
        if counts[flag]
    )
    problems: dict[str, list[str]] = {}
    for problem in r.problems:
        problems.setdefault(problem.lego_id, []).append(f"{problem.rule}: {problem.detail}")
    warnings: dict[str, list[str]] = {}
    for warning in r.data_warnings:
        warnings.setdefault(warning["where"], []).append(warning["message"])
    rows = "\n".join(
        _row(course, baskets.get(check.lego_id), check, problems.get(check.lego_id, []), warnings, found)
        for check in flagged
    )
    return (
        f'<section id="flagged"><h2>Flagged baskets ({len(flagged)})</h2>'
        '<div class=controls><input id=q type=search placeholder="search id or text" aria-label="search">'
        f"{boxes}<button type=button id=all>all</button><button type=button id=none>none</button>"
        f"<span class=muted>showing <b id=shown>{len(flagged)}</b> of {len(flagged)}</span></div>"
        "<table id=baskets><thead><tr><th>basket</th><th>LEGO</th><th>flags</th><th>e-phrases</th>"
        "<th>d</th><th>made by</th></tr></thead><tbody>" + rows + "</tbody></table></section>"
    )


def _row(
    course: Course,
    basket: Any,
    check: BasketCheck,
    problems: list[str],
    warnings: dict[str, list[str]],
    found: Provenance,
) -> str:
    ctx = course.context(check.lego_id)
    lego = ctx.lego
    phrases = []
    raw = basket.get("e") if isinstance(basket, dict) else None
    e: list[Any] = raw if isinstance(raw, list) else []
    for item in e:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            phrases.append(f"<li class=bad>{esc(item)}</li>")
            continue
        pair = (item[0], item[1])
        seed = ctx.seed_pair is not None and pair == ctx.seed_pair
        words = phrase_words(course, pair)
        tone = "seed" if seed else ("" if ctx.band.contains(words) else "out")
        phrases.append(
            f"<li><span class=t>{esc(pair[0])}</span> <span class=k>{esc(pair[1])}</span>"
            f' <span class="w {tone}">{words}w{" seed" if seed else ""}</span></li>'
        )
    made = found.current(check.lego_id)
    made_cell = (
        f"{esc(made.made_by)}<br><span class=muted>{made.repair_rounds} repair rounds, {made.requests} requests"
        + (f", redo {made.redo}" if made.redo else "")
        + f", {esc(made.window)}</span>"
        if made
        else "<span class=muted>no journal record</span>"
    )
    notes = [f"<div class=problem>{esc(text)}</div>" for text in problems]
    notes += [
        f"<div class=warning>data warning {esc(lego.seed_id)}: {esc(text)}</div>"
        for text in warnings.get(lego.seed_id, [])
    ]
    flags = " ".join(f'<span class="chip {esc(flag)}">{esc(flag)}</span>' for flag in check.flags)
    raw_d = basket.get("d") if isinstance(basket, dict) else None
    d_total = sum(len(items) for items in raw_d.values() if isinstance(items, list)) if isinstance(raw_d, dict) else 0
    return (
        f'<tr class=basket id="{esc(check.lego_id)}" data-flags="{esc(" ".join(check.flags))}">'
        f"<td><b>{esc(check.lego_id)}</b><br><span class=muted>#{lego.position} · {esc(lego.seed_id)}"
        f"{' · culminating' if lego.culminating else ''}<br>band {esc(check.band)} words</span></td>"
        f"<td><span class=t>{esc(lego.target)}</span><br><span class=k>{esc(lego.known)}</span></td>"
        f"<td>{flags}</td>"
        f"<td><ol>{''.join(phrases) or '<li class=none>no e-phrase</li>'}</ol>{''.join(notes)}</td>"
        f"<td class=num>{d_total}<br>"
        f"<span class=muted>{check.d_windows} windows, {check.d_left_out} left out</span></td>"
        f"<td>{made_cell}</td></tr>"
    )


def _warnings(r: Report) -> str:
    if not r.data_warnings:
        return '<section id="warnings"><h2>Data warnings</h2><p>none</p></section>'
    rows = "".join(
        f"<tr><td>{esc(WARNING_KINDS.get(w['kind'], w['kind']))}</td><td>{esc(w['where'])}</td>"
        f"<td>{esc(w['message'])}</td></tr>"
        for w in r.data_warnings
    )
    return (
        f'<section id="warnings"><h2>Data warnings ({len(r.data_warnings)})</h2>'
        f"<table class=small><tr><th>kind</th><th>where</th><th>what</th></tr>{rows}</table></section>"
    )


def _timelines(runs: list[TimelineRun]) -> str:
    if not runs:
        return (
            '<section id="timeline"><h2>Timeline</h2>'
            "<p>no run recorded (no supervisor.log or run_state.json)</p></section>"
        )
    blocks = []
    for number, run in enumerate(runs, start=1):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.start))
        blocks.append(
            f"<h3>Run {number}: {esc(run.what)} <span class=muted>· backend {esc(run.backend)} · started {esc(started)}"
            f" · {esc(_duration(run.last - run.start))} · {esc(run.outcome)} · {run.launches} launches,"
            f" {run.relaunches} relaunches, {run.stuck} stuck</span></h3>" + timeline_chart(run)
        )
    legend = "".join(
        f'<span class=legend><i style="background:{colour}"></i>{esc(name)}</span>'
        for name, colour in (
            ("done", "#43a047"),
            ("failed", "#e53935"),
            ("stuck", "#fb8c00"),
            ("stopped", "#90a4ae"),
            ("running", "#1e88e5"),
        )
    )
    return (
        '<section id="timeline"><h2>Timeline</h2><p class=muted>One row per orchestrator window, one bar per launch'
        " (a relaunch is a new bar); the black tick is its first request; dashed lines: segments merged. From"
        f" supervisor.log, run_state.json and the journals. {legend}</p>" + "".join(blocks) + "</section>"
    )


def write_page(course: Course, baskets: dict[str, Any], source: Path, out: Path, table: PriceTable) -> PageFacts:
    """Build the page and write it to ``out`` atomically."""
    page, facts = build_page(course, baskets, source, table)
    write_text(out, page)
    return facts
