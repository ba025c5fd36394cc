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
