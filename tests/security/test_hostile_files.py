"""Files a user or a broken disk may hand phase5: JSON that Python refuses to build (nesting deeper
than its recursion limit, an integer of 100,000 digits), ids holding line breaks, a course folder
that cannot be written, a folder where a journal or the lock should be. Each gives one line on
stderr naming the file, exit status 2, no traceback and nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.lock import lock_path
from tests.conftest import EXAMPLE_COURSE, copy_course
from worker.paths import CourseLayout

NEVER = "phase5_test_never_started"  # a tmux socket no test starts: these runs end before any tmux work


def one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The single error line of ``result`` (asserting exit 2 and no traceback), checked for ``expected``."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phase5: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def rewrite(course: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = CourseLayout(course).lego_pairs
    data = json.loads(path.read_text())
    text = change(data)
    path.write_text(text if isinstance(text, str) else json.dumps(data))


def deep(data: dict) -> str:
    return json.dumps(data).replace('"seeds": [', '"seeds": [' + "[" * 100_000 + "]" * 100_000 + ",", 1)


def long_int(data: dict) -> str:
    return json.dumps(data).replace("{", '{"version": ' + "9" * 100_000 + ", ", 1)


def newline_lego_id(data: dict) -> None:
    data["seeds"][2][2][1][0] = "S0003L02\nphase5: all good"


def newline_seed_id(data: dict) -> None:
    data["seeds"][2][0] = "S0003\nphase5: all good"
    data["seeds"][2][1] = ["", "x"]


CASES = {
    "deep": (deep, ["lego_pairs.json: not usable JSON: nested too deeply"]),
    "long_int": (long_int, ["lego_pairs.json: not usable JSON: Exceeds the limit (4300 digits)"]),
    "newline_lego_id": (newline_lego_id, ["LEGO 'S0003L02\\nphase5: all good': id"]),
    "newline_seed_id": (newline_seed_id, ["lego_pairs.json: 'S0003\\nphase5: all good': seed_id"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "prepare", "run"])
def test_unusable_course_json_is_one_line(tmp_path: Path, p5, case: str, command: str) -> None:
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    change, expected = CASES[case]
    rewrite(course, change)
    extra = [*p5.FAST, "--tmux-socket", NEVER] if command == "run" else []
    print(one_line_exit_2(p5.phase5(command, str(course), *extra), *expected))
    assert not CourseLayout(course).segments_dir.exists()


def test_unusable_basket_and_plan_json_is_one_line(tmp_path: Path, p5) -> None:
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    baskets = tmp_path / "baskets.json"
    baskets.write_text("[" * 100_000 + "]" * 100_000)
    print(one_line_exit_2(p5.phase5("validate", str(course), str(baskets)), "baskets.json: not usable JSON"))
    assert p5.phase5("prepare", str(course)).returncode == 0
    plan = CourseLayout(course).segment_plan(2)
    plan.write_text(plan.read_text().replace("{", '{"n": ' + "1" * 100_000 + ", ", 1))
    print(one_line_exit_2(p5.phase5("status", str(course)), "segment_02.json: not usable JSON"))


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` made unwritable: immutable for root (``chattr +i``), read-only for anyone else."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no way to make a folder unwritable")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("prepared", [False, True], ids=["fresh", "prepared"])
def test_an_unwritable_course_folder_is_one_line(tmp_path: Path, p5, prepared: bool) -> None:
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    if prepared:
        assert p5.phase5("prepare", str(course)).returncode == 0
    folder = CourseLayout(course).segments_dir if prepared else course
    with unwritable(folder):
        for args in (["run", str(course), *p5.FAST, "--tmux-socket", NEVER], ["prepare", str(course)]):
            if prepared and args[0] == "prepare":
                continue  # the same plan again writes nothing: no error to give
            line = one_line_exit_2(p5.phase5(*args), str(folder))
            print(line)
            assert "Permission denied" in line or "Operation not permitted" in line


def test_a_folder_where_a_journal_or_the_lock_should_be(tmp_path: Path, p5, request) -> None:
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    layout = CourseLayout(course)
    assert p5.phase5("prepare", str(course)).returncode == 0
    journal = layout.agent_journal(1, 1, 1)
    journal.mkdir()
    worker = p5.phase5("worker", str(course), "--segment", "1", "--orch", "1", "--plain")
    print(one_line_exit_2(worker, "agent_01_journal.jsonl: Is a directory"))
    progress = json.loads(layout.orch_progress(1, 1).read_text())  # the reason, for the supervisor
    assert progress["state"] == "failed" and "agent_01_journal.jsonl: Is a directory" in progress["error"]
    print(one_line_exit_2(p5.phase5("cost", str(course)), "agent_01_journal.jsonl: Is a directory"))
    journal.rmdir()
    lock = lock_path(course)
    lock.mkdir()
    request.addfinalizer(lock.rmdir)
    for args in (
        ["run", str(course), *p5.FAST, "--tmux-socket", NEVER],
        ["run", str(course), *p5.FAST, "--tmux-socket", NEVER, "--detach"],
        ["status", str(course)],
        ["stop", str(course), "--tmux-socket", NEVER],
    ):
        print(one_line_exit_2(p5.phase5(*args), f"{lock.name}: Is a directory"))
