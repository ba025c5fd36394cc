"""Course loading (docs/DESIGN.md §1-§2): both input formats, canonical order and deduplication,
culminating flags, recent ranges, and the data warnings of the real course."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.constants import RECENT_SEEDS
from worker.course import Course
from worker.errors import InputError

# A small course in v7.7 arrays. Seeds and what they test:
#   S0001  two new LEGOs; the last one culminates
#   S0002  " quiero. " / "I WANT" duplicates S0001L01 (lowercase, trim, trailing .,; removed)
#   S0003  "Quiero" / "I love" has S0001L01's target but another known: NOT a duplicate;
#          "Un café;" / "a coffee." duplicates S0001L02, so S0003 has no culminating LEGO
#   S0004  "¿Quiero" is not "quiero" (only trailing punctuation goes); "hablar" culminates
SEEDS_V77: list[Any] = [
    [
        "S0001",
        ["Quiero un café.", "I want a coffee."],
        [["S0001L01", "B", "Quiero", "I want", []], ["S0001L02", "B", "un café", "a coffee", []]],
    ],
    [
        "S0002",
        ["Quiero hablar.", "I want to speak."],
        [["S0002L01", "B", " quiero. ", "I WANT"], ["S0002L02", "B", "hablar", "to speak", []]],
    ],
    [
        "S0003",
        ["Quiero un café.", "I love a coffee."],
        [["S0003L01", "A", "Quiero", "I love", []], ["S0003L02", "B", "Un café;", "a coffee.", []]],
    ],
    [
        "S0004",
        ["¿Quiero hablar?", "Do I want to speak?"],
        [["S0004L01", "B", "¿Quiero", "Do I want", []], ["S0004L02", "B", "hablar", "to speak", []]],
    ],
]

EXPECTED_ORDER = [
    # (id, position, seed, culminating)
    ("S0001L01", 1, "S0001", False),
    ("S0001L02", 2, "S0001", True),
    ("S0002L02", 3, "S0002", True),
    ("S0003L01", 4, "S0003", False),
    ("S0004L01", 5, "S0004", False),
]
EXPECTED_DUPLICATES = {"S0002L01": "S0001L01", "S0003L02": "S0001L02", "S0004L02": "S0002L02"}


def write_course(folder: Path, lego_pairs: dict[str, Any], seed_pairs: dict[str, Any] | None = None) -> Path:
    """A course folder; a lego_pairs object without languages gets Spanish for English speakers."""
    folder.mkdir(parents=True)
    lego_pairs = {"target": "spa", "known": "eng", **lego_pairs}
    (folder / "lego_pairs.json").write_text(json.dumps(lego_pairs, ensure_ascii=False), encoding="utf-8")
    if seed_pairs is not None:
        (folder / "seed_pairs.json").write_text(json.dumps(seed_pairs, ensure_ascii=False), encoding="utf-8")
    return folder


def to_v8(seeds: list[Any], seed_pair_as_object: bool, lego_as_object: bool) -> list[dict[str, Any]]:
    out = []
    for seed_id, (target, known), legos in seeds:
        v8_legos = []
        for lego in legos:
            item: dict[str, Any] = {"id": lego[0], "type": lego[1], "new": True}
            if lego_as_object:
                item["lego"] = {"target": lego[2], "known": lego[3]}
            else:
                item["lego"] = [lego[2], lego[3]]
            if len(lego) > 4:
                item["components"] = lego[4]
            v8_legos.append(item)
        pair = {"target": target, "known": known} if seed_pair_as_object else [target, known]
        out.append({"seed_id": seed_id, "seed_pair": pair, "legos": v8_legos})
    return out


def order_of(course: Course) -> list[tuple[str, int, str, bool]]:
    return [(lego.id, lego.position, lego.seed_id, lego.culminating) for lego in course.legos]


@pytest.mark.parametrize(
    "variant",
    ["v7.7", "v8 seed_pair object", "v8 seed_pair [t, k]", "v8 lego [t, k]"],
)
def test_both_formats_give_the_same_canonical_order(tmp_path: Path, variant: str) -> None:
    if variant == "v7.7":
        seeds: list[Any] = SEEDS_V77
    else:
        seeds = to_v8(
            SEEDS_V77, seed_pair_as_object=variant != "v8 seed_pair [t, k]", lego_as_object=variant != "v8 lego [t, k]"
        )
    course = Course.load(write_course(tmp_path / "c", {"target": "spa", "seeds": seeds}))
    assert order_of(course) == EXPECTED_ORDER
    assert {k: v for k, v in course.canonical_of.items() if k != v} == EXPECTED_DUPLICATES
    assert course.lego("S0003L01").pair == ("Quiero", "I love")
    assert course.seeds_by_id["S0004"].target == "¿Quiero hablar?"


def test_dedup_first_occurrence_is_canonical_and_duplicates_map_to_it(tmp_path: Path) -> None:
    course = Course.load(write_course(tmp_path / "c", {"seeds": SEEDS_V77}))
    assert course.ids == [row[0] for row in EXPECTED_ORDER]
    assert [lego.position for lego in course.legos] == list(range(1, len(course.legos) + 1))
    # every LEGO id maps to a canonical one; canonical ones map to themselves
    all_ids = [lego.id for seed in course.source.seeds for lego in seed.legos]
    assert set(course.canonical_of) == set(all_ids)
    for canonical in course.canonical_of.values():
        assert course.by_id[canonical].id == canonical
    # the canonical keeps the first occurrence's own text, not the duplicate's
    assert course.lego("S0001L01").pair == ("Quiero", "I want")
    # a duplicate gets no basket of its own
    with pytest.raises(InputError, match="S0002L01"):
        course.lego("S0002L01")


def test_culminating_flags(tmp_path: Path) -> None:
    course = Course.load(write_course(tmp_path / "c", {"seeds": SEEDS_V77}))
    assert [lego.id for lego in course.legos if lego.culminating] == ["S0001L02", "S0002L02"]
    ctx = course.context("S0001L02")
    assert ctx.seed_pair == ("Quiero un café.", "I want a coffee.")
    assert course.context("S0001L01").seed_pair is None


def brute_force_recent(course: Course, lego_id: str) -> set[int]:
    """Rule 4 word for word: LEGOs first introduced in the 10 seeds before the operative LEGO's
    seed, or earlier in its own seed."""
    lego = course.lego(lego_id)
    return {
        other.position
        for other in course.legos
        if lego.seed_index - RECENT_SEEDS <= other.seed_index < lego.seed_index
        or (other.seed_index == lego.seed_index and other.position < lego.position)
    }


def test_recent_ranges_small_course(tmp_path: Path) -> None:
    # 14 seeds of two new LEGOs each: LEGO k of seed s is at position 2*(s-1)+k
    seeds = [
        [
            f"S{s:04d}",
            [f"w{s}a w{s}b", f"k{s}a k{s}b"],
            [[f"S{s:04d}L01", "B", f"w{s}a", f"k{s}a"], [f"S{s:04d}L02", "B", f"w{s}b", f"k{s}b"]],
        ]
        for s in range(1, 15)
    ]
    course = Course.load(write_course(tmp_path / "c", {"seeds": seeds}))
    assert course.recent_positions(course.lego("S0001L01")) == range(1, 1)  # nothing before it
    assert list(course.recent_positions(course.lego("S0001L02"))) == [1]
    # seed 12: seeds 2..11 (positions 3..22) and its own first LEGO (23)
    assert list(course.recent_positions(course.lego("S0012L02"))) == list(range(3, 24))
    assert list(course.recent_positions(course.lego("S0012L01"))) == list(range(3, 23))
    assert list(course.recent_positions(course.lego("S0014L01"))) == list(range(7, 27))
    for lego in course.legos:
        assert set(course.recent_positions(lego)) == brute_force_recent(course, lego.id)
        assert course.context(lego.id).recent == course.recent_positions(lego)


def test_recent_ranges_match_the_rule_on_the_demo_course(demo_course: Path) -> None:
    course = Course.load(demo_course)
    for lego in course.legos:
        assert set(course.recent_positions(lego)) == brute_force_recent(course, lego.id), lego.id


def test_demo_course(demo_course: Path) -> None:
    course = Course.load(demo_course)
    assert len(course.source.seeds) == 48
    assert len(course.legos) == 125
    assert course.language == "spa" and course.spaced


def test_seed_pairs_differences_are_warnings(tmp_path: Path) -> None:
    folder = write_course(
        tmp_path / "c",
        {"seeds": SEEDS_V77},
        {
            "translations": {
                "S0001": ["Quiero un café.", "I want a coffee."],
                "S0002": ["Quiero hablar", "I want to speak."],
            }
        },
    )
    course = Course.load(folder)
    # S0002's texts differ (a dropped "."); S0001 is the same; S0003/S0004 are absent from seed_pairs
    warned = [w for w in course.warnings if "seed_pairs.json" in w.message]
    assert [w.seed_id for w in warned] == ["S0002"]
    assert str(warned[0]).startswith("S0002: ")


def test_spa_course_counts_and_warnings(spa_course: Path) -> None:
    course = Course.load(spa_course)
    assert len(course.source.seeds) == 668
    assert sum(len(seed.legos) for seed in course.source.seeds) == 2537
    assert len(course.legos) == 1766
    assert len(course.canonical_of) == 2537
    warnings = course.warnings
    assert len(warnings) == 16
    seed_ids = {seed.seed_id for seed in course.source.seeds}
    for warning in warnings:
        assert warning.seed_id in seed_ids
        assert str(warning).startswith(f"{warning.seed_id}: ")
    kinds: dict[str, list[str]] = {}
    for warning in warnings:
        kinds.setdefault(warning.kind, []).append(warning.seed_id)
    assert kinds["seed_pairs_differ"] == ["S0003", "S0222", "S0469"]
    joins = kinds["lego_join"]
    assert len(joins) == len(set(joins)) == 10
    assert {"S0237", "S0413", "S0504"} <= set(joins)  # the "de el" vs "del" ones
    for seed_id in joins:
        assert course.seeds_by_id[seed_id].target in next(str(w) for w in warnings if w.seed_id == seed_id)
    # The seeds whose sentence cannot open their culminating basket: LEGOs that overlap
    # ("al lado del" + "el estacionamiento") or miss a word of the sentence.
    assert kinds["no_seed_sentence"] == ["S0202", "S0467", "S0606"]


def test_spa_course_seed_phrase_is_the_sentence_or_nothing(spa_course: Path) -> None:
    """A culminating e[0] is the seed sentence exactly as written, and only when it tiles at its
    LEGO's position; otherwise there is none (never the LEGO texts glued together)."""
    course = Course.load(spa_course)
    for lego in course.legos:
        if lego.culminating:
            pair = course.seed_phrase(lego.seed_id)
            seed = course.seeds_by_id[lego.seed_id]
            if pair is None:
                assert not course.tiler.tile(seed.target, lego.position).ok, lego.id
            else:
                assert pair == (seed.target, seed.known)
                assert course.tiler.tile(pair[0], lego.position).ok, (lego.id, pair)


