"""Pydantic models of the files phase5 reads and writes (docs/DESIGN.md §1-§3).

Both input formats of ``lego_pairs.json`` (v7.7 arrays and v8 objects) parse into the same
:class:`Seed` and :class:`LegoPair` models; :func:`load_lego_pairs` turns any problem into one
:class:`~worker.errors.InputError` line naming the file, the seed or LEGO id and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.constants import D_SIZES
from worker.errors import InputError
from worker.paths import LEGO_ID, SEED_ID
from worker.safetext import quote_id

Pair = tuple[str, str]


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    return value


class LegoPair(BaseModel):
    """One LEGO: a ``[target, known]`` chunk of a seed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=LEGO_ID.pattern)
    type: str = "B"
    target: str
    known: str
    components: Any = None  # as the file has it: pairs, objects, a {target: known} map, ...

    _check_target = field_validator("target", "known")(_non_blank)

    @property
    def component_pairs(self) -> list[Pair]:
        """The components as ``(target, known)`` pairs, whatever their shape in the file
        (``[t, k]`` arrays or objects with ``target``/``known``); unreadable ones are skipped."""
        found: list[Pair] = []
        items = self.components
        if isinstance(items, dict):  # {"quiero": "I want", ...}
            items = [[target, known] for target, known in items.items()]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                inner = item["lego"] if isinstance(item.get("lego"), dict) else item
                target, known = inner.get("target"), inner.get("known")
            elif isinstance(item, list | tuple) and len(item) >= 2:
                target, known = item[0], item[1]
            else:
                continue
            if isinstance(target, str) and isinstance(known, str) and target.strip() and known.strip():
                found.append((target, known))
        return found


class Seed(BaseModel):
    """A seed sentence pair and the LEGOs that make it up, in order."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seed_id: str = Field(pattern=SEED_ID.pattern)
    target: str
    known: str
    legos: list[LegoPair] = Field(min_length=1)

    _check_text = field_validator("target", "known")(_non_blank)


class LegoPairsFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    course: str | None = None  # the course code, from "course_code" or "course"
    target: str | None = None  # the target language as the file names it, e.g. "spa"
    known: str | None = None
    seeds: list[Seed]


class SeedPairsFile(BaseModel):
    """What ``seed_pairs.json`` says: seed sentences by id, the languages, and the entries that
    could not be read (each one data warning; the file never stops a course)."""

    translations: dict[str, Pair] = Field(default_factory=dict)
    target: str | None = None
    known: str | None = None
    unreadable: list[tuple[str, str]] = Field(default_factory=list)  # (where, what is wrong)


class Basket(BaseModel):
    """A practice basket: the LEGO, its e-phrases and its d-phrases by window size."""

    model_config = ConfigDict(extra="forbid")

    lego: Pair
    e: list[Pair]
    d: dict[str, list[Pair]]

    @field_validator("d")
    @classmethod
    def _d_keys(cls, value: dict[str, list[Pair]]) -> dict[str, list[Pair]]:
        expected = {str(size) for size in D_SIZES}
        if set(value) != expected:
            raise ValueError(f"d must have exactly the keys {sorted(expected)}, has {sorted(value)}")
        return value

    def to_json(self) -> dict[str, Any]:
        return {
            "lego": list(self.lego),
            "e": [list(p) for p in self.e],
            "d": {k: [list(p) for p in self.d[k]] for k in sorted(self.d, key=int)},
        }


# --- loading -----------------------------------------------------------------------------------


def read_json_file(path: Path) -> Any:
    """Read JSON, turning every failure into one :class:`InputError` line: a missing or unreadable
    file (a folder in its place, no permission), bad UTF-8, bad JSON, and JSON that Python refuses
    to build: nesting deeper than its recursion limit, an integer of more than 4,300 digits."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "not usable JSON: nested too deeply") from None
    except ValueError as exc:  # an integer too long to convert
        raise InputError(path, f"not usable JSON: {str(exc).split(';')[0]}") from None


