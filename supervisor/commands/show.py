"""``phase5 show``: one basket in the terminal: its LEGO, its checks, the tiling of each e-phrase,
its d windows (and the ones left out, with why), and where it came from (backend, model, repair
rounds, requests, tokens, cost, when; every earlier version in the journals)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from supervisor.commands.common import (
    baskets_option,
    course_argument,
    echo_json,
    json_option,
    load_course,
    prices_option,
)
from worker.cost import PriceTable
from worker.course import Course
from worker.paths import CourseLayout
from worker.provenance import Made, provenance
from worker.redo import parse_ids
from worker.report import Problem, load_basket_file, validate_baskets
from worker.rules import CheckedPhrase, Rejection, check_phrase, phrase_words, windows
from worker.safetext import printable
from worker.text import cut, tokenize


def when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def made_json(made: Made, table: PriceTable, current: bool) -> dict[str, Any]:
    return {
        "current": current,
        "backend": made.backend,
        "model": made.model or None,
        "segment": made.segment,
        "window": made.window,
        "agent": made.agent,
        "redo": made.redo,
        "applied": made.applied,
        "requests": made.requests,
        "repair_rounds": made.repair_rounds,
        "tokens": made.usage.to_json(),
        "cost_usd": round(made.cost(table), 6),
        "started": made.started,
        "saved": made.time,
        "dropped": [{"target": t, "known": k, "reason": r} for t, k, r in made.dropped],
        "notes": made.notes,
    }


def tiling(course: Course, position: int, phrase: CheckedPhrase, recent: range) -> list[dict[str, Any]]:
    """Each tile of an e-phrase: its text as written (the LEGO's own text where the tile is part
    of a contracted word, ``del``), the LEGO, its position, operative or recent."""
    target = phrase.pair[0]
    tokens = tokenize(target, course.tiler.spaced, course.tiler.contractions)
    tiles = []
    for index, (lego_position, (start, end)) in enumerate(zip(phrase.positions, phrase.bounds, strict=True)):
        lego = course.legos[lego_position - 1]
        tiles.append(
            {
                "text": cut(target, tokens, start, end) or lego.target,
                "lego": lego.id,
                "position": lego_position,
                "known": lego.known,
                "operative": index == phrase.operative_index,
                "recent": lego_position in recent,
            }
        )
    return tiles


def basket_view(course: Course, lego_id: str, basket: Any, path: Path, table: PriceTable) -> dict[str, Any]:
    """Everything ``show`` shows, as one JSON-ready dict."""
    ctx = course.context(lego_id)
    lego = ctx.lego
    view: dict[str, Any] = {
        "id": lego_id,
        "lego": list(lego.pair),
        "position": lego.position,
        "seed": lego.seed_id,
        "culminating": lego.culminating,
        "band": ctx.band.label,
        "file": str(path),
        "in_file": basket is not None,
        "warnings": [w.to_json() for w in course.warnings if w.seed_id == lego.seed_id],
    }
    if basket is not None:
        report = validate_baskets(course, {lego_id: basket})
        check = report.baskets[lego_id]
        view.update(
            flags=check.flags,
            problems=[p.detail if isinstance(p, Problem) else str(p) for p in report.problems],
            recency=round(check.recency, 4) if check.recency is not None else None,
            d_windows=check.d_windows,
            d_left_out=check.d_left_out,
        )
        view["e"] = []
        raw = basket.get("e") if isinstance(basket, dict) else None
        raw_e: list[Any] = raw if isinstance(raw, list) else []
        for index, item in enumerate(raw_e):
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                view["e"].append({"raw": item, "gate": "not a [target, known] pair"})
                continue
            pair = (item[0], item[1])
            words = phrase_words(course, pair)
            entry: dict[str, Any] = {
                "target": pair[0],
                "known": pair[1],
                "words": words,
                "in_band": ctx.band.contains(words),
                "seed_sentence": ctx.seed_pair is not None and pair == ctx.seed_pair,
            }
            result = check_phrase(course, lego.position, pair)
            if isinstance(result, Rejection):
                entry["gate"] = result.reason
            else:
                entry["tiles"] = tiling(course, lego.position, result, ctx.recent)
                entry["windows"] = [
                    {
                        "size": w.size,
                        "target": w.target,
                        "known": w.known,
                        "left_out": None
                        if w.pair is not None
                        else (
                            "begins or ends inside a written word" if w.target is None else "no consistent known side"
                        ),
                    }
                    for w in windows(course, result, index)
                ]
            view["e"].append(entry)
        raw = basket.get("d") if isinstance(basket, dict) else None
        d: dict[str, Any] = raw if isinstance(raw, dict) else {}
        view["d"] = {size: d.get(size) for size in sorted(d, key=lambda k: (len(k), k))}
    found = provenance(course)
    current = found.current(lego_id) if basket is not None else None
    view["made"] = [made_json(made, table, made is current) for made in found.history.get(lego_id, [])]
    return view


def render(view: dict[str, Any]) -> Group:
    """The view for a terminal: every text from outside as plain ``Text`` (never markup), with
    control characters shown as escapes."""

    def t(value: Any, style: str = "") -> Text:
        return Text(printable(value), style=style)

    parts: list[Any] = []
    title = Text()
    title.append(view["id"], style="bold")
    title.append("  ")
    title.append(printable(view["lego"][0]), style="bold cyan")
    title.append(" = ")
    title.append(printable(view["lego"][1]), style="cyan")
    parts.append(title)
    facts = (
        f"position {view['position']} · seed {view['seed']}"
        + (" · culminating" if view["culminating"] else "")
        + f" · length band {view['band']} words"
    )
    parts.append(t(facts, "dim"))
    for warning in view["warnings"]:
        parts.append(t(f"data warning {warning['where']}: {warning['message']}", "yellow"))
    if not view["in_file"]:
        parts.append(t(f"not in {view['file']}", "red"))
    else:
        flags = view["flags"]
        parts.append(t("flags: " + (", ".join(flags) if flags else "none"), "bold red" if flags else "green"))
        for problem in view["problems"]:
            parts.append(t(f"  problem: {problem}", "red"))
        recency = view.get("recency")
        parts.append(
            t(
                f"d windows {view['d_windows']}, left out {view['d_left_out']}"
                + (f"; recency share {100 * recency:.0f}%" if recency is not None else "")
            )
        )
        parts.append(_e_block(view))
        parts.append(_d_table(view))
    parts.append(_made_block(view))
    return Group(*parts)


def _e_block(view: dict[str, Any]) -> Text:
    """Each e-phrase: target and known, its words against the band, and its tiles."""
    out = Text(f"e-phrases ({len(view['e'])})\n", style="bold")
    for number, entry in enumerate(view["e"], start=1):
        out.append(f"{number:>2}. ")
        if "raw" in entry:
            out.append(printable(entry["raw"]))
            out.append(f"  {entry['gate']}\n", style="red")
            continue
        out.append(printable(entry["target"]), style="bold")
        if entry["seed_sentence"]:
            out.append(f"  ({entry['words']} words; the seed sentence: the band does not count it)", style="dim")
        else:
            band = "in band" if entry["in_band"] else f"outside the band {view['band']}"
            out.append(f"  ({entry['words']} words, {band})", style="green" if entry["in_band"] else "yellow")
        out.append("\n    ")
        out.append(printable(entry["known"]))
        out.append("\n")
        if "gate" in entry:
            out.append(f"    GATE: {printable(entry['gate'])}\n", style="red")
            continue
        out.append("    tiles: ", style="dim")
        for index, tile in enumerate(entry["tiles"]):
            if index:
                out.append(" | ", style="dim")
            out.append(printable(tile["text"]), style="bold cyan" if tile["operative"] else "")
            mark = " operative" if tile["operative"] else (" recent" if tile["recent"] else "")
            out.append(f" {tile['lego']} #{tile['position']}{mark}", style="dim")
        out.append("\n")
        for window in entry["windows"]:
            if window["left_out"]:
                text = f"    d window of {window['size']} left out: {window['target'] or '-'} ({window['left_out']})"
                out.append(printable(text) + "\n", style="yellow")
    return out


def _d_table(view: dict[str, Any]) -> Table:
    table = Table(title="d-phrases", title_justify="left", title_style="bold", expand=False)
    table.add_column("size", justify="right")
    table.add_column("target")
    table.add_column("known")
    for size, items in view["d"].items():
        for item in items if isinstance(items, list) else []:
            pair = item if isinstance(item, list) and len(item) == 2 else [item, ""]
            table.add_row(str(size), Text(printable(pair[0])), Text(printable(pair[1])))
    return table


def _made_block(view: dict[str, Any]) -> Text:
    """Every version of the basket in the journals, oldest first; the one in the file marked."""
    out = Text("made by\n", style="bold")
    if not view["made"]:
        out.append("  no journal record (made outside a run, or the journals are gone)\n", style="dim")
        return out
    for made in view["made"]:
        tokens = made["tokens"]
        where = f"{made['window']} agent {made['agent']:02d}"
        if made["redo"]:
            where = f"redo {made['redo']} ({where})" + ("" if made["applied"] else ", not applied")
        line = (
            f"  {made['backend']} {made['model'] or ''}".rstrip()
            + f" · {where} · saved {when(made['saved'])}"
            + f" · {made['requests']} requests, {made['repair_rounds']} repair rounds"
            + f" · tokens in {tokens['input_tokens']} out {tokens['output_tokens']}"
            + f" cache write {tokens['cache_creation_input_tokens']} read {tokens['cache_read_input_tokens']}"
            + f" · ${made['cost_usd']:.4f}"
        )
        out.append(printable(line), style="bold" if made["current"] else "")
        out.append("  <- in the file\n" if made["current"] else "\n", style="green")
        for dropped in made["dropped"]:
            text = f"    dropped: {dropped['target']} = {dropped['known']}: {dropped['reason']}"
            out.append(printable(text) + "\n", style="dim")
        for note in made["notes"]:
            out.append(printable(f"    note: {note}") + "\n", style="dim")
    return out


@click.command("show")
@course_argument
@click.argument("lego_id")
@baskets_option
@prices_option
@json_option
def show_command(
    course: str, courses_dir: str | None, lego_id: str, baskets: Path | None, prices: str | None, as_json: bool
) -> None:
    """One basket of COURSE: its LEGO, flags and problems as `validate` judges them, each
    e-phrase's tiling (the LEGO behind each tile; operative and recent marked), its d windows and
    the ones left out (and why), and where it came from: backend, model, repair rounds, requests,
    tokens and cost of every version the journals hold (the course's run, then redos)."""
    loaded = load_course(course, courses_dir)
    (lego_id,) = parse_ids(lego_id, loaded, "LEGO_ID")[:1]
    path = baskets or CourseLayout(loaded.root).final_baskets
    basket = load_basket_file(path)[0].get(lego_id) if path.exists() else None
    view = basket_view(loaded, lego_id, basket, path, PriceTable.load(prices))
    if as_json:
        echo_json(view)
        return
    Console(highlight=False, soft_wrap=True).print(render(view))


COMMANDS = [show_command]
