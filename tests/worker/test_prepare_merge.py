"""``phase5 prepare``, ``merge-segment`` and ``merge-final`` through the CLI (docs/DESIGN.md §3-§4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from supervisor.cli import main
from worker.course import Course
from worker.paths import CourseLayout

PLAN_KEYS = {"segment_number", "total_legos", "orchestrator_count", "agents_per_orchestrator", "orchestrator_batches"}
BATCH_KEYS = {"orchestrator_id", "total_legos", "lego_ids", "agent_batches"}


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def one_line_error(result: Any, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def read_plans(course: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in CourseLayout(course).plan_files()]


def test_prepare_spa_course(spa_course: Path) -> None:
    result = cli("prepare", spa_course, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["changed"] is True and summary["baskets"] == 1766
    plans = read_plans(spa_course)
    assert [p["total_legos"] for p in plans] == [589, 589, 588]
    ids: list[str] = []
    layout = CourseLayout(spa_course)
    for number, plan in enumerate(plans, start=1):
        assert set(plan) >= PLAN_KEYS
        assert plan["segment_number"] == number
        assert plan["orchestrator_count"] == 3 and plan["agents_per_orchestrator"] == 10
        batches = plan["orchestrator_batches"]
        assert [b["orchestrator_id"] for b in batches] == [1, 2, 3]
        assert sum(len(b["agent_batches"]) for b in batches) == 30
        assert sum(b["total_legos"] for b in batches) == plan["total_legos"]
        for batch in batches:
            assert set(batch) >= BATCH_KEYS
            assert len(batch["agent_batches"]) == 10
            assert [i for agent in batch["agent_batches"] for i in agent] == batch["lego_ids"]
            assert batch["total_legos"] == len(batch["lego_ids"])
            sizes = [len(agent) for agent in batch["agent_batches"]]
            assert max(sizes) - min(sizes) <= 1  # as evenly as possible
            assert layout.orch_dir(number, batch["orchestrator_id"]).is_dir()
            ids.extend(i for agent in batch["agent_batches"] for i in agent)
    course = Course.load(spa_course)
    assert len(ids) == len(set(ids)) == 1766
    assert ids == course.ids  # every canonical id exactly once, in canonical order
    # the text form says the same and reports the data warnings
    again = cli("prepare", spa_course)
    assert again.exit_code == 0
    assert "nothing changed" in again.stdout and "segment 3: 588 LEGOs" in again.stdout
    assert "course: Spanish for English speakers (languages from lego_pairs.json)" in again.stdout
    assert "data warnings 16: 10 the seed's LEGOs do not join to its sentence; 3 culminating basket" in again.stdout
    assert again.stdout.count("  data warning S0") == 5  # the first five; --json has them all


def test_rerun_with_same_options_is_a_no_op(demo_course: Path) -> None:
    assert cli("prepare", demo_course, "--agents", "4").exit_code == 0
    before = snapshot(demo_course)
    result = cli("prepare", demo_course, "--agents", "4", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["changed"] is False
    assert snapshot(demo_course) == before  # files unchanged, mtimes too


def add_agent_file(course: Path, segment: int = 1, orch: int = 1, agent: int = 1) -> Path:
    path = CourseLayout(course).agent_file(segment, orch, agent)
    path.write_text('{"S0001L01": {"lego": ["Quiero", "I want"], "e": [], "d": {"2": [], "3": [], "4": [], "5": []}}}')
    return path


def test_different_options_without_outputs_replace_the_plan(demo_course: Path) -> None:
    assert cli("prepare", demo_course).exit_code == 0
    assert len(read_plans(demo_course)) == 3
    result = cli("prepare", demo_course, "--segments", "2", "--orchestrators", "2", "--agents", "3")
    assert result.exit_code == 0, result.output
    plans = read_plans(demo_course)
    assert [p["total_legos"] for p in plans] == [63, 62]  # stale segment_03.json is gone
    assert all(len(b["agent_batches"]) == 3 for p in plans for b in p["orchestrator_batches"])


def test_different_options_with_outputs_refused_then_force_moves_aside(demo_course: Path) -> None:
    layout = CourseLayout(demo_course)
    assert cli("prepare", demo_course).exit_code == 0
    saved = add_agent_file(demo_course)
    before = snapshot(demo_course)
    line = one_line_error(cli("prepare", demo_course, "--agents", "5"), "--force")
    assert "phase5_segments" in line
    assert snapshot(demo_course) == before

    result = cli("prepare", demo_course, "--agents", "5", "--force", "--json")
    assert result.exit_code == 0, result.output
    first_aside = Path(json.loads(result.stdout)["moved_aside"])
    assert first_aside.parent == demo_course and first_aside.name.startswith("phase5_segments.old-")
    assert (first_aside / saved.relative_to(layout.segments_dir)).exists()  # moved, not deleted
    assert not saved.exists()
    assert all(len(b["agent_batches"]) == 5 for p in read_plans(demo_course) for b in p["orchestrator_batches"])

    # again at once (same second): the second old folder must not land inside the first one
    add_agent_file(demo_course, agent=2)
    result = cli("prepare", demo_course, "--agents", "6", "--force", "--json")
    assert result.exit_code == 0, result.output
    second_aside = Path(json.loads(result.stdout)["moved_aside"])
    assert second_aside != first_aside and second_aside.parent == demo_course
    assert (first_aside / "segment_01" / "orch_01" / "agent_01_baskets.json").exists()
    assert (second_aside / "segment_01" / "orch_01" / "agent_02_baskets.json").exists()
    assert not any(first_aside.glob("phase5_segments*")) and not any(second_aside.glob("phase5_segments*"))
    assert len([p for p in demo_course.iterdir() if p.name.startswith("phase5_segments.old-")]) == 2


# -- merges ------------------------------------------------------------------------------------


def basket(course: Course, lego_id: str) -> dict[str, Any]:
    return {"lego": list(course.lego(lego_id).pair), "e": [], "d": {"2": [], "3": [], "4": [], "5": []}}


def write_orch_files(course: Course, segment: int) -> list[Path]:
    layout = CourseLayout(course.root)
    paths = []
    for batch in read_plans(course.root)[segment - 1]["orchestrator_batches"]:
        path = layout.orch_baskets(segment, batch["orchestrator_id"])
        path.write_text(json.dumps({i: basket(course, i) for i in batch["lego_ids"]}), encoding="utf-8")
        paths.append(path)
    return paths


def test_merge_segment_and_final(demo_course: Path) -> None:
    assert cli("prepare", demo_course).exit_code == 0
    course = Course.load(demo_course)
    layout = CourseLayout(demo_course)
    for segment in (1, 2, 3):
        write_orch_files(course, segment)
        result = cli("merge-segment", demo_course, segment, "--json")
        assert result.exit_code == 0, result.output
        figures = json.loads(result.stdout)
        plan = read_plans(demo_course)[segment - 1]
        assert figures["count"] == figures["expected"] == plan["total_legos"]
        assert figures["coverage"] == 1.0 and figures["duplicates"] == figures["missing"] == figures["extra"] == []
        assert len(figures["inputs"]) == 3
        merged = json.loads(layout.segment_baskets(segment).read_text(encoding="utf-8"))
        assert list(merged) == [i for b in plan["orchestrator_batches"] for i in b["lego_ids"]]
    result = cli("merge-final", demo_course)
    assert result.exit_code == 0, result.output
    assert "125 baskets from 3 files" in result.stdout and "coverage 100.0%" in result.stdout
    final = json.loads(layout.final_baskets.read_text(encoding="utf-8"))
    assert list(final) == course.ids
    assert final["S0001L02"] == basket(course, "S0001L02")


def test_merge_segment_missing_input_writes_nothing(demo_course: Path) -> None:
    assert cli("prepare", demo_course).exit_code == 0
    course = Course.load(demo_course)
    paths = write_orch_files(course, 2)
    paths[1].unlink()
    before = snapshot(demo_course)
    one_line_error(cli("merge-segment", demo_course, 2), "orch_02_baskets.json", "missing")
    assert snapshot(demo_course) == before
    assert not CourseLayout(demo_course).segment_baskets(2).exists()
    # an input present but short of an expected id: also nothing written
    write_orch_files(course, 2)
    data = json.loads(paths[2].read_text())
    gone = next(iter(data))
    del data[gone]
    paths[2].write_text(json.dumps(data))
    one_line_error(cli("merge-segment", demo_course, 2), gone, "nothing written")
    assert not CourseLayout(demo_course).segment_baskets(2).exists()
    # a segment with no plan
    one_line_error(cli("merge-segment", demo_course, 7), "segment 7")


def test_merge_final_missing_segment_writes_nothing(demo_course: Path) -> None:
    assert cli("prepare", demo_course).exit_code == 0
    course = Course.load(demo_course)
    for segment in (1, 3):
        write_orch_files(course, segment)
        assert cli("merge-segment", demo_course, segment).exit_code == 0
    before = snapshot(demo_course)
    one_line_error(cli("merge-final", demo_course), "segment_02_baskets.json", "missing")
    assert snapshot(demo_course) == before
    assert not CourseLayout(demo_course).final_baskets.exists()


def test_merge_before_prepare_is_a_clear_error(demo_course: Path) -> None:
    one_line_error(cli("merge-final", demo_course), "prepare")
    assert not CourseLayout(demo_course).final_baskets.exists()


def test_merge_reports_duplicate_and_extra_ids(demo_course: Path) -> None:
    assert cli("prepare", demo_course).exit_code == 0
    course = Course.load(demo_course)
    paths = write_orch_files(course, 1)
    first = json.loads(paths[0].read_text())
    second = json.loads(paths[1].read_text())
    twice = next(iter(first))
    second[twice] = first[twice]  # an id in two orchestrator files
    second["S0002L01"] = basket(course, "S0001L01")  # a duplicate LEGO of the course, not a canonical id
    paths[1].write_text(json.dumps(second))
    # and an id repeated inside one file (JSON allows it; the merge must say so)
    third = paths[2].read_text()
    repeated = next(iter(json.loads(third)))
    paths[2].write_text(third[:-1] + f', "{repeated}": ' + json.dumps(basket(course, repeated)) + "}")
    result = cli("merge-segment", demo_course, 1, "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["duplicates"] == sorted([twice, repeated])
    assert figures["extra"] == ["S0002L01"]
    assert figures["missing"] == [] and figures["coverage"] == 1.0
    text = cli("merge-segment", demo_course, 1).stdout
    assert "duplicate ids 2" in text and "extra 1" in text
