"""Atomic file writes: a reader never sees half a file and a crash never leaves one.

Every file this project writes goes through :func:`write_json` or :func:`write_text`
(temporary file in the same folder, fsync, rename, fsync of the folder), or is a journal
appended line by line with :class:`Journal`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, data: Any, *, indent: int | None = 1) -> None:
    """Replace ``path`` with ``data`` as UTF-8 JSON, atomically."""
    write_text(path, json.dumps(data, ensure_ascii=False, indent=indent) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file; errors are the caller's to word (see :mod:`worker.course`)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class Journal:
    """An append-only JSON-lines file, each line fsynced before :meth:`append` returns.

    A crash can leave at most a truncated last line, which :meth:`records` skips.

    >>> import tempfile, pathlib
    >>> j = Journal(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl")
    >>> j.append({"id": "S0001L01"}); [r["id"] for r in j.records()]
    ['S0001L01']
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # a torn last line from a crash: end it, or this record would be glued to it and lost
                line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        # Bytes, decoded line by line: a torn line may end inside a multi-byte character.
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a torn last line from a crash: the record was never complete
                try:
                    record = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):  # bad UTF-8 or JSON; JSON nested too deeply
                    continue  # a torn line that a later append ended, or a damaged one
                if isinstance(record, dict):
                    yield record


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
