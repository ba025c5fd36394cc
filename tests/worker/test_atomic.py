"""Atomic writes and the journal (docs/DESIGN.md §3): a reader never sees half a file, a crash never
leaves one, and a torn journal line costs at most its own record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import worker.atomic
from worker.atomic import Journal, write_json, write_text

DEADLINE = 20.0

# A child that rewrites one JSON file as fast as it can: version n holds n and a payload whose
# size varies with n, so a half-written file cannot parse, and a mixed one cannot check out.
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from worker.atomic import write_json
    path = Path(sys.argv[1])
    n = 0
    while True:
        n += 1
        write_json(path, {"n": n, "payload": ["é" * 50] * (200 + 37 * (n % 11)), "end": n})
        print(n, flush=True)
    """
)

APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from worker.atomic import Journal
    journal = Journal(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        journal.append({"n": n, "text": "mañana " * (5 + n % 40)})
        print(n, flush=True)
    """
)


def poll(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)  # polling interval, not synchronisation
    raise AssertionError(f"timed out waiting for {what}")


def start(script: str, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)


def wait_for_count(proc: subprocess.Popen[str], count: int) -> int:
    """Read the child's progress lines until it reports ``count`` completed writes."""
    assert proc.stdout is not None
    done = 0
    while done < count:
        line = proc.stdout.readline()
        assert line, f"child exited early with {proc.poll()}"
        done = int(line)
    return done


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=DEADLINE)
    if proc.stdout:
        proc.stdout.close()


def check_version(data: Any) -> int:
    assert isinstance(data, dict) and data["n"] == data["end"]
    assert len(data["payload"]) == 200 + 37 * (data["n"] % 11)
    return data["n"]


def test_write_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.json"
    for n in range(5):
        write_json(path, {"n": n, "text": "año"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"n": 4, "text": "año"}
    assert [p.name for p in path.parent.iterdir()] == ["data.json"]
    write_text(tmp_path / "note.txt", "hola\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt", "sub"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.json"
    write_json(path, {"n": 1})
    with pytest.raises(TypeError):
        write_json(path, {"n": object()})  # not serialisable: fails before any file is touched
    assert json.loads(path.read_text()) == {"n": 1}

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(worker.atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_json(path, {"n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_killed_writer_never_leaves_a_half_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    seen = []
    for round_number in range(12):
        proc = start(WRITER, path)
        try:
            wait_for_count(proc, 1 + round_number % 4)
        finally:
            kill(proc)  # most likely in the middle of the next write
        seen.append(check_version(json.loads(path.read_text(encoding="utf-8"))))
        # only the file itself, or hidden temporaries of the killed write, are left
        strays = [p.name for p in tmp_path.iterdir() if p.name != "data.json"]
        assert all(name.startswith(".data.json.") and name.endswith(".tmp") for name in strays), strays
    assert all(n >= 1 for n in seen)


def test_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    proc = start(WRITER, path)
    try:
        wait_for_count(proc, 1)
        versions = set()
        deadline = time.monotonic() + DEADLINE
        while len(versions) < 30 and time.monotonic() < deadline:
            versions.add(check_version(json.loads(path.read_text(encoding="utf-8"))))
        assert len(versions) >= 30, versions  # the reads did overlap many writes
    finally:
        kill(proc)


def test_journal_skips_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "agent.jsonl")
    journal.append({"id": "S0001L01", "text": "español"})
    journal.append({"id": "S0001L02", "text": "mañana"})
    whole = journal.path.read_bytes()
    second = whole.index(b'{"id":"S0001L02"')
    for cut in range(second, len(whole) - 1):  # every torn length, including inside the 2-byte "ñ"
        journal.path.write_bytes(whole[:cut])
        assert [r["id"] for r in journal.records()] == ["S0001L01"], cut
    assert list(Journal(tmp_path / "absent.jsonl").records()) == []


def test_journal_append_after_a_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "agent.jsonl")
    journal.append({"id": "S0001L01"})
    whole = journal.path.read_bytes()
    journal.append({"id": "S0001L02", "text": "mañana"})
    torn = journal.path.read_bytes()[: len(whole) + 25]  # a crash in the middle of the second record
    journal.path.write_bytes(torn)
    journal.append({"id": "S0001L03"})  # the resumed run goes on appending
    journal.append({"id": "S0001L04"})
    assert [r["id"] for r in journal.records()] == ["S0001L01", "S0001L03", "S0001L04"]


def test_killed_appender_loses_at_most_the_record_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "agent.jsonl"
    for round_number in range(6):
        proc = start(APPENDER, path)
        try:
            reported = wait_for_count(proc, 3 + round_number)
        finally:
            kill(proc)
        numbers = [r["n"] for r in Journal(path).records()]
        # each run counts from 1 again; the last run's reported appends are all there
        last_run = numbers[len(numbers) - numbers[::-1].index(1) - 1 :]
        assert last_run[:reported] == list(range(1, reported + 1))
        assert last_run == list(range(1, len(last_run) + 1))
