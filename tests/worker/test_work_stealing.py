"""Work stealing inside one orchestrator (worker/board.py): an agent with nothing left of its own
takes pending baskets of the agent with the most left and saves them into THAT agent's journal and
file. Real `phase5 worker` processes on the example course (the corpus backend, and the anthropic
backend against the fake API), plus the board's attempt accounting driven directly."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import wait_for
from worker.agent import Agent
from worker.atomic import Journal
from worker.board import WorkBoard
from worker.course import Course
from worker.generators import make_generator
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare
from worker.report import basket_problems, load_basket_file

AGENTS = 4
SLOW = 0.25  # seconds per basket of the slow agent


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=1, agents=AGENTS)
    return loaded


def batches(course: Course) -> list[list[str]]:
    return load_plan(course, 1).orchestrator(1).agent_batches


def start_worker(course: Course, procs: list, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return helpers.start_worker(course, *extra, procs=procs, env=env)


def slow_env(ids: list[str]) -> dict[str, str]:
    return {"PHASE5_TEST_SLOW_IDS": ",".join(ids), "PHASE5_TEST_SLOW_DELAY": str(SLOW)}


def journals(course: Course) -> dict[int, Counter]:
    """Per agent number: how many journal lines each id has."""
    out: dict[int, Counter] = defaultdict(Counter)
    for number in range(1, AGENTS + 1):
        for record in Journal(CourseLayout(course.root).agent_journal(1, 1, number)).records():
            out[number][record["id"]] += 1  # the production reader: a line being written is not counted yet
    return out


def progress(course: Course) -> dict:
    return json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())


def assert_layout_kept(course: Course) -> None:
    """Every agent file holds exactly its plan batch; every id has exactly one journal line, in
    its owner's journal; the orchestrator file is complete and valid."""
    layout = CourseLayout(course.root)
    saved = journals(course)
    for number, batch in enumerate(batches(course), start=1):
        baskets, duplicates = load_basket_file(layout.agent_file(1, 1, number))
        assert list(baskets) == batch and not duplicates
        assert sorted(saved[number]) == sorted(batch), f"agent {number:02d}'s journal"
        assert set(saved[number].values()) == {1}, f"agent {number:02d}: an id saved twice"
    expected = load_plan(course, 1).orchestrator(1).lego_ids
    baskets, duplicates = load_basket_file(layout.orch_baskets(1, 1))
    assert list(baskets) == expected and not duplicates
    assert basket_problems(course, baskets, expected) == []


# -- real worker processes -----------------------------------------------------------------------------


def test_idle_agents_take_the_slow_agents_baskets(course: Course, procs: list) -> None:
    slow = batches(course)[1]  # agent 02: ~31 baskets of SLOW s each, ~7.8 s alone
    proc = start_worker(course, procs, env=slow_env(slow))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_layout_kept(course)
    state = progress(course)
    # The work itself (from the worker's start to its orchestrator file, not Python's start-up):
    # four threads share the slow baskets, so well under the slow agent alone.
    took = CourseLayout(course.root).orch_baskets(1, 1).stat().st_mtime - state["started_at"]
    alone = len(slow) * SLOW
    assert took < 0.5 * alone, (took, alone)
    agents = state["agents"]
    assert agents[1]["stolen"] >= len(slow) // 2  # three thieves took most of them
    assert agents[1]["done"] == agents[1]["total"] == len(slow)
    assert all(a["state"] == "done" and a["attempts"] == 1 for a in agents)


