"""Charts as inline SVG for the report page (no library, no network): the words of e-phrases
against their length bands, e-phrases per basket, the recency share, and a run's timeline.

Every text in a chart is escaped; numbers are formatted here. Charts are plain ``<svg>``
elements sized by ``viewBox``, so they scale with the page.

>>> svg = histogram([("0", 3, "bad"), ("1", 1, "warn")], "e-phrases")
>>> svg.startswith("<svg") and "<title>0: 3</title>" in svg
True
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from supervisor.timeline import TimelineRun

COLOURS = {
    "ok": "#2e7d32",
    "warn": "#ef6c00",
    "bad": "#c62828",
    "info": "#1565c0",
    "muted": "#90a4ae",
    "band": "#e8f5e9",
    "target": "#c8e6c9",
    "done": "#43a047",
    "failed": "#e53935",
    "stuck": "#fb8c00",
    "stopped": "#90a4ae",
    "running": "#1e88e5",
}
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
        f' aria-label="{esc(label)}" {FONT}>' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: object, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{esc(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" {extra}/>'


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", extra: str = "") -> str:
    inner = f"<title>{esc(title)}</title>" if title else ""
    box = f'x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}"'
    return f'<rect {box} fill="{fill}" {extra}>{inner}</rect>'


def histogram(bars: Sequence[tuple[str, int, str]], label: str, width: int = 420, height: int = 180) -> str:
    """Vertical bars: (label, count, colour key) each, counts written above them."""
    top, bottom, left = 18, 22, 8
    plot = height - top - bottom
    peak = max((count for _, count, _ in bars), default=0) or 1
    step = (width - 2 * left) / max(1, len(bars))
    body = []
    for index, (name, count, colour) in enumerate(bars):
        h = plot * count / peak
        x = left + index * step + step * 0.15
        y = top + plot - h
        body.append(_rect(x, y, step * 0.7, h, COLOURS[colour], f"{name}: {count}"))
        body.append(_text(x + step * 0.35, y - 4, count, "middle"))
        body.append(_text(x + step * 0.35, height - 6, name, "middle"))
    body.append(f'<line x1="{left}" y1="{top + plot}" x2="{width - left}" y2="{top + plot}" stroke="#555"/>')
    return _svg(width, height, body, label)


def band_chart(rows: Sequence[tuple[str, int, int, dict[int, int]]], label: str, width: int = 640) -> str:
    """Words per e-phrase against each length band: one row per band, (band label, min words,
    max words, {words: phrases}), the band's range shaded, a bar per word count (green inside
    the band, orange outside) scaled to the row's largest."""
    row_h, top, left, right = 46, 8, 150, 110
    most = max([9, *(w for _, _, hi, counts in rows for w in [hi, *counts])]) + 1
    height = top + row_h * len(rows) + 24
    unit = (width - left - right) / (most + 1)
    body = []
    for index, (name, low, high, counts) in enumerate(rows):
        y = top + index * row_h
        body.append(_rect(left + (low - 0.5) * unit, y, (high - low + 1) * unit, row_h - 8, COLOURS["band"]))
        peak = max(counts.values(), default=0) or 1
        total = sum(counts.values())
        inside = sum(c for w, c in counts.items() if low <= w <= high)
        for words, count in sorted(counts.items()):
            h = (row_h - 12) * count / peak
            colour = COLOURS["ok"] if low <= words <= high else COLOURS["warn"]
            title = f"band {name}: {count} phrases of {words} words"
            body.append(_rect(left + (words - 0.35) * unit, y + row_h - 8 - h, unit * 0.7, h, colour, title))
        body.append(_text(left - 8, y + row_h / 2, f"band {name} words", "end"))
        share = f"{100 * inside / total:.0f}% in band" if total else "no phrases"
        body.append(_text(width - right + 8, y + row_h / 2 - 6, f"{total} phrases"))
        body.append(_text(width - right + 8, y + row_h / 2 + 8, share))
    axis = top + row_h * len(rows)
    body.append(f'<line x1="{left}" y1="{axis - 8}" x2="{width - right}" y2="{axis - 8}" stroke="#555"/>')
    for words in range(0, most + 1):
        body.append(_text(left + words * unit, axis + 6, words, "middle"))
    body.append(_text(left + (width - left - right) / 2, axis + 18, "target words per e-phrase", "middle"))
    return _svg(width, height, body, label)


