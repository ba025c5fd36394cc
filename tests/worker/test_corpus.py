"""The offline corpus generator (docs/DESIGN.md §5): every basket it makes passes validate, it is
deterministic, and every e-phrase is a piece of a seed sentence (natural by construction)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from worker.constants import E_PHRASES_MIN
from worker.course import Course
from worker.generators import make_generator
from worker.generators.corpus import CorpusGenerator, corpus_index
from worker.report import ABSOLUTE_RULES, validate_baskets
from worker.tiler import normalise_phrase


def generate_all(course: Course) -> dict[str, Any]:
    generator = CorpusGenerator(course)
    try:
        return {lego.id: generator.generate(course.context(lego.id)).basket.to_json() for lego in course.legos}
    finally:
        generator.close()


@pytest.fixture
def course(demo_course: Path) -> Course:
    return Course.load(demo_course)


@pytest.fixture
def baskets(course: Course) -> dict[str, Any]:
    return generate_all(course)


def test_every_basket_passes_validate(course: Course, baskets: dict[str, Any]) -> None:
    report = validate_baskets(course, baskets)
    assert [p for p in report.problems if p.rule in ABSOLUTE_RULES] == []
    assert report.ok and report.present == report.expected == 125
    assert report.gate_phrases_pass == report.e_phrases > 0
    assert report.d_baskets_pass == report.present
    assert report.culminating_first_pass == report.culminating > 0
    assert report.variety_pass == report.present
    assert report.band_phrases > 0 and set(report.words_per_band) >= {"up to 3", "3-4", "5-6"}


def test_deterministic_across_runs_and_course_loads(demo_course: Path, baskets: dict[str, Any]) -> None:
    again = generate_all(Course.load(demo_course))
    assert again == baskets


def test_culminating_basket_starts_with_its_seed_sentence(course: Course, baskets: dict[str, Any]) -> None:
    culminating = [lego for lego in course.legos if lego.culminating]
    assert culminating
    for lego in culminating:
        seed = course.seed_phrase(lego.seed_id)
        assert seed is not None, lego.id  # every seed of the example course passes GATE at its end
        assert baskets[lego.id]["e"][0] == list(seed), lego.id


def test_lego_one_has_an_empty_basket(course: Course, baskets: dict[str, Any]) -> None:
    first = baskets[course.legos[0].id]
    assert first["e"] == [] and all(first["d"][size] == [] for size in ("2", "3", "4", "5"))


def assert_spans_of_seeds(course: Course, baskets: dict[str, Any]) -> int:
    """Every e-phrase is a span of one seed pair as written: its target a piece of the seed's
    sentence, its known side a piece of that seed's translation (no LEGO text joined)."""
    seeds = [(seed.target, seed.known) for seed in course.source.seeds]
    checked = 0
    for lego_id, basket in baskets.items():
        for target, known in basket["e"]:
            assert any(target in t and known in k for t, k in seeds), (lego_id, target, known)
            checked += 1
    return checked


def test_every_e_phrase_is_a_span_of_a_seed_pair_as_written(course: Course, baskets: dict[str, Any]) -> None:
    assert assert_spans_of_seeds(course, baskets) > 200


def test_spans_have_aligned_known_sides(course: Course) -> None:
    """A span's known side is the block of its seed's translation aligned to it, never the
    glosses joined in target order; a span without a consistent block is not offered."""
    pairs = {c.pair for n in range(1, len(course.legos) + 1) for c in corpus_index(course).candidates(n)}
    assert ("Hoy salgo del trabajo", "Today I leave work") in pairs
    assert not any(known.startswith("I leave") and "today" in known.lower() for _, known in pairs)


def test_spans_keep_the_seed_text_as_written(course: Course, baskets: dict[str, Any]) -> None:
    """S0040's LEGOs join to "salgo de el trabajo"; the seed says "salgo del trabajo"."""
    phrases = [t for b in baskets.values() for t, _ in b["e"]]
    assert any("salgo del trabajo" in normalise_phrase(t) for t in phrases)
    assert not any(" de el " in f" {normalise_phrase(t)} " for t in phrases)


def test_near_duplicates_only_fill_up_to_the_minimum(course: Course, baskets: dict[str, Any]) -> None:
    """A basket with more than three e-phrases has none contained in another."""
    for lego_id, basket in baskets.items():
        if len(basket["e"]) > E_PHRASES_MIN:
            keys = [f" {normalise_phrase(t)} " for t, _ in basket["e"]]
            for i, a in enumerate(keys):
                for b in keys[i + 1 :]:
                    assert a not in b and b not in a, (lego_id, a, b)


def test_a_basket_has_phrases_from_several_seeds_when_it_can(course: Course) -> None:
    index = corpus_index(course)
    several = 0
    for lego in course.legos:
        seeds_available = {c.seed_index for c in index.candidates(lego.position)}
        if len(seeds_available) >= 3 and not lego.culminating:
            chosen = CorpusGenerator(course).generate(course.context(lego.id)).basket.e
            sources = {c.seed_index for c in index.candidates(lego.position) if list(c.pair) in map(list, chosen)}
            assert len(sources) >= 2, lego.id
            several += 1
    assert several > 0


def test_index_is_built_once_even_from_many_threads(demo_course: Path) -> None:
    course = Course.load(demo_course)  # a fresh course: no index yet
    found: list[object] = []
    start = threading.Barrier(8)

    def build() -> None:
        start.wait()
        found.append(corpus_index(course))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and all(index is found[0] for index in found)


def test_make_generator_gives_the_corpus_backend(course: Course) -> None:
    generator = make_generator("corpus", course)
    assert generator.name == "corpus"
    result = generator.generate(course.context(course.legos[-1].id), prefix_upto=100)
    assert result.basket.e and result.usage.total == 0 and result.requests == 0


def test_real_course_all_baskets_valid(spa_course: Path) -> None:
    course = Course.load(spa_course)
    baskets = generate_all(course)
    report = validate_baskets(course, baskets)
    assert report.ok, [str(p) for p in report.problems[:5]]
    assert report.present == 1766
    assert report.gate_phrases_pass == report.e_phrases
    assert report.d_baskets_pass == report.present
    assert report.culminating == 524 and report.culminating_no_seed == 3
    assert report.culminating_first_pass == 521
    assert assert_spans_of_seeds(course, baskets) == report.e_phrases
    assert report.doubled_e == report.doubled_d == report.capitals_e == report.capitals_d == 0