#: Where a file may name the course code and its languages: top level first, then "metadata".
COURSE_KEYS = ("course_code", "course")
TARGET_KEYS = ("target_language", "target")
KNOWN_KEYS = ("known_language", "known")


def first_text(raw: Any, keys: Iterable[str]) -> str | None:
    """The first non-empty string among ``raw[key]`` (and ``raw["metadata"][key]``)."""
    for place in (raw, raw.get("metadata") if isinstance(raw, dict) else None):
        if isinstance(place, dict):
            for key in keys:
                value = place.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def load_lego_pairs(path: Path) -> LegoPairsFile:
    """Parse ``lego_pairs.json`` in any format (v7.7 arrays, as an object or a bare list; v8
    objects with any extra keys); raise :class:`InputError` on any problem."""
    raw = read_json_file(path)
    items = raw if isinstance(raw, list) else raw.get("seeds") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise InputError(path, 'expected an object with a "seeds" list, or a list of seeds')
    seeds = [_parse_seed(path, index, item) for index, item in enumerate(items)]
    if not seeds:
        raise InputError(path, "no seeds")
    _check_unique(path, (s.seed_id for s in seeds), "seed id")
    _check_unique(path, (lego.id for s in seeds for lego in s.legos), "LEGO id")
    return LegoPairsFile(
        seeds=seeds,
        course=first_text(raw, COURSE_KEYS),
        target=first_text(raw, TARGET_KEYS),
        known=first_text(raw, KNOWN_KEYS),
    )


def load_seed_pairs(path: Path) -> SeedPairsFile:
    """``seed_pairs.json`` in any of its shapes: ``{"translations": {id: [t, k]}}``, a list of
    ``[id, [t, k]]``, a list of objects ``{seed_id, target, known}`` (or ``seed_pair``), or a mix,
    at the top level or under ``translations``/``seeds``/``seed_pairs``. Only a file that cannot be
    read at all raises; an entry that cannot be read is recorded in ``unreadable``."""
    raw = read_json_file(path)
    found = SeedPairsFile(target=first_text(raw, TARGET_KEYS), known=first_text(raw, KNOWN_KEYS))
    entries: Any = raw
    if isinstance(raw, dict):
        entries = next((raw[k] for k in ("translations", "seeds", "seed_pairs") if k in raw), None)
        if entries is None:
            raise InputError(path, 'expected a "translations" map or a list of seed pairs')
    if isinstance(entries, dict):
        entries = [[seed_id, value] for seed_id, value in entries.items()]
    if not isinstance(entries, list):
        raise InputError(path, 'expected a "translations" map or a list of seed pairs')
    for index, entry in enumerate(entries):
        seed_id, pair = _seed_pair_entry(entry)
        if seed_id is None or pair is None:
            label = quote_id(seed_id) if isinstance(seed_id, str) else f"entry #{index + 1}"
            found.unreadable.append((label, "expected [target, known] texts"))
        else:
            found.translations[seed_id] = pair
    return found


def _seed_pair_entry(entry: Any) -> tuple[str | None, Pair | None]:
    """One entry of seed_pairs.json as ``(seed_id, (target, known))``; None where unreadable."""
    seed_id: Any = None
    value: Any = None
    if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str):
        seed_id, value = entry
    elif isinstance(entry, dict):
        seed_id = entry.get("seed_id") or entry.get("id")
        value = entry.get("seed_pair") or entry.get("pair") or entry
    if isinstance(value, dict):
        value = [value.get("target"), value.get("known")]
    seed_id = seed_id if isinstance(seed_id, str) and seed_id.strip() else None
    if isinstance(value, list | tuple) and len(value) >= 2 and all(isinstance(x, str) and x.strip() for x in value[:2]):
        return seed_id, (value[0], value[1])
    return seed_id, None


