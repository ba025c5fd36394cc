"""Shared fixtures: course copies in a temporary folder (tests never write into the checkout)."""

from __future__ import annotations

import json
import selectors
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_COURSE = ROOT / "examples" / "courses" / "spa_demo"
SHARED_COURSE = ROOT.parent / "shared" / "data" / "spa_for_eng"


def copy_course(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:  # shared/ is read-only; the copy must be writable
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


@pytest.fixture
def demo_course(tmp_path: Path) -> Path:
    """A writable copy of the example course (48 seeds, 125 baskets)."""
    return copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")


@pytest.fixture
def spa_course(tmp_path: Path) -> Path:
    """A writable copy of the real course in ../shared (668 seeds, 1,766 baskets), or a skip."""
    if not (SHARED_COURSE / "lego_pairs.json").exists():
        pytest.skip(f"real course not found at {SHARED_COURSE} (../shared beside the checkout)")
    return copy_course(SHARED_COURSE, tmp_path / "spa_for_eng")


# -- the fake Anthropic API (scripts/fake_anthropic.py) as a real subprocess -------------------------

FAKE_ANTHROPIC = ROOT / "scripts" / "fake_anthropic.py"


class FakeAPIServer:
    """A running ``scripts/fake_anthropic.py``: its ``base_url`` and its JSON-lines request log."""

    def __init__(self, process: "subprocess.Popen[str]", base_url: str, log: Path, stderr: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.log = log
        self.stderr = stderr

    def requests(self) -> list[dict]:
        """Every request logged so far, in arrival order (a line still being written is skipped)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text(encoding="utf-8").splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_line(process: "subprocess.Popen[str]", deadline: float) -> str:
    """The first stdout line of ``process``, or '' at the deadline or when it exits first."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                return process.stdout.readline()
            if process.poll() is not None:
                return ""
    return ""


@pytest.fixture
def fake_api(tmp_path: Path):
    """Factory: ``fake_api(course, *args)`` starts the fake server on a free port of 127.0.0.1
    with ``args`` (``--latency``, ``--fault``, ...) and returns a :class:`FakeAPIServer`. Every
    server started is terminated, and waited for, at teardown. Nothing global is set: tests pass
    ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` with ``monkeypatch.setenv``."""
    started: list[FakeAPIServer] = []

    def start(course: Path, *args: str, timeout: float = 30.0) -> FakeAPIServer:
        number = len(started) + 1
        log, stderr = tmp_path / f"fake_api_{number}.jsonl", tmp_path / f"fake_api_{number}.stderr"
        command = [sys.executable, str(FAKE_ANTHROPIC), "--course", str(course), "--log", str(log),
                   "--max-seconds", "900", *args]
        with stderr.open("w") as err:  # a file, not a pipe: a full pipe would block the server
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        line = _read_line(process, time.monotonic() + timeout)
        server = FakeAPIServer(process, line.strip().rpartition(" ")[2], log, stderr)
        started.append(server)
        if not line.startswith("listening on http://127.0.0.1:"):
            server.stop()
            pytest.fail(f"fake API did not start: {line!r} {stderr.read_text()[-2000:]}")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def procs():
    """A list to put started subprocesses in; every one still running is killed at teardown."""
    started: list = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
