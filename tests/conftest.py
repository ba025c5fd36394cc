"""Shared fixtures: course copies in a temporary folder (tests never write into the checkout)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from scripts.fake_anthropic import ServerProcess

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


@pytest.fixture
def fake_api(tmp_path: Path):
    """Factory: ``fake_api(course, *args)`` starts the fake server on a free port of 127.0.0.1
    with ``args`` (``--latency``, ``--fault``, ...) and returns a :class:`ServerProcess`. Every
    server started is terminated, and waited for, at teardown. Nothing global is set: tests pass
    ``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` with ``monkeypatch.setenv``."""
    started: list[ServerProcess] = []

    def start(course: Path, *args: str, timeout: float = 30.0) -> ServerProcess:
        log = tmp_path / f"fake_api_{len(started) + 1}.jsonl"
        try:
            server = ServerProcess(course, log, args, timeout=timeout)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        started.append(server)
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
