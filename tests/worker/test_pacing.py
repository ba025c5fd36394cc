"""The request scheduler: the account's buckets shared by a run's workers through one file, the
adaptive in-flight limit, and (against the fake API under load, in real worker processes) the
fan-out after each prefix's writer, the in-flight cap, the shared limits, and hedged requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests import helpers
from worker.course import Course
from worker.generators.hedging import DEEP_TAIL, Hedger, Race
from worker.generators.pacing import SHARE_FRESH_S, SHARE_OFFSET, Cost, Pacer, SharedBuckets
from worker.paths import CourseLayout
from worker.plan import load_plan, prepare

KEY = "test-key"


def headers(requests: tuple[int, int], output: tuple[int, int] = (600_000, 600_000)) -> dict[str, str]:
    """Rate-limit headers: (limit a minute, remaining) of requests and output tokens."""
    return {
        "anthropic-ratelimit-requests-limit": str(requests[0]),
        "anthropic-ratelimit-requests-remaining": str(requests[1]),
        "anthropic-ratelimit-output-tokens-limit": str(output[0]),
        "anthropic-ratelimit-output-tokens-remaining": str(output[1]),
    }


def test_buckets_are_shared_through_the_file_and_learnt_from_headers(tmp_path: Path) -> None:
    path = tmp_path / "api_limits.bin"
    one, two = SharedBuckets(path), SharedBuckets(path)
    assert one.take(Cost(100, 1000)) == 0  # nothing known yet: nobody waits
    one.observe(headers((600, 99), (600_000, 600_000)))  # 600 a minute (10 a second), 99 left now
    assert two.view()["limits_per_minute"]["requests"] == 600
    assert sum(1 for _ in range(30) if two.take(Cost(0, 10)) == 0) == 30
    assert one.view()["levels"]["requests"] == pytest.approx(69, abs=0.5)  # the other worker's takes count
    one.observe(headers((600, 3)))  # the API says fewer remain (another client): believed
    wait = two.take(Cost(0, 10))
    assert 0 < wait <= 0.5
    one.pause(0.5)
    assert two.take(Cost(0, 10)) == pytest.approx(0.5, abs=0.05)
    one.close()
    two.close()
    assert path.stat().st_size == 136
    path.write_bytes(b"not a state")  # damaged: started afresh, never an error
    assert SharedBuckets(path).take(Cost(0, 10)) == 0


def test_after_a_quiet_spell_the_run_ramps_up() -> None:
    """The acceleration limit is not announced: from idle, at most 40% of a full bucket in the
    time it takes to refill (here 100 requests, refilled in 10 s), then twice that."""
    buckets = SharedBuckets(None)
    buckets.observe(headers((600, 99)))
    taken = sum(1 for _ in range(100) if buckets.take(Cost(0, 1)) == 0)
    assert taken == 40
    assert buckets.take(Cost(0, 1)) == pytest.approx(10, abs=0.2)  # until the window ends


def test_output_tokens_reserved_until_the_answer_ends(tmp_path: Path) -> None:
    buckets = SharedBuckets(None)
    buckets.observe(headers((6000, 5999), (60_000, 10_000)))
    assert buckets.take(Cost(0, 6000)) == 0
    assert buckets.take(Cost(0, 6000)) > 0  # 4,000 left, less the reserve
    buckets.give_back(5000)  # the answer used 1,000 of its 6,000
    assert buckets.take(Cost(0, 6000)) == 0


def test_the_in_flight_limit_grows_on_success_and_halves_on_429() -> None:
    pacer = Pacer(max_in_flight=40, initial=8)
    for _ in range(10):
        pacer.observe(200, {})
    assert pacer.limit == 18
    pacer.observe(429, {"retry-after-ms": "300"})
    assert pacer.limit == 9 and pacer.rate_limited == 1
    assert pacer.buckets.take(Cost(0, 1)) == pytest.approx(0.3, abs=0.05)  # the pause
    pacer.observe(529, {})
    assert pacer.limit == 4.5 and pacer.overloaded == 1
    for _ in range(100):
        pacer.observe(200, {})
    assert pacer.limit == 40  # capped by max_in_flight


def test_slots_block_beyond_the_limit_until_one_is_released() -> None:
    pacer = Pacer(max_in_flight=2, initial=2)
    held = [pacer.slot(), pacer.slot()]
    assert all(slot.__enter__() for slot in held)
    got = threading.Event()

    def third() -> None:
        with pacer.slot() as entered:
            if entered:
                got.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not got.wait(0.2)  # the point: it waits (a bounded wait, not a synchronisation)
    held[0].__exit__(None, None, None)
    assert got.wait(5)
    thread.join(5)
    held[1].__exit__(None, None, None)
    stop = threading.Event()
    stop.set()
    pacer.limit = 0
    with pacer.slot(stop) as entered:
        assert entered is False  # a stopping worker takes no slot


def refreshed(pacer: Pacer) -> float:
    """The pacer's share after it is worked out again now (as a slot is taken)."""
    pacer._share_at = -float("inf")
    with pacer.slot():
        pass
    return pacer.share_cap


