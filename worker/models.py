"""Pydantic models of the files phase5 reads and writes (SPEC §1-§3).

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
    components: list[Any] | None = None

    _check_target = field_validator("target", "known")(_non_blank)


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

    course: str | None = None
    target: str | None = None  # language code of the target language, e.g. "spa"
    known: str | None = None
    seeds: list[Seed]


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


def load_lego_pairs(path: Path) -> LegoPairsFile:
    """Parse ``lego_pairs.json`` in either format; raise :class:`InputError` on any problem."""
    raw = read_json_file(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("seeds"), list):
        raise InputError(path, 'expected an object with a "seeds" list')
    seeds = [_parse_seed(path, index, item) for index, item in enumerate(raw["seeds"])]
    if not seeds:
        raise InputError(path, "no seeds")
    _check_unique(path, (s.seed_id for s in seeds), "seed id")
    _check_unique(path, (lego.id for s in seeds for lego in s.legos), "LEGO id")
    meta = {k: raw.get(k) for k in ("course", "target", "known") if isinstance(raw.get(k), str)}
    return LegoPairsFile(seeds=seeds, **meta)


def load_seed_pairs(path: Path) -> dict[str, Pair]:
    """``seed_pairs.json``: ``{"translations": {"S0001": [target, known]}}``."""
    raw = read_json_file(path)
    translations = raw.get("translations") if isinstance(raw, dict) else None
    if not isinstance(translations, dict):
        raise InputError(path, 'expected an object with a "translations" map')
    pairs: dict[str, Pair] = {}
    for seed_id, pair in translations.items():
        if not (isinstance(pair, list) and len(pair) >= 2 and all(isinstance(x, str) for x in pair[:2])):
            raise InputError(path, f"{quote_id(seed_id)}: expected [target, known] strings")
        pairs[seed_id] = (pair[0], pair[1])
    return pairs


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
