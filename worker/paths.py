"""Where a course's files live (docs/DESIGN.md §3), and the checks on anything that becomes a path (§7).

>>> layout = CourseLayout(Path("/courses/spa_demo"))
>>> layout.agent_file(1, 2, 3).relative_to(layout.root).as_posix()
'phase5_segments/segment_01/orch_02/agent_03_baskets.json'
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from worker.errors import Phase5Error

COURSE_CODE = re.compile(r"^[a-z0-9_]+$")
LEGO_ID = re.compile(r"^S\d{4}L\d{2}$")
SEED_ID = re.compile(r"^S\d{4}$")
PLAN_FILE = re.compile(r"^segment_(\d{2,})\.json$")

DEFAULT_COURSES_DIR = "./vfs/courses"


def resolve_course(course: str, courses_dir: str | os.PathLike[str] | None = None) -> Path:
    """A course folder from a path (anything with a ``/``) or a course code.

    A code is looked up under ``courses_dir`` (or ``$PHASE5_COURSES_DIR``, or ``./vfs/courses``)
    and must be lowercase letters, digits and ``_``: ``..`` and anything else are refused.
    """
    if "/" in course:
        folder = Path(course)
        if not folder.is_dir():
            raise Phase5Error(f"{course}: no such course folder")
        return folder
    if not COURSE_CODE.match(course):
        raise Phase5Error(
            f"{course!r}: not a course code (lowercase letters, digits and _ only, e.g. spa_for_eng);"
            " give a folder path with a / instead"
        )
    base = Path(courses_dir or os.environ.get("PHASE5_COURSES_DIR") or DEFAULT_COURSES_DIR)
    folder = base / course
    if not folder.is_dir():
        raise Phase5Error(f"{course}: unknown course code (no folder {folder})")
    return folder


def course_code(folder: Path) -> str:
    """The code of a course folder, made safe for tmux session names."""
    name = folder.resolve().name.lower()
    return re.sub(r"[^a-z0-9_]", "_", name) or "course"


def course_id(folder: Path) -> str:
    """A name for the course folder that no other folder shares: its code and a short hash of its
    resolved path (``spa_demo-3f2a9c1e``), for the tmux session and the lock of its run. Two
    folders named alike (``a/spa`` and ``b/spa``) get two ids.

    >>> course_id(Path("/c/spa")) != course_id(Path("/d/spa")), course_id(Path("/c/spa"))[:4]
    (True, 'spa-')
    """
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{course_code(folder)}-{digest}"


@dataclass(frozen=True)
class CourseLayout:
    """The files of one course, named exactly as in the original layout."""

    root: Path

    @property
    def lego_pairs(self) -> Path:
        return self.root / "lego_pairs.json"

    @property
    def seed_pairs(self) -> Path:
        return self.root / "seed_pairs.json"

    @property
    def segments_dir(self) -> Path:
        return self.root / "phase5_segments"

    @property
    def languages(self) -> Path:
        """The languages ``prepare`` was given as options, for the commands run later."""
        return self.segments_dir / "languages.json"

    @property
    def final_baskets(self) -> Path:
        return self.root / "lego_baskets.json"

    @property
    def run_state(self) -> Path:
        return self.segments_dir / "run_state.json"

    def segment_plan(self, segment: int) -> Path:
        return self.segments_dir / f"segment_{segment:02d}.json"

    def segment_dir(self, segment: int) -> Path:
        return self.segments_dir / f"segment_{segment:02d}"

    def segment_baskets(self, segment: int) -> Path:
        return self.segments_dir / f"segment_{segment:02d}_baskets.json"

    def orch_dir(self, segment: int, orch: int) -> Path:
        return self.segment_dir(segment) / f"orch_{orch:02d}"

    def orch_baskets(self, segment: int, orch: int) -> Path:
        return self.segment_dir(segment) / f"orch_{orch:02d}_baskets.json"

    def orch_progress(self, segment: int, orch: int) -> Path:
        """The worker's heartbeat and progress file (this project's own design)."""
        return self.segment_dir(segment) / f"orch_{orch:02d}_progress.json"

    def orch_batch_state(self, segment: int, orch: int) -> Path:
        """The ``anthropic-batch`` worker's state: the batch in flight and its conversations."""
        return self.segment_dir(segment) / f"orch_{orch:02d}_batch.json"

    def orch_lock(self, segment: int, orch: int) -> Path:
        return self.segment_dir(segment) / f"orch_{orch:02d}.lock"

    def agent_file(self, segment: int, orch: int, agent: int) -> Path:
        return self.orch_dir(segment, orch) / f"agent_{agent:02d}_baskets.json"

    def agent_journal(self, segment: int, orch: int, agent: int) -> Path:
        return self.orch_dir(segment, orch) / f"agent_{agent:02d}_journal.jsonl"

    def plan_files(self) -> list[Path]:
        """Every segment plan (the course's and its redos'), by segment number."""
        if not self.segments_dir.is_dir():
            return []
        numbered = []
        for path in self.segments_dir.glob("segment_[0-9]*.json"):
            match = PLAN_FILE.match(path.name)
            if match:
                numbered.append((int(match.group(1)), path))
        return [path for _, path in sorted(numbered)]


def course_arg(folder: Path) -> str:
    """``folder`` as a COURSE argument that means this folder again (a bare name would be read as
    a course code), for the commands we suggest to people.

    >>> course_arg(Path("spa")), course_arg(Path("/c/spa"))
    ('./spa', '/c/spa')
    """
    text = str(folder)
    return text if "/" in text else f"./{text}"