def test_a_segments_workers_share_the_in_flight_budget_by_the_work_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers of a segment with work left have 2 x 64 in flight between them, in proportion
    to their baskets left; a worker alone, or with one of another segment, one that has nothing
    left, or one not heard from lately, keeps 64; a share stays within 0.5-1.5 x 64."""
    path = tmp_path / "api_limits.bin"
    left = {1: 100, 2: 60, 3: 0}
    pacers = {orch: Pacer(64, SharedBuckets(path)) for orch in (1, 2, 3)}
    for orch, pacer in pacers.items():
        pacer.share_segment(2, orch, 3, lambda orch=orch: left[orch])
        assert pacer.most_in_flight == 96
    assert refreshed(pacers[1]) == 64  # alone so far
    other = Pacer(64, SharedBuckets(path))
    other.share_segment(1, 2, 3, lambda: 500)  # the same slot's orchestrator, of another segment
    refreshed(other)
    refreshed(pacers[3])  # nothing left: does not count
    refreshed(pacers[2])
    assert refreshed(pacers[1]) == pytest.approx(128 * 100 / 160)
    assert refreshed(pacers[2]) == pytest.approx(128 * 60 / 160)
    left[2] = 5
    assert refreshed(pacers[2]) == 32  # at least half of max_in_flight
    assert refreshed(pacers[1]) == 96  # at most one and a half
    later = time.time() + SHARE_FRESH_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert refreshed(pacers[1]) == 64  # the other has not said anything for too long: alone again
    # The share bounds the slots, under the adaptive limit.
    pacer = pacers[2]
    pacer.limit, pacer.share_cap, pacer._share_at = 96, 3, float("inf")
    held = [pacer.slot() for _ in range(3)]
    assert all(slot.__enter__() for slot in held)
    stop = threading.Event()
    stop.set()
    with pacer.slot(stop) as entered:
        assert entered is False
    for slot in held:
        slot.__exit__(None, None, None)
    assert pacers[1].to_json()["share"] == 64 and Pacer(8).to_json()["share"] is None


def test_in_the_deep_tail_a_request_is_hedged_at_the_median() -> None:
    """Latencies of 0.3 s (six in ten) and 2 s: the deadline is 2 s, the deep tail's 0.3 s. With
    more than DEEP_TAIL requests in flight a request waits for the 2 s; once few are left, those
    older than 0.3 s get their duplicate at once, and each request is duplicated once."""
    hedger = Hedger(min_samples=10, share=1.0)  # every request may be duplicated here
    launches: list[Race] = []
    try:
        for latency in [0.3] * 6 + [2.0] * 4:
            hedger.record(latency)
        races = [Race() for _ in range(DEEP_TAIL + 3)]
        for race in races:
            hedger.watch(race, lambda race=race: race.launch() and launches.append(race))
        time.sleep(0.6)
        assert not launches  # many in flight: not the deep tail yet
        for race in races[:3]:
            race.finish("first", object())
            hedger.forget(race)
        deadline = time.monotonic() + 1.0
        while len(launches) < DEEP_TAIL and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(map(id, launches)) == sorted(map(id, races[3:]))
        for race in races[3:]:
            race.finish("hedge", object())
            hedger.forget(race)
        late = Race()  # alone in flight: the deep tail from the start
        hedger.watch(late, lambda: late.launch() and launches.append(late))
        deadline = time.monotonic() + 1.5
        while late not in launches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert late in launches  # at the deep tail's deadline, long before the 2 s
        time.sleep(2.2)  # past the 2 s deadline too: still one duplicate each
        assert len(launches) == len(set(map(id, launches))) == DEEP_TAIL + 1
    finally:
        hedger.close()


# -- real workers against the fake API under load -------------------------------------------------------


@pytest.fixture
def course(demo_course: Path) -> Course:
    loaded = Course.load(demo_course)
    prepare(loaded, segments=1, orchestrators=2, agents=5)
    return loaded


def start(course: Course, orch: int, procs: list, *extra: str) -> subprocess.Popen:
    """A real ``phase5 worker`` for orchestrator ``orch`` of segment 1 (the anthropic backend)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "worker", str(course.root), "--segment", "1", "--orch", str(orch)]
        + ["--backend", "anthropic", "--plain", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    procs.append(proc)
    return proc


@pytest.fixture
def api(fake_api, monkeypatch: pytest.MonkeyPatch):
    def go(course: Course, *args: str):
        server = fake_api(course.root, *args)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        return server

    return go


def messages(server) -> list[dict]:
    """The Messages requests the server logged (not the streams the client closed early)."""
    return [r for r in server.requests() if r.get("op") == "message"]


def finish(procs: list) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def test_a_hedge_waits_for_its_deadline_the_figures_and_the_tail() -> None:
    """A request sent before enough answers were seen is hedged once they give a deadline, and
    one whose deadline passes before the worker's tail gets its duplicate when the tail begins."""
    hedger = Hedger(min_samples=5)
    tail = threading.Event()
    hedger.allowed = tail.is_set
    launched = threading.Event()
    race = Race()
    try:
        hedger.watch(race, launched.set)  # no figures yet: no deadline
        for _ in range(10):
            hedger.record(0.2)  # now the deadline is 0.2 s, already past for this request
        time.sleep(0.6)
        assert not launched.is_set()  # past its deadline, but not in the tail yet
        tail.set()
        assert launched.wait(2.0)
        assert race.hedged and hedger.to_json()["hedges"] == 1
        done = Race()
        done.finish("first", object())  # answered: never hedged
        late = threading.Event()
        hedger.watch(done, late.set)
        time.sleep(0.5)
        assert not late.is_set()
    finally:
        hedger.close()


def test_each_prefix_is_written_alone_then_its_agent_fans_out(api, course: Course, procs: list) -> None:
    server = api(course, "--latency", "0.3", "--first-token", "0.5")
    start(course, 1, procs)
    finish(procs)
    helpers.assert_complete(course)
    plan = load_plan(course, 1).orchestrator(1)
    owner = {i: n for n, ids in enumerate(plan.agent_batches) for i in ids}
    by_agent: dict[int, list[dict]] = defaultdict(list)
    for r in messages(server):
        by_agent[owner[r["lego_id"]]].append(r)
    writers = []
    for records in by_agent.values():
        records.sort(key=lambda r: r["t"])
        writer, *rest = records
        begun = writer["t"] + writer["latency"] * 0.5
        assert writer["usage"]["cache_creation_input_tokens"] > 0
        assert all(r["t"] >= begun - 0.02 for r in rest)  # none before the writer's answer began
        assert all(r["usage"]["cache_creation_input_tokens"] == 0 for r in rest)
        writers.append(writer)
    # The skill was written once: the first writer alone, the other agents' writers read it.
    writers.sort(key=lambda r: r["t"])
    assert all(r["usage"]["cache_read_input_tokens"] > 5000 for r in writers[1:])
    # Then the fan-out: many requests in flight at once, far more than the 5 agents.
    progress = json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())
    assert progress["pacing"]["peak_in_flight"] > 20


