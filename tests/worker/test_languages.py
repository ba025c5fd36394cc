"""A course's languages (issue: every real course): the table, where the codes come from and in
which order, what is refused, and the warning when the text contradicts the table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from supervisor.cli import main
from worker.course import Course
from worker.errors import Phase5Error
from worker.languages import LANGUAGES, UnknownLanguage, describe, language, script_contradiction
from worker.paths import CourseLayout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "courses"

#: Each fixture course: (languages it must resolve to, where they come from).
EXPECTED = {
    "fra_v8_objects": ("fra", "eng", "lego_pairs.json"),
    "corso_italiano": ("ita", "eng", "the course code"),
    "cmn_v77": ("cmn", "eng", "lego_pairs.json"),
    "mandarin_v83": ("cmn", "eng", "the course code"),
    "kurs": ("deu", "eng", "seed_pairs.json"),
}


def cli(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def copy(name: str, tmp_path: Path, as_name: str | None = None) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / (as_name or name)))


def test_table_finds_codes_two_letter_codes_and_names() -> None:
    assert language("spa") is language("es") is language("Spanish") is language("SPA")
    assert language("zh").code == "cmn" and not language("zh").spaced
    assert language("zh-Hans").code == "cmn" and language("pt_BR").code == "por"
    assert {code for code, entry in LANGUAGES.items() if not entry.spaced} >= {"cmn", "yue", "jpn", "tha", "lao", "khm"}
    assert language("kor").spaced and language("vie").spaced  # Korean and Vietnamese use spaces
    assert describe(language("bre"), language("fra")) == "Breton for French speakers"
    with pytest.raises(UnknownLanguage, match="'xx1'"):
        language("xx1")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_course_names_its_languages(name: str) -> None:
    target, known, source = EXPECTED[name]
    course = Course.load(FIXTURES / name)
    assert (course.target_language.code, course.known_language.code) == (target, known)
    assert course.languages.source == source
    assert course.spaced == (target not in ("cmn", "jpn"))
    assert not [w for w in course.warnings if w.kind == "script"]


def test_order_options_then_saved_then_files_then_code(tmp_path: Path) -> None:
    folder = copy("cmn_v77", tmp_path, "yue_for_eng")  # the folder's name says Cantonese
    data = json.loads((folder / "lego_pairs.json").read_text(encoding="utf-8"))
    assert Course.load(folder).language == "cmn"  # lego_pairs.json's own field wins over the name
    assert Course.load(folder, "yue", "fra").languages.source == "options"
    del data["target"], data["known"], data["course"]
    (folder / "lego_pairs.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert Course.load(folder).language == "yue"  # now the folder's name
    (folder / "seed_pairs.json").write_text(
        json.dumps({"target_language": "jpn", "known_language": "eng", "translations": {}}), encoding="utf-8"
    )
    assert Course.load(folder).language == "jpn"  # seed_pairs.json before the name
    result = cli("prepare", folder, "--target-language", "cmn", "--known-language", "eng")
    assert result.exit_code == 0, result.output
    assert "Mandarin Chinese for English speakers (languages from options)" in result.output
    saved = json.loads(CourseLayout(folder).languages.read_text())
    assert saved == {"target": "cmn", "known": "eng"}
    again = Course.load(folder)  # what a worker or a later validate sees, without options
    assert again.language == "cmn" and again.languages.source == "the options given to prepare"


def test_no_language_anywhere_is_one_line_naming_the_options(tmp_path: Path) -> None:
    folder = copy("kurs", tmp_path, "kurs2")
    (folder / "seed_pairs.json").unlink()
    with pytest.raises(Phase5Error, match="--target-language"):
        Course.load(folder)
    result = cli("validate", folder)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no target language: give --target-language" in lines[0], lines
    assert "course code like spa_for_eng" in lines[0]
    assert not CourseLayout(folder).segments_dir.exists()  # nothing written
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    given = cli("validate", folder, empty, "--target-language", "deu", "--known-language", "eng")
    assert given.exit_code == 1 and "German for English speakers (languages from options)" in given.output


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        ("option", "klingon", "language from options: unknown language 'klingon'"),
        ("file", "xx1", "language from lego_pairs.json: unknown language 'xx1'"),
    ],
)
def test_an_unknown_language_code_is_refused(tmp_path: Path, where: str, value: str, needle: str) -> None:
    folder = copy("fra_v8_objects", tmp_path)
    args: list[Any] = ["prepare", folder]
    if where == "option":
        args += ["--target-language", value]
    else:
        data = json.loads((folder / "lego_pairs.json").read_text(encoding="utf-8"))
        data["target"] = value
        (folder / "lego_pairs.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    result = cli(*args)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and needle in result.output, result.output
    assert not CourseLayout(folder).segments_dir.exists()


def test_text_that_contradicts_the_table_is_one_warning(tmp_path: Path) -> None:
    folder = copy("cmn_v77", tmp_path)
    course = Course.load(folder, "spa", "eng")  # Chinese text said to be Spanish
    script = [w for w in course.warnings if w.kind == "script"]
    assert len(script) == 1 and "Spanish (spa) is written with spaces" in script[0].message
    assert script_contradiction(language("jpn"), ["Quiero hablar contigo."]) is not None
    assert script_contradiction(language("jpn"), ["日本語を話したいです。"]) is None


def test_commands_name_the_languages_in_words(tmp_path: Path) -> None:
    folder = copy("mandarin_v83", tmp_path)
    prepared = cli("prepare", folder, "--json")
    assert json.loads(prepared.output)["languages"]["description"] == "Mandarin Chinese for English speakers"
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    validated = cli("validate", folder, empty)
    assert "course    Mandarin Chinese for English speakers (languages from the course code)" in validated.output
    status = cli("status", folder, "--json")
    assert json.loads(status.output)["languages"]["target_name"] == "Mandarin Chinese"
