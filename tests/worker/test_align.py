"""Known sides by alignment (worker/align.py): consistent phrase pairs, never glued glosses.

Property tests build a translation from tile glosses in any order (reordered as adjectives after
nouns or verbs at the end of a clause are), with words no gloss has, and glosses the translation
does not use; then every window's block must be a piece of the sentence that holds exactly the
window's aligned words."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.align import align
from worker.text import tokenize


def test_word_order_kept_when_the_translation_follows_the_tiles() -> None:
    a = align("I want to speak Spanish with you now.", [["I want"], ["to speak"], ["Spanish"], ["with you"], ["now"]])
    assert a.block(0, 2) == "I want to speak"
    assert a.block(1, 4) == "to speak Spanish with you"
    assert a.block(0, 5) == "I want to speak Spanish with you now"  # the whole phrase: the whole sentence


def test_adjective_after_noun_never_gives_a_scrambled_block() -> None:
    # el coche | rojo | es rápido  =  "The red car is fast": "the car" is not written together
    a = align("The red car is fast.", [["the car"], ["red"], ["is fast"]])
    assert a.block(0, 2) is None  # "el coche rojo": the words "the", "car" sit on both sides of "red"
    assert a.block(1, 3) is None  # "rojo es rápido": its block would hold "car"
    b = align("The red car is fast.", [["the"], ["car"], ["red"], ["is fast"]])
    assert b.block(1, 3) == "red car"  # "coche rojo": reordered, but one block of the sentence
    assert b.block(2, 4) is None  # "rojo es rápido" would hold "car"


def test_verb_final_clause() -> None:
    a = align("I'd like to learn German.", [["I'd like"], ["German"], ["to learn"]])
    assert a.block(1, 3) == "to learn German"  # "Deutsch lernen"
    assert a.block(0, 2) is None  # "Ich möchte Deutsch": the block would hold "to learn"


def test_contractions_of_the_known_language_and_infinitive_to() -> None:
    a = align("It's not what I'm saying.", [["it is not"], ["what"], ["I am saying"]])
    assert a.block(0, 2) == "It's not what" and a.block(1, 3) == "what I'm saying"
    b = align("I can speak now.", [["I can"], ["to speak"], ["now"]])
    assert b.block(0, 2) == "I can speak"


def test_a_word_used_once_longest_gloss_first() -> None:
    a = align("I want to go to the park.", [["I want to go"], ["to the park"], ["to"]])
    assert a.owner.count(None) == 0 and a.block(0, 2) == "I want to go to the park"
    assert not a.aligned(2)  # both "to"s are taken by the longer glosses


def test_components_stand_in_for_a_gloss_not_found() -> None:
    a = align("We are going home now.", [["we're going home"], ["now"]], [["we are", "going home"], []])
    assert a.aligned(0) and a.block(0, 1) == "We are going home"
    b = align("We are going now.", [["we're going home"], ["now"]], [["we are", "going home"], []])
    assert not b.aligned(0)  # a component missing: the tile stays unaligned


def test_unspaced_known_language() -> None:
    a = align("我想喝咖啡。", [["我想"], ["喝"], ["咖啡"]], spaced=False, language="cmn")
    assert a.block(1, 3) == "喝咖啡" and a.block(0, 2) == "我想喝"


# -- properties ---------------------------------------------------------------------------------------


@st.composite
def translations(draw: st.DrawFn) -> tuple[str, list[list[str]], list[tuple[str, ...]], list[int]]:
    """Tiles with one or two words of their own; a translation that writes each used gloss as a
    block, in any order, with filler words between; some glosses the translation does not use."""
    count = draw(st.integers(2, 6))
    sizes = draw(st.lists(st.integers(1, 2), min_size=count, max_size=count))
    words, glosses = iter(f"w{i}" for i in range(100)), []
    for size in sizes:
        glosses.append(tuple(next(words) for _ in range(size)))
    used = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    order = draw(st.permutations(range(count)))
    parts: list[str] = []
    for tile in order:
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(["xa", "xb", "the", "do"])))
        if used[tile]:
            parts.extend(glosses[tile])
    if not parts:
        parts = ["xa"]
    sentence = " ".join(parts).capitalize() + "."
    return sentence, [[" ".join(g)] for g in glosses], glosses, list(order)


@settings(max_examples=400, deadline=None)
@given(translations())
def test_a_block_is_returned_only_when_consistent(case: tuple) -> None:
    sentence, glosses, words, _ = case
    a = align(sentence, glosses)
    tokens = [t.text for t in tokenize(sentence)]
    for start in range(len(glosses)):
        for end in range(start + 1, len(glosses) + 1):
            block = a.block(start, end)
            if block is None:
                continue
            assert block in sentence  # a piece of the sentence as written, never a join
            inside = {token.text for token in tokenize(block)}
            if start == 0 and end == len(glosses):
                assert set(tokens) == inside
                continue
            for tile in range(len(glosses)):
                if a.aligned(tile) and start <= tile < end:
                    assert set(words[tile]) <= inside  # every word of the window is in its block
                elif a.aligned(tile):
                    assert not set(words[tile]) & inside  # no word of another tile is


@settings(max_examples=300, deadline=None)
@given(translations())
def test_a_window_whose_glosses_stand_together_gets_them(case: tuple) -> None:
    """Complete where it can be: when every gloss is written and no filler word stands between
    a window's glosses, the window's block is exactly its glosses, in the translation's order."""
    sentence, glosses, words, order = case
    a = align(sentence, glosses)
    text = " ".join(token.text for token in tokenize(sentence))
    for start in range(len(glosses)):
        for end in range(start + 1, len(glosses) + 1):
            run = [" ".join(words[t]) for t in order if start <= t < end]
            if all(a.aligned(t) for t in range(len(glosses))) and " ".join(run) in text and end - start < len(glosses):
                block = a.block(start, end)
                assert block is not None and block.lower() == " ".join(run)


def test_a_gloss_found_inverted_as_questions_write_it() -> None:
    a = align("Shouldn't we try to set a good example?", [["we shouldn't"], ["to try"], ["to set"], ["a good example"]])
    assert a.aligned(0) and a.block(0, 2) == "Shouldn't we try"
    assert a.block(2, 4) == "to set a good example"
