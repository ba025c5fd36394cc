"""Text as the rules see it: normalised words, and where each one stands in the text as written.

The tiler (GATE), the alignment of known sides and the cutting of spans all read a phrase through
:func:`tokenize`, so they agree on what a word is. A *token* is a normalised word (lowercase,
punctuation removed, ``’`` read as ``'``); a contraction of the target language gives several
tokens that share one written word (Spanish ``del`` = ``de`` + ``el``). In scripts written without
spaces every character is a token. Each token keeps the offsets of its written word, so a run of
whole tokens can be cut from the text exactly as written (:func:`cut`).

>>> tokens = tokenize("¿Vamos al parque, ahora?", contractions={"al": ("a", "el")})
>>> [t.text for t in tokens]
['vamos', 'a', 'el', 'parque', 'ahora']
>>> cut("¿Vamos al parque, ahora?", tokens, 1, 5)
'al parque, ahora'
>>> cut("¿Vamos al parque, ahora?", tokens, 2, 4) is None  # starts inside "al"
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

#: Punctuation removed before tiling: the marks of docs/DESIGN.md §1 rule 1 (``¿?¡!.,;:"«»…``), typographic
#: quotes and brackets, and the full-width marks of scripts written without spaces (a Chinese or
#: Japanese sentence ends in 。, which is no LEGO's text). Apostrophes and hyphens stay inside
#: words (``don't``, ``l'homme``, ``well-known``); a dash standing alone is punctuation.
PUNCTUATION = '¿?¡!.,;:"«»…“”„‹›()[]{}' + "。、，．？！：；「」『』（）〈〉《》・"
DASHES = "-‐‑‒–—―"

_NOT_WORD = "\\s" + re.escape(PUNCTUATION)
#: A run of characters that are neither space nor punctuation, holding one that is not a dash.
_WORD = re.compile(f"[^{_NOT_WORD}]*[^{_NOT_WORD}{re.escape(DASHES)}][^{_NOT_WORD}]*")
_PUNCT = re.compile(f"[{re.escape(PUNCTUATION)}]")
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "‘": "'"})
NO_CONTRACTIONS: Mapping[str, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class Token:
    """One normalised word (or contraction part, or character of an unspaced script), with the
    offsets ``[start, end)`` of the written word it comes from and that word's index."""

    text: str
    start: int
    end: int
    word: int


def words(text: str) -> list[tuple[str, int, int]]:
    """The written words of ``text`` with their offsets, punctuation and lone dashes left out.

    >>> words("Sí - claro, ¿no?")
    [('Sí', 0, 2), ('claro', 5, 10), ('no', 13, 15)]
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def tokenize(
    text: str, spaced: bool = True, contractions: Mapping[str, tuple[str, ...]] = NO_CONTRACTIONS
) -> list[Token]:
    """The tokens of ``text``: normalised words (contractions expanded), or characters for a
    script written without spaces."""
    tokens: list[Token] = []
    for index, (word, start, end) in enumerate(words(text)):
        if not spaced:
            tokens.extend(Token(_lower_char(ch), start + i, start + i + 1, start + i) for i, ch in enumerate(word))
            continue
        norm = word.lower().translate(_APOSTROPHES)
        for part in contractions.get(norm, (norm,)):
            tokens.append(Token(part, start, end, index))
    return tokens


def _lower_char(ch: str) -> str:
    """One character lowercased, kept as it is when lowercasing would make two (``İ``)."""
    low = ch.lower()
    return low if len(low) == 1 else ch


@lru_cache(maxsize=1 << 16)
def normalise_phrase(text: str) -> str:
    """Lowercase, punctuation of docs/DESIGN.md §1 rule 1 removed, whitespace collapsed (no contractions).

    >>> normalise_phrase("  ¿Quieres   hablar… conmigo?  ")
    'quieres hablar conmigo'
    """
    found = _PUNCT.sub(" ", text.lower().translate(_APOSTROPHES)).split()
    if any(word.strip(DASHES) != word for word in found):  # rare: a lone dash is punctuation
        return " ".join(word for word in found if word.strip(DASHES))
    return " ".join(found)


def normalise_key(text: str) -> str:
    """Identity of a LEGO text for canonical order: lowercase, trimmed, trailing ``.,;`` removed.

    >>> normalise_key(" Quiero. ")
    'quiero'
    """
    return text.strip().lower().rstrip(".,;").strip()


def starts_word(tokens: Sequence[Token], index: int) -> bool:
    """Whether ``tokens[index]`` is the first token of its written word."""
    return index == 0 or index >= len(tokens) or tokens[index - 1].word != tokens[index].word


def cut(text: str, tokens: Sequence[Token], start: int, end: int) -> str | None:
    """The text of tokens ``[start, end)`` exactly as written (inner punctuation kept, edges
    trimmed), or None when the run begins or ends inside a written word (half of ``del``)."""
    if not 0 <= start < end <= len(tokens):
        return None
    if not (starts_word(tokens, start) and starts_word(tokens, end)):
        return None
    return text[tokens[start].start : tokens[end - 1].end]


def doubled_words(text: str) -> set[str]:
    """Words written twice in a row ("to to"), normalised.

    >>> sorted(doubled_words("I'm going to to start, no, no"))
    ['no', 'to']
    """
    norms = normalise_phrase(text).split()
    return {a for a, b in zip(norms, norms[1:], strict=False) if a == b}


def inner_capitals(text: str) -> set[str]:
    """Words after the first that begin with a capital letter, as written ("si Él" -> {"Él"}).

    >>> sorted(inner_capitals("Creo que Él viene con María"))
    ['María', 'Él']
    """
    return {word for word, _, _ in words(text)[1:] if word[:1].isupper()}