def test_max_in_flight_caps_a_worker(api, course: Course, procs: list) -> None:
    server = api(course, "--latency", "0.2")
    start(course, 1, procs, "--max-in-flight", "6")
    finish(procs)
    events = sorted([(r["t"], 1) for r in messages(server)] + [(r["t"] + r["latency"], -1) for r in messages(server)])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    assert peak <= 6 + 1  # one more at the instant an answer ends and the next request arrives
    progress = json.loads(CourseLayout(course.root).orch_progress(1, 1).read_text())
    assert progress["pacing"]["peak_in_flight"] == 6 and progress["pacing"]["max_in_flight"] == 6


def test_workers_share_the_accounts_limits(api, course: Course, procs: list) -> None:
    """Two workers, a limit of 120 requests a minute at time scale 30 (60 a second, a minute's
    quota of 120 at once): together they keep under it, and 429s are rare."""
    server = api(
        course, "--latency", "0.1", "--tier", "build", "--rpm", "120", "--time-scale", "30", "--ramp-floor", "-1"
    )
    started = time.monotonic()
    start(course, 1, procs)
    start(course, 2, procs)
    finish(procs)
    elapsed = time.monotonic() - started
    records = messages(server)
    limited = sum(1 for r in records if r["status"] == 429)
    admitted = len(records) - limited
    assert limited <= max(2, 0.02 * len(records)), limited
    assert admitted >= 124
    # 124 requests: 120 at once, then a few at 60 a second (plus the workers' start-up).
    assert elapsed > 0.05
    layout = CourseLayout(course.root)
    # The buckets' state, then a slot per orchestrator for the shares of the in-flight budget.
    assert (layout.segments_dir / "api_limits.bin").stat().st_size == SHARE_OFFSET + 2 * 32
    for orch in (1, 2):
        assert json.loads(layout.orch_progress(1, orch).read_text())["pacing"]["share"] is not None


