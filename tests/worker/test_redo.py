"""The redo domain without tmux (worker/redo.py): choosing baskets, planning a redo after the
course's plan, splicing its baskets into lego_baskets.json byte for byte, and the final merge and
prepare living with redo segments. The supervisor's side is tests/supervisor/test_redo.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import finish_offline, others_unchanged
from worker.checksum import checksum_problem
from worker.course import Course
from worker.errors import Phase5Error
from worker.merge import merge_final
from worker.paths import CourseLayout
from worker.plan import load_plans, prepare
from worker.provenance import provenance
from worker.redo import apply_redo, parse_ids, redos, select_where, splice, unfinished, write_redo
from worker.report import load_basket_file, validate_baskets
from worker.rules import build_basket

BASKETS = {
    "S0001L01": {"lego": ["Quiero", "I want"], "e": [], "d": {"2": [], "3": [], "4": [], "5": []}},
    "S0001L02": {"lego": ["ñu", "gnu"], "e": [["Quiero ñu", "I want gnu"]], "d": {"2": [["Quiero ñu", "I want gnu"]]}},
    "S0001L03": {"lego": ["x", "y"], "e": [], "d": {}},
}
NEW = {"lego": ["ñu", "gnu"], "e": [], "d": {"2": [], "3": [], "4": [], "5": []}}


@pytest.mark.parametrize("indent", [1, 2, None, "\t"])
@pytest.mark.parametrize("ascii_only", [False, True])
def test_splice_changes_only_the_redone_basket(indent: Any, ascii_only: bool) -> None:
    old = json.dumps(BASKETS, ensure_ascii=ascii_only, indent=indent) + "\n"
    new = splice(old, {"S0001L02": NEW})
    assert json.loads(new) == {**BASKETS, "S0001L02": NEW}
    assert new == json.dumps({**BASKETS, "S0001L02": NEW}, ensure_ascii=ascii_only, indent=indent) + "\n"
    others_unchanged(old, new, {"S0001L02"})


def test_splice_keeps_a_hand_made_layout_and_a_wrapper_byte_for_byte() -> None:
    old = '{ "course" : "spa",\n  "baskets": {"S0001L01":  {"e": []} ,\n "S0001L02":{"e":[1]}}\n}'
    new = splice(old, {"S0001L02": {"e": [2]}})
    assert new == old.replace('{"e":[1]}', '{"e": [2]}')
    with pytest.raises(ValueError, match="S0009L01 is not in the file"):
        splice(old, {"S0009L01": {}})
    with pytest.raises(ValueError):
        splice("[1, 2]", {"S0001L01": {}})


def test_parse_ids(demo_course: Path) -> None:
    course = Course.load(demo_course)
    first, second = course.ids[:2]
    assert parse_ids(f"{second}, {first}\n# a comment\n{first}  # again", course, "f") == [first, second]
    with pytest.raises(Phase5Error, match="S9999L01 is not a LEGO of this course"):
        parse_ids("S9999L01", course, "--ids")
    with pytest.raises(Phase5Error, match="is not a LEGO id like S0001L01"):
        parse_ids("S1;rm", course, "--ids")
    with pytest.raises(Phase5Error, match="no LEGO id given"):
        parse_ids(" # nothing", course, "ids.txt")
    duplicate = next((i for i, c in course.canonical_of.items() if i != c), None)
    if duplicate is not None:
        with pytest.raises(Phase5Error, match=f"repeats {course.canonical_of[duplicate]}"):
            parse_ids(duplicate, course, "--ids")


@pytest.fixture
def finished(demo_course: Path) -> Course:
    finish_offline(demo_course)
    return Course.load(demo_course)


def test_select_where_matches_the_report(finished: Course) -> None:
    baskets, _ = load_basket_file(CourseLayout(finished.root).final_baskets)
    report = validate_baskets(finished, baskets)
    empty = [i for i in finished.ids if "empty" in report.baskets[i].flags]
    assert empty and select_where(finished, baskets, ["empty"]) == empty
    flagged = select_where(finished, baskets, ["flagged"])
    assert flagged == [c.lego_id for c in report.flagged()]
    both = select_where(finished, baskets, ["empty", "short"])
    assert set(both) == {i for i in finished.ids if {"empty", "short"} & set(report.baskets[i].flags)}
    missing = {k: v for k, v in baskets.items() if k != finished.ids[5]}
    assert finished.ids[5] in select_where(finished, missing, ["empty"])  # no basket at all counts as empty


def shorter(course: Course, lego_id: str, basket: dict[str, Any]) -> dict[str, Any]:
    """A valid basket of ``lego_id`` other than ``basket``: one e-phrase fewer, built by the rules."""
    ctx = course.context(lego_id)
    kept = [tuple(pair) for pair in basket["e"]][:-1]
    return build_basket(ctx, kept).basket.to_json()


def test_a_redo_is_planned_after_the_course_and_spliced_in_byte_for_byte(finished: Course) -> None:
    layout = CourseLayout(finished.root)
    old_text = layout.final_baskets.read_text(encoding="utf-8")
    baskets = json.loads(old_text)
    chosen = [i for i in finished.ids if len(baskets[i]["e"]) >= 2][:4]
    redo = write_redo(finished, chosen, "corpus", None, "ids", orchestrators=2, agents=2)
    assert redo.number == 1 and redo.segments == [2] and redo.ids == chosen
    assert unfinished(finished) is not None and unfinished(finished).number == 1  # type: ignore[union-attr]
    assert [p.segment_number for p in load_plans(finished)] == [1]  # the course's plan alone
    assert [p.segment_number for p in load_plans(finished, include_redo=True)] == [1, 2]
    # same options again: prepare sees the course's plan unchanged, the redo is not a "different plan"
    assert prepare(finished, segments=1, orchestrators=1, agents=3).changed is False
    with pytest.raises(Phase5Error, match="not complete and valid"):
        apply_redo(finished, redo)  # its segment is not merged yet: nothing applied
    assert layout.final_baskets.read_text(encoding="utf-8") == old_text

    new = {i: shorter(finished, i, baskets[i]) for i in chosen}
    (layout.segments_dir / "segment_02_baskets.json").write_text(json.dumps(new, ensure_ascii=False, indent=1))
    applied = apply_redo(finished, redo)
    assert applied.changed == chosen and applied.kept == len(finished.ids) - len(chosen) and not applied.rewritten
    new_text = layout.final_baskets.read_text(encoding="utf-8")
    others_unchanged(old_text, new_text, set(chosen))
    assert {i: json.loads(new_text)[i] for i in chosen} == new
    assert unfinished(finished) is None and redos(finished)[0].applied
    assert checksum_problem(layout.final_baskets) is None  # its checksum file follows the new text

    # the final merge rebuilds the same file: the applied redo's baskets win over the segment's
    merge_final(finished)
    assert layout.final_baskets.read_text(encoding="utf-8") == new_text
    # a second redo is numbered after it, its segment after every other
    again = write_redo(finished, chosen[:1], "anthropic", "claude-x", "where empty")
    assert again.number == 2 and again.segments == [3] and again.info.model == "claude-x"


def test_a_redo_needs_a_finished_run(demo_course: Path) -> None:
    course = Course.load(demo_course)
    with pytest.raises(Phase5Error, match="no segment plans"):
        write_redo(course, course.ids[:1], "corpus", None, "ids")
    prepare(course, segments=1, orchestrators=1, agents=1)
    with pytest.raises(Phase5Error, match="nothing to redo"):
        write_redo(course, [], "corpus", None, "ids")


def test_provenance_reads_who_made_each_basket(finished: Course) -> None:
    found = provenance(finished)
    assert set(found.history) == set(finished.ids)
    made = found.current(finished.ids[3])
    assert made is not None and made.backend == "corpus" and made.redo is None and made.applied
    assert made.time is not None and made.started is not None and made.started <= made.time
    assert made.window == "s1-o1" and made.requests == 0 and made.repair_rounds == 0


def test_a_lost_plan_file_is_written_again_beside_a_redo(finished: Course) -> None:
    """The plan repair looks at the course's plan only: a redo's segment is not "another plan"."""
    write_redo(finished, finished.ids[:3], "corpus", None, "ids")
    layout = CourseLayout(finished.root)
    layout.segment_plan(1).unlink()
    result = prepare(finished, segments=1, orchestrators=1, agents=3)
    assert result.rewritten == ["segment_01.json (missing)"]
    assert [p.segment_number for p in load_plans(finished, include_redo=True)] == [1, 2]
    assert redos(finished)[0].ids == finished.ids[:3]
