"""``phase5 validate``: the rule report (docs/DESIGN.md §1 rules 1-5), its exit status and its speed."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from tests.conftest import EXAMPLE_COURSE
from worker.course import Course
from worker.generators.corpus import corpus_index
from worker.paths import CourseLayout
from worker.report import load_basket_file, validate_baskets
from worker.rules import build_basket


def cli(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def span_candidates(course: Course) -> dict[str, list[tuple[str, str]]]:
    """For each canonical LEGO, every seed sentence and run of a seed that the corpus offers for
    it (cut as written, known sides aligned); build_basket keeps up to five."""
    index = corpus_index(course)
    return {lego.id: [c.pair for c in index.candidates(lego.position)] for lego in course.legos}


def valid_map(course: Course) -> dict[str, Any]:
    candidates = span_candidates(course)
    return {
        lego.id: build_basket(course.context(lego.id), candidates.get(lego.id, [])).basket.to_json()
        for lego in course.legos
    }


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo() -> Course:
    return Course.load(Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo")


def test_empty_map_on_spa_course(spa_course: Path, tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.json", {})
    result = cli("validate", spa_course, empty)
    assert result.exit_code == 1, result.output
    assert "expected 1766, present 0, missing 1766" in result.stdout
    assert "FAIL" in result.stdout
    assert "data warnings 16: 10 the seed's LEGOs do not join to its sentence" in result.stdout
    assert result.stdout.count("  data warning S0") == 5  # the first five; --json has them all
    assert result.stdout.splitlines()[0].startswith("FAIL  usable (3-5 e-phrases) 0/1766")
    result = cli("validate", spa_course, empty, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["expected"], report["present"], len(report["missing"])) == (1766, 0, 1766)
    assert report["coverage"] == 0.0 and report["ok"] is False
    assert len(report["data_warnings"]) == 16
    assert report["data_warning_counts"] == {"lego_join": 10, "no_seed_sentence": 3, "seed_pairs_differ": 3}
    # the default basket file is COURSE/lego_baskets.json
    write(CourseLayout(spa_course).final_baskets, {"baskets": {}})
    assert cli("validate", spa_course).exit_code == 1


def test_fully_valid_demo_file_exits_0(demo: Course, demo_course: Path, tmp_path: Path) -> None:
    baskets = valid_map(demo)
    culminating = [lego for lego in demo.legos if lego.culminating]
    assert culminating and all(baskets[lego.id]["e"][0] == list(demo.seed_phrase(lego.seed_id)) for lego in culminating)
    assert baskets["S0001L01"]["e"] == []  # LEGO #1 has nothing to combine with
    path = write(tmp_path / "valid.json", baskets)
    result = cli("validate", demo_course, path)
    assert result.exit_code == 0, result.stdout
    assert "PASS" in result.stdout and "coverage 100.0%" in result.stdout
    report = json.loads(cli("validate", demo_course, path, "--json").stdout)
    assert report["ok"] is True and report["present"] == report["expected"] == 125
    assert report["gate_phrases_pass"] == report["e_phrases"] > 0
    assert report["d_baskets_pass"] == 125 and report["culminating_first_pass"] == report["culminating"] == len(
        culminating
    )
    assert report["problems"] == []
    # the {"baskets": {...}} wrapper of another tool is the same file
    wrapped = write(tmp_path / "wrapped.json", {"version": "x", "baskets": baskets})
    assert cli("validate", demo_course, wrapped).exit_code == 0


def broken_map(course: Course) -> tuple[dict[str, Any], dict[str, str]]:
    """A valid map with three absolute-rule problems, each in a different basket."""
    baskets = copy.deepcopy(valid_map(course))
    last = course.legos[-1]
    broken: dict[str, str] = {}
    for lego in course.legos:
        b = baskets[lego.id]
        if "gate" not in broken.values() and not lego.culminating and b["e"] and lego.position < last.position - 5:
            # the operative LEGO plus a LEGO from the future
            b["e"].append([f"{lego.target} {last.target}", f"{lego.known} {last.known}"])
            broken[lego.id] = "gate"
        elif "d_phrases" not in broken.values() and not lego.culminating and b["d"]["2"]:
            target, known = b["d"]["2"][0]
            b["d"]["2"][0] = [target + " " + last.target, known + " " + last.known]
            broken[lego.id] = "d_phrases"
        elif "culminating_first" not in broken.values() and lego.culminating and len(b["e"]) >= 2:
            b["e"].reverse()  # same phrases, same d-phrases: only the order is wrong
            broken[lego.id] = "culminating_first"
    assert sorted(broken.values()) == ["culminating_first", "d_phrases", "gate"]
    return baskets, broken


def test_hand_made_file_with_three_problems(demo: Course, demo_course: Path, tmp_path: Path) -> None:
    baskets, broken = broken_map(demo)
    path = write(tmp_path / "broken.json", baskets)
    result = cli("validate", demo_course, path)
    assert result.exit_code == 1
    problem_lines = [line for line in result.stdout.splitlines() if line.startswith("problem")]
    assert len(problem_lines) == 3, result.stdout
    for lego_id, rule in broken.items():
        assert any(f"{lego_id}: {rule}:" in line for line in problem_lines), (lego_id, rule, problem_lines)
    gate_id = next(i for i, r in broken.items() if r == "gate")
    gate_line = next(line for line in problem_lines if gate_id in line)
    assert repr(demo.legos[-1].target.lower()) in gate_line  # names the future LEGO
    assert "FAIL" in result.stdout

    for document in (baskets, {"baskets": baskets}):
        result = cli("validate", demo_course, write(tmp_path / "b.json", document), "--json")
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert {(p["lego_id"], p["rule"]) for p in report["problems"]} == set(broken.items())
        assert report["ok"] is False and report["coverage"] == 1.0
        assert report["gate_baskets_pass"] == 124 and report["d_baskets_pass"] == 124
        assert report["culminating_first_pass"] == report["culminating"] - 1


def test_format_problems_duplicates_and_extras(demo: Course, demo_course: Path, tmp_path: Path) -> None:
    baskets = valid_map(demo)
    baskets["S0001L02"] = {"lego": ["un café", "a coffee"], "e": "not a list", "d": {}}
    baskets["S0002L01"] = baskets["S0001L01"]  # a duplicate LEGO of the course gets no basket
    text = json.dumps(baskets)
    text = text[:-1] + ', "S0002L02": ' + json.dumps(baskets["S0002L02"]) + "}"  # an id twice in the file
    path = tmp_path / "odd.json"
    path.write_text(text, encoding="utf-8")
    data, duplicates = load_basket_file(path)
    assert duplicates == ["S0002L02"]
    report = validate_baskets(demo, data, duplicates)
    assert report.extra == ["S0002L01"] and report.duplicates == ["S0002L02"]
    # the format problems, and what they mean for the rules (no e-phrase read: no seed sentence first)
    assert {(p.lego_id, p.rule) for p in report.problems} == {("S0001L02", "format"), ("S0001L02", "culminating_first")}
    assert not report.ok
    assert cli("validate", demo_course, path).exit_code == 1


def test_validate_full_course(spa_course: Path, tmp_path: Path) -> None:
    course = Course.load(spa_course)
    baskets = valid_map(course)
    assert len(baskets) == 1766
    started = time.perf_counter()
    report = validate_baskets(course, baskets)
    elapsed = time.perf_counter() - started
    print(f"\nvalidate of {report.present} baskets / {report.e_phrases} e-phrases: {elapsed:.3f} s")
    assert report.ok, report.problems[:3]
    assert report.present == 1766 and report.e_phrases > 3000
    # and through the CLI, which reports its own figure
    path = write(tmp_path / "full.json", baskets)
    result = cli("validate", spa_course, path, "--json")
    assert result.exit_code == 0
    seconds = json.loads(result.stdout)["seconds"]
    print(f"phase5 validate --json reports {seconds} s")
    assert seconds > 0  # its speed is measured by scripts/bench_offline.py, not here


def test_every_phrase_is_judged_despite_format_problems(demo: Course, demo_course: Path, tmp_path: Path) -> None:
    """Another tool's file: phrases as objects or with extra fields, d keys missing, extra keys.
    Format problems are reported as well as, not instead of, the rules."""
    baskets = valid_map(demo)
    odd = {}
    for lego_id in demo.ids[40:60]:
        basket = copy.deepcopy(baskets[lego_id])
        basket["e"] = [{"target": t, "known": k} for t, k in basket["e"]][:1] + [[t, k, 4] for t, k in basket["e"][1:]]
        basket["d"] = {"2": basket["d"]["2"]}  # "3", "4", "5" missing
        basket["source"] = "another pipeline"
        odd[lego_id] = basket
    expected_phrases = sum(len(b["e"]) for b in odd.values())
    report = validate_baskets(demo, {**baskets, **odd})
    assert report.e_phrases == sum(len(b["e"]) for b in baskets.values()) and expected_phrases > 20
    assert report.gate_phrases_pass == report.e_phrases  # every phrase of the odd baskets judged too
    format_ids = {p.lego_id for p in report.problems if p.rule == "format"}
    assert format_ids == set(odd)
    assert all("format" in report.baskets[i].flags for i in odd)


def test_headline_and_min_usable(demo: Course, demo_course: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "valid.json", valid_map(demo))
    report = json.loads(cli("validate", demo_course, path, "--json").stdout)
    usable = 100 * report["usable"] / report["expected"]
    text = cli("validate", demo_course, path).stdout.splitlines()
    assert text[0] == (
        f"PASS  usable (3-5 e-phrases) {report['usable']}/125 ({usable:.1f}%),"
        f" empty {report['empty']}/125 ({100 * report['empty'] / 125:.1f}%), short (1-2) {report['short']},"
        " baskets 125/125"
    )
    assert report["empty"] >= 1 and report["usable"] + report["empty"] + report["short"] == 125
    assert cli("validate", demo_course, path, "--min-usable", f"{usable - 1:.1f}").exit_code == 0
    below = cli("validate", demo_course, path, "--min-usable", f"{usable + 1:.1f}")
    assert below.exit_code == 1 and "below --min-usable" in below.stdout
    assert (
        json.loads(cli("validate", demo_course, path, "--json", "--min-usable", "99").stdout)["enough_usable"] is False
    )


def test_the_rules_answers_are_remembered_per_course_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker checks every phrase it keeps twice (building the basket, then checking the agent
    file): the second answer comes from the course's memo, the same as computed afresh; a
    rejection keeps the pair as given; the memo empties itself when full."""
    from worker import rules
    from worker.generators import make_generator

    course = Course.load(EXAMPLE_COURSE)
    corpus = make_generator("corpus", course)
    lego = next(lego for lego in course.legos[60:] if len(corpus.generate(course.context(lego.id)).basket.e) >= 3)
    made = corpus.generate(course.context(lego.id)).basket
    course.rule_memo.clear()
    built = rules.build_basket(course.context(lego.id), [list(pair) for pair in made.e])
    assert len(built.phrases) >= 3 and course.rule_memo
    again = [rules.check_phrase(course, lego.position, list(p.pair)) for p in built.phrases]
    d = rules.d_phrases(course, again)
    fresh = Course.load(EXAMPLE_COURSE)
    assert again == [rules.check_phrase(fresh, lego.position, p.pair) for p in built.phrases]
    assert d == rules.d_phrases(fresh, again) and d.d == built.basket.d
    pair = ["zzz qqq", "nothing"]
    rejected = rules.check_phrase(course, lego.position, pair)
    assert isinstance(rejected, rules.Rejection) and rejected.pair is pair
    assert rules.check_phrase(course, lego.position, ("zzz qqq", "nothing")).pair == ("zzz qqq", "nothing")
    monkeypatch.setattr(rules, "MEMO_SIZE", 3)
    for n in range(7):
        rules.check_phrase(course, lego.position, (f"zzz{n}", "nothing"))
        assert len(course.rule_memo) <= 3