def test_slow_requests_in_the_tail_are_hedged(api, demo_course: Path, procs: list) -> None:
    course = Course.load(demo_course)
    prepare(course, segments=1, orchestrators=1, agents=10)
    server = api(course, "--latency", "0.25", "--latency-p99", "12", "--seed", "5")
    start(course, 1, procs, "--max-in-flight", "24")  # drained after ~100 answers: the tail is hedged
    finish(procs)
    helpers.assert_complete(course)
    records = messages(server)
    per_round: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        per_round[(r["lego_id"], r["round"])].append(r)
    duplicated = [items for items in per_round.values() if len(items) > 1]
    assert duplicated, "no request was hedged"
    assert all(len(items) == 2 for items in duplicated)
    assert all(r["usage"]["cache_creation_input_tokens"] == 0 for items in duplicated for r in items[1:])
    journal_requests = sum(
        json.loads(line)["requests"]
        for path in CourseLayout(course.root).orch_dir(1, 1).glob("agent_*_journal.jsonl")
        for line in path.read_text().splitlines()
    )
    assert journal_requests == len(records)  # every duplicate is counted as a request
    assert len(duplicated) <= 0.1 * len(records) + 1
    notes = [
        n
        for path in CourseLayout(course.root).orch_dir(1, 1).glob("agent_*_journal.jsonl")
        for line in path.read_text().splitlines()
        for n in json.loads(line)["notes"]
    ]
    assert any(n.startswith("slow request duplicated") for n in notes)
