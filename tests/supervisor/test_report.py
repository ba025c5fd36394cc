"""`phase5 report`: one self-contained HTML page of a course, checked as text (every flagged
basket a row, every empty basket named, three charts, a timeline per run, no external link,
everything from files escaped) and rendered by a real browser: headless Chromium (Debian's
package, which .ci/run installs; the test says so and skips where it is absent) must draw a page
that is not blank, whose script counts as many rows as there are flagged baskets."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from supervisor.timeline import parse_log
from tests.helpers import CHROMIUM, chromium, finish_offline, png_stats
from worker.course import Course
from worker.paths import CourseLayout
from worker.report import load_basket_file, validate_baskets

ROW = re.compile(r'<tr class=basket id="([^"]+)" data-flags="([^"]*)">')


def flagged(course: Path, baskets: Path | None = None) -> list[tuple[str, list[str]]]:
    loaded = Course.load(course)
    data, _ = load_basket_file(baskets or CourseLayout(course).final_baskets)
    return [(c.lego_id, c.flags) for c in validate_baskets(loaded, data).flagged()]


class Tags(HTMLParser):
    """Every tag of a page with its attributes, and the text of its style elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def no_outside_reference(page: str) -> None:
    """Nothing on the page reaches outside it: no URL, no linked or embedded resource, no link but
    to the page itself."""
    assert "http://" not in page and "https://" not in page
    parsed = Tags()
    parsed.feed(page)
    names = {tag for tag, _ in parsed.tags}
    assert not names & {"img", "link", "iframe", "object", "embed", "audio", "video", "source", "base", "form"}
    for tag, attrs in parsed.tags:
        assert "src" not in attrs and "action" not in attrs, (tag, attrs)
        assert (attrs.get("href") or "#").startswith("#"), (tag, attrs)
        assert "url(" not in (attrs.get("style") or ""), (tag, attrs)
    assert all("url(" not in style and "@import" not in style for style in parsed.styles)


