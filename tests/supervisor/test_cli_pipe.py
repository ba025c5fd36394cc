"""`phase5 ... | head`: when the reader goes away, phase5 stops quietly, as Unix tools do (status
141, the shell's code for SIGPIPE), without an error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_ends_quietly(demo_course: Path) -> None:
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait(timeout=10)  # the pipe's reading end is closed: every write to it fails
    assert reader.stdin is not None
    writer = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "prepare", str(demo_course), "--json"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    reader.stdin.close()
    assert writer.returncode == 141 and writer.stderr == b"", writer.stderr
