"""Helpers shared by the tests (importable as ``tests.helpers``: the checkout is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from worker.atomic import Journal
from worker.paths import CourseLayout
from worker.plan import load_plan
from worker.report import basket_problems, load_basket_file

if TYPE_CHECKING:
    from worker.course import Course


def wait_for(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> object:
    """Poll ``condition`` until it is truthy or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def start_worker(
    course: Course, *extra: str, procs: list | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A real ``phase5 worker`` process for segment 1, orchestrator 1 of ``course``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "worker", str(course.root), "--segment", "1", "--orch", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if procs is not None:
        procs.append(proc)
    return proc


def fork_servers(pid: int) -> list[psutil.Process]:
    """The warm-start fork servers among the children of process ``pid`` (a supervisor). A child
    that ends while it is looked at (a tmux client the supervisor ran: a zombie for an instant)
    is not one."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "supervisor.forkserver" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def journal_ids(course: Path) -> Counter:
    """How many journal lines each LEGO id has, over every agent journal of the course."""
    ids: Counter = Counter()
    for path in CourseLayout(course).segments_dir.rglob("agent_*_journal.jsonl"):
        for record in Journal(path).records():  # the production reader: a line being written is not counted yet
            ids[record["id"]] += 1
    return ids


def assert_complete(course: Course) -> None:
    """Orchestrator 1 of segment 1 holds exactly its plan's ids, each basket passing every absolute rule."""
    layout = CourseLayout(course.root)
    expected = load_plan(course, 1).orchestrator(1).lego_ids
    baskets, duplicates = load_basket_file(layout.orch_baskets(1, 1))
    assert list(baskets) == expected and not duplicates
    assert basket_problems(course, baskets, expected) == []


def finish_offline(root: Path, agents: int = 3) -> None:
    """A finished offline run of the course at ``root`` without tmux: a plan of one segment and one
    orchestrator, its real ``phase5 worker`` process, the merges; journals and lego_baskets.json
    as ``phase5 run`` leaves them."""
    from worker.course import Course
    from worker.merge import merge_final, merge_segment
    from worker.plan import prepare

    course = Course.load(root)
    prepare(course, segments=1, orchestrators=1, agents=agents)
    proc = start_worker(course, "--backend", "corpus", env={"PHASE5_BACKEND": "corpus"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    merge_segment(course, 1)
    merge_final(course)


def png_stats(path: Path) -> tuple[int, int, int, float]:
    """(width, height, distinct colours, share of pixels unlike the top-left one) of an 8-bit RGB
    or RGBA PNG, non-interlaced (what Chromium's --screenshot writes): decoded here, no library."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour, interlace)
    step = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * step
    previous = bytearray(stride)
    colours: set[bytes] = set()
    background = b""
    unlike = 0
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(step, stride):
                line[i] = (line[i] + line[i - step]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - step] if i >= step else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - step] if i >= step else 0
                b, c = previous[i], previous[i - step] if i >= step else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels = bytes(line)
        if not background:
            background = pixels[:3]
        for x in range(0, stride, step * 4):  # every fourth pixel is plenty to tell a page from a blank
            pixel = pixels[x : x + 3]
            colours.add(pixel)
            unlike += pixel != background
        previous = line
    sampled = height * ((width + 3) // 4)
    return width, height, len(colours), unlike / sampled


def others_unchanged(old: str, new: str, redone: set[str]) -> None:
    """Every member of ``old`` but ``redone`` is in ``new`` with the very same text, and the text
    between members (the file's layout) is the same too."""
    from worker.redo import member_spans

    old_spans, new_spans = member_spans(old), member_spans(new)
    assert list(old_spans) == list(new_spans)
    for key, (start, end) in old_spans.items():
        if key not in redone:
            new_start, new_end = new_spans[key]
            assert new[new_start:new_end] == old[start:end], key
    assert new[: new_spans[next(iter(new_spans))][0]] == old[: old_spans[next(iter(old_spans))][0]]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium(page: Path, profile: Path, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` (a file URL) with its own profile folder; ``args`` such as
    ``--screenshot=FILE`` or ``--dump-dom``. The process ends before this returns."""
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
