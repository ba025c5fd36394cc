"""Known sides by alignment: which words of a translation render which tiles of a phrase.

A LEGO's gloss is a translation in its own seed's context; glosses do not compose ("I can" +
"to remember" is not English). So the known side of a run of tiles is never made by joining
glosses: it is *found* in a sentence a person (or the model) wrote. Each tile's gloss is looked
up in the known sentence (normalised words, longest glosses first, each word used once; a LEGO's
component glosses may stand in where its whole gloss is not found, and a gloss may be found with
its words inverted, as questions write them). A run of consecutive tiles
then has a known side only when the words aligned to it form one contiguous block of the sentence
holding no word aligned to a tile outside the run: the consistent phrase pairs that phrase-based
statistical translation extracts (Koehn, Och and Marcu 2003). That block, exactly as written, is
the run's known side; the whole phrase always has the whole sentence.

>>> a = align("I want to speak Spanish now.", [["I want"], ["to speak"], ["Spanish"], ["now"]])
>>> a.block(1, 3), a.block(0, 4)
('to speak Spanish', 'I want to speak Spanish now')
>>> b = align("She has a white house", [["she has"], ["a house"], ["white"]])
>>> b.block(0, 2) is None  # "a house" is not found: "a", "house" may be its words, outside the block
True
>>> c = align("the white house", [["house"], ["white"]])
>>> c.block(0, 2)  # reordered, but the whole run is the whole sentence
'the white house'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from worker.text import Token, cut, tokenize

#: Words a gloss may start with that its sentence can leave out, per known language (keep small):
#: English glosses infinitives with "to" ("hablar" = "to speak") that "I can speak" has not.
OPTIONAL_LEADS: dict[str, tuple[str, ...]] = {"eng": ("to",)}


def _english_contractions() -> dict[str, tuple[str, ...]]:
    """ "it's" reads as "it is", "don't" as "do not": glosses and sentences write them either way.
    Only unambiguous forms ("'d" is "had" or "would"; a noun's "'s" is a possessive)."""
    table: dict[str, tuple[str, ...]] = {"i'm": ("i", "am"), "let's": ("let", "us"), "won't": ("will", "not")}
    table.update({"can't": ("can", "not"), "cannot": ("can", "not"), "shan't": ("shall", "not")})
    for pronoun in ("you", "we", "they", "who", "what"):
        table[f"{pronoun}'re"] = (pronoun, "are")
    for pronoun in ("he", "she", "it", "that", "there", "here", "what", "where", "who", "how", "when"):
        table[f"{pronoun}'s"] = (pronoun, "is")
    for pronoun in ("i", "you", "we", "they", "who", "could", "should", "would", "might", "must"):
        table[f"{pronoun}'ve"] = (pronoun, "have")
    for pronoun in ("i", "you", "he", "she", "it", "we", "they", "that", "there"):
        table[f"{pronoun}'ll"] = (pronoun, "will")
    for verb in ("do", "does", "did", "is", "are", "was", "were", "have", "has", "had", "would", "should", "could"):
        table[f"{verb}n't"] = (verb, "not")
    for verb in ("must", "need", "might", "dare"):
        table[f"{verb}n't"] = (verb, "not")
    return table


#: Contractions of the known language, read as their parts on both sides (keep small).
KNOWN_CONTRACTIONS: dict[str, dict[str, tuple[str, ...]]] = {"eng": _english_contractions()}


@dataclass(frozen=True)
class Alignment:
    """The tiles of a phrase aligned to the tokens of its known sentence."""

    sentence: str
    tokens: tuple[Token, ...]
    owner: tuple[int | None, ...]  # per token: the tile it renders, or None
    tiles: int

    def aligned(self, tile: int) -> bool:
        return tile in self.owner

    def block(self, start: int, end: int) -> str | None:
        """The known side of tiles ``[start, end)``: their consistent block as written, or None.

        The block spans the words aligned to the run and holds no word aligned to a tile outside
        it. A tile whose gloss was not found may render any unaligned word (or none: a word the
        translation leaves out, as English drops "de" in "salgo del trabajo" = "I leave work"), so
        a run with such a tile needs every unaligned word inside its block, and a run beside such
        a tile needs none inside."""
        if not 0 <= start < end <= self.tiles or not self.tokens:
            return None
        if start == 0 and end == self.tiles:
            return cut(self.sentence, self.tokens, 0, len(self.tokens))
        inside = [k for k, owner in enumerate(self.owner) if owner is not None and start <= owner < end]
        if not inside:
            return None
        low, high = inside[0], inside[-1] + 1
        if any(owner is not None and not start <= owner < end for owner in self.owner[low:high]):
            return None
        unaligned = [k for k, owner in enumerate(self.owner) if owner is None]
        if any(not self.aligned(tile) for tile in range(start, end)) and any(not low <= k < high for k in unaligned):
            return None
        if any(not self.aligned(tile) for tile in range(self.tiles) if not start <= tile < end) and any(
            low <= k < high for k in unaligned
        ):
            return None
        return cut(self.sentence, self.tokens, low, high)


def align(
    sentence: str,
    glosses: Sequence[Sequence[str]],
    components: Sequence[Sequence[str]] = (),
    spaced: bool = True,
    language: str = "eng",
) -> Alignment:
    """Align tile ``i`` (gloss candidates ``glosses[i]``, best first; component glosses
    ``components[i]``) to the words of ``sentence``, a translation of the whole phrase."""
    contractions = KNOWN_CONTRACTIONS.get(language, {})
    tokens = tuple(tokenize(sentence, spaced, contractions))
    texts = [token.text for token in tokens]
    owner: list[int | None] = [None] * len(tokens)
    count = len(glosses)
    leads = OPTIONAL_LEADS.get(language, ())

    def words(text: str) -> tuple[str, ...]:
        return _gloss_words(text, spaced, language)

    candidates: list[tuple[int, list[tuple[str, ...]]]] = []
    for tile, texts_of_tile in enumerate(glosses):
        variants: list[tuple[str, ...]] = []
        for gloss in texts_of_tile:
            gloss_words = words(gloss)
            variants.append(gloss_words)
            if len(gloss_words) > 1 and gloss_words[0] in leads:
                variants.append(gloss_words[1:])
        variants = [v for v in dict.fromkeys(variants) if v]
        candidates.append((tile, variants))
    # Longest glosses first, so that a long gloss claims its words before a short one takes one.
    candidates.sort(key=lambda item: (-max((len(v) for v in item[1]), default=0), item[0]))
    spans: dict[int, tuple[int, int]] = {}  # tile -> first aligned token, for crossing counts

    def place(tile: int, variant: tuple[str, ...]) -> tuple[int, int] | None:
        """The best free occurrence of ``variant``: fewest crossings with the tiles already
        aligned, then nearest to where the tile's rank puts it."""
        size = len(variant)
        best: tuple[tuple[int, float], int] | None = None
        for start in range(len(texts) - size + 1):
            if tuple(texts[start : start + size]) != variant or any(o is not None for o in owner[start : start + size]):
                continue
            crossings = sum((other < tile) != (at < start) for other, (at, _) in spans.items())
            drift = abs(start / max(1, len(texts)) - tile / max(1, count))
            score = (crossings, drift)
            if best is None or score < best[0]:
                best = (score, start)
        return None if best is None else (best[1], best[1] + size)

    def place_inverted(tile: int, variant: tuple[str, ...]) -> tuple[int, int] | None:
        """A free block holding exactly the gloss's words in another order: questions invert
        ("we should not" is written "shouldn't we", "you want" inside "do you want")."""
        size, wanted = len(variant), sorted(variant)
        for start in range(len(texts) - size + 1):
            if sorted(texts[start : start + size]) == wanted and all(o is None for o in owner[start : start + size]):
                return (start, start + size)
        return None

    for tile, variants in candidates:
        found = next((f for f in (place(tile, v) for v in variants) if f), None) or next(
            (f for f in (place_inverted(tile, v) for v in variants if len(v) > 1) if f), None
        )
        if found is not None:
            _claim(owner, spans, tile, [found])
            continue
        parts = [words(text) for text in (components[tile] if tile < len(components) else ())]
        if len(parts) < 2 or not all(parts):
            continue
        claimed: list[tuple[int, int]] = []
        for part in sorted(parts, key=len, reverse=True):
            found = place(tile, part)
            if found is None:  # not every component found: the tile stays unaligned
                for low, high in claimed:
                    owner[low:high] = [None] * (high - low)
                spans.pop(tile, None)
                break
            _claim(owner, spans, tile, [found])
            claimed.append(found)
    return Alignment(sentence, tokens, tuple(owner), count)


def find_piece(sentence: str, piece: str, spaced: bool = True, language: str = "eng") -> str | None:
    """``piece`` found in ``sentence`` as an unbroken run of whole words (normalised: case,
    punctuation, the known language's contractions), returned as written in ``sentence``; None
    when the sentence has no such run. How a known side someone points out is checked.

    >>> find_piece("No, I'm not ready yet.", "i am NOT ready")
    "I'm not ready"
    >>> find_piece("No, I'm not ready yet.", "not yet") is None
    True
    """
    contractions = KNOWN_CONTRACTIONS.get(language, {})
    tokens = tokenize(sentence, spaced, contractions)
    wanted = [token.text for token in tokenize(piece, spaced, contractions)]
    texts = [token.text for token in tokens]
    for start in range(len(texts) - len(wanted) + 1) if wanted else ():
        if texts[start : start + len(wanted)] == wanted:
            found = cut(sentence, tokens, start, start + len(wanted))
            if found is not None:
                return found
    return None


@lru_cache(maxsize=65536)
def _gloss_words(text: str, spaced: bool, language: str) -> tuple[str, ...]:
    """A gloss's tokens (the same few thousand glosses are looked up again and again)."""
    return tuple(token.text for token in tokenize(text, spaced, KNOWN_CONTRACTIONS.get(language, {})))


def _claim(owner: list[int | None], spans: dict[int, tuple[int, int]], tile: int, found: list[tuple[int, int]]) -> None:
    for low, high in found:
        owner[low:high] = [tile] * (high - low)
        spans.setdefault(tile, (low, high))
