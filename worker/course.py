"""A loaded course: seeds, canonical order, positions, culminating LEGOs, recent sets, warnings.

>>> from pathlib import Path
>>> course = Course.load(Path(__file__).resolve().parents[1] / "examples/courses/spa_demo")
>>> course.legos[0].position, course.legos[0].id
(1, 'S0001L01')
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from worker.atomic import write_json
from worker.constants import RECENT_SEEDS, Band, band_for
from worker.errors import InputError, Phase5Error
from worker.languages import Language, UnknownLanguage, describe, language, script_contradiction
from worker.models import LegoPairsFile, Pair, Seed, SeedPairsFile, load_lego_pairs, load_seed_pairs, read_json_file
from worker.paths import CourseLayout
from worker.text import doubled_words, words
from worker.tiler import Tiler, normalise_key, normalise_phrase


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
    components: tuple[Pair, ...] = ()  # its components' (target, known), when the file gives them

    @property
    def pair(self) -> Pair:
        return (self.target, self.known)


#: The kinds of data warning, each with what it means (the human report prints these words).
WARNING_KINDS: dict[str, str] = {
    "lego_join": "the seed's LEGOs do not join to its sentence",
    "no_seed_sentence": "culminating basket without its seed sentence (the sentence does not pass GATE there)",
    "seed_pairs_differ": "seed_pairs.json and lego_pairs.json differ",
    "seed_pairs_entry": "seed_pairs.json entry that cannot be read",
    "script": "the text does not look like the course's language",
}


@dataclass(frozen=True)
class DataWarning:
    """Messy real data, reported rather than fatal (docs/DESIGN.md §1): a ``kind`` of
    :data:`WARNING_KINDS`, where (a seed id, or a file) and what."""

    kind: str
    seed_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.seed_id}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.seed_id, "message": self.message}


@dataclass(frozen=True)
class Languages:
    """A course's target and known languages, and where they were found."""

    target: Language
    known: Language
    source: str  # "options", "lego_pairs.json", "seed_pairs.json", "course code", ...

    @property
    def description(self) -> str:
        return describe(self.target, self.known)

    def to_json(self) -> dict[str, str]:
        return {
            "target": self.target.code,
            "target_name": self.target.name,
            "known": self.known.code,
            "known_name": self.known.name,
            "description": self.description,
            "source": self.source,
        }


