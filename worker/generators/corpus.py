"""The offline ``corpus`` backend: e-phrases cut from the course's own seed sentences (docs/DESIGN.md §5).

Each seed sentence is split into tiles: its own LEGOs when they join to it, else the fewest LEGOs
of the course that make it up (seeds whose LEGOs overlap or are forms not written in the
sentence). A candidate for the LEGO at position N is the whole seed pair, or a run of at least two
of its tiles that contains the LEGO at N and otherwise only LEGOs at positions <= N (or, since
GATE tiles target texts, a later LEGO whose target text an earlier LEGO already has). Its target
is cut from the seed sentence exactly as written; its known side is the block of the seed's
translation aligned to the run (:mod:`worker.align`), and a run without a consistent block is
no candidate. People wrote every word of every candidate: this backend never joins LEGO texts.

The index is one pass over the spans of all seeds (about 4,000 useful ones on the real course),
built once per course; a basket is then a ranking of a handful of candidates and one
:func:`~worker.rules.build_basket`. The corpus cannot always reach the length band (a LEGO is
rarely reused in a long sentence of older LEGOs only): ``validate`` reports how often it does.

>>> from pathlib import Path
>>> from worker.course import Course
>>> course = Course.load(Path(__file__).resolve().parents[2] / "examples/courses/spa_demo")
>>> gen = CorpusGenerator(course)
>>> gen.generate(course.context(course.legos[0].id)).basket.e
[]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from worker.align import align
from worker.constants import E_PHRASES_MAX, E_PHRASES_MIN, RECENCY_MIN_POSITION, RECENCY_TARGET, Band
from worker.course import Course, LegoContext
from worker.generators.base import GeneratedBasket
from worker.models import Pair, Seed
from worker.rules import build_basket, phrase_words
from worker.text import cut, tokenize

#: Candidates handed to build_basket: the basket's five plus a few spares in case one is dropped.
CANDIDATES_PASSED = E_PHRASES_MAX + 3

# Ranking weights (lower cost is better). A word outside the length band costs 1; a projected
# recency share 10 points outside the 30-50% target costs as much as 0.5 words; reusing a seed
# that another e-phrase of the basket already comes from costs 0.75 words.
RECENCY_WEIGHT = 5.0
SEED_REUSE_COST = 0.75
# A span cut off before its sentence goes on ("Me siento bien, pero") is less of a thing people
# say than one that ends where a sentence can: it is a second choice, like a near-duplicate, and
# among second choices it costs as much as two words outside the band.
DANGLING_COST = 2.0
# Whole sentences first, then runs that end where their sentence ends (the backward build-up
# learners practise: "...todavía", "no estoy preparado todavía"), then the other runs.
SUFFIX_COST = 0.5
INNER_COST = 1.0

#: Words a sentence does not end on (conjunctions, prepositions, articles), per target language:
#: small, like the tiler's contraction table. Languages not listed get no such penalty.
DANGLING_ENDS: dict[str, frozenset[str]] = {
    "spa": frozenset(
        (
            "y e o u ni pero que si porque cuando como a de del al para por con en sin sobre hasta desde entre"
            " el la los las un una unos unas lo mi tu su mis tus sus"
        ).split()
    ),
}


@dataclass(frozen=True)
class Candidate:
    """One e-phrase the corpus offers: a whole seed or a span of a seed's LEGOs."""

    pair: Pair
    seed_index: int
    start: int  # LEGO index span [start, end) in the seed
    end: int
    positions: tuple[int, ...]  # position each LEGO of the span stands for (all <= the operative's)
    operative_index: int  # index in ``positions`` of the (first) occurrence of the operative LEGO
    words: int  # for the length band (rule 2)
    dangling: bool  # ends on a word no sentence ends on (see DANGLING_ENDS)
    key: str  # normalised target, padded with spaces on spaced scripts, for containment checks
    whole: bool
    suffix: bool  # ends where its sentence ends

    @property
    def shape_cost(self) -> float:
        return 0.0 if self.whole else SUFFIX_COST if self.suffix else INNER_COST

    @property
    def others(self) -> tuple[int, ...]:
        """Positions of the non-operative LEGOs (the tiles recency counts)."""
        return self.positions[: self.operative_index] + self.positions[self.operative_index + 1 :]

    def overlaps(self, other_key: str) -> bool:
        """Whether one phrase is contained in the other (a sub-span, or a phrase containing it)."""
        return self.key in other_key or other_key in self.key


