"""Keep the skill text (the prompt a model reads) in step with worker/constants.py (docs/DESIGN.md §6).

Every number the skill states is parsed back out of the text and compared with the constants
the validator uses, so changing either side alone fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from worker.constants import (
    D_SIZES,
    E_PHRASES_MAX,
    E_PHRASES_MIN,
    LENGTH_BANDS,
    RECENCY_ACCEPTABLE,
    RECENCY_MIN_POSITION,
    RECENCY_TARGET,
    RECENT_SEEDS,
    Band,
)
from worker.course import Course
from worker.rules import build_basket

SKILL_DIR = Path(__file__).resolve().parents[2] / "skills" / "basket-generation-skill"

SKILL_FILES = (
    "SKILL.md",
    "rules/GATE_CONSTRAINT.md",
    "rules/PHRASE_LENGTH.md",
    "rules/CULMINATING_LEGOS.md",
    "workflow/GENERATE_E_PHRASES.md",
    "workflow/EXTRACT_D_PHRASES.md",
    "workflow/RECENCY_BIAS.md",
    "examples/EXAMPLES.md",
    "schemas/OUTPUT_FORMAT.md",
)

#: The whole skill is sent as a system prompt: keep it modest.
MAX_SKILL_BYTES = 25 * 1024

TOOL_NAME = "submit_e_phrases"


def read(name: str) -> str:
    return (SKILL_DIR / name).read_text(encoding="utf-8")


def all_text() -> dict[str, str]:
    return {name: read(name) for name in SKILL_FILES}


def pct_range(bounds: tuple[float, float]) -> str:
    lo, hi = bounds
    # round(), not int(): int(0.29 * 100) would give 28.
    return f"{round(lo * 100)}-{round(hi * 100)}%"


def squash(text: str) -> str:
    """Collapse whitespace so re-wrapping a paragraph does not break a statement."""
    return " ".join(text.split())


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SKILL_FILES)
def test_skill_file_exists_and_is_not_empty(name: str) -> None:
    path = SKILL_DIR / name
    assert path.is_file(), f"missing skill file {path}"
    assert path.read_text(encoding="utf-8").strip(), f"empty skill file {path}"


def test_skill_size_is_modest() -> None:
    total = sum((SKILL_DIR / name).stat().st_size for name in SKILL_FILES)
    assert total <= MAX_SKILL_BYTES, f"skill is {total} bytes, limit {MAX_SKILL_BYTES}"


def test_skill_md_points_to_every_other_file() -> None:
    text = read("SKILL.md")
    for name in SKILL_FILES[1:]:
        assert name in text, f"SKILL.md does not point to {name}"


# --- rule 2: the band table ------------------------------------------------------------------

HEADER_RE = re.compile(r"^\|\s*Available LEGOs \(A = N-1\)\s*\|\s*Words per e-phrase\s*\|\s*$", re.MULTILINE)
SEPARATOR_RE = re.compile(r"^\|\s*:?-{3,}:?\s*\|\s*:?-{3,}:?\s*\|\s*$")
RANGE_RE = re.compile(r"^(?:(\d+)-(\d+)|over (\d+))$")
WORDS_RE = re.compile(r"^(?:up to (\d+)|(\d+)-(\d+))$")


def parse_range(cell: str) -> tuple[int, int | None]:
    m = RANGE_RE.match(cell)
    assert m, f"unreadable range cell {cell!r}"
    if m.group(3) is not None:
        return int(m.group(3)) + 1, None
    return int(m.group(1)), int(m.group(2))


def parse_words(cell: str) -> tuple[int, int]:
    m = WORDS_RE.match(cell)
    assert m, f"unreadable words cell {cell!r}"
    if m.group(1) is not None:
        return 1, int(m.group(1))
    return int(m.group(2)), int(m.group(3))


def parse_band_table(text: str) -> list[Band]:
    headers = HEADER_RE.findall(text)
    assert len(headers) == 1, f"expected one band table header, found {len(headers)}"
    tables = re.findall(r"^\|\s*:?-{3,}", text, re.MULTILINE)
    assert len(tables) == 1, f"expected exactly one table, found {len(tables)}"
    lines = text[HEADER_RE.search(text).end() :].lstrip("\n").splitlines()
    assert lines and SEPARATOR_RE.match(lines[0]), "band table has no separator row"
    bands = []
    for line in lines[1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 2, f"band row must have two cells: {line!r}"
        lo, hi = parse_range(cells[0])
        min_words, max_words = parse_words(cells[1])
        bands.append(Band(lo, hi, min_words, max_words))
    return bands


def test_band_table_matches_constants() -> None:
    assert parse_band_table(read("rules/PHRASE_LENGTH.md")) == list(LENGTH_BANDS)


def test_band_table_parser_detects_drift() -> None:
    text = read("rules/PHRASE_LENGTH.md")
    changed = text.replace("| 6-20 | 3-4 |", "| 6-20 | 3-5 |")
    assert changed != text
    assert parse_band_table(changed) != list(LENGTH_BANDS)


def test_band_rows_are_written_as_the_code_labels_them() -> None:
    text = read("rules/PHRASE_LENGTH.md")
    for band in LENGTH_BANDS:
        if band.max_available is None:
            span = f"over {band.min_available - 1}"
        else:
            span = f"{band.min_available}-{band.max_available}"
        assert f"| {span} | {band.label} |" in text


# --- counts, recency, d sizes ----------------------------------------------------------------


def test_skill_md_states_e_phrase_count() -> None:
    assert f"{E_PHRASES_MIN} to {E_PHRASES_MAX} e-phrases" in squash(read("SKILL.md"))


def test_every_e_phrase_count_in_the_skill_matches() -> None:
    for name, text in all_text().items():
        for lo, hi in re.findall(r"(\d+) to (\d+) e-phrases", squash(text)):
            assert (int(lo), int(hi)) == (E_PHRASES_MIN, E_PHRASES_MAX), name


def test_recency_bias_states_the_numbers() -> None:
    text = squash(read("workflow/RECENCY_BIAS.md"))
    assert pct_range(RECENCY_TARGET) in text
    assert pct_range(RECENCY_ACCEPTABLE) in text
    assert f"N >= {RECENCY_MIN_POSITION}" in text
    assert f"{RECENT_SEEDS} seeds" in text


def test_every_recency_number_in_the_skill_matches() -> None:
    allowed = {pct_range(RECENCY_TARGET), pct_range(RECENCY_ACCEPTABLE)}
    for name, text in all_text().items():
        text = squash(text)
        for found in re.findall(r"\d+-\d+%", text):
            assert found in allowed, f"{name}: {found} is not {sorted(allowed)}"
        for found in re.findall(r"N >= (\d+)", text):
            assert int(found) == RECENCY_MIN_POSITION, name
        for found in re.findall(r"(\d+) seeds", text):
            assert int(found) == RECENT_SEEDS, name


def test_d_window_sizes_match() -> None:
    sizes = ", ".join(str(k) for k in D_SIZES[:-1]) + f" and {D_SIZES[-1]}"
    assert sizes in squash(read("workflow/EXTRACT_D_PHRASES.md"))


# --- output contract and examples ------------------------------------------------------------


def test_tool_name_is_stated() -> None:
    for name in ("SKILL.md", "schemas/OUTPUT_FORMAT.md", "workflow/GENERATE_E_PHRASES.md"):
        assert TOOL_NAME in read(name), name


def json_blocks(text: str) -> list[object]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]


def baskets_in(value: object) -> list[dict]:
    """Every basket in a `{lego_id: basket}` map."""
    if not isinstance(value, dict):
        return []
    return [basket for key, basket in value.items() if re.fullmatch(r"S\d{4}L\d{2}", key) and isinstance(basket, dict)]


def test_json_examples_parse_and_have_the_basket_shape() -> None:
    seen_baskets = seen_tool_inputs = 0
    for name, text in all_text().items():
        for value in json_blocks(text):
            for basket in baskets_in(value):
                seen_baskets += 1
                assert set(basket) == {"lego", "e", "d"}, name
                assert len(basket["lego"]) == 2, name
                assert len(basket["e"]) <= E_PHRASES_MAX, name
                assert all(len(pair) == 2 for pair in basket["e"]), name
                assert list(basket["d"]) == [str(k) for k in D_SIZES], name
                for size, pairs in basket["d"].items():
                    assert all(len(pair) == 2 for pair in pairs), name
                    assert all(len(pair[0].split()) >= int(size) for pair in pairs), name
            if isinstance(value, dict) and set(value) == {"phrases"}:
                seen_tool_inputs += 1
                assert len(value["phrases"]) <= E_PHRASES_MAX, name
                for phrase in value["phrases"]:
                    assert set(phrase) == {"target", "known"}, name
    assert seen_baskets >= 4
    assert seen_tool_inputs >= 2


# --- the d-phrases the skill shows are the ones code computes ------------------------------------


def example_course(tmp_path: Path, seeds: list[tuple[str, str, list[tuple[str, str]]]]) -> Course:
    """A course of the given seeds ``(target, known, [(lego target, lego known), ...])``."""
    data = {
        "target": "spa",
        "known": "eng",
        "seeds": [
            [f"S{n:04d}", [t, k], [[f"S{n:04d}L{i:02d}", "B", lt, lk] for i, (lt, lk) in enumerate(legos, 1)]]
            for n, (t, k, legos) in enumerate(seeds, 1)
        ],
    }
    folder = tmp_path / f"course{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "lego_pairs.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return Course.load(folder)


#: The e-phrases of workflow/EXTRACT_D_PHRASES.md with the glosses of their LEGOs, in order.
D_EXAMPLES = [
    (
        "Quiero hablar contigo mañana.",
        "I want to speak with you tomorrow.",
        [("Quiero", "I want"), ("hablar", "to speak"), ("contigo", "with you"), ("mañana", "tomorrow")],
    ),
    (
        "No, no estoy preparado todavía.",
        "No, I'm not ready yet.",
        [("No", "no"), ("no estoy", "I'm not"), ("preparado", "ready"), ("todavía", "yet")],
    ),
    (
        "Quiero una casa blanca.",
        "I want a white house.",
        [("Quiero", "I want"), ("una casa", "a house"), ("blanca", "white")],
    ),
]


def test_extract_d_phrases_examples_are_what_code_computes(tmp_path: Path) -> None:
    shown = [v for v in json_blocks(read("workflow/EXTRACT_D_PHRASES.md")) if isinstance(v, dict) and "2" in v]
    assert len(shown) == len(D_EXAMPLES)
    for (target, known, legos), expected in zip(D_EXAMPLES, shown, strict=True):
        course = example_course(tmp_path, [(target, known, legos)])
        ctx = course.context(course.legos[-1].id)
        built = build_basket(ctx, [(target, known)])
        assert built.basket.to_json()["d"] == expected, target


def test_examples_md_good_basket_is_what_code_computes(tmp_path: Path) -> None:
    """The LEGO table of examples/EXAMPLES.md as a course; the "Good" tool input, built into a
    basket by code, gives exactly the basket the skill shows."""
    course = example_course(
        tmp_path,
        [
            (
                "Quiero hablar español.",
                "I want to speak Spanish.",
                [("Quiero", "I want"), ("hablar", "to speak"), ("español", "Spanish")],
            ),
            (
                "Estoy intentando aprender.",
                "I'm trying to learn.",
                [("Estoy intentando", "I'm trying"), ("aprender", "to learn")],
            ),
            (
                "Quiero hablar contigo ahora.",
                "I want to speak with you now.",
                [("Quiero", "I want"), ("hablar", "to speak"), ("contigo", "with you"), ("ahora", "now")],
            ),
            (
                "Quiero aprender español mañana.",
                "I want to learn Spanish tomorrow.",
                [("Quiero", "I want"), ("aprender", "to learn"), ("español", "Spanish"), ("mañana", "tomorrow")],
            ),
            (
                "Quiero aprender en casa.",
                "I want to learn at home.",
                [("Quiero", "I want"), ("aprender", "to learn"), ("en casa", "at home")],
            ),
        ],
    )
    table = re.findall(r"^\| (\d+) \| (S\d{4}L\d{2}) \| ([^|]+) \| ([^|]+) \|", read("examples/EXAMPLES.md"), re.M)
    assert [(int(n), i, t.strip(), k.strip()) for n, i, t, k in table] == [
        (lego.position, lego.id, lego.target, lego.known) for lego in course.legos
    ]
    blocks = json_blocks(read("examples/EXAMPLES.md"))
    tool_input = next(v for v in blocks if isinstance(v, dict) and "phrases" in v)
    shown = next(v for v in blocks if isinstance(v, dict) and "S0004L04" in v)["S0004L04"]
    phrases = [(p["target"], p["known"]) for p in tool_input["phrases"]]
    built = build_basket(course.context("S0004L04"), phrases)
    assert built.basket.to_json() == shown


def test_the_windows_question_is_the_one_the_skill_describes() -> None:
    """The backend's question about d windows and the skill's description of it say the same:
    the same JSON object, the piece as listed, an unbroken piece of the translation."""
    import inspect

    from worker.generators.anthropic_backend import Conversation

    question = squash(inspect.getsource(Conversation._ask_windows).replace('"', "").replace("'", ""))
    text = squash(read("workflow/EXTRACT_D_PHRASES.md"))
    for words in ("exactly as listed", "one unbroken piece of that translation", "exactly as written there"):
        assert words in question and words in text, words
