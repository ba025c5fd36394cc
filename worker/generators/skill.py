"""The basket-generation skill as one system-prompt text (docs/DESIGN.md, "The skill").

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
from importlib.resources import files
from importlib.resources.abc import Traversable

from worker.errors import InputError

SKILL_NAME = "basket-generation-skill"

#: The files of the skill, in the order the model reads them.
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


def skill_dir() -> Traversable:
    """``basket-generation-skill`` of the ``skills`` package (package data: in a checkout, an
    editable install or a wheel alike)."""
    return files("skills") / SKILL_NAME


@lru_cache(maxsize=1)
def skill_text() -> str:
    """The whole skill, each file under a ``=== path ===`` header line; cached per process."""
    root = skill_dir()
    parts = []
    for name in SKILL_FILES:
        path = root
        for part in name.split("/"):
            path = path / part
        try:
            body = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(str(path), f"skill file unreadable ({exc.strerror or exc})") from None
        parts.append(f"=== {name} ===\n{body.strip()}\n")
    return "\n".join(parts)
