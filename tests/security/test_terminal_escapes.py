"""Text from outside (API errors, model answers) never acts on a terminal: control characters are
shown as escapes everywhere phase5 shows text, rich never reads such text as markup, and a phrase
holding a control or bidi control character is refused (a repair cause), so no basket saves one."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from scripts.fake_anthropic import HOSTILE_TEXT
from supervisor.display import OrchRow, rows_table
from supervisor.tmux import session_name
from worker.atomic import Journal
from worker.paths import CourseLayout
from worker.safetext import BIDI_CONTROLS

#: Raw characters a terminal acts on; none may reach an output, a log, a pane or a saved basket.
RAW = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}]")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "courses" / "spa_demo"
SMALL = ["--segments", "1", "--orchestrators", "2", "--agents", "2"]
API = ["--backend", "anthropic", "--stagger", "0", "--poll", "0.2", "--plain", "--model", "claude-sonnet-5"]


def test_tables_and_pane_show_markup_and_escapes_as_text() -> None:
    from worker.pane import PaneDisplay

    row = OrchRow(segment=1, orch=1, window="s1-o1", state="failed", total=3, error=HOSTILE_TEXT)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(rows_table("segment 1", [row]))  # a string cell would be read as markup: MarkupError
    shown = console.file.getvalue()
    assert "[/red][bold]" in shown and "\\x1b]0;pwned-title" in shown and not RAW.search(shown)

    class Failed:  # what PaneDisplay.close reads of an orchestrator
        settings = type("S", (), {"segment": 1, "orch": 1, "backend": "anthropic", "max_cost": None})()
        agents: list = []
        usage = type("U", (), {"total": 0})()
        cost_usd = 0.0
        state, done, total, rate, eta = "failed", 0, 3, 0.0, None
        batch_session = None
        error = f"agent 01 failed ({HOSTILE_TEXT})"

    stream = io.StringIO()
    PaneDisplay(stream).close(Failed())  # type: ignore[arg-type]
    assert "[/red][bold]" in stream.getvalue() and not RAW.search(stream.getvalue())


def saved_texts(course: Path) -> list[str]:
    """Every string of every basket saved (journals and basket files)."""
    texts: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for path in CourseLayout(course).segments_dir.rglob("agent_*_journal.jsonl"):
        for record in Journal(path).records():
            walk(record.get("basket"))
    for path in [*course.rglob("*_baskets.json"), CourseLayout(course).final_baskets]:
        walk(json.loads(path.read_text()))
    return texts


@pytest.mark.tmux
@pytest.mark.slow
def test_a_model_writing_control_characters_gets_them_refused(cleanup_course: Path, server, p5, fake_api) -> None:
    course = cleanup_course
    api = fake_api(EXAMPLE, "--fault", "hostile:0.5", "--seed", "4")
    env = p5.test_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=api.base_url)
    result = p5.phase5("run", str(course), *API, *SMALL, "--tmux-socket", server.socket_name, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    requests = [r for r in api.requests() if r.get("op") == "message"]
    hostile = [r for r in requests if r.get("fault") == "hostile"]
    assert len(hostile) >= 20, len(hostile)
    repairs = [r for r in requests if r.get("repair")]
    assert any("a control character U+001B" in r.get("repair_text", "") for r in repairs)
    texts = saved_texts(course)
    assert len(texts) > 500 and not [t for t in texts if RAW.search(t)]
    p5.assert_valid(course)
    p5.wait_for(lambda: not p5.course_processes(course), 20, "every process of the run to end")


@pytest.mark.tmux
@pytest.mark.slow
def test_an_api_error_with_escapes_is_shown_as_text(cleanup_course: Path, server, p5, fake_api) -> None:
    """Every request is answered 500 with a hostile message: the workers fail, and what the run,
    its log, its panes and `status` show of the error holds no raw control character, and its
    `[/red]` as text (a worker's pane display used to die of a MarkupError on it)."""
    course = cleanup_course
    api = fake_api(EXAMPLE, "--fault", "hostile_error:1")
    env = p5.test_env(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=api.base_url)
    once = ["--retries", "0", "--agent-attempts", "1", "--max-attempts", "1", "--cold-start"]
    try:
        result = p5.phase5(
            "run", str(course), *API, *SMALL, *once, "--tmux-socket", server.socket_name, env=env, timeout=180
        )
        assert result.returncode == 1, result.stdout + result.stderr
        log = (CourseLayout(course).segments_dir / "supervisor.log").read_text()
        status = p5.phase5("status", str(course), "--agents")
        as_json = p5.phase5("status", str(course), "--json")
        for shown in (result.stdout, result.stderr, log, status.stdout, as_json.stdout):
            assert not RAW.search(shown), repr(RAW.search(shown))
        assert "pwned-title" in log and "[/red][bold]" in status.stdout
        assert "pwned-title" in json.loads(as_json.stdout)["segments"][0]["orchestrators"][0]["error"]
        failed = [
            p
            for p in server.cmd(
                "list-panes", "-s", "-t", f"={session_name(course)}", "-F", "#{pane_id}\t#{pane_dead}\t#{pane_title}"
            ).stdout
        ]
        dead = [line.split("\t") for line in failed if line.split("\t")[1] == "1"]
        assert dead, failed
        for pane_id, _, title in dead:
            assert title != "pwned-title"
            screen = "\n".join(server.cmd("capture-pane", "-p", "-t", pane_id).stdout)
            assert "[/red][bold]" in screen and "Traceback" not in screen and "MarkupError" not in screen
    finally:
        p5.phase5("stop", str(course), "--tmux-socket", server.socket_name)
    p5.wait_for(lambda: not p5.course_processes(course), 20, "every process of the run to end")