def share_chart(
    values: Sequence[float], label: str, acceptable: tuple[float, float], target: tuple[float, float], width: int = 640
) -> str:
    """The recency share of each basket in 5% bins, the acceptable and target ranges shaded, the
    mean dashed."""
    height, top, bottom, left = 190, 14, 30, 36
    bins = [0] * 20
    for value in values:
        bins[min(19, int(value * 20))] += 1
    plot_w, plot_h = width - 2 * left, height - top - bottom
    peak = max(bins) or 1
    body = [
        _rect(left + plot_w * acceptable[0], top, plot_w * (acceptable[1] - acceptable[0]), plot_h, COLOURS["band"]),
        _rect(left + plot_w * target[0], top, plot_w * (target[1] - target[0]), plot_h, COLOURS["target"]),
    ]
    for index, count in enumerate(bins):
        h = plot_h * count / peak
        title = f"{5 * index}-{5 * index + 5}%: {count} baskets"
        body.append(_rect(left + plot_w * index / 20 + 1, top + plot_h - h, plot_w / 20 - 2, h, COLOURS["info"], title))
    if values:
        mean = sum(values) / len(values)
        x = left + plot_w * mean
        body.append(_line(x, top, x, top + plot_h, "#333", 'stroke-dasharray="4 3"'))
        body.append(_text(x + 4, top + 10, f"mean {100 * mean:.0f}%"))
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#555"/>')
    for percent in range(0, 101, 25):
        body.append(_text(left + plot_w * percent / 100, height - 14, f"{percent}%", "middle"))
    body.append(_text(left + plot_w / 2, height - 2, "share of recent LEGOs among a basket's tiles", "middle"))
    return _svg(width, height, body, label)


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400):
        if span / step <= 8:
            return step
    return 86400 * math.ceil(span / 86400 / 8)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def timeline_chart(run: TimelineRun, width: int = 960) -> str:
    """One run: a row per orchestrator window, a bar per launch coloured by how it ended, stuck
    stretches over it, a tick at its first request, and the segments' merges as dashed lines."""
    row_h, top, left, right = 16, 22, 86, 28
    rows = run.windows
    height = top + row_h * max(1, len(rows)) + 26
    span = max(run.last - run.start, 1.0)
    plot_w = width - left - right

    def x(at: float) -> float:
        return left + plot_w * (at - run.start) / span

    body = []
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-6:
        tx = left + plot_w * tick / span
        body.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 22}" stroke="#eceff1"/>')
        body.append(_text(tx, height - 8, "+" + _clock(tick), "middle"))
        tick += step
    for index, row in enumerate(rows):
        y = top + index * row_h
        body.append(_text(left - 8, y + row_h - 4, row.name, "end"))
        for number, bar in enumerate(row.bars, start=1):
            end = bar.end if bar.end is not None else run.last
            title = (
                f"{row.name} {'adopted' if bar.adopted else f'launch {number}'}:"
                f" {time.strftime('%H:%M:%S', time.localtime(bar.start))} +{_clock(bar.start - run.start)}"
                f" for {end - bar.start:.1f} s, {bar.outcome}"
                + (f", first request +{bar.first_request - bar.start:.1f} s" if bar.first_request else "")
                + (f", stuck {len(bar.stuck)}x" if bar.stuck else "")
                + (f"; {bar.detail}" if bar.detail else "")
            )
            colour = COLOURS.get(bar.outcome, COLOURS["muted"])
            body.append(_rect(x(bar.start), y + 2, max(x(end) - x(bar.start), 2), row_h - 5, colour, title))
            for since, until in bar.stuck:
                stop = until if until is not None else end
                body.append(_rect(x(since), y + 2, max(x(stop) - x(since), 2), row_h - 5, COLOURS["stuck"], "stuck"))
            if bar.first_request is not None:
                fx = x(bar.first_request)
                body.append(_line(fx, y + 1, fx, y + row_h - 2, "#212121", 'stroke-width="2"'))
    for at, name in run.merged:
        mx = x(at)
        body.append(_line(mx, top - 6, mx, height - 22, "#37474f", 'stroke-dasharray="3 3"'))
        body.append(_text(mx - 3, top - 9, f"{name} merged", "end", 'font-size="9"'))
    return _svg(width, height, body, f"timeline of the run started {time.ctime(run.start)}")
