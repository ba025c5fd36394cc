"""The exact tiler (GATE, docs/DESIGN.md §1 rule 1): DP fewest tiles, word boundaries, contractions,
unspaced scripts, the operative LEGO, future LEGOs, and two hypothesis properties."""

from __future__ import annotations

import doctest
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worker.text
import worker.tiler
from worker.course import Course
from worker.tiler import Tiler, normalise_key, normalise_phrase

EXAMPLE_COURSE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"


def texts(tiling) -> list[str]:
    assert tiling.ok, tiling.reason
    return [tile.text for tile in tiling.tiles]


def test_module_doctests() -> None:
    for module, examples in ((worker.tiler, 2), (worker.text, 4)):
        result = doctest.testmod(module, verbose=False)
        assert result.attempted >= examples
        assert result.failed == 0


def test_normalisation() -> None:
    assert normalise_phrase("  ¿Quieres   HABLAR… «conmigo»?! ") == "quieres hablar conmigo"
    assert normalise_phrase("Sí, claro; ahora: no.") == "sí claro ahora no"
    # any Unicode whitespace (tabs, line breaks, no-break and ideographic spaces) is one space
    assert normalise_phrase("\tHola\u00a0\u00a0amigo\n¿qué\u3000tal?\u2009") == "hola amigo qué tal"
    assert normalise_phrase(" … ¿? ") == ""
    # canonical-order identity keeps inner punctuation, drops only trailing .,;
    assert normalise_key("  Un Café.;, ") == "un café"
    assert normalise_key("¿Quieres") == "¿quieres"


def test_dp_beats_greedy_longest_match() -> None:
    # Greedy longest-match takes "quiero que" first and is left with "hablar", which no LEGO is.
    tiler = Tiler([(1, "quiero que"), (2, "Quiero"), (3, "que hablar")], "spa")
    assert texts(tiler.tile("Quiero que hablar.", operative=3)) == ["quiero", "que hablar"]


def test_fewest_tiles() -> None:
    tiler = Tiler([(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "b c d"), (6, "e")], "spa")
    # five one-word tiles would also cover it; the exact tiler takes three
    assert texts(tiler.tile("a b c d e", operative=6)) == ["a", "b c d", "e"]
    # ...but never a LEGO from the future: position 5 is not available to position 4
    assert texts(tiler.tile("a b c d", operative=4)) == ["a", "b", "c", "d"]


def test_operative_can_be_any_tile_not_only_the_longest() -> None:
    tiler = Tiler([(1, "quiero"), (2, "hablar"), (3, "quiero hablar")], "spa")
    # position 3 is the operative: the two-tile split would not contain it
    tiling = tiler.tile("quiero hablar", operative=3)
    assert texts(tiling) == ["quiero hablar"]
    assert [t.operative for t in tiling.tiles] == [True]
    # position 2 is the operative: the one-tile split uses a future LEGO and lacks the operative
    tiling = tiler.tile("quiero hablar", operative=2)
    assert texts(tiling) == ["quiero", "hablar"]
    assert [t.operative for t in tiling.tiles] == [False, True]


def test_word_boundaries() -> None:
    tiler = Tiler([(1, "la"), (2, "va"), (3, "ve")], "spa")
    assert texts(tiler.tile("la va ve", operative=3)) == ["la", "va", "ve"]
    failed = tiler.tile("lava ve", operative=3)  # "la" + "va" must not match inside "lava"
    assert not failed.ok and "lava" in failed.reason
    failed = tiler.tile("la vela", operative=3)  # nor "ve" inside "vela"
    assert not failed.ok and "vela" in failed.reason


def test_spanish_contractions_both_directions() -> None:
    # phrase "del"/"al", LEGOs "de" + "el ..." and "a" + "el ..."
    tiler = Tiler([(1, "Salgo"), (2, "de"), (3, "el trabajo"), (4, "voy"), (5, "a"), (6, "el parque")], "spa")
    assert texts(tiler.tile("Salgo del trabajo.", operative=3)) == ["salgo", "de", "el trabajo"]
    assert texts(tiler.tile("Voy al parque", operative=6)) == ["voy", "a", "el parque"]
    # phrase "de el", LEGO "del ..."
    tiler = Tiler([(1, "salgo"), (2, "del trabajo"), (3, "cerca al")], "spa")
    assert texts(tiler.tile("salgo de el trabajo", operative=2)) == ["salgo", "de el trabajo"]
    assert texts(tiler.tile("salgo del trabajo", operative=2)) == ["salgo", "de el trabajo"]
    # the table is per language: English "del" is just an unknown word
    english = Tiler([(1, "de"), (2, "el")], "eng")
    assert not english.tile("del", operative=2).ok


