"""Atomic file writes: a reader never sees half a file and a crash never leaves one.

Every file this project writes goes through :func:`write_json` or :func:`write_text`
(temporary file in the same folder, fsync, rename, fsync of the folder), or is a journal
appended line by line with :class:`Journal`.

Atomic writes guard against half files, not against a well-formed file changed afterwards (a
hand edit, a bad disk block): journal records carry a checksum (:data:`CHECKSUM_KEY`), and basket
files a ``.sha256`` file beside them (:mod:`worker.checksum`).
"""

from __future__ import annotations

import contextlib
import hashlib
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # say which file could not be written, not the temporary name
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None
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


#: The key of a journal record's checksum: the SHA-256 of the rest of the record (sorted keys).
CHECKSUM_KEY = "sha256"


def record_checksum(record: dict[str, Any]) -> str:
    rest = {key: value for key, value in record.items() if key != CHECKSUM_KEY}
    text = json.dumps(rest, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Journal:
    """An append-only JSON-lines file, each line fsynced before :meth:`append` returns, each
    record with its checksum.

    A crash can leave at most a truncated last line, which :meth:`records` skips. A complete
    record whose checksum does not match (changed after it was written) is skipped too, and
    listed in :attr:`damaged` for the caller to act on. A record without a checksum (an older
    journal) is taken as it is.

    >>> import tempfile, pathlib
    >>> j = Journal(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl")
    >>> j.append({"id": "S0001L01"}); [r["id"] for r in j.records()]
    ['S0001L01']
    >>> _ = j.path.write_text(j.path.read_text().replace("L01", "L02")); list(j.records()), j.damaged
    ([], ['S0001L02'])
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.damaged: list[str] = []  # ids (or line numbers) of the records the last read refused

    def append(self, record: dict[str, Any]) -> None:
        record = {**record, CHECKSUM_KEY: record_checksum(record)}
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
        self.damaged = []
        if not self.path.exists():
            return
        # Bytes, decoded line by line: a torn line may end inside a multi-byte character.
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.endswith(b"\n"):
                    break  # a torn last line from a crash: the record was never complete
                try:
                    record = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):  # bad UTF-8 or JSON; JSON nested too deeply
                    continue  # a torn line that a later append ended, or a damaged one
                if not isinstance(record, dict):
                    continue
                if CHECKSUM_KEY in record and record[CHECKSUM_KEY] != record_checksum(record):
                    self.damaged.append(str(record.get("id") or f"line {number}"))
                    continue
                yield record

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the journal with ``records`` (as read: their checksums kept), atomically."""
        write_text(self.path, "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
