"""The numbers of the basket rules (docs/DESIGN.md §1), in one place.

The skill text in ``skills/basket-generation-skill/`` states the same numbers; a test parses
the skill files and compares them with these constants, so the text a model reads and the code
that validates cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """Target words per e-phrase for an available vocabulary ``A = N - 1``.

    >>> band_for(0)
    Band(min_available=0, max_available=5, min_words=1, max_words=3)
    >>> band_for(150).label
    '7-10'
    """

    min_available: int
    max_available: int | None  # None: no upper bound
    min_words: int
    max_words: int

    def covers(self, available: int) -> bool:
        return available >= self.min_available and (self.max_available is None or available <= self.max_available)

    def contains(self, words: int) -> bool:
        return self.min_words <= words <= self.max_words

    @property
    def label(self) -> str:
        if self.min_words <= 1:
            return f"up to {self.max_words}"
        return f"{self.min_words}-{self.max_words}"


#: Phrase length scales with available vocabulary (rule 2).
LENGTH_BANDS: tuple[Band, ...] = (
    Band(0, 5, 1, 3),
    Band(6, 20, 3, 4),
    Band(21, 50, 5, 6),
    Band(51, 100, 6, 8),
    Band(101, None, 7, 10),
)

#: A basket holds 3 to 5 e-phrases when the vocabulary allows it.
E_PHRASES_MIN = 3
E_PHRASES_MAX = 5

#: d-phrase window sizes; the basket's ``d`` map always has these keys as strings.
D_SIZES: tuple[int, ...] = (2, 3, 4, 5)

#: Recency (rule 4) applies from this position on.
RECENCY_MIN_POSITION = 50
#: A LEGO is recent when first introduced in this many seeds before the operative LEGO's seed.
RECENT_SEEDS = 10
#: Target and acceptable share of recent LEGO tiles among the non-operative tiles.
RECENCY_TARGET = (0.30, 0.50)
RECENCY_ACCEPTABLE = (0.25, 0.55)


def band_for(available: int) -> Band:
    """The length band for ``available`` = N - 1 LEGOs."""
    for band in LENGTH_BANDS:
        if band.covers(available):
            return band
    raise ValueError(f"no band for available={available}")
