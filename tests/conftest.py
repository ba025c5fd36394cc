"""Shared fixtures: course copies in a temporary folder (tests never write into the checkout)."""

from __future__ import annotations

import shutil
import stat
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
