"""Malformed inputs through the real CLI: one clear line on stderr naming the file (and the seed
or LEGO id where there is one), exit status 2, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli import main

GOOD_SEEDS: list[Any] = [
    [
        "S0001",
        ["Quiero un café.", "I want a coffee."],
        [["S0001L01", "B", "Quiero", "I want", []], ["S0001L02", "B", "un café", "a coffee", []]],
    ],
    [
        "S0002",
        ["Quiero hablar.", "I want to speak."],
        [["S0002L01", "B", "Quiero", "I want", []], ["S0002L02", "B", "hablar", "to speak", []]],
    ],
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and mtime: 'nothing written' means equal."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def assert_one_line_error(result: Any, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def course_with(tmp_path: Path, lego_pairs: Any) -> Path:
    folder = tmp_path / "spa_for_eng"  # the code names the languages
    folder.mkdir()
    text = lego_pairs if isinstance(lego_pairs, str) else json.dumps(lego_pairs, ensure_ascii=False)
    (folder / "lego_pairs.json").write_text(text, encoding="utf-8")
    return folder


def with_lego(seed_index: int, lego_index: int, value: Any) -> dict[str, Any]:
    seeds = json.loads(json.dumps(GOOD_SEEDS))
    seeds[seed_index][2][lego_index] = value
    return {"seeds": seeds}


BAD_COURSES: dict[str, tuple[Any, tuple[str, ...]]] = {
    # name: (lego_pairs.json content, what the one line must name)
    "bad JSON": ('{"seeds": [["S0001", ', ("not valid JSON", "line 1")),
    "not an object": ("7", ('"seeds"',)),
    "a bare list of non-seeds": ("[1, 2]", ("seed #1", "array (v7.7) or an object (v8)")),
    "a seed without LEGOs": ({"seeds": [GOOD_SEEDS[0], ["S0002", ["Hola", "Hello"], []]]}, ("S0002", "no LEGOs")),
    "a LEGO with an empty target": (
        with_lego(1, 1, ["S0002L02", "B", "  ", "to speak"]),
        ("S0002", "S0002L02", "empty"),
    ),
    "a LEGO with an empty known": (with_lego(0, 0, ["S0001L01", "B", "Quiero", ""]), ("S0001L01", "known", "empty")),
    "duplicate LEGO ids": (with_lego(1, 1, ["S0001L02", "B", "hablar", "to speak"]), ("S0001L02", "duplicate")),
    "duplicate seed ids": ({"seeds": [GOOD_SEEDS[0], GOOD_SEEDS[0]]}, ("S0001", "duplicate")),
    "target is a number": (with_lego(1, 0, ["S0002L01", "B", 42, "I want"]), ("S0002L01", "target", "string")),
    "known is a list": (with_lego(0, 1, ["S0001L02", "B", "un café", ["a", "coffee"]]), ("S0001L02", "known")),
    "a LEGO with too few fields": (with_lego(1, 0, ["S0002L01", "B", "Quiero"]), ("S0002", "S0002L01")),
    "a LEGO that is a string": (with_lego(1, 0, "S0002L01"), ("S0002",)),
    "a malformed LEGO id": (with_lego(0, 0, ["S1L1", "B", "Quiero", "I want"]), ("S0001", "S1L1", "not a valid id")),
    "a malformed seed id": ({"seeds": [["seed-1", ["a b", "c"], [["S0001L01", "B", "a", "c"]]]]}, ("seed-1",)),
    "seed pair is a string": (
        {"seeds": [["S0001", "Quiero", [["S0001L01", "B", "Quiero", "I want"]]]]},
        ("S0001", "seed pair"),
    ),
    "v8 legos not a list": (
        {"seeds": [{"seed_id": "S0007", "seed_pair": ["a", "b"], "legos": {}}]},
        ("S0007", "legos"),
    ),
    "v8 target is a number": (
        {
            "seeds": [
                {
                    "seed_id": "S0001",
                    "seed_pair": {"target": "a", "known": "b"},
                    "legos": [{"id": "S0001L01", "lego": {"target": 7, "known": "x"}}],
                }
            ]
        },
        ("S0001L01", "target"),
    ),
    "no seeds": ({"seeds": []}, ("no seeds",)),
    "v8 seed without a sentence": (
        {"seeds": [{"seed_id": "S0003", "legos": [{"id": "S0003L01", "lego": {"target": "a", "known": "b"}}]}]},
        ("S0003", "seed_pair"),
    ),
    "v8 LEGO without text": (
        {"seeds": [{"seed_id": "S0004", "seed_pair": ["a b", "c d"], "legos": [{"id": "S0004L01", "type": "A"}]}]},
        ("S0004", "S0004L01", "target"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COURSES))
@pytest.mark.parametrize("command", ["validate", "prepare"])
def test_malformed_lego_pairs(tmp_path: Path, case: str, command: str) -> None:
    content, needles = BAD_COURSES[case]
    folder = course_with(tmp_path, content)
    before = snapshot(folder)
    result = run_cli(command, str(folder))
    assert_one_line_error(result, "lego_pairs.json", *needles)
    assert snapshot(folder) == before


def test_unreadable_seed_pairs_never_block_the_course(tmp_path: Path) -> None:
    """seed_pairs.json only feeds warnings: an entry it cannot read, or a file that is not even
    JSON, is one data warning naming the entry, and the course is used."""
    folder = course_with(tmp_path, {"seeds": GOOD_SEEDS})
    (folder / "seed_pairs.json").write_text('{"translations": {"S0001": "Quiero"}}', encoding="utf-8")
    (folder / "empty.json").write_text("{}", encoding="utf-8")
    result = run_cli("validate", str(folder), str(folder / "empty.json"), "--json")
    warnings = json.loads(result.stdout)["data_warnings"]
    assert {
        "kind": "seed_pairs_entry",
        "where": "S0001",
        "message": "seed_pairs.json: expected [target, known] texts",
    } in warnings
    (folder / "seed_pairs.json").write_text('{"translations": ', encoding="utf-8")
    result = run_cli("prepare", str(folder))
    assert result.exit_code == 0, result.output
    assert "seed_pairs.json: cannot be read: not valid JSON" in result.stdout


def test_not_a_course_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("validate", str(tmp_path / "empty")), "lego_pairs.json", "not found")
    assert_one_line_error(run_cli("validate", str(tmp_path / "nowhere")), "nowhere")
    assert list((tmp_path / "empty").iterdir()) == []


def test_unknown_course_code(tmp_path: Path) -> None:
    courses = tmp_path / "courses"
    courses.mkdir()
    line = assert_one_line_error(run_cli("prepare", "spa_for_nobody", "--courses-dir", str(courses)), "spa_for_nobody")
    assert "unknown course code" in line
    assert list(courses.iterdir()) == []


def test_course_code_resolved_under_courses_dir(tmp_path: Path, demo_course: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    result = run_cli("validate", demo_course.name, str(empty), "--courses-dir", str(demo_course.parent), "--json")
    assert result.exit_code == 1  # no baskets yet: a report, not an input error
    assert json.loads(result.stdout)["expected"] == 125


@pytest.mark.parametrize("code", ["..", "spa..eng", "Spa_For_Eng", "spa-for-eng", "spa for eng", "~root"])
def test_bad_course_codes_refused(tmp_path: Path, demo_course: Path, code: str) -> None:
    # a folder with that exact name exists: the code must be refused all the same
    target = demo_course.parent / code
    if not target.exists() and code != "..":
        target.symlink_to(demo_course)
    before = snapshot(demo_course)
    line = assert_one_line_error(run_cli("prepare", code, "--courses-dir", str(demo_course.parent)), repr(code))
    assert "not a course code" in line
    assert snapshot(demo_course) == before


def test_corrupted_basket_file_given_to_validate(tmp_path: Path, demo_course: Path) -> None:
    baskets = tmp_path / "baskets.json"
    baskets.write_text('{"S0001L01": {"lego": ["Quiero", "I want"], "e": [', encoding="utf-8")
    before = snapshot(tmp_path)
    assert_one_line_error(run_cli("validate", str(demo_course), str(baskets)), str(baskets), "not valid JSON")
    baskets.write_text('[["S0001L01"]]', encoding="utf-8")
    assert_one_line_error(run_cli("validate", str(demo_course), str(baskets)), str(baskets), "map")
    baskets.write_bytes(b'{"S0001L01": "\xff\xfe"}')
    assert_one_line_error(run_cli("validate", str(demo_course), str(baskets)), str(baskets))
    assert_one_line_error(run_cli("validate", str(demo_course), str(tmp_path / "absent.json")), "absent.json")
    assert set(snapshot(tmp_path)) == set(before)


def test_real_console_script_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    """The installed ``phase5`` entry point, in a real process (not only CliRunner)."""
    folder = course_with(tmp_path, with_lego(1, 1, ["S0002L02", "B", "", "to speak"]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = shutil.which("phase5")
    command = [script] if script else [sys.executable, "-m", "supervisor.cli"]
    proc = subprocess.run(
        [*command, "validate", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "S0002L02" in lines[0] and "lego_pairs.json" in lines[0]
    assert sorted(p.name for p in folder.iterdir()) == ["lego_pairs.json"]