@pytest.fixture
def reviewed(cleanup_course: Path, server, p5) -> tuple[Path, Path, dict]:
    """The demo course after a run and a redo in tmux, and its report."""
    course = cleanup_course
    socket = ["--tmux-socket", server.socket_name]
    assert p5.phase5("run", str(course), *p5.FAST, *socket).returncode == 0
    ids = ",".join(Course.load(course).ids[3:5])
    redo = p5.phase5("redo", str(course), "--ids", ids, *p5.FAST, *socket)
    assert redo.returncode == 0, redo.stdout + redo.stderr
    p5.assert_clean(course, server)
    out = course / "review" / "report.html"
    result = p5.phase5("report", str(course), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return course, out, json.loads(result.stdout)


@pytest.mark.tmux
@pytest.mark.slow
def test_report_lists_every_flagged_basket_and_draws_the_charts(reviewed: tuple[Path, Path, dict], p5) -> None:
    course, out, facts = reviewed
    page = out.read_text(encoding="utf-8")
    expected = flagged(course)
    rows = ROW.findall(page)
    assert [(lego_id, flags.split()) for lego_id, flags in rows] == expected
    empty = [lego_id for lego_id, flags in expected if "empty" in flags]
    assert facts["flagged"] == len(expected) and facts["empty"] == empty and facts["bytes"] == out.stat().st_size
    named = re.search(r'<section id="empty">(.*?)</section>', page, re.S)
    assert named is not None and all(f'href="#{lego_id}"' in named.group(1) for lego_id in empty)
    assert page.count('<svg class="chart"') == 3 + 2  # three charts, a timeline for the run and the redo
    assert facts["charts"] == 3 and facts["runs"] == 2
    ids = ", ".join(Course.load(course).ids[3:5])
    assert f"Run 2: redo 1: 2 baskets (ids {ids})" in page
    bars = re.findall(r"<title>(s\d+-o\d+) launch 1:[^<]*, done", page)
    assert bars == [f"s{s}-o{o}" for s in (1, 2, 3) for o in (1, 2, 3)] + ["s4-o1", "s4-o2"]  # one per window
    assert "corpus" in page and "redo 1" in page  # who made the baskets, and the redo
    no_outside_reference(page)
    default = p5.phase5("report", str(course))  # default place: beside the course's files
    assert default.returncode == 0 and (course / "phase5_report.html").exists()
    assert "flagged baskets" in default.stdout


@pytest.mark.tmux
@pytest.mark.slow
def test_report_renders_in_headless_chromium(reviewed: tuple[Path, Path, dict], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}; apt-get install chromium, as .ci/run does)")
    course, out, facts = reviewed
    shot = tmp_path / "report.png"
    result = chromium(out, tmp_path / "profile", "--window-size=1000,900", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, colours, unlike = png_stats(shot)
    assert (width, height) == (1000, 900)
    assert colours > 50 and unlike > 0.1, (colours, unlike)  # a drawn page, not a blank one
    dom = chromium(out, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    rows = len(flagged(course))
    # the page's script ran: it counted the rows and shows them all (every flag ticked, no search)
    assert f'data-rows="{rows}"' in body.group(1) and f'data-shown="{rows}"' in body.group(1)
    assert dom.stdout.count('<tr class="basket"') == rows == facts["flagged"]


def test_report_escapes_what_comes_from_files(demo_course: Path, p5) -> None:
    """Phrases are data: markup, script and control characters in a basket file show as text."""
    finish_offline(demo_course)
    baskets = json.loads(CourseLayout(demo_course).final_baskets.read_text(encoding="utf-8"))
    hostile = '<img src=x onerror=alert(1)></td><script>alert("x")</script>'
    baskets["S0002L03"]["e"].append([hostile, "evil \x1b[31m red \u202e"])
    path = demo_course / "hostile.json"
    path.write_text(json.dumps(baskets, ensure_ascii=False), encoding="utf-8")
    out = demo_course / "hostile.html"
    result = p5.phase5("report", str(demo_course), "--baskets", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;/td&gt;&lt;script&gt;" in page
    assert "<script>alert" not in page and "\x1b" not in page and "\u202e" not in page
    assert "evil \\x1b[31m red \\u202e" in page
    assert [lego_id for lego_id, _ in ROW.findall(page)] == [i for i, _ in flagged(demo_course, path)]
    assert "S0002L03" in dict(ROW.findall(page))  # its phrase fails GATE: flagged
    no_outside_reference(page)


def test_timeline_from_the_log_bars_per_launch() -> None:
    log = [
        "2026-01-02 10:00:00 supervisor pid 7 on spa (Spanish): 3 segments, backend anthropic, tmux session x",
        "2026-01-02 10:00:01 segment 1: 9 baskets, 2 orchestrators",
        "2026-01-02 10:00:01 s1-o1: launched in window @1, pid 9",
        "2026-01-02 10:00:02 s1-o2: launched in window @2, pid 10",
        "2026-01-02 10:00:10 s1-o2: STUCK, no heartbeat for 8 s (pid 10)",
        "2026-01-02 10:00:12 s1-o2: failed (exit stuck): no heartbeat for 10 s; relaunching it alone",
        "2026-01-02 10:00:12 s1-o2: launched in window @3, pid 11 (attempt 2/3)",
        "2026-01-02 10:00:15 s1-o1: done (5 baskets)",
        "2026-01-02 10:00:20 s1-o2: failed (exit 1): boom; no more attempts",
        "2026-01-02 10:00:20 run failed: s1-o2 (boom). Their windows stay open",
        "garbage line",
        "2026-01-02 11:00:00 supervisor pid 8 on spa (Spanish): 3 segments, backend anthropic, tmux session x",
        "2026-01-02 11:00:01 s1-o2: launched in window @4, pid 12",
        "2026-01-02 11:00:03 stopped by SIGTERM: stopping the workers (files kept; `phase5 run` resumes)",
    ]
    first, second = parse_log(log)
    assert (first.outcome, first.backend, first.what) == ("failed", "anthropic", "3 segments")
    assert first.end is not None and first.end - first.start == 20
    t0 = first.start
    bars = {row.name: [(b.start - t0, (b.end or 0) - t0, b.outcome) for b in row.bars] for row in first.windows}
    assert bars == {"s1-o1": [(1, 15, "done")], "s1-o2": [(2, 12, "stuck"), (12, 20, "failed")]}
    assert first.windows[1].bars[0].stuck == [(first.start + 10, first.start + 12)]
    assert (first.launches, first.relaunches, first.stuck) == (3, 1, 1)
    assert second.outcome == "stopped" and second.windows[0].bars[0].outcome == "stopped"
