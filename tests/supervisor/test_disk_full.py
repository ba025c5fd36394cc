"""A full disk stops a run cleanly: one line naming it, exit status 5, no process, window or
session left; once there is space again, `phase5 run` resumes and generates no saved basket
again. The real thing where the machine allows it (a small tmpfs mounted for the test, filled
mid-run), and an injected ENOSPC in the supervisor's own state write everywhere."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.display import PlainDisplay
from supervisor.options import RunOptions
from supervisor.runner import Runner
from supervisor.state import RunState
from tests.conftest import EXAMPLE_COURSE, copy_course
from worker.course import Course
from worker.errors import NoSpace
from worker.exitcodes import ExitCode

pytestmark = [pytest.mark.tmux, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MB tmpfs mounted for the test (root only), unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; the file."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_disk_filling_up_mid_run_stops_it_cleanly_then_it_resumes(small_disk: Path, server, p5) -> None:
    course = copy_course(EXAMPLE_COURSE, small_disk / "spa_demo")
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "run", str(course), *p5.FAST, "--tmux-socket", server.socket_name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=p5.test_env(PHASE5_TEST_DELAY="0.3"),
        )
        p5.wait_for(lambda: p5.journal_lines(course, 1) >= 10, 60, "saved baskets")
        filler = fill(small_disk)
        out, err = run.communicate(timeout=120)
        print(out[-1500:], err)
        assert run.returncode == ExitCode.NO_SPACE, out + err
        line = err.strip()
        assert len(line.splitlines()) == 1 and f"{course}/phase5_segments" in line and "No space left on device" in line
        assert "Traceback" not in out + err
        p5.assert_clean(course, server)
        saved = p5.journal_ids(course)
        filler.unlink()
        again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
        assert again.returncode == 0, again.stdout + again.stderr
        counts = p5.journal_ids(course)
        assert max(counts.values()) == 1 and saved.keys() <= counts.keys()
        p5.assert_valid(course)
        p5.assert_clean(course, server)
    finally:
        for proc in p5.course_processes(course):
            proc.kill()


def test_enospc_in_the_supervisors_own_write(tmp_path: Path, server, p5, monkeypatch) -> None:
    """The run state cannot be saved once segment 1 is under way (an injected ENOSPC): the
    supervisor stops every worker and its session, says so in one error, and a new run resumes."""
    course = copy_course(EXAMPLE_COURSE, tmp_path / "spa_demo")
    saves = {"n": 0}
    real_save = RunState.save

    def save(self: RunState, layout: object) -> None:
        saves["n"] += 1
        if saves["n"] > 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run_state.json"))
        real_save(self, layout)  # type: ignore[arg-type]

    monkeypatch.setattr(RunState, "save", save)
    monkeypatch.setenv("PHASE5_TEST_DELAY", "0.3")
    options = RunOptions(backend="corpus", stagger=0.0, poll=0.2, tmux_socket=server.socket_name, grace=2.0)
    shown = io.StringIO()
    with pytest.raises(NoSpace, match="No space left on device") as caught:
        Runner(Course.load(course), options, PlainDisplay(shown)).run()
    assert caught.value.exit_code == ExitCode.NO_SPACE
    print(shown.getvalue()[-800:])
    assert "stopping the workers" in shown.getvalue()
    p5.assert_clean(course, server)
    monkeypatch.setattr(RunState, "save", real_save)
    monkeypatch.delenv("PHASE5_TEST_DELAY")
    again = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert max(p5.journal_ids(course).values()) == 1
    p5.assert_valid(course)