def test_sigkill_while_stealing_then_restart_regenerates_nothing_saved(course: Course, procs: list) -> None:
    slow = batches(course)[1]
    proc = start_worker(course, procs, env=slow_env(slow))
    # Killed once the thieves have saved some of agent 02's baskets (from the end of its batch).
    wait_for(
        lambda: sum(journals(course)[2].values()) >= 8 and slow[-1] in journals(course)[2], what="stolen baskets saved"
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    before = journals(course)
    assert sum(before[2].values()) < len(slow)  # killed mid-run
    assert not CourseLayout(course.root).agent_file(1, 1, 2).exists()

    rerun = start_worker(course, procs, env=slow_env(slow))
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert_layout_kept(course)  # nothing saved before the kill was made again
    after = journals(course)
    assert all(after[n][i] == 1 for n in before for i in before[n])


def test_a_failing_id_still_fails_its_owner_after_max_attempts(course: Course, procs: list) -> None:
    batch = batches(course)
    failing = batch[1][-1]  # the end of agent 02's batch: what thieves take first
    env = {**slow_env(batch[1]), "PHASE5_TEST_FAIL_IDS": failing}
    proc = start_worker(course, procs, "--max-attempts", "2", env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "agent 02 failed after 2 attempts" in out and failing in out
    layout = CourseLayout(course.root)
    assert not layout.orch_baskets(1, 1).exists() and not layout.agent_file(1, 1, 2).exists()
    for other in (1, 3, 4):
        assert list(load_basket_file(layout.agent_file(1, 1, other))[0]) == batch[other - 1]
    saved = journals(course)
    assert failing not in saved[2] and set(saved[2].values()) <= {1}
    state = progress(course)
    assert state["state"] == "failed"
    assert state["agents"][1]["state"] == "failed" and state["agents"][1]["attempts"] == 2
    assert all(a["attempts"] == 1 for i, a in enumerate(state["agents"]) if i != 1)


def test_stolen_requests_use_the_owners_cached_prefix(
    course: Course, procs: list, fake_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The anthropic backend against the fake API, the SDK's retries off and the first three
    requests answered 500: those owners fail an attempt, back off and make the ids again; every
    request of an agent's ids, whichever pool thread made it, carries that agent's prompt prefix.
    With an API backend the worker runs a pool of threads, one per request in flight: the slow
    agent's 31 baskets of 0.25 s each are made side by side, not one after another (7.75 s)."""
    server = fake_api(course.root, "--latency", "0.02", "--fault-first", "500:3")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    batch = batches(course)
    started = time.monotonic()
    proc = start_worker(course, procs, "--backend", "anthropic", "--retries", "0", env=slow_env(batch[2]))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < len(batch[2]) * SLOW / 2
    assert_layout_kept(course)
    owner = {i: n for n, ids in enumerate(batch, start=1) for i in ids}
    prefixes: dict[int, set[str]] = defaultdict(set)
    requests = [r for r in server.requests() if r.get("op") == "message"]
    for request in requests:
        prefixes[owner[request["lego_id"]]].add(request["prefix_hash"])
    assert all(len(hashes) == 1 for hashes in prefixes.values()), prefixes
    assert len({h for hashes in prefixes.values() for h in hashes}) == AGENTS
    state = progress(course)
    assert state["pacing"]["peak_in_flight"] > AGENTS and state["pacing"]["sent"] == len(requests)
    failed = [r["lego_id"] for r in requests if r.get("status") == 500 or r.get("fault") == "500"]
    assert len(failed) == 3
    for lego_id in failed:  # made again after the owner's backoff, saved once
        assert sum(1 for r in requests if r["lego_id"] == lego_id) >= 2
        assert state["agents"][owner[lego_id] - 1]["attempts"] == 2


# -- the board's accounting, driven directly -------------------------------------------------------------


def make_agents(course: Course, sizes: list[int], stop: threading.Event) -> list[Agent]:
    generator = make_generator("corpus", course)
    agents, start = [], 1  # LEGO #1 aside: its basket needs nothing
    for number, size in enumerate(sizes, start=1):
        agents.append(Agent(course, 1, 1, number, course.ids[start : start + size], generator, stop))
        start += size
    return agents


def test_failures_of_one_attempt_count_once_and_max_attempts_fails_the_owner(course: Course) -> None:
    stop = threading.Event()
    owner, thief = make_agents(course, [6, 1], stop)
    board = WorkBoard([owner, thief], stop, max_attempts=3, backoff=0.05)
    board.start()
    own = board.claim(owner)
    assert own is not None and (own.owner, own.lego_id) == (owner, owner.lego_ids[0])
    mine = board.claim(thief)
    assert mine is not None and mine.owner is thief
    board.save(mine, thief.make(mine.lego_id), thief)
    assert thief.status.state == "done" and thief.file.exists()
    stolen = board.claim(thief)  # nothing of its own left: the end of the owner's batch
    assert stolen is not None and (stolen.owner, stolen.lego_id) == (owner, owner.lego_ids[-1])

    board.failed(stolen, "boom")  # the thief's failure is the owner's failed attempt
    assert owner.status.attempts == 2 and owner.status.state == "retrying"
    board.failed(own, "boom too")  # handed out in the same attempt: not another one
    assert owner.status.attempts == 2 and owner.status.last_error == "boom too"
    started = time.monotonic()
    again = board.claim(thief)  # waits for the owner's backoff; the ids are back in plan order
    assert time.monotonic() - started >= 0.04
    assert again is not None and again.lego_id == owner.lego_ids[-1] and owner.status.state == "running"
    board.save(again, owner.make(again.lego_id), thief)
    assert owner.status.stolen == 1 and next(owner.journal.records())["id"] == owner.lego_ids[-1]

    first = board.claim(owner)
    assert first is not None and first.lego_id == owner.lego_ids[0]
    board.failed(first, "third")
    assert owner.status.attempts == 3
    last = board.claim(owner)
    assert last is not None
    board.failed(last, "fourth")
    assert owner.status.state == "failed" and owner.status.attempts == 3
    assert board.claim(thief) is None and board.claim(owner) is None  # its ids are not handed out
    board.settle_states()
    assert owner.status.state == "failed" and not owner.file.exists()
    assert [r["id"] for r in owner.journal.records()] == [owner.lego_ids[-1]]  # kept what was made


def test_stop_hands_out_nothing_more(course: Course) -> None:
    stop = threading.Event()
    (owner,) = make_agents(course, [3], stop)
    board = WorkBoard([owner], stop, max_attempts=3)
    board.start()
    claim = board.claim(owner)
    assert claim is not None
    stop.set()
    board.wake()
    assert board.claim(owner) is None
    board.settle_states()
    assert owner.status.state == "stopped"


def test_a_pool_thread_asks_for_the_prefix_of_the_agents_it_may_take_from_only(course: Course) -> None:
    """A pick takes from the agent with the most pending whose cached prefix may be used, and asks
    about prefixes in that order only (not of every agent: a worker picks hundreds of times a
    second); ties go to the lowest agent number."""
    stop = threading.Event()
    agents = make_agents(course, [3, 5, 4], stop)
    states = {agent.number: "warm" for agent in agents}
    asked: list[int] = []

    def prefix_state(agent: Agent) -> str:
        asked.append(agent.number)
        return states[agent.number]

    board = WorkBoard(agents, stop, max_attempts=3, prefix_state=prefix_state)
    board.start()
    claim = board.claim(None)
    assert claim is not None and (claim.owner, claim.lego_id) == (agents[1], agents[1].lego_ids[-1])
    assert asked == [2]
    asked.clear()
    states[2] = "writing"  # agent 2 (4 pending, tied with 3) cannot be used now: agent 3 is
    claim = board.claim(None)
    assert claim is not None and claim.owner is agents[2] and asked == [2, 3]
    asked.clear()
    states[1], states[3] = "free", "writing"  # a free prefix: its first id in plan order writes it
    claim = board.claim(None)
    assert claim is not None and (claim.owner, claim.lego_id) == (agents[0], agents[0].lego_ids[0])
    assert asked == [2, 1] and board.left() == 12  # agents 1 and 3 tie at 3 pending: 1 first
