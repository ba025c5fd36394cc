"""`phase5 show COURSE LEGO_ID`: one basket in the terminal with its checks, tiling, d windows and
provenance (from the journals of a real offline worker run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import finish_offline
from worker.course import Course
from worker.paths import CourseLayout


@pytest.fixture
def finished(demo_course: Path) -> Path:
    finish_offline(demo_course)
    return demo_course


def culminating_with_phrases(course: Path) -> str:
    loaded = Course.load(course)
    baskets = json.loads(CourseLayout(course).final_baskets.read_text(encoding="utf-8"))
    return next(i for i in loaded.ids if loaded.by_id[i].culminating and len(baskets[i]["e"]) >= 2)


def test_show_one_basket(finished: Path, p5) -> None:
    lego_id = culminating_with_phrases(finished)
    lego = Course.load(finished).by_id[lego_id]
    result = p5.phase5("show", str(finished), lego_id)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"{lego_id}  {lego.target} = {lego.known}")
    assert f"position {lego.position} · seed {lego.seed_id} · culminating" in out
    assert "flags:" in out and "e-phrases (" in out and "tiles:" in out and "d-phrases" in out
    assert f"{lego_id} #{lego.position} operative" in out
    assert "the seed sentence: the band does not count it" in out
    assert "made by" in out and "corpus · s1-o1 agent" in out and "<- in the file" in out

    view = json.loads(p5.phase5("show", str(finished), lego_id, "--json").stdout)
    assert view["id"] == lego_id and view["lego"] == [lego.target, lego.known] and view["in_file"]
    first = view["e"][0]
    assert first["seed_sentence"] and [t["operative"] for t in first["tiles"]].count(True) == 1
    assert " ".join(t["text"] for t in first["tiles"]).replace(" ", "") in first["target"].replace(" ", "")
    windows = [w for entry in view["e"] for w in entry.get("windows", []) if not w["left_out"]]
    d_pairs = {tuple(pair) for items in view["d"].values() for pair in items}
    assert {(w["target"], w["known"]) for w in windows} == d_pairs  # the d-phrases are the windows kept
    made = view["made"]
    assert len(made) == 1 and made[0]["current"] and made[0]["backend"] == "corpus" and made[0]["saved"]


def test_show_refuses_what_is_not_a_basket(finished: Path, p5) -> None:
    loaded = Course.load(finished)
    duplicate = next(i for i, c in loaded.canonical_of.items() if i != c)
    for lego_id, needle in (
        ("S9999L01", "S9999L01 is not a LEGO of this course"),
        ("../etc", "is not a LEGO id like S0001L01"),
        (duplicate, f"repeats {loaded.canonical_of[duplicate]}"),
    ):
        result = p5.phase5("show", str(finished), lego_id)
        assert result.returncode == 2 and needle in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_show_prints_text_from_files_as_text(finished: Path, p5) -> None:
    """A phrase holding escape sequences or rich markup is shown as escapes and brackets, never
    acted on by the terminal or rich."""
    lego_id = Course.load(finished).ids[4]
    baskets = json.loads(CourseLayout(finished).final_baskets.read_text(encoding="utf-8"))
    baskets[lego_id]["e"].append(["[bold red]hola[/] \x1b]0;pwned\x07", "hi \u202e"])
    path = finished / "edited.json"
    path.write_text(json.dumps(baskets, ensure_ascii=False), encoding="utf-8")
    result = p5.phase5("show", str(finished), lego_id, "--baskets", str(path))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\u202e" not in result.stdout
    assert "[bold red]hola[/] \\x1b]0;pwned\\x07" in result.stdout and "hi \\u202e" in result.stdout
    assert "GATE:" in result.stdout and "gate" in result.stdout  # the phrase is refused, and said so
