"""The basket rules (SPEC §1) as code: phrase checks, d-phrase extraction and basket building.

Every generator hands its candidate e-phrases to :func:`build_basket`, so a basket leaves a
generator only after every phrase in it has been tiled: a phrase failing GATE is never saved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from worker.constants import D_SIZES, E_PHRASES_MAX
from worker.course import Course, LegoContext
from worker.models import Basket, Pair
from worker.safetext import unsafe_character
from worker.tiler import Tiling, count_words, normalise_phrase


@dataclass(frozen=True)
class CheckedPhrase:
    """An e-phrase that passed GATE, with the position of the LEGO behind each tile."""

    pair: Pair
    positions: tuple[int, ...]
    operative_index: int  # index of the (first) operative tile

    @property
    def tiles(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class Rejection:
    pair: Pair
    reason: str


def check_phrase(course: Course, operative: int, pair: Pair) -> CheckedPhrase | Rejection:
    """GATE for one ``[target, known]`` phrase of the LEGO at position ``operative``."""
    target, known = pair
    if not isinstance(target, str) or not isinstance(known, str) or not target.strip() or not known.strip():
        return Rejection(pair, "empty target or known text")
    unsafe = unsafe_text(pair)
    if unsafe:
        return Rejection(pair, unsafe)
    tiling = course.tiler.tile(target, operative)
    if not tiling.ok:
        return Rejection(pair, tiling.reason or "does not tile")
    return CheckedPhrase(
        pair=(target, known),
        positions=_resolve(course, tiling, operative, known),
        operative_index=next(i for i, t in enumerate(tiling.tiles) if t.operative),
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


def d_phrases(course: Course, phrases: Iterable[CheckedPhrase]) -> dict[str, list[Pair]]:
    """Every window of 2-5 consecutive tiles containing the operative LEGO, texts joined from the
    LEGO pairs, deduplicated per size, in phrase and window order."""
    out: dict[str, list[Pair]] = {str(size): [] for size in D_SIZES}
    seen: dict[str, set[Pair]] = {str(size): set() for size in D_SIZES}
    for phrase in phrases:
        legos = [course.legos[p - 1] for p in phrase.positions]
        op = phrase.operative_index
        for size in D_SIZES:
            for start in range(max(0, op - size + 1), min(op, len(legos) - size) + 1):
                window = legos[start : start + size]
                pair = (course.join([w.target for w in window]), " ".join(w.known for w in window))
                if pair not in seen[str(size)]:
                    seen[str(size)].add(pair)
                    out[str(size)].append(pair)
    return out


@dataclass
class BuiltBasket:
    """The outcome of :func:`build_basket`: the basket and what was dropped, and why."""

    lego_id: str
    basket: Basket
    phrases: list[CheckedPhrase]
    rejected: list[Rejection] = field(default_factory=list)


def same_phrase(a: str, b: str) -> bool:
    return normalise_phrase(a) == normalise_phrase(b)


def build_basket(ctx: LegoContext, candidates: Sequence[Pair]) -> BuiltBasket:
    """Tile every candidate, drop failures, duplicates and single-tile phrases (the LEGO alone is
    not practice), put the seed sentence first for a culminating LEGO, keep at most
    ``E_PHRASES_MAX``, and compute the d-phrases."""
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
    basket = Basket(lego=ctx.lego.pair, e=[p.pair for p in kept], d=d_phrases(course, kept))
    return BuiltBasket(ctx.lego.id, basket, kept, rejected)


def phrase_words(course: Course, pair: Pair) -> int:
    """Words of a phrase for the length band: target words, or known words for unspaced scripts."""
    return count_words(pair[0] if course.spaced else pair[1])
