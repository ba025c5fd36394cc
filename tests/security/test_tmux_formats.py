"""tmux never expands a string phase5 hands it: ``#(...)`` (a shell command) and ``#{...}`` (a
format) in a path, a course folder's name, a window name, an argument or an environment value
reach tmux and the processes literally, and run nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from supervisor.tmux import CourseSession, session_name
from tests.conftest import EXAMPLE_COURSE, copy_course

pytestmark = pytest.mark.tmux

HOSTILE = "#(touch {marker})#{{session_name}}#{{pane_pid}}"
REPORT = (
    "import json, os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(json.dumps("
    "[os.getcwd(), os.environ.get('PHASE5_HOSTILE'), sys.argv[2:]])); time.sleep(600)"
)


def hostile(marker: str) -> str:
    return HOSTILE.format(marker=marker)


def markers(*places: Path) -> list[str]:
    """Every file a ``#(touch pwned_...)`` ran by tmux would have made (tmux runs format jobs in
    the server's or the client's folder, so every folder involved is searched)."""
    found = []
    for place in {*places, Path.home(), Path("/"), Path.cwd()}:
        found += [str(p) for p in place.glob("pwned_*")]
    for place in places:
        found += [str(p) for p in place.rglob("pwned_*")]
    return sorted(set(found))


def test_window_names_folders_arguments_and_values_reach_tmux_literally(server, tmp_path: Path, p5) -> None:
    cwd = tmp_path / hostile("pwned_cwd")
    cwd.mkdir()
    session = CourseSession(tmp_path / hostile("pwned_code"), server.socket_name)
    assert "#" not in session.name and "(" not in session.name
    session.ensure()
    session.set_environment({"PHASE5_HOSTILE": hostile("pwned_env")})
    out = tmp_path / "seen.json"
    name = "s1-o1" + hostile("pwned_name")
    argv = [sys.executable, "-c", REPORT, str(out), hostile("pwned_arg")]
    try:
        info = session.launch(name, argv, cwd)
        p5.wait_for(lambda: out.exists() and out.read_text(), 10, "the window's process to report")
        assert json.loads(out.read_text()) == [str(cwd), hostile("pwned_env"), [hostile("pwned_arg")]]
        pane = session.pane(info.window_id)
        assert pane is not None and pane.window_name == name
        shown = server.cmd("display-message", "-p", "-t", info.pane_id, "#{pane_current_path}").stdout
        assert shown == [str(cwd)]
        out.unlink()
        session.respawn(info.pane_id, argv, cwd)  # respawn-pane's start directory too
        p5.wait_for(lambda: out.exists() and out.read_text(), 10, "the respawned process to report")
        assert json.loads(out.read_text())[0] == str(cwd)
    finally:
        session.kill()
    assert markers(tmp_path) == []


def test_a_run_from_a_hostile_folder_with_a_hostile_course_path(server, tmp_path: Path, p5) -> None:
    """The whole job, launched from a folder named ``#(touch ...)#{...}``, on a course whose path
    and folder name hold formats, with such a value in the workers' environment."""
    cwd = tmp_path / hostile("pwned_cwd")
    cwd.mkdir()
    course = copy_course(EXAMPLE_COURSE, tmp_path / hostile("pwned_dir") / ("spa_demo" + hostile("pwned_code")))
    env = p5.test_env(PHASE5_HOSTILE=hostile("pwned_env"))
    try:
        result = p5.phase5("run", str(course), *p5.FAST, "--tmux-socket", server.socket_name, env=env, cwd=cwd)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "result    PASS" in result.stdout
        p5.wait_for(lambda: not p5.course_processes(course), 20, "every process of the run to end")
        assert not server.has_session(session_name(course))
    finally:
        for proc in p5.course_processes(course):
            proc.kill()
    assert markers(tmp_path) == []
    assert os.listdir(cwd) == []
