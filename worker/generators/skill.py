"""The basket-generation skill (SPEC §6) as one system-prompt text.

The nine files are joined in a fixed order, SKILL.md first, each under a header line naming it,
so the text is byte-identical from one request to the next and prompt caching can hit.

>>> text = skill_text()
>>> text.startswith("=== SKILL.md ===")
True
>>> skill_text() is text  # read once per process
True
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import worker
from worker.errors import InputError

SKILL_NAME = "basket-generation-skill"

#: The files of the skill, in the order the model reads them (SPEC §6).
SKILL_FILES: tuple[str, ...] = (
    "SKILL.md",
    "rules/GATE_CONSTRAINT.md",
    "rules/PHRASE_LENGTH.md",
    "rules/CULMINATING_LEGOS.md",
    "workflow/GENERATE_E_PHRASES.md",
    "workflow/EXTRACT_D_PHRASES.md",
    "workflow/RECENCY_BIAS.md",
    "examples/EXAMPLES.md",
    "schemas/OUTPUT_FORMAT.md",
)


def skill_dir() -> Path:
    """``skills/basket-generation-skill`` of the repository this package belongs to."""
    return Path(worker.__file__).resolve().parents[1] / "skills" / SKILL_NAME


@lru_cache(maxsize=1)
def skill_text() -> str:
    """The whole skill, each file under a ``=== path ===`` header line; cached per process."""
    root = skill_dir()
    parts = []
    for name in SKILL_FILES:
        path = root / name
        try:
            body = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(path, f"skill file unreadable ({exc.strerror or exc})") from None
        parts.append(f"=== {name} ===\n{body.strip()}\n")
    return "\n".join(parts)
