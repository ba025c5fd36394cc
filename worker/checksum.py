"""Basket files with a checksum beside them: ``agent_01_baskets.json.sha256``.

The basket files keep the original's shape (a bare ``{lego_id: basket}`` map, which other tools
read), so their checksum lives in a file of its own, in the format of ``sha256sum``
(``<hex>  <name>``: ``sha256sum -c agent_01_baskets.json.sha256`` checks one by hand). It is
written after the basket file; a reader finding a checksum that does not match treats the file as
corrupted: a worker moves it aside and rebuilds it from the journal, a merge moves its old output
aside and writes it again, ``validate`` says so in one line. A basket file without a checksum
file (from another tool, or written before checksums) is read as it is.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "orch_01_baskets.json"
>>> write_basket_file(path, {"S0001L01": {"lego": ["a", "b"], "e": [], "d": {}}})
>>> checksum_problem(path) is None
True
>>> _ = path.write_text(path.read_text().replace('"a"', '"A"'))
>>> checksum_problem(path)
'does not match its checksum (orch_01_baskets.json.sha256): changed since phase5 wrote it'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from worker.atomic import write_text

SUFFIX = ".sha256"


def sidecar(path: Path) -> Path:
    """The checksum file of basket file ``path``."""
    return path.with_name(path.name + SUFFIX)


def write_basket_file(path: Path, baskets: Any) -> None:
    """Write a basket file atomically (as :func:`worker.atomic.write_json`), then its checksum."""
    write_basket_text(path, json.dumps(baskets, ensure_ascii=False, indent=1) + "\n")


def write_basket_text(path: Path, text: str) -> None:
    """Write a basket file's ``text`` atomically, then its checksum (a file edited in place, such
    as lego_baskets.json with a redo's baskets set into it)."""
    write_text(path, text)
    write_text(sidecar(path), f"{hashlib.sha256(text.encode('utf-8')).hexdigest()}  {path.name}\n")


def checksum_problem(path: Path) -> str | None:
    """Why basket file ``path`` does not match its checksum file; None when it does, or when it has
    no checksum file."""
    try:
        recorded = sidecar(path).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"its checksum file {sidecar(path).name} cannot be read ({exc})"
    try:
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # the caller's own read words this
    if not recorded or recorded[0] != actual:
        return f"does not match its checksum ({sidecar(path).name}): changed since phase5 wrote it"
    return None


def move_aside(path: Path) -> Path:
    """Rename a corrupted file (and its checksum file) to ``<name>.corrupt-<time>``, never deleting
    either; the file's new path."""
    suffix = f".corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    counter = 1
    while path.with_name(path.name + suffix).exists():
        counter += 1
        suffix = f".corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{counter}"
    aside = path.with_name(path.name + suffix)
    os.replace(path, aside)
    with contextlib.suppress(FileNotFoundError):
        os.replace(sidecar(path), sidecar(path).with_name(sidecar(path).name + suffix))
    return aside
