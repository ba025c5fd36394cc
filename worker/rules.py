"""The basket rules (docs/DESIGN.md §1) as code: phrase checks, d-phrase extraction and basket building.

Every generator hands its candidate e-phrases to :func:`build_basket`, so a basket leaves a
generator only after every phrase in it has been tiled: a phrase failing GATE is never saved.

d-phrases are cut, never joined: a window's target is the span of its e-phrase's target exactly
as written, and its known side is the block of the e-phrase's known sentence aligned to the
window (:mod:`worker.align`). A window without such a block is left out and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from worker.align import Alignment, align
from worker.constants import D_SIZES, E_PHRASES_MAX
from worker.course import Course, LegoContext
from worker.models import Basket, Pair
from worker.safetext import unsafe_character
from worker.text import Token, cut, tokenize
from worker.tiler import Tiling, count_words, normalise_phrase

T = TypeVar("T")
_MISSING = object()


@dataclass(frozen=True)
class CheckedPhrase:
    """An e-phrase that passed GATE: the LEGO behind each tile and each tile's token span."""

    pair: Pair
    positions: tuple[int, ...]
    operative_index: int  # index of the (first) operative tile
    bounds: tuple[tuple[int, int], ...] = ()  # per tile: [start, end) in the target's tokens
    tokens: tuple[Token, ...] = ()  # the target's tokens (worker.text.tokenize), for cutting windows

    @property
    def tiles(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class Rejection:
    pair: Pair
    reason: str


#: Entries of a course's :attr:`~worker.course.Course.rule_memo` before it is emptied.
MEMO_SIZE = 8192


def memo(course: Course, key: tuple[object, ...], compute: Callable[[], T]) -> T:
    """``compute()``, remembered per course under ``key``: the answers of the pure functions
    below, which a worker asks twice for every phrase it keeps (the basket builder, then the
    agent file's check of the saved basket). Thread-safe (single dict operations); bounded."""
    found = course.rule_memo.get(key, _MISSING)
    if found is _MISSING:
        if len(course.rule_memo) >= MEMO_SIZE:
            course.rule_memo.clear()
        found = course.rule_memo[key] = compute()
    return cast(T, found)


def check_phrase(course: Course, operative: int, pair: Pair) -> CheckedPhrase | Rejection:
    """GATE for one ``[target, known]`` phrase of the LEGO at position ``operative``."""
    target, known = pair
    if not isinstance(target, str) or not isinstance(known, str):
        return Rejection(pair, "empty target or known text")
    result = memo(course, ("gate", operative, target, known), lambda: _check_phrase(course, operative, target, known))
    return Rejection(pair, result.reason) if isinstance(result, Rejection) else result


def _check_phrase(course: Course, operative: int, target: str, known: str) -> CheckedPhrase | Rejection:
    pair = (target, known)
    if not target.strip() or not known.strip():
        return Rejection(pair, "empty target or known text")
    unsafe = unsafe_text(pair)
    if unsafe:
        return Rejection(pair, unsafe)
    tiler = course.tiler
    tokens = tokenize(target, tiler.spaced, tiler.contractions)
    tiling = tiler.tile(target, operative, tokens=tiler.texts(tokens))
    if not tiling.ok:
        return Rejection(pair, tiling.reason or "does not tile")
    return CheckedPhrase(
        pair=(target, known),
        positions=_resolve(course, tiling, operative, known),
        operative_index=next(i for i, t in enumerate(tiling.tiles) if t.operative),
        bounds=tuple((tile.start, tile.end) for tile in tiling.tiles),
        tokens=tuple(tokens),
    )


def unsafe_text(pair: Pair) -> str | None:
    """Why a phrase's texts may not be saved although they tile: a control or bidi control
    character (a terminal would act on it; no person writes one into a sentence)."""
    for side, text in zip(("target", "known"), pair, strict=True):
        found = unsafe_character(text)
        if found:
            return f"the {side} text holds {found}; write it without control characters"
    return None


def _resolve(course: Course, tiling: Tiling, operative: int, known: str) -> tuple[int, ...]:
    """Which LEGO each tile stands for, when several share a target text: the operative when the
    tiler used it; else the one whose known text the known phrase contains; else the latest."""
    known_norm = f" {normalise_phrase(known)} "
    positions = []
    for tile in tiling.tiles:
        if tile.operative:
            positions.append(operative)
        elif len(tile.positions) == 1:
            positions.append(tile.positions[0])
        else:
            meant = [p for p in tile.positions if f" {normalise_phrase(course.legos[p - 1].known)} " in known_norm]
            positions.append(max(meant or tile.positions))
    return tuple(positions)


# -- d-phrases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A run of ``size`` consecutive tiles of an e-phrase holding the operative LEGO: its target
    as written (None when the run begins or ends inside a written word, half of ``del``) and its
    aligned known side (None when no consistent block exists)."""

    size: int
    target: str | None
    known: str | None
    phrase: int  # index of the e-phrase among those given

    @property
    def pair(self) -> Pair | None:
        return (self.target, self.known) if self.target is not None and self.known is not None else None


def alignment(course: Course, phrase: CheckedPhrase) -> Alignment:
    """The tiles of ``phrase`` aligned to its known sentence. Each tile's glosses: its LEGO's,
    then those of the other LEGOs with the same target text; its LEGO's components help."""
    glosses: list[list[str]] = []
    components: list[list[str]] = []
    for position in phrase.positions:
        lego = course.legos[position - 1]
        same = [course.legos[p - 1].known for p in course.tiler.positions_of(lego.target) if p != position]
        glosses.append([lego.known, *same])
        components.append([known for _, known in lego.components])
    known = course.known_language
    return align(phrase.pair[1], glosses, components, known.spaced, known.code)


def windows(course: Course, phrase: CheckedPhrase, index: int = 0) -> list[Window]:
    """Every window of 2-5 tiles of ``phrase`` that holds its operative tile, by size, then
    from left to right."""
    key = ("windows", phrase.pair, phrase.positions, phrase.operative_index, phrase.bounds)
    found = memo(course, key, lambda: _windows(course, phrase))
    return [Window(size, text, known, index) for size, text, known in found]


def _windows(course: Course, phrase: CheckedPhrase) -> tuple[tuple[int, str | None, str | None], ...]:
    target = phrase.pair[0]
    tokens = phrase.tokens or tokenize(target, course.tiler.spaced, course.tiler.contractions)
    aligned = alignment(course, phrase)
    op, count = phrase.operative_index, phrase.tiles
    found = []
    for size in D_SIZES:
        for start in range(max(0, op - size + 1), min(op, count - size) + 1):
            end = start + size
            text = cut(target, tokens, phrase.bounds[start][0], phrase.bounds[end - 1][1])
            known = aligned.block(start, end) if text is not None else None
            found.append((size, text, known))
    return tuple(found)


@dataclass
class DPhrases:
    """The d-phrases of a basket and the windows left out (no target as written, or no
    consistent known side, and none supplied in ``filled``)."""

    d: dict[str, list[Pair]]
    left_out: list[Window]
    filled: int = 0  # windows whose known side came from ``filled`` (the model), not alignment
    windows: int = 0  # windows looked at


def d_phrases(course: Course, phrases: Iterable[CheckedPhrase], filled: Mapping[str, str] | None = None) -> DPhrases:
    """Every window of 2-5 consecutive tiles containing the operative LEGO, target cut from its
    e-phrase as written and known side aligned (or, for a window without a consistent block, the
    known side ``filled`` gives for its target), deduplicated per size, in phrase and window order."""
    out: dict[str, list[Pair]] = {str(size): [] for size in D_SIZES}
    seen: dict[str, set[Pair]] = {str(size): set() for size in D_SIZES}
    left_out: list[Window] = []
    used = looked = 0
    for index, phrase in enumerate(phrases):
        for window in windows(course, phrase, index):
            looked += 1
            pair, from_model = window.pair, False
            if pair is None and window.target is not None and filled and filled.get(window.target):
                pair, from_model = (window.target, filled[window.target]), True
            if pair is None:
                left_out.append(window)
            elif pair not in seen[str(window.size)]:
                seen[str(window.size)].add(pair)
                out[str(window.size)].append(pair)
                used += from_model
    return DPhrases(out, left_out, used, looked)


@dataclass
class BuiltBasket:
    """The outcome of :func:`build_basket`: the basket, what was dropped and why, and the
    d-phrase windows left out for want of a consistent known side."""

    lego_id: str
    basket: Basket
    phrases: list[CheckedPhrase]
    rejected: list[Rejection] = field(default_factory=list)
    left_out: list[Window] = field(default_factory=list)
    filled: int = 0  # d windows whose known side came from ``filled``


def same_phrase(a: str, b: str) -> bool:
    return normalise_phrase(a) == normalise_phrase(b)


def build_basket(ctx: LegoContext, candidates: Sequence[Pair], filled: Mapping[str, str] | None = None) -> BuiltBasket:
    """Tile every candidate, drop failures, duplicates and single-tile phrases (the LEGO alone is
    not practice), put the seed sentence first for a culminating LEGO (when it can be there), keep
    at most ``E_PHRASES_MAX``, and compute the d-phrases (``filled``: known sides the model wrote
    for windows that alignment leaves without one, by window target)."""
    course, position = ctx.course, ctx.position
    ordered = list(candidates)
    if ctx.seed_pair is not None:
        ordered = [ctx.seed_pair] + [c for c in ordered if not same_phrase(c[0], ctx.seed_pair[0])]
    kept: list[CheckedPhrase] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, pair in enumerate(ordered):
        result = check_phrase(course, position, pair)
        if isinstance(result, Rejection):
            rejected.append(result)
            continue
        is_seed = ctx.seed_pair is not None and index == 0
        norm = normalise_phrase(pair[0])
        if norm in seen:
            rejected.append(Rejection(pair, "same as another e-phrase of this basket"))
        elif result.tiles < 2 and not is_seed:
            rejected.append(Rejection(pair, "only the LEGO itself: combine it with available LEGOs"))
        elif len(kept) < E_PHRASES_MAX:
            seen.add(norm)
            kept.append(result)
    d = d_phrases(course, kept, filled)
    basket = Basket(lego=ctx.lego.pair, e=[p.pair for p in kept], d=d.d)
    return BuiltBasket(ctx.lego.id, basket, kept, rejected, d.left_out, d.filled)


def phrase_words(course: Course, pair: Pair) -> int:
    """Words of a phrase for the length band: target words, or known words for unspaced scripts."""
    return count_words(pair[0] if course.spaced else pair[1])
