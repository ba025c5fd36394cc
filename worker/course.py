"""A loaded course: seeds, canonical order, positions, culminating LEGOs, recent sets, warnings.

>>> from pathlib import Path
>>> course = Course.load(Path(__file__).resolve().parents[1] / "examples/courses/spa_demo")
>>> course.legos[0].position, course.legos[0].id
(1, 'S0001L01')
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from worker.constants import RECENT_SEEDS, Band, band_for
from worker.errors import InputError
from worker.models import LegoPairsFile, Pair, Seed, load_lego_pairs, load_seed_pairs
from worker.paths import CourseLayout
from worker.tiler import UNSPACED_LANGUAGES, Tiler, language_code, normalise_key, normalise_phrase


@dataclass(frozen=True)
class CourseLego:
    """A canonical LEGO at its 1-based ``position`` in canonical order."""

    id: str
    target: str
    known: str
    position: int
    seed_id: str
    seed_index: int  # 0-based index of the seed that introduces it
    culminating: bool

    @property
    def pair(self) -> Pair:
        return (self.target, self.known)


@dataclass(frozen=True)
class DataWarning:
    """Messy real data, reported rather than fatal (SPEC §1)."""

    seed_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.seed_id}: {self.message}"


@dataclass(frozen=True)
class LegoContext:
    """What a generator needs to write the e-phrases of one LEGO (SPEC §5)."""

    course: Course
    lego: CourseLego
    band: Band
    seed_pair: Pair | None  # the seed sentence, for a culminating LEGO

    @property
    def position(self) -> int:
        return self.lego.position

    @property
    def available(self) -> Sequence[CourseLego]:
        """LEGOs at positions 1..N-1."""
        return self.course.legos[: self.lego.position - 1]

    @property
    def recent(self) -> range:
        """Positions of the recent LEGOs (rule 4)."""
        return self.course.recent_positions(self.lego)


@dataclass
class Course:
    root: Path
    source: LegoPairsFile
    seed_translations: dict[str, Pair] | None = None
    legos: list[CourseLego] = field(default_factory=list)
    by_id: dict[str, CourseLego] = field(default_factory=dict)
    canonical_of: dict[str, str] = field(default_factory=dict)  # every LEGO id -> canonical id

    @classmethod
    def load(cls, root: Path) -> Course:
        """Load ``lego_pairs.json`` (and ``seed_pairs.json`` when present) from a course folder."""
        layout = CourseLayout(Path(root))
        warm = _PRELOADED.get(_stamp(layout)) if _PRELOADED else None
        if warm is not None:
            return warm
        if not layout.lego_pairs.exists():
            raise InputError(layout.lego_pairs, "file not found (is this a course folder?)")
        source = load_lego_pairs(layout.lego_pairs)
        translations = load_seed_pairs(layout.seed_pairs) if layout.seed_pairs.exists() else None
        course = cls(root=Path(root), source=source, seed_translations=translations)
        course._order()
        return course

    def _order(self) -> None:
        first: dict[tuple[str, str], CourseLego] = {}
        for seed_index, seed in enumerate(self.source.seeds):
            last_id = seed.legos[-1].id
            for lego in seed.legos:
                key = (normalise_key(lego.target), normalise_key(lego.known))
                canonical = first.get(key)
                if canonical is None:
                    canonical = CourseLego(
                        id=lego.id,
                        target=lego.target,
                        known=lego.known,
                        position=len(self.legos) + 1,
                        seed_id=seed.seed_id,
                        seed_index=seed_index,
                        culminating=lego.id == last_id,
                    )
                    first[key] = canonical
                    self.legos.append(canonical)
                    self.by_id[lego.id] = canonical
                self.canonical_of[lego.id] = canonical.id
        self._seed_starts = [lego.seed_index for lego in self.legos]

    # -- facts ------------------------------------------------------------------------------------

    @property
    def code(self) -> str:
        return self.source.course or self.root.resolve().name

    @property
    def language(self) -> str:
        return language_code(self.source.target) or "spa"

    @property
    def spaced(self) -> bool:
        return self.language not in UNSPACED_LANGUAGES

    @cached_property
    def tiler(self) -> Tiler:
        return Tiler(((lego.position, lego.target) for lego in self.legos), self.language)

    @cached_property
    def seeds_by_id(self) -> dict[str, Seed]:
        return {seed.seed_id: seed for seed in self.source.seeds}

    @property
    def ids(self) -> list[str]:
        return [lego.id for lego in self.legos]

    def lego(self, lego_id: str) -> CourseLego:
        try:
            return self.by_id[lego_id]
        except KeyError:
            raise InputError(self.root / "lego_pairs.json", f"{lego_id}: not a canonical LEGO of this course") from None

    def recent_positions(self, lego: CourseLego) -> range:
        """Canonical LEGOs first introduced in the RECENT_SEEDS seeds before ``lego``'s seed, or
        earlier in its own seed: a contiguous range of positions, since the order follows seeds."""
        start = bisect.bisect_left(self._seed_starts, lego.seed_index - RECENT_SEEDS) + 1
        return range(start, lego.position)

    def context(self, lego_id: str) -> LegoContext:
        lego = self.lego(lego_id)
        return LegoContext(
            course=self,
            lego=lego,
            band=band_for(lego.position - 1),
            seed_pair=self.seed_phrase(lego.seed_id) if lego.culminating else None,
        )

    def seed_phrase(self, seed_id: str) -> Pair:
        """The seed sentence as e[0] of its culminating basket: the sentence itself when it tiles
        with the course's LEGOs; else (a data warning) its LEGO targets joined, so GATE holds."""
        seed = self.seeds_by_id[seed_id]
        last = self.by_id.get(self.canonical_of[seed.legos[-1].id])
        if last is not None and self.tiler.tile(seed.target, last.position).ok:
            return (seed.target, seed.known)
        return (self.join([lego.target for lego in seed.legos]), seed.known)

    def join(self, texts: Sequence[str]) -> str:
        return (" " if self.spaced else "").join(texts)

    @cached_property
    def warnings(self) -> list[DataWarning]:
        """Seeds whose LEGOs do not join to the seed text, and seed texts that differ between
        ``lego_pairs.json`` and ``seed_pairs.json``."""
        found: list[DataWarning] = []
        squash = (lambda s: s) if self.spaced else (lambda s: s.replace(" ", ""))
        for seed in self.source.seeds:
            joined = squash(normalise_phrase(" ".join(lego.target for lego in seed.legos)))
            if joined != squash(normalise_phrase(seed.target)):
                found.append(DataWarning(seed.seed_id, f"LEGOs join to {joined!r}, seed text is {seed.target!r}"))
            other = (self.seed_translations or {}).get(seed.seed_id)
            if other is not None and (other[0].strip(), other[1].strip()) != (seed.target.strip(), seed.known.strip()):
                found.append(
                    DataWarning(
                        seed.seed_id, f"seed_pairs.json says {other[0]!r}, lego_pairs.json says {seed.target!r}"
                    )
                )
        return found


#: courses loaded by :func:`preload`, by the identity of their input files
_PRELOADED: dict[tuple[object, ...], Course] = {}


def _stamp(layout: CourseLayout) -> tuple[object, ...]:
    """The input files as they are now (path, inode, size, mtime): a changed file is a new course."""
    marks: list[object] = [str(layout.root.resolve())]
    for path in (layout.lego_pairs, layout.seed_pairs):
        try:
            stat = path.stat()
            marks.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            marks.append(None)
    return tuple(marks)


def preload(root: Path) -> Course:
    """Load the course once, with its tiler, for the processes forked from this one (the warm
    start of :mod:`supervisor.forkserver`): their :meth:`Course.load` of the same unchanged files
    returns it instead of reading and ordering them again."""
    course = Course.load(root)
    course.tiler  # noqa: B018 - built now, shared by every forked worker
    _PRELOADED[_stamp(CourseLayout(Path(root)))] = course
    return course
