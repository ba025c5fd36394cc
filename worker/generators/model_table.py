"""What each model accepts (``worker/data/models.json``): the one place the API backends and the
estimate read a model's behaviour from, so that no request is built that the model refuses.

The shipped table follows the platform documentation; ``$PHASE5_MODELS`` names a file of the same
shape whose models replace or add to the shipped ones (a new model id, or a correction).

>>> caps = model_caps("claude-sonnet-5-5")
>>> caps.output_mode, caps.sampling_params, caps.thinking_default, caps.min_cache_tokens
('json_schema', False, True, 512)
>>> model_caps("claude-haiku-4-5").tokenizer_factor
1.0
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from worker.errors import InputError, Phase5Error
from worker.models import read_json_file

MODELS_ENV = "PHASE5_MODELS"

#: How the answer's JSON travels: structured output (the whole answer is the JSON object), or the
#: input of a tool call (forced where the model accepts it, strict where it has strict tools).
OutputMode = Literal["json_schema", "tool"]


@dataclass(frozen=True)
class ModelCaps:
    """One model's row of the table."""

    model: str
    structured_output: bool
    strict_tools: bool
    forced_tool_choice: bool
    sampling_params: bool
    thinking_default: bool
    min_cache_tokens: int
    tokenizer_factor: float

    @property
    def output_mode(self) -> OutputMode:
        """Structured output where the model has it (the answer is then guaranteed to be the
        JSON object); else a tool, ``strict`` where the model has strict tools, forced only where
        a forced ``tool_choice`` is accepted (else ``auto``, and a prose answer is repaired)."""
        return "json_schema" if self.structured_output else "tool"


_FLAGS = ("structured_output", "strict_tools", "forced_tool_choice", "sampling_params", "thinking_default")


def _parse(data: Any, where: str) -> dict[str, ModelCaps]:
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise InputError(where, 'expected {"models": {model: {structured_output, ..., tokenizer_factor}}}')
    table = {}
    for name, row in data["models"].items():
        try:
            values: dict[str, Any] = {flag: row[flag] for flag in _FLAGS}
            if not all(isinstance(v, bool) for v in values.values()):
                raise TypeError
            values["min_cache_tokens"] = int(row["min_cache_tokens"])
            values["tokenizer_factor"] = float(row["tokenizer_factor"])
        except (KeyError, TypeError, ValueError):
            wanted = ", ".join(f.name for f in fields(ModelCaps) if f.name != "model")
            raise InputError(where, f"{name}: needs {wanted} (true/false flags, then numbers)") from None
        table[name] = ModelCaps(model=name, **values)
    return table


@lru_cache(maxsize=8)
def _load(override: str | None) -> tuple[dict[str, ModelCaps], tuple[str, ...]]:
    text = resources.files("worker").joinpath("data/models.json").read_text(encoding="utf-8")
    table = _parse(json.loads(text), "built-in model table")
    sources = ["built-in model table"]
    if override:
        table.update(_parse(read_json_file(Path(override)), override))
        sources.append(override)
    return table, tuple(sources)


def model_table() -> dict[str, ModelCaps]:
    """The shipped table with ``$PHASE5_MODELS`` applied (read once per process and file)."""
    return dict(_load(os.environ.get(MODELS_ENV) or None)[0])


def model_caps(model: str) -> ModelCaps:
    """The model's row; a model not in the table is refused with one line (exit 2) rather than
    sent requests built on a guess."""
    table = model_table()
    caps = table.get(model)
    if caps is None:
        raise Phase5Error(
            f"model {model!r} is not in the model table (known: {', '.join(sorted(table))}); describe it in a"
            f" file shaped like worker/data/models.json and name it with ${MODELS_ENV}"
        )
    return caps