@dataclass(frozen=True)
class LegoContext:
    """What a generator needs to write the e-phrases of one LEGO (docs/DESIGN.md §5)."""

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
    languages: Languages
    seed_file: SeedPairsFile | None = None
    legos: list[CourseLego] = field(default_factory=list)
    by_id: dict[str, CourseLego] = field(default_factory=dict)
    canonical_of: dict[str, str] = field(default_factory=dict)  # every LEGO id -> canonical id
    #: What :mod:`worker.rules` computed for this course in this process (see ``rules.memo``).
    rule_memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, root: Path, target_language: str | None = None, known_language: str | None = None) -> Course:
        """Load ``lego_pairs.json`` (and ``seed_pairs.json`` when present) from a course folder.

        The languages come from, in this order: ``target_language``/``known_language`` (the
        command's options), the choice an earlier ``prepare`` saved from such options, the
        ``target``/``known`` fields of lego_pairs.json, the ``target_language``/``known_language``
        fields of seed_pairs.json, and the course code (``course_code`` or ``course`` in
        lego_pairs.json, else the folder's name) read as ``<target>_for_<known>``."""
        layout = CourseLayout(Path(root))
        options = (target_language, known_language)
        warm = _PRELOADED.get((_stamp(layout), options)) if _PRELOADED else None
        if warm is not None:
            return warm
        if not layout.lego_pairs.exists():
            raise InputError(layout.lego_pairs, "file not found (is this a course folder?)")
        source = load_lego_pairs(layout.lego_pairs)
        seed_file = _optional_seed_pairs(layout.seed_pairs)
        languages = resolve_languages(layout, source, seed_file, target_language, known_language)
        course = cls(root=Path(root), source=source, languages=languages, seed_file=seed_file)
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
                        components=tuple(lego.component_pairs),
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
    def target_language(self) -> Language:
        return self.languages.target

    @property
    def known_language(self) -> Language:
        return self.languages.known

    @property
    def language(self) -> str:
        """The target language's ISO 639-3 code."""
        return self.languages.target.code

    @property
    def spaced(self) -> bool:
        """Whether the target language is written with spaces between words."""
        return self.languages.target.spaced

    @property
    def description(self) -> str:
        """The course in words: "Mandarin Chinese for English speakers"."""
        return self.languages.description

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

    def seed_phrase(self, seed_id: str) -> Pair | None:
        """The seed sentence pair as e[0] of its culminating basket, exactly as written, when it
        passes GATE at its culminating LEGO's position and holds that LEGO; else None (the
        basket then has no seed sentence, and :attr:`warnings` says so)."""
        return self._seed_phrases.get(seed_id)

    @cached_property
    def _seed_phrases(self) -> dict[str, Pair | None]:
        found: dict[str, Pair | None] = {}
        for lego in self.legos:
            if lego.culminating:
                seed = self.seeds_by_id[lego.seed_id]
                ok = self.tiler.tile(seed.target, lego.position).ok
                found[lego.seed_id] = (seed.target, seed.known) if ok else None
        return found

    @cached_property
    def seed_writing(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """What people wrote in the seeds, for telling written text from glued text: the words
        doubled ("no, no") in the targets and in the known sides, and every capitalised word."""
        targets = [seed.target for seed in self.source.seeds]
        knowns = [seed.known for seed in self.source.seeds]
        doubled_targets = frozenset(word for text in targets for word in doubled_words(text))
        doubled_knowns = frozenset(word for text in knowns for word in doubled_words(text))
        capitals = frozenset(word for text in targets + knowns for word, _, _ in words(text) if word[:1].isupper())
        return doubled_targets, doubled_knowns, capitals

    @cached_property
    def warnings(self) -> list[DataWarning]:
        """Messy data, by kind (:data:`WARNING_KINDS`): seeds whose LEGOs do not join to their
        sentence, culminating baskets that cannot start with their seed sentence, seed_pairs.json
        entries that differ or cannot be read, text that does not look like the language."""
        found: list[DataWarning] = []
        squash = (lambda text: text) if self.spaced else (lambda text: text.replace(" ", ""))
        for seed in self.source.seeds:
            # As written, contractions not expanded: LEGOs "de" + "el" do not join to "del" exactly.
            joined = squash(normalise_phrase(" ".join(lego.target for lego in seed.legos)))
            if joined != squash(normalise_phrase(seed.target)):
                shown = " + ".join(repr(lego.target) for lego in seed.legos)
                found.append(DataWarning("lego_join", seed.seed_id, f"LEGOs {shown} do not join to {seed.target!r}"))
        for lego in self.legos:
            if lego.culminating and self.seed_phrase(lego.seed_id) is None:
                seed = self.seeds_by_id[lego.seed_id]
                reason = self.tiler.tile(seed.target, lego.position).reason
                message = f"{lego.id}: seed sentence {seed.target!r} cannot be its e[0] ({reason})"
                found.append(DataWarning("no_seed_sentence", seed.seed_id, message))
        if self.seed_file is not None:
            for where, what in self.seed_file.unreadable:
                found.append(DataWarning("seed_pairs_entry", where, f"seed_pairs.json: {what}"))
            for seed in self.source.seeds:
                other = self.seed_file.translations.get(seed.seed_id)
                if other is not None and (other[0].strip(), other[1].strip()) != (
                    seed.target.strip(),
                    seed.known.strip(),
                ):
                    message = f"seed_pairs.json says {other[0]!r}, lego_pairs.json says {seed.target!r}"
                    found.append(DataWarning("seed_pairs_differ", seed.seed_id, message))
        problem = script_contradiction(self.target_language, [seed.target for seed in self.source.seeds])
        if problem:
            found.append(DataWarning("script", "lego_pairs.json", problem))
        return found


# -- languages ------------------------------------------------------------------------------------

#: A course code that names its languages: ``spa_for_eng``, ``cmn_for_eng_v2``, ``bre-for-fra``.
COURSE_CODE_LANGUAGES = re.compile(r"^([a-z]{2,3})[_-]for[_-]([a-z]{2,3})(?:[_-]|$)")


def resolve_languages(
    layout: CourseLayout,
    source: LegoPairsFile,
    seed_file: SeedPairsFile | None,
    target_option: str | None,
    known_option: str | None,
) -> Languages:
    """The course's languages, each from the first place that names it (see :meth:`Course.load`)."""
    saved = _saved_languages(layout)
    code = COURSE_CODE_LANGUAGES.match((source.course or "").lower()) or COURSE_CODE_LANGUAGES.match(
        layout.root.resolve().name.lower()
    )
    places: list[tuple[str, str | None, str | None]] = [
        ("options", target_option, known_option),
        ("the options given to prepare", saved[0], saved[1]),
        ("lego_pairs.json", source.target, source.known),
        ("seed_pairs.json", seed_file.target if seed_file else None, seed_file.known if seed_file else None),
        ("the course code", code.group(1) if code else None, code.group(2) if code else None),
    ]
    chosen: list[tuple[Language, str]] = []
    for side, option in ((1, "--target-language"), (2, "--known-language")):
        what = "target" if side == 1 else "known"
        for place in places:
            value = place[side]
            if value:
                try:
                    chosen.append((language(value), place[0]))
                except UnknownLanguage as exc:
                    raise Phase5Error(f"{layout.root}: {what} language from {place[0]}: {exc}") from None
                break
        else:
            raise Phase5Error(
                f"{layout.root}: no {what} language: give {option} (an ISO 639-3 code such as spa, fra, cmn),"
                f" a {what!r} field in lego_pairs.json, or a course code like spa_for_eng"
            )
    (target, target_from), (known, known_from) = chosen
    where = target_from if target_from == known_from else f"target from {target_from}, known from {known_from}"
    return Languages(target, known, where)


def save_languages(course: Course) -> None:
    """Record languages that came from options in ``phase5_segments/languages.json``, where
    :meth:`Course.load` finds them when no option is given (a worker, a later ``validate``)."""
    if course.languages.source != "options":
        return
    layout = CourseLayout(course.root)
    wanted = {"target": course.target_language.code, "known": course.known_language.code}
    if _saved_languages(layout) != (wanted["target"], wanted["known"]):
        write_json(layout.languages, wanted)


def _optional_seed_pairs(path: Path) -> SeedPairsFile | None:
    """seed_pairs.json when present; one that cannot be read at all is one data warning, never a
    reason to refuse the course (it only feeds warnings and languages)."""
    if not path.exists():
        return None
    try:
        return load_seed_pairs(path)
    except InputError as exc:
        return SeedPairsFile(unreadable=[("seed_pairs.json", f"cannot be read: {exc.problem}")])


def _saved_languages(layout: CourseLayout) -> tuple[str | None, str | None]:
    """The languages an earlier ``prepare`` saved from its options, if any."""
    if not layout.languages.exists():
        return (None, None)
    raw = read_json_file(layout.languages)
    if not isinstance(raw, dict):
        raise InputError(layout.languages, "expected an object with target and known language codes")
    target, known = raw.get("target"), raw.get("known")
    return (target if isinstance(target, str) else None, known if isinstance(known, str) else None)


#: courses loaded by :func:`preload`, by the identity of their input files
_PRELOADED: dict[tuple[object, ...], Course] = {}  # by (the files' stamp, the language options)


def _stamp(layout: CourseLayout) -> tuple[object, ...]:
    """The input files as they are now (path, inode, size, mtime): a changed file is a new course."""
    marks: list[object] = [str(layout.root.resolve())]
    for path in (layout.lego_pairs, layout.seed_pairs, layout.languages):
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
    # Built now, shared by every forked worker, instead of once in each of them: the tiler, the
    # seed sentences culminating baskets open with, and what the agent files' check reads.
    _ = course.tiler, course.seeds_by_id, course._seed_phrases, course.seed_writing
    _PRELOADED[(_stamp(CourseLayout(Path(root))), (None, None))] = course
    return course