class CorpusIndex:
    """Every candidate of a course, grouped by the position of the basket it belongs to."""

    def __init__(self, course: Course) -> None:
        # No strong reference to the course: the module cache must not keep a course alive.
        self.owner = weakref.ref(course)
        self.tiler, self.spaced = course.tiler, course.spaced
        self._by_position: dict[int, list[Candidate]] = {}
        self._keys: dict[int, set[str]] = {}  # per position, to keep one candidate per text
        for seed_index, seed in enumerate(course.source.seeds):
            self._add_seed(course, seed_index, seed)
        for candidates in self._by_position.values():
            # Deterministic base order: whole seeds first (complete sentences), then by seed and span.
            candidates.sort(key=lambda c: (not c.whole, c.seed_index, c.start, c.end))

    def candidates(self, position: int) -> Sequence[Candidate]:
        return self._by_position.get(position, ())

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_position.values())

    def key(self, text: str) -> str:
        """Normalised tokens (contractions expanded) as one string; padded on spaced scripts so
        that containment means whole words."""
        tokens = self.tiler.tokens(text)
        return f" {' '.join(tokens)} " if self.spaced else str(tokens)

    def _available(self, text: str, raw: int, operative: int) -> int | None:
        """The position a seed tile stands for in a phrase of the LEGO at ``operative``: its own
        when that is not later; else the latest earlier LEGO with the same target text (GATE
        tiles target texts, so "que" = "that" serves as "que" = "than"); else None."""
        if raw <= operative:
            return raw
        same = [p for p in self.tiler.positions_of(text) if p <= operative]
        return same[-1] if same else None

    def _add_seed(self, course: Course, seed_index: int, seed: Seed) -> None:
        split = split_seed(course, seed)
        if split is None:
            return  # no LEGOs of the course make up this sentence (a data warning)
        bounds, raw, texts, glosses, components = split
        tokens = tokenize(seed.target, self.tiler.spaced, self.tiler.contractions)
        known = course.known_language
        aligned = align(seed.known, glosses, components, known.spaced, known.code)
        dangling_ends = DANGLING_ENDS.get(course.language, frozenset())
        count = len(bounds)
        for start in range(count):
            for end in range(start + 2, count + 1):
                whole = start == 0 and end == count
                if whole:
                    pair: Pair = (seed.target, seed.known)
                else:
                    target = cut(seed.target, tokens, bounds[start][0], bounds[end - 1][1])
                    known_side = aligned.block(start, end) if target is not None else None
                    if target is None or known_side is None:
                        continue  # cuts a written word, or no consistent block of the translation
                    pair = (target, known_side)
                key = self.key(pair[0])
                words = phrase_words(course, pair)
                dangling = not whole and any(word in dangling_ends for word in key.split()[-1:])
                for operative in dict.fromkeys(raw[start:end]):  # each tile's LEGO, first occurrence
                    found = [self._available(texts[i], raw[i], operative) for i in range(start, end)]
                    positions = tuple(p for p in found if p is not None)
                    if len(positions) < len(found) or key in self._keys.setdefault(operative, set()):
                        continue  # a later LEGO in the span, or the same text from an earlier seed
                    if whole and not course.tiler.tile(seed.target, operative).ok:
                        continue  # the sentence does not pass GATE here
                    self._keys[operative].add(key)
                    self._by_position.setdefault(operative, []).append(
                        Candidate(
                            pair=pair,
                            seed_index=seed_index,
                            start=start,
                            end=end,
                            positions=positions,
                            operative_index=raw[start:end].index(operative),
                            words=words,
                            dangling=dangling,
                            key=key,
                            whole=whole,
                            suffix=end == count,
                        )
                    )


#: A seed split into tiles: token bounds, the position each tile stands for, its target text, its
#: glosses (best first) and its components' glosses.
SeedSplit = tuple[list[tuple[int, int]], list[int], list[str], list[list[str]], list[list[str]]]


def split_seed(course: Course, seed: Seed) -> SeedSplit | None:
    """The tiles of a seed sentence: its own LEGOs when their tokens join to the sentence's;
    else the course tiler's fewest LEGOs (each standing for the seed's own LEGO of that text when
    it has one, else the earliest); None when neither makes up the sentence."""
    tiler = course.tiler
    sentence = tiler.tokens(seed.target)
    bounds: list[tuple[int, int]] = []
    offset = 0
    for lego in seed.legos:
        piece = tiler.tokens(lego.target)
        if not piece or sentence[offset : offset + len(piece)] != piece:
            break
        bounds.append((offset, offset + len(piece)))
        offset += len(piece)
    if len(bounds) == len(seed.legos) and offset == len(sentence):
        canonical = [course.by_id[course.canonical_of[lego.id]] for lego in seed.legos]
        return (
            bounds,
            [lego.position for lego in canonical],
            [lego.target for lego in seed.legos],
            [[lego.known] for lego in seed.legos],
            [[known for _, known in lego.component_pairs] for lego in seed.legos],
        )
    tiles = tiler.segment(seed.target)
    if tiles is None:
        return None

    def text_of(tokens: list[str] | str) -> str:  # as the tiler writes a tile's text
        return " ".join(tokens) if tiler.spaced else "".join(tokens)

    own = {text_of(tiler.tokens(lego.target)): course.by_id[course.canonical_of[lego.id]] for lego in seed.legos}
    raw, texts, glosses, components = [], [], [], []
    for tile in tiles:
        mine = own.get(tile.text)
        position = mine.position if mine is not None else min(tile.positions)
        chosen = course.legos[position - 1]
        raw.append(position)
        texts.append(chosen.target)
        glosses.append([chosen.known, *(course.legos[p - 1].known for p in tile.positions if p != position)])
        components.append([known for _, known in chosen.components])
    return [(tile.start, tile.end) for tile in tiles], raw, texts, glosses, components


