"""A lock file that a dead process never holds."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class FileLock:
    """``fcntl.flock`` on a file: released by the kernel when the process dies, so a crashed
    worker never blocks its relaunch. The file records the holder's pid for messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.write(f"{os.getpid()}\n")
        return True

    def write(self, text: str) -> None:
        """Replace the holder's record (while holding the lock)."""
        assert self.handle is not None, "write() while holding the lock"
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(text)
        self.handle.flush()

    def __exit__(self, *exc: object) -> None:
        if self.handle:
            self.handle.close()

    def owner(self) -> str:
        """The pid written by the current or last holder, for messages."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"