@pytest.mark.parametrize(
    "components",
    [
        [["Quiero", "I want"], ["un café", "a coffee"]],
        [{"target": "Quiero", "known": "I want"}, {"target": "un café", "known": "a coffee"}],
        {"Quiero": "I want", "un café": "a coffee"},
        [{"lego": {"target": "Quiero", "known": "I want"}}, ["un café", "a coffee", "extra"], "junk", None],
    ],
)
def test_components_in_every_shape(tmp_path: Path, components: Any) -> None:
    """Components as pairs, objects, a map, or a mix with junk: the readable ones are read and the
    course is never refused for them."""
    seed = {
        "seed_id": "S0001",
        "seed_pair": ["Quiero un café.", "I want a coffee."],
        "legos": [
            {
                "id": "S0001L01",
                "lego": {"target": "Quiero un café", "known": "I want a coffee"},
                "components": components,
            }
        ],
    }
    course = Course.load(write_course(tmp_path / "c", {"seeds": [seed]}))
    assert course.legos[0].components == (("Quiero", "I want"), ("un café", "a coffee"))


@pytest.mark.parametrize("name", ["bre_for_fra", "bre-for-fra", "bre_for_fra_v2"])
def test_course_codes_name_languages(tmp_path: Path, name: str) -> None:
    folder = write_course(tmp_path / name, {"seeds": SEEDS_V77})
    data = json.loads((folder / "lego_pairs.json").read_text())
    del data["target"], data["known"]
    (folder / "lego_pairs.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    course = Course.load(folder)
    assert course.description == "Breton for French speakers" and course.languages.source == "the course code"
