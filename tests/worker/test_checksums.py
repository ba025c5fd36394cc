"""A well-formed file changed after phase5 wrote it (a hand edit, a bad disk block) is caught by its
checksum: a journal record's own, a basket file's ``.sha256`` beside it. Treated like a corrupted
file: kept aside, rebuilt (from the journal when it holds the baskets, generated again only for the
changed records), with a clear note; ``validate`` says so in one line. Real `phase5 worker` and
`phase5 validate` processes on the example course."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import assert_complete, journal_ids, start_worker
from worker.checksum import sidecar
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare


@pytest.fixture
def course(demo_course: Path, procs: list) -> Course:
    """The example course as one orchestrator of four agents, generated once by a real worker."""
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=1, agents=4)
    first = start_worker(loaded, procs=procs)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    return loaded


def rerun(course: Course, procs: list) -> dict:
    proc = start_worker(course, procs=procs)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())


def test_a_journal_record_changed_by_hand_is_made_again(course: Course, procs: list) -> None:
    layout = CourseLayout(course.root)
    journal = layout.agent_journal(1, 1, 2)
    ids = load_plan(course, 1).orchestrator(1).agent_batches[1]
    lines = journal.read_text().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    edited = [r for r in records if r["basket"]["e"]][:2]  # one letter changed, one e list emptied
    first, second = edited[0], edited[1]
    phrase = first["basket"]["e"][0][1]
    first["basket"]["e"][0][1] = phrase[:-1] + ("x" if phrase[-1] != "x" else "y")
    second["basket"]["e"] = []
    journal.write_text("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records))
    for path in (layout.agent_file(1, 1, 2), sidecar(layout.agent_file(1, 1, 2)), layout.orch_baskets(1, 1)):
        path.unlink()  # as if the worker had died before writing them: the journal is all there is
    before = journal_ids(course.root)  # the production reader: the two changed records are not counted
    assert first["id"] not in before and second["id"] not in before
    progress = rerun(course, procs)
    note = next(n for n in progress["notes"] if "agent_02_journal.jsonl" in n)
    print(note)
    assert f"2 record(s) changed since they were written ({first['id']}, {second['id']})" in note
    assert len(list(journal.parent.glob("agent_02_journal.jsonl.corrupt-*"))) == 1  # kept as it was
    after = journal_ids(course.root)
    assert after == before + Counter([first["id"], second["id"]]) and set(after) >= set(ids)  # those two, once
    baskets = json.loads(layout.agent_file(1, 1, 2).read_text())
    assert baskets[first["id"]]["e"][0][1] == phrase and baskets[second["id"]]["e"]
    assert_complete(course)


def validate(course: Course, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "validate", str(course.root), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_basket_file_changed_by_hand_is_refused_then_rebuilt(course: Course, procs: list) -> None:
    layout = CourseLayout(course.root)
    orch_file, agent_file = layout.orch_baskets(1, 1), layout.agent_file(1, 1, 3)
    for path in (orch_file, agent_file):  # well-formed JSON, one letter changed
        baskets = json.loads(path.read_text())
        phrase = next(b["e"][0] for b in baskets.values() if b["e"])
        phrase[0] = phrase[0].replace("a", "o", 1) if "a" in phrase[0] else phrase[0] + "s"
        path.write_text(json.dumps(baskets, ensure_ascii=False, indent=1) + "\n")
    checked = validate(course, orch_file)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    line = checked.stderr.strip()
    print(line)
    assert "orch_01_baskets.json: does not match its checksum (orch_01_baskets.json.sha256)" in line
    assert len(line.splitlines()) == 1
    before = journal_ids(course.root)
    progress = rerun(course, procs)
    print(progress["notes"])
    assert any("agent_03_baskets.json was not valid (" in n and "checksum" in n for n in progress["notes"])
    assert len(list(agent_file.parent.glob("agent_03_baskets.json.corrupt-*"))) == 1
    assert len(list(orch_file.parent.glob("orch_01_baskets.json.corrupt-*"))) == 1
    assert journal_ids(course.root) == before  # rebuilt from the journal: nothing generated again
    assert_complete(course)
    assert validate(course, orch_file).returncode in (0, 1)  # readable again (a part of the course: not complete)
