"""A plan file lost or damaged in a half-done run: the plan follows from the course and its shape,
so `phase5 run` (and `phase5 prepare` with the same shape) writes it again when the other plan
files and every saved basket agree, and refuses, naming what disagrees, when they do not. No saved
basket is generated again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.paths import CourseLayout

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


def half_done(p5, course: Path, server) -> None:
    """Segment 1 merged, segment 2 under way, then stopped."""
    env = p5.test_env(PHASE5_TEST_DELAY="0.3")
    layout = CourseLayout(course)
    started = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, "--detach", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    p5.wait_for(lambda: layout.segment_baskets(1).exists() and p5.journal_lines(course, 2) >= 5, 90, "segment 2")
    stopped = p5.phase5("stop", str(course), "--tmux-socket", server.socket_name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    p5.assert_clean(course, server)


def test_a_lost_and_a_damaged_plan_file_are_written_again(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    half_done(p5, course, server)
    plan_2, plan_3 = layout.segment_plan(2).read_text(), layout.segment_plan(3).read_text()
    saved = p5.journal_ids(course)
    layout.segment_plan(2).unlink()
    layout.segment_plan(3).write_text(plan_3[: len(plan_3) // 2])  # as by a crash of another tool
    result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plan file segment_02.json (missing) written again" in result.stdout
    assert "plan file segment_03.json (unreadable; kept as segment_03.json.corrupt-" in result.stdout
    assert layout.segment_plan(2).read_text() == plan_2 and layout.segment_plan(3).read_text() == plan_3
    counts = p5.journal_ids(course)
    assert max(counts.values()) == 1 and saved.keys() <= counts.keys()  # nothing made twice
    p5.assert_valid(course)
    p5.assert_clean(course, server)


def test_a_plan_the_saved_baskets_contradict_is_refused(cleanup_course: Path, server, p5) -> None:
    course = cleanup_course
    layout = CourseLayout(course)
    half_done(p5, course, server)
    layout.segment_plan(2).unlink()
    plan_1 = json.loads(layout.segment_plan(1).read_text())
    batches = plan_1["orchestrator_batches"][0]["agent_batches"]
    batches[0], batches[1] = batches[1], batches[0]  # agents 1 and 2 swapped: their journals disagree
    layout.segment_plan(1).write_text(json.dumps(plan_1))
    result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    print(line)
    assert (
        len(line.splitlines()) == 1 and "a different plan with saved baskets exists (segment_01.json differs)" in line
    )
    assert not layout.segment_plan(2).exists()
    # Every plan file lost: another shape is refused (the journals say where each basket belongs)...
    saved = p5.journal_ids(course)
    for path in layout.plan_files():
        path.unlink()
    other = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, "--agents", "5")
    assert other.returncode == 2 and "which this plan puts elsewhere" in other.stderr, other.stderr
    # ...and the shape they were made with is written again, and the run resumes.
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("written again") == 3
    counts = p5.journal_ids(course)
    assert max(counts.values()) == 1 and saved.keys() <= counts.keys()
    p5.assert_valid(course)
    p5.assert_clean(course, server)