def _check_unique(path: Path, ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise InputError(path, f"{item}: duplicate {what}")
        seen.add(item)


def _parse_seed(path: Path, index: int, item: Any) -> Seed:
    where = _seed_label(item, index)
    try:
        data = _seed_dict(item)
        where = quote_id(data["seed_id"]) if data.get("seed_id") else where
        return Seed.model_validate(data)
    except _Shape as exc:
        raise InputError(path, f"{where}: {exc}") from None
    except ValidationError as exc:
        raise InputError(path, f"{where}: {_describe(exc, data)}") from None


def _seed_label(item: Any, index: int) -> str:
    """The seed's id when the raw item has one (so shape errors name it), else its number."""
    seed_id = item[0] if isinstance(item, list) and item else item.get("seed_id") if isinstance(item, dict) else None
    return quote_id(seed_id) if isinstance(seed_id, str) and seed_id.strip() else f"seed #{index + 1}"


class _Shape(ValueError):
    """The raw JSON does not have the shape of either format."""


def _seed_dict(item: Any) -> dict[str, Any]:
    """A v7.7 array or a v8 object, as the field names of :class:`Seed`."""
    if isinstance(item, list):  # v7.7: [seed_id, [target, known], [[id, type, target, known, comps?], ...]]
        if len(item) != 3:
            raise _Shape("expected [seed_id, [target, known], [legos]]")
        seed_id, pair, legos = item
        target, known = _pair(pair, "seed pair")
        if not isinstance(legos, list):
            raise _Shape("LEGOs must be a list")
        return {"seed_id": seed_id, "target": target, "known": known, "legos": [_lego_dict(x) for x in legos]}
    if isinstance(item, dict):  # v8
        pair = item.get("seed_pair")
        if isinstance(pair, dict):
            target, known = pair.get("target"), pair.get("known")
        elif pair is None and "target" in item:
            target, known = item.get("target"), item.get("known")
        else:
            target, known = _pair(pair, "seed_pair")
        legos = item.get("legos")
        if not isinstance(legos, list):
            raise _Shape('"legos" must be a list')
        return {
            "seed_id": item.get("seed_id"),
            "target": target,
            "known": known,
            "legos": [_lego_dict(x) for x in legos],
        }
    raise _Shape("a seed must be an array (v7.7) or an object (v8)")


def _lego_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, list):
        if len(item) < 4:
            raise _Shape(f"LEGO {quote_id(item[0]) if item else '[]'}: expected [id, type, target, known, components?]")
        data = {"id": item[0], "type": item[1], "target": item[2], "known": item[3]}
        if len(item) > 4:
            data["components"] = item[4]
        return data
    if isinstance(item, dict):
        pair = item.get("lego")
        if isinstance(pair, dict):
            target, known = pair.get("target"), pair.get("known")
        elif isinstance(pair, list):
            target, known = _pair(pair, "lego")
        else:
            target, known = item.get("target"), item.get("known")
        data = {"id": item.get("id"), "type": item.get("type", "B"), "target": target, "known": known}
        if "components" in item:
            data["components"] = item["components"]
        return data
    raise _Shape("a LEGO must be an array (v7.7) or an object (v8)")


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _Shape(f"{what} must be [target, known]")
    return value[0], value[1]


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """The first validation error, naming the LEGO id when the error is inside a LEGO."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    prefix = ""
    if len(loc) >= 2 and loc[0] == "legos" and isinstance(loc[1], int):
        legos = data.get("legos") or []
        lego_id = legos[loc[1]].get("id") if loc[1] < len(legos) else None
        prefix = f"LEGO {quote_id(lego_id) if lego_id else '#' + str(loc[1] + 1)}: "
        loc = loc[2:]
    field = ".".join(str(x) for x in loc) or "seed"
    message = error["msg"]
    if error["type"] == "string_pattern_mismatch":
        message = f"{error['input']!r} is not a valid id"
    elif error["type"] == "too_short" and field == "legos":
        message = "has no LEGOs"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{prefix}{field} {message}"