# One index per course, shared by every generator of that course and built at most once.
_INDEXES: dict[int, CorpusIndex] = {}
_INDEX_LOCK = threading.Lock()


def corpus_index(course: Course) -> CorpusIndex:
    """The course's :class:`CorpusIndex`, built on first use (thread-safe)."""
    index = _INDEXES.get(id(course))
    if index is not None and index.owner() is course:
        return index
    with _INDEX_LOCK:
        index = _INDEXES.get(id(course))
        if index is None or index.owner() is not course:
            index = CorpusIndex(course)
            _INDEXES[id(course)] = index
            # Forget the index with its course (a Course is mutable, hence unhashable: key by id).
            weakref.finalize(course, _INDEXES.pop, id(course), None)
        return index


def band_gap(band: Band, words: int) -> int:
    """Words outside the length band (0 inside it)."""
    return max(band.min_words - words, words - band.max_words, 0)


def recency_gap(share: float) -> float:
    """Distance of a recency share from the 30-50% target (0 inside it)."""
    low, high = RECENCY_TARGET
    return max(low - share, share - high, 0.0)


def rank(ctx: LegoContext, candidates: Sequence[Candidate]) -> list[Pair]:
    """Choose e-phrases from ``candidates``, best first, greedily: each step takes the cheapest
    candidate given those already chosen (length band, recency, a new seed). Second choices only
    fill the basket up to the minimum of three: near-duplicates (contained in, or containing, a
    chosen phrase or the culminating seed sentence) and spans ending on a word no sentence ends
    on. Deterministic: ties keep the index's order."""
    band, recent = ctx.band, ctx.recent
    use_recency = ctx.position >= RECENCY_MIN_POSITION
    keys: list[str] = []  # of the phrases already in the basket
    seeds: set[int] = set()
    if ctx.seed_pair is not None:
        keys.append(corpus_index(ctx.course).key(ctx.seed_pair[0]))
        seeds.add(ctx.lego.seed_index)
    fixed = len(keys)
    pool = [c for c in candidates if c.key not in keys]
    recent_of = [sum(p in recent for p in c.others) for c in pool] if use_recency else []
    recent_tiles = other_tiles = 0

    def cost(i: int) -> tuple[bool, int, float, int]:
        c = pool[i]
        value = float(band_gap(band, c.words))
        if use_recency:
            share = (recent_tiles + recent_of[i]) / (other_tiles + len(c.others))
            value += RECENCY_WEIGHT * recency_gap(share)
        if c.seed_index in seeds:
            value += SEED_REUSE_COST
        if c.dangling:
            value += DANGLING_COST
        value += c.shape_cost
        overlaps = sum(c.overlaps(k) for k in keys)
        return overlaps > 0 or c.dangling, overlaps, value, i

    chosen: list[Pair] = []
    remaining = list(range(len(pool)))
    while remaining and len(chosen) < CANDIDATES_PASSED:
        best = min(remaining, key=cost)
        if cost(best)[0] and fixed + len(chosen) >= E_PHRASES_MIN:
            break  # only second choices left, and the basket already has its minimum
        remaining.remove(best)
        c = pool[best]
        chosen.append(c.pair)
        keys.append(c.key)
        seeds.add(c.seed_index)
        if use_recency:
            recent_tiles += recent_of[best]
            other_tiles += len(c.others)
    return chosen


class CorpusGenerator:
    """Offline, deterministic generator: see the module docstring."""

    name = "corpus"

    def __init__(self, course: Course) -> None:
        self.course = course

    def generate(self, ctx: LegoContext, prefix_upto: int | None = None) -> GeneratedBasket:
        """Rank the corpus candidates of ``ctx.lego`` and build (tile, check) the basket.

        ``prefix_upto`` only matters to API backends' prompt caching; it is ignored here."""
        candidates = corpus_index(ctx.course).candidates(ctx.position)
        built = build_basket(ctx, rank(ctx, candidates))
        return GeneratedBasket(
            ctx.lego.id, built.basket, rejected=built.rejected, backend=self.name, d_left_out=len(built.left_out)
        )

    def close(self) -> None:
        """Nothing to release: the index lives as long as its course."""