def test_unspaced_script_tiles_meet_directly() -> None:
    for language in ("jpn", "zho"):
        tiler = Tiler([(1, "我"), (2, "想"), (3, "喝咖啡"), (4, "咖啡")], language)
        assert not tiler.spaced
        assert texts(tiler.tile("我想喝咖啡", operative=3)) == ["我", "想", "喝咖啡"]
        assert texts(tiler.tile("我 想 喝咖啡", operative=3)) == ["我", "想", "喝咖啡"]  # spaces do not matter
        # full-width punctuation of these scripts is punctuation, not a character to tile
        assert texts(tiler.tile("我想喝咖啡。", operative=3)) == ["我", "想", "喝咖啡"]
        assert texts(tiler.tile("「我想喝咖啡？」", operative=3)) == ["我", "想", "喝咖啡"]
        assert not tiler.tile("你想喝咖啡", operative=3).ok  # 你 is no LEGO
        assert not tiler.tile("我想喝咖", operative=3).ok  # a LEGO used in part


def test_operative_required() -> None:
    tiler = Tiler([(1, "quiero"), (2, "hablar"), (3, "español")], "spa")
    tiling = tiler.tile("quiero hablar", operative=3)
    assert not tiling.ok
    assert "operative" in tiling.reason
    assert tiler.tile("quiero hablar español", operative=3).ok


def test_future_lego_rejected_with_a_reason_naming_it() -> None:
    tiler = Tiler([(1, "quiero"), (2, "hablar"), (3, "español")], "spa")
    tiling = tiler.tile("Quiero hablar español.", operative=2)
    assert not tiling.ok
    assert "'español'" in tiling.reason and "position 3" in tiling.reason


def test_unknown_word_reason_and_empty_phrase() -> None:
    tiler = Tiler([(1, "quiero"), (2, "hablar")], "spa")
    assert tiler.tile("quiero hablar inglés", operative=2).reason == "unknown word 'inglés'"
    assert not tiler.tile(" ¿? ", operative=2).ok


# -- properties --------------------------------------------------------------------------------

_DEMO = Course.load(EXAMPLE_COURSE)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_available_targets_joined_with_spaces_tile(data: st.DataObject) -> None:
    course = _DEMO
    position = data.draw(st.integers(min_value=1, max_value=len(course.legos)), label="operative")
    available = course.legos[: position - 1]
    operative = course.legos[position - 1]
    before = data.draw(st.lists(st.sampled_from(available), max_size=6) if available else st.just([]))
    after = data.draw(st.lists(st.sampled_from(available), max_size=6) if available else st.just([]))
    phrase = " ".join(lego.target for lego in [*before, operative, *after])
    tiling = course.tiler.tile(phrase, operative=position)
    assert tiling.ok, (phrase, tiling.reason)
    assert any(tile.operative for tile in tiling.tiles)
    # fewest tiles: never more tiles than the LEGOs it was built from
    assert len(tiling.tiles) <= len(before) + 1 + len(after)


_WORDS = st.text(alphabet=string.ascii_lowercase + "áéíóúñü", min_size=1, max_size=9)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), word=_WORDS)
def test_property_a_word_from_no_lego_never_tiles(data: st.DataObject, word: str) -> None:
    course = _DEMO
    tiler = course.tiler
    vocabulary = {token for lego in course.legos for token in tiler.tokens(lego.target)}
    stranger = tiler.tokens(word)
    if any(token in vocabulary for token in stranger):
        return  # not a stranger ("del" expands to known words, for one)
    position = data.draw(st.integers(min_value=1, max_value=len(course.legos)))
    legos = data.draw(st.lists(st.sampled_from(course.legos), max_size=6))
    where = data.draw(st.integers(min_value=0, max_value=len(legos)))
    words = [lego.target for lego in legos]
    words.insert(where, word)
    phrase = " ".join(words)
    tiling = tiler.tile(phrase, operative=position)
    assert not tiling.ok
    assert repr(stranger[0]) in tiling.reason
    for limit in (position, len(course.legos) + 1):  # not even with the whole course available
        assert not tiler.tile(phrase, operative=position, limit=limit).ok
