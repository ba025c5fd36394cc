"""The supervisor's events: each one line, to the display and appended to
``phase5_segments/supervisor.log`` (which the session's first window follows and a headless run
leaves behind), and kept as the run state's last message for ``status``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from supervisor.display import Display
from supervisor.state import RunState
from worker.safetext import printable

LOG_NAME = "supervisor.log"  # in phase5_segments/


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (O_APPEND): a crash leaves at most a torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


class EventLog:
    """Where the supervisor says what happens. ``state`` (once there is one) keeps the last line."""

    def __init__(self, display: Display, path: Path) -> None:
        self.display = display
        self.path = path
        self.state: RunState | None = None

    def __call__(self, line: str) -> None:
        line = printable(line)  # the log is shown by `tail -F` in the first window: nothing acts on it
        self.display.event(line)
        if self.state is not None:
            self.state.message = line
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")

    def show(self, line: str) -> None:
        """A line for the display only (the validation report's detail, say)."""
        self.display.event(line)
