"""An agent's attempts are counted per LEGO: different LEGOs failing once each (a flaky API) do not
use up the agent's attempts; one LEGO failing `--max-attempts` times fails the agent. Real
`phase5 worker` processes (the corpus backend, with failures injected by the worker's test hook)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import assert_complete, journal_ids, start_worker
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare


def test_different_legos_failing_once_each_do_not_fail_the_agent(demo_course: Path, procs: list) -> None:
    course = Course.load(demo_course)
    prepare(course, segments=1, orchestrators=1, agents=2)
    flaky = load_plan(course, 1).orchestrator(1).agent_batches[0][1:6]  # five LEGOs of agent 01
    proc = start_worker(course, "--max-attempts", "3", procs=procs, env={"PHASE5_TEST_FAIL_ONCE_IDS": ",".join(flaky)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert_complete(course)
    agent = json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())["agents"][0]
    print(agent)
    assert agent["state"] == "done" and agent["attempts"] == 2  # each LEGO failed once: its second attempt
    assert max(journal_ids(course.root).values()) == 1


def test_one_lego_failing_every_attempt_fails_the_agent(demo_course: Path, procs: list) -> None:
    course = Course.load(demo_course)
    prepare(course, segments=1, orchestrators=1, agents=2)
    stuck = load_plan(course, 1).orchestrator(1).agent_batches[0][2]
    proc = start_worker(course, "--max-attempts", "3", procs=procs, env={"PHASE5_TEST_FAIL_IDS": stuck})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert f"agent 01 failed after 3 attempts ({stuck}: failure injected" in out
