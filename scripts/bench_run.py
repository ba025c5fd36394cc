#!/usr/bin/env python3
"""Benchmark the whole pipeline: ``phase5 run`` with real tmux (a private socket), real workers and
the ``anthropic`` backend against the fake API server (``scripts/fake_anthropic.py``) answering
every request after a latency drawn log-normal with median L (default 0.5 s: the original's 30 s
per basket scaled down 60x) and p99 4 L, under the Start tier's rate limits with time scaled by
the same factor (a real minute lasts 2 L seconds: at L = 0.5 s a minute's quota is a second's;
``--tier``, ``--rpm/--itpm/--otpm``, ``--time-scale``). Stagger and poll are scaled like L.

Figures, each against something measured or computed in the same invocation:

- ``wall_s``: ``phase5 run`` from start to exit (a prepared plan; prepare is not timed).
- ``ideal_s``: ceil(baskets / concurrent agents) x L x (requests per basket seen in the server
  log); ``efficiency`` = ideal_s / wall_s. ``ideal_plan_s`` is the same bound for this plan
  (per segment, the agent with the most requests; segments one after another).
- ``direct_s``: the same generator and server driven by ``phase5 generate --concurrency
  <agents>`` in one process (no tmux, no segments, no process start-ups): a measured baseline;
  ``supervision_ratio`` = wall_s / direct_s.
- ``original_plan_s``: what the original static plan needs at the same latency, computed from
  this plan: agents' batches one basket after another, orchestrators 30 s apart, the master
  polling every 30 s after the last launch, segment barriers; every 30 s scaled by L / 30 s.
- ``overhead_per_segment_s``: per segment, from the segment's start to its first request plus
  from its last orchestrator file to its windows closed (``run_state.json``, file times and the
  server log); the breakdown is in ``segments``.
- ``peak_rss_mb``: the summed RSS of the supervisor and every pane's process tree (workers, the
  warm-start fork server and its forked workers, the first window's log follower), sampled every
  0.2 s; ``peak_pss_mb``: the same with every page counted once over the tree (PSS: a page that k
  processes share counts 1/k in each), which is the memory the tree occupies and what the memory
  target is judged on: forked workers share the fork server's ~65 MB of SDK, which an RSS sum
  counts once per process. ``peak_tmux_rss_mb``: the tmux server alone.
- ``--cold-baseline``: the same fault-free run again with ``phase5 run --cold-start`` (every worker
  a new process that imports the SDK itself): ``cold_start`` holds its figures, ``warm_vs_cold``
  = wall_s / its wall. ``--cold-start`` measures cold start alone.
- ``processes_left``, ``windows_left``: what the run left behind (must be 0).
- The scheduler's figures: ``latency_dist`` and ``rate_limits`` (what the fake was set to),
  ``rate_limited_pct`` (429 answers of the rate limits / requests, ``rate_limited_by`` per limit),
  ``cache_write_ratio`` (cache-write tokens / those of one write per cached prefix),
  ``cached_input_pct``, ``achieved_requests_per_s`` and ``achieved_share_of_limit`` (requests a
  second while work remains, against the request limit), ``hedged_requests``,
  ``requests_per_basket`` (without hedges) and per segment ``sending_s`` (first request to the last
  one a basket needed) and ``tail_s`` (from there to the last answer).
- ``--binding``: limits set to bind (75 requests a minute, tokens unlimited, so the course's demand
  is several times the limit); the target is the achieved share of the request limit.

``--faults``: a fault-free run first (the baseline, unless ``--no-baseline``), then the same with
10% of requests answered 500, 5% answered 429 with retry-after, one worker SIGKILLed in each
segment (a live pane pid from run_state.json, mid-segment) and the supervisor SIGKILLed once and
started again. Adds ``baskets_lost``, ``regenerated_saved`` (journal ids saved more than once),
``redone_in_flight`` (baskets in flight at a worker kill that were requested again),
``validation_ok``, ``fault_free_wall_s`` and ``makespan_ratio``.

Everything runs in a temporary folder on a private tmux server, talks only to 127.0.0.1, and is
stopped on exit, on an error and on Ctrl-C.

    python scripts/bench_run.py                     # full course, L = 0.5 s
    python scripts/bench_run.py --faults --json
    python scripts/bench_run.py --course examples/courses/spa_demo --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from benchlib import (
    DEFAULT_COURSE,
    FAKE_KEY,
    FakeServer,
    LineCounter,
    Sandbox,
    TmuxServerPid,
    TreeSampler,
    add_output_options,
    clean_env,
    cpu_seconds,
    finish,
    install_signal_handlers,
    machine,
    mb,
    phase5_argv,
    run_leftovers,
    table,
)

from scripts.fake_limits import TIERS, Latency
from worker.course import Course
from worker.models import read_json_file
from worker.paths import CourseLayout
from worker.plan import SegmentPlan, load_plans, prepare

ORIGINAL_STEP_S = 30.0  # the original's seconds per basket, between launches, and between polls
FAULT_RATES = (("500", 0.10), ("429", 0.05))
WORKER_KILL_AT = 0.5  # share of a segment's baskets saved when one of its workers is killed
SUPERVISOR_KILL_AT = 0.25  # ... when the supervisor is killed (once, in segment 2 or the last)
TARGETS = {
    "vs_original": 0.35,
    "rate_limited_pct": 2.0,
    "cache_write_ratio": 1.05,
    "achieved_share_of_limit": 0.80,
    "makespan_ratio": 1.25,
    "peak_pss_mb": 300.0,
}
#: Requests a minute (real API) of --binding: half what even one worker asks (96 in flight at 0.6 s).
BINDING_RPM = 75.0
UNLIMITED_TOKENS = 1e12


@dataclass
class Config:
    course: Path
    latency: float
    stagger: float
    poll: float
    seed: int
    retry_after: float
    segments: int | None
    orchestrators: int | None
    agents: int | None
    timeout: float
    keep: bool
    direct: bool
    warm: bool = True  # phase5 run --warm-start (the default) or --cold-start
    stagger_segments: str = "all"  # phase5 run --stagger-segments
    latency_p99: float = 4.0  # the fake's latency: log-normal, 99th percentile over the median
    tier: str | None = "start"  # the fake's rate limits (None: unlimited)
    time_scale: float = 60.0  # real seconds per fake second (30 s / L)
    rpm: float | None = None  # requests a minute of the real API, overriding the tier's
    itpm: float | None = None
    otpm: float | None = None
    max_in_flight: int | None = None  # phase5 run --max-in-flight
    binding: bool = False  # limits set so that the course's demand is at least twice them

    def fake_args(self) -> list[str]:
        """The fake API's latency, time scale and rate limits."""
        args = ["--latency", str(self.latency), "--latency-p99", str(self.latency_p99), "--seed", str(self.seed)]
        args += ["--time-scale", str(self.time_scale)]
        if self.tier is not None:
            args += ["--tier", self.tier]
            for name in ("rpm", "itpm", "otpm"):
                if getattr(self, name) is not None:
                    args += [f"--{name}", str(getattr(self, name))]
        return args

    def rate_limits(self) -> dict[str, Any] | None:
        if self.tier is None:
            return None
        rpm, itpm, otpm = TIERS[self.tier]
        real = {
            "requests_per_minute": self.rpm or rpm,
            "input_tokens_per_minute": self.itpm or itpm,
            "output_tokens_per_minute": self.otpm or otpm,
        }
        return {
            "tier": self.tier,
            "real_api": real,
            "time_scale": self.time_scale,
            "fake_per_second": {k.replace("_per_minute", ""): v * self.time_scale / 60 for k, v in real.items()},
        }


@dataclass
class Kill:
    """One planned kill, and what happened."""

    kind: str  # "worker" or "supervisor"
    segment: int
    at: float  # share of the segment's baskets saved
    done: bool = False
    t: float | None = None
    pid: int | None = None
    window: str | None = None
    saved_before: int = 0  # baskets of the segment saved at the kill
    in_flight: list[str] = field(default_factory=list)  # the victim's agents' next unsaved ids
    note: str = ""


# -- files of a run --------------------------------------------------------------------------------------


def journal_ids(layout: CourseLayout, segment: int, orch: int | None = None) -> list[str]:
    """Ids saved in the agents' journals (one per line, in order)."""
    folder = layout.orch_dir(segment, orch) if orch else layout.segment_dir(segment)
    ids = []
    for path in sorted(folder.glob("**/agent_*_journal.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                ids.append(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
    return ids


def read_state(layout: CourseLayout) -> dict[str, Any]:
    try:
        return read_json_file(layout.run_state)
    except Exception:  # not written yet, or between two writes of a slow disk
        return {}


def orch_states(state: dict[str, Any], segment: int) -> list[dict[str, Any]]:
    for seg in state.get("segments") or []:
        if seg.get("segment") == segment:
            return seg.get("orchs") or []
    return []


# -- the fault plan -----------------------------------------------------------------------------------


class FaultPlan:
    """Kills one worker per segment and the supervisor once, at set shares of a segment's work."""

    def __init__(self, runner: PipelineRun, plans: list[SegmentPlan], server: FakeServer) -> None:
        self.runner = runner
        self.server = server
        self.plans = plans
        self.layout = runner.layout
        count = len(plans)
        sup_segment = min(2, count)
        self.kills = [Kill("worker", plan.segment_number, WORKER_KILL_AT) for plan in plans]
        self.kills.insert(sup_segment - 1, Kill("supervisor", sup_segment, SUPERVISOR_KILL_AT))
        self._next_look = 0.0
        self._lines = LineCounter()

    def saved(self, segment: int) -> int:
        """Baskets of a segment saved so far (journal lines, read incrementally)."""
        return self._lines.count(self.layout.segment_dir(segment).glob("orch_*/agent_*_journal.jsonl"))

    def step(self) -> None:
        if time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + 0.1
        for kill in self.kills:
            if kill.done:
                continue
            plan = self.plans[kill.segment - 1]
            if self.layout.segment_baskets(kill.segment).exists():
                kill.done, kill.note = True, "skipped: the segment ended first"
                continue
            saved = self.saved(kill.segment)
            if saved < kill.at * plan.total_legos:
                return  # kills happen in order
            if kill.kind == "supervisor":
                self.kill_supervisor(kill, saved)
            else:
                self.kill_worker(kill, plan, saved)
            return

    def kill_supervisor(self, kill: Kill, saved: int) -> None:
        proc = self.runner.proc
        assert proc is not None
        kill.pid, kill.saved_before = proc.pid, saved
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kill.t, kill.done = time.time(), True
        self.runner.start()  # at once, as an operator (or a service manager) would
        kill.note = f"restarted as pid {self.runner.proc.pid}"  # type: ignore[union-attr]

    def kill_worker(self, kill: Kill, plan: SegmentPlan, saved: int) -> None:
        """SIGKILL a live worker of the segment that still has work (a pane pid of run_state.json)."""
        state = read_state(self.layout)
        n = len(plan.orchestrator_batches)
        preferred = (kill.segment - 1) % n + 1
        candidates: list[tuple[bool, int, int, int]] = []
        for orch in orch_states(state, kill.segment):
            pid, number = orch.get("pane_pid"), int(orch.get("orch") or 0)
            if orch.get("state") != "running" or not pid or self.layout.orch_baskets(kill.segment, number).exists():
                continue
            try:
                cmdline = psutil.Process(pid).cmdline()
            except psutil.Error:
                continue
            if "worker" not in cmdline or str(self.runner.course) not in cmdline:
                continue
            left = plan.orchestrator(number).total_legos - len(journal_ids(self.layout, kill.segment, number))
            candidates.append((number != preferred, -left, number, pid))
        if not candidates:
            return  # not yet (a relaunch in progress); look again
        _, _, number, pid = min(candidates)
        saved_ids = set(journal_ids(self.layout, kill.segment, number))
        ids = set(plan.orchestrator(number).lego_ids)
        requested = {r.get("lego_id") for r in self.server.requests() if r.get("op") == "message"}
        kill.in_flight = sorted(i for i in ids & requested if i not in saved_ids)  # asked, not saved yet
        pid = worker_pid(self.layout, kill.segment, number, pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        kill.t, kill.done, kill.pid, kill.saved_before = time.time(), True, pid, saved
        kill.window = f"s{kill.segment}-o{number}"


def worker_pid(layout: CourseLayout, segment: int, orch: int, pane_pid: int) -> int:
    """The process doing the orchestrator's work: with warm start a child of the fork server
    (``worker_pid`` in its progress file), whose window runs a stub; else the pane's process."""
    try:
        report = json.loads(layout.orch_progress(segment, orch).read_text())
    except (OSError, ValueError):
        return pane_pid
    if report.get("pid") == pane_pid and report.get("worker_pid"):
        return int(report["worker_pid"])
    return pane_pid


def worker_pids(layout: CourseLayout) -> list[int]:
    """Every worker named by a progress file (a forked worker outlives a killed supervisor's tree)."""
    pids = []
    for path in layout.segments_dir.glob("segment_*/orch_*_progress.json"):
        try:
            pid = json.loads(path.read_text()).get("worker_pid")
        except (OSError, ValueError):
            continue
        if pid:
            pids.append(int(pid))
    return pids


# -- one run -------------------------------------------------------------------------------------------


class PipelineRun:
    """One ``phase5 run`` of a fresh course copy against a fresh fake server."""

    def __init__(self, sandbox: Sandbox, config: Config, label: str, faults: bool) -> None:
        self.sandbox, self.config, self.label, self.faults = sandbox, config, label, faults
        self.course = sandbox.copy_course(config.course, label)
        self.layout = CourseLayout(self.course)
        self.socket = sandbox.new_socket(label)
        self.log = sandbox.dir / label / "run.log"
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []
        self.argv: list[str] = []
        self.env: dict[str, str] = {}
        self.tmux_pids = TmuxServerPid(self.socket)

    def start(self) -> None:
        self.starts.append(time.time())
        self.proc = self.sandbox.popen(self.argv, self.log, self.env)

    def execute(self) -> dict[str, Any]:
        c = self.config
        cpu_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        course = Course.load(self.course)
        prepare(course, c.segments or 3, c.orchestrators or 3, c.agents or 10)
        plans = load_plans(course)
        fake_args = c.fake_args()
        if self.faults:
            fake_args += ["--retry-after", str(c.retry_after)]
            for kind, rate in FAULT_RATES:
                fake_args += ["--fault", f"{kind}:{rate}"]
        server = FakeServer(
            self.sandbox,
            self.course,
            self.sandbox.dir / self.label / "fake_api.jsonl",
            fake_args,
            max_seconds=c.timeout + 120,
        )
        self.env = clean_env(ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.base_url)
        self.argv = phase5_argv(
            "run",
            str(self.course),
            "--backend",
            "anthropic",
            "--stagger",
            str(c.stagger),
            "--poll",
            str(c.poll),
            "--tmux-socket",
            self.socket,
            "--plain",
            "--warm-start" if c.warm else "--cold-start",
            "--stagger-segments",
            c.stagger_segments,
            *(["--max-in-flight", str(c.max_in_flight)] if c.max_in_flight else []),
        )
        sampler = TreeSampler(
            lambda: [
                p for p in [self.proc.pid if self.proc else None, *self.tmux_pids(), *worker_pids(self.layout)] if p
            ],
            separate=self.tmux_pids,
        )
        faults = FaultPlan(self, plans, server) if self.faults else None
        sampler.start()
        deadline = time.monotonic() + c.timeout
        try:
            self.start()
            assert self.proc is not None
            while self.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.label}: phase5 run still running after {c.timeout:.0f} s (see {self.log})"
                    )
                if faults is not None:
                    faults.step()
                time.sleep(0.05)
            ended = time.time()
        finally:
            sampler.stop()
        exit_code = self.proc.returncode
        remaining, windows = run_leftovers(self.course, self.socket, exclude=[server.pid])
        server_cpu = cpu_seconds(server.pid)
        server.stop()
        validation = subprocess.run(
            phase5_argv("validate", str(self.course), "--json"),
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=300,
        )
        try:
            report = json.loads(validation.stdout)
        except ValueError:
            report = {"ok": False, "error": (validation.stdout + validation.stderr)[-500:]}
        logged = [r for r in server.requests() if r.get("op") != "stream_closed"]
        result = analyse(self, course, plans, logged, ended, exit_code)
        result.update(
            peak_rss_mb=mb(sampler.peak_tree),
            peak_tmux_rss_mb=mb(sampler.peak_separate),
            peak_processes=sampler.peak_processes,
            rss_samples=sampler.samples,
            peak_pss_mb=mb(sampler.peak_pss),
            peak_detail=[f"{kind} {size}" for kind, size in sampler.peak_detail],
            peak_pss_detail=[f"{kind} {size}" for kind, size in sampler.peak_pss_detail],
            peak_rss_by_kind_mb={k: mb(v) for k, v in sorted(sampler.peak_by_name.items())},
            cpu_s={
                "tree": sampler.cpu_s,
                "fake_server": server_cpu,
                "bench": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before, 2),
            },
            processes_left=len(remaining),
            processes_left_cmdlines=remaining,
            windows_left=windows,
            validation_ok=bool(report.get("ok")),
            validation_coverage=report.get("coverage"),
        )
        if faults is not None:
            result.update(fault_figures(self, course, server.requests(), faults.kills))
        if self.config.keep:
            result["folder"] = str(self.course)
        return result


# -- analysis --------------------------------------------------------------------------------------------


def original_plan_seconds(plans: list[SegmentPlan], basket_s: float, stagger_s: float, poll_s: float) -> float:
    """The original static plan on this plan: each agent does its batch one basket after another;
    orchestrator k of a segment starts k x stagger after the first; the master polls every
    ``poll_s`` after its last launch and starts the next segment at the first poll that finds
    every orchestrator file (merging and killing take no time)."""
    total = 0.0
    for plan in plans:
        finishes = [
            k * stagger_s + max((len(b) for b in batch.agent_batches), default=0) * basket_s
            for k, batch in enumerate(plan.orchestrator_batches)
        ]
        last_launch = (len(finishes) - 1) * stagger_s
        polls = max(1, math.ceil((max(finishes) - last_launch) / poll_s - 1e-9)) if poll_s > 0 else 0
        total += last_launch + polls * poll_s if poll_s > 0 else max(finishes)
    return total


def analyse(
    run: PipelineRun,
    course: Course,
    plans: list[SegmentPlan],
    requests: list[dict[str, Any]],
    ended: float,
    exit_code: int | None,
) -> dict[str, Any]:
    c = run.config
    latency = c.latency
    model = Latency(c.latency, c.latency_p99)
    started = run.starts[0]
    wall = ended - started
    baskets = len(course.ids)
    concurrent = max(sum(len(b.agent_batches) for b in plan.orchestrator_batches) for plan in plans)
    answered = [r for r in requests if r.get("status") == 200]
    per_lego = Counter(r.get("lego_id") for r in answered if r.get("lego_id"))
    # Requests a basket needs: its first request and repairs (a hedge's duplicate is not one more)
    needed = {(r["lego_id"], int(r.get("round") or 0)) for r in answered if r.get("lego_id")}
    rpb = len(needed) / baskets if baskets else 0.0
    ideal = math.ceil(baskets / concurrent) * latency * rpb
    ideal_plan = (
        sum(
            max(
                (sum(per_lego[i] for i in batch) for b in plan.orchestrator_batches for batch in b.agent_batches),
                default=0,
            )
            for plan in plans
        )
        * latency
    )
    scale = latency / ORIGINAL_STEP_S  # the original's 30 s steps, scaled as the latency is
    # The original plan's agents make their baskets one after another: each takes the mean latency
    # (the median L when the latency is fixed) times the requests a basket needs.
    original = original_plan_seconds(plans, model.mean * rpb, ORIGINAL_STEP_S * scale, ORIGINAL_STEP_S * scale)
    state = read_state(run.layout)
    segments = []
    by_segment: dict[int, list[float]] = defaultdict(list)
    by_orch: dict[tuple[int, int], list[float]] = defaultdict(list)
    where = {}
    for plan in plans:
        for batch in plan.orchestrator_batches:
            for lego_id in batch.lego_ids:
                where[lego_id] = (plan.segment_number, batch.orchestrator_id)
    # When each segment's answers ended: of a request and its duplicate (a hedge), the first.
    first_end: dict[tuple[str, int], float] = {}
    for r in requests:
        place = where.get(r.get("lego_id") or "")
        if place and r.get("t"):
            by_segment[place[0]].append(float(r["t"]))
            by_orch[place].append(float(r["t"]))
            if r.get("status") == 200:
                key = (r["lego_id"], int(r.get("round") or 0))
                end = float(r["t"]) + float(r.get("latency", latency))
                first_end[key] = min(first_end.get(key, end), end)
    ends: dict[int, list[float]] = defaultdict(list)
    for (lego_id, _), end in first_end.items():
        ends[where[lego_id][0]].append(end)
    # When each needed request was first sent (not its retries, not a hedge's duplicate)
    first_sent: dict[tuple[str, int], float] = {}
    for r in requests:
        if r.get("lego_id") in where and r.get("t"):
            key = (r["lego_id"], int(r.get("round") or 0))
            first_sent[key] = min(first_sent.get(key, float(r["t"])), float(r["t"]))
    last_sent: dict[int, float] = {}
    for (lego_id, _), sent in first_sent.items():
        segment = where[lego_id][0]
        last_sent[segment] = max(last_sent.get(segment, sent), sent)
    for plan in plans:
        number = plan.segment_number
        seg: dict[str, Any] = next((s for s in state.get("segments") or [] if s.get("segment") == number), {})
        times = sorted(by_segment.get(number, []))
        files = [run.layout.orch_baskets(number, b.orchestrator_id) for b in plan.orchestrator_batches]
        last_file = max((p.stat().st_mtime for p in files if p.exists()), default=None)
        orchs = seg.get("orchs") or []
        launches = sorted(o["started_at"] for o in orchs if o.get("started_at"))
        startups = [
            min(by_orch[(number, o["orch"])]) - o["started_at"]
            for o in orchs
            if o.get("started_at")
            and by_orch.get((number, o["orch"]))
            and min(by_orch[(number, o["orch"])]) >= o["started_at"]
        ]
        agent_requests = max(
            (sum(per_lego[i] for i in batch) for b in plan.orchestrator_batches for batch in b.agent_batches), default=0
        )
        entry: dict[str, Any] = {"segment": number, "baskets": plan.total_legos, "requests": len(times)}
        if seg.get("started_at") and times:
            entry["start_to_first_request_s"] = round(times[0] - seg["started_at"], 3)
        if startups:
            entry["worker_startup_s"] = round(sum(startups) / len(startups), 3)
        if len(launches) > 1:
            entry["launch_spread_s"] = round(launches[-1] - launches[0], 3)
        last_answer = max(ends.get(number) or [0.0])
        if times:
            entry["work_s"] = round(last_answer - times[0], 3)
            entry["ideal_work_s"] = round(agent_requests * latency, 3)
            # first request to the last needed one sent; then to the last answer (the tail, hedged)
            entry["sending_s"] = round(last_sent.get(number, times[-1]) - times[0], 3)
            entry["tail_s"] = round(last_answer - last_sent.get(number, times[-1]), 3)
        if last_file and times:
            entry["last_answer_to_file_s"] = round(last_file - last_answer, 3)
        if last_file and seg.get("finished_at"):
            entry["file_to_closed_s"] = round(seg["finished_at"] - last_file, 3)
        if "start_to_first_request_s" in entry and "file_to_closed_s" in entry:
            entry["overhead_s"] = round(entry["start_to_first_request_s"] + entry["file_to_closed_s"], 3)
        if seg.get("started_at") and seg.get("finished_at"):
            entry["segment_s"] = round(seg["finished_at"] - seg["started_at"], 3)
        segments.append(entry)
    overheads = [s["overhead_s"] for s in segments if "overhead_s" in s]
    gaps = request_gaps(plans, requests, latency)
    first_seg, last_seg = (segments[0], segments[-1]) if segments else ({}, {})
    seg_states = state.get("segments") or []
    run_startup = (seg_states[0].get("started_at") or started) - started if seg_states else None
    run_finish = ended - seg_states[-1]["finished_at"] if seg_states and seg_states[-1].get("finished_at") else None
    return {
        "label": run.label,
        "exit_code": exit_code,
        "course": c.course.name,
        "baskets": baskets,
        "saved_baskets": len(read_json_file(run.layout.final_baskets)) if run.layout.final_baskets.exists() else 0,
        "segments_count": len(plans),
        "concurrent_agents": concurrent,
        "latency_s": latency,
        "stagger_s": c.stagger,
        "poll_s": c.poll,
        "requests": len(requests),
        "requests_per_basket": round(rpb, 4),
        "hedged_requests": len(answered) - len(needed),
        "latency_dist": model.describe(),
        "rate_limits": c.rate_limits(),
        # 429s of the rate limits (an injected 429 fault is not the limits': see ``answers``)
        "rate_limited_pct": round(100 * sum(1 for r in requests if r.get("limited")) / len(requests), 3)
        if requests
        else None,
        "rate_limited_by": dict(Counter(r["limited"] for r in requests if r.get("limited"))),
        **cache_write_figures(answered),
        **binding_figures(plans, requests, c),
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / wall, 4) if wall > 0 else None,
        "ideal_plan_s": round(ideal_plan, 3),
        "efficiency_plan": round(ideal_plan / wall, 4) if wall > 0 else None,
        "original_plan_s": round(original, 3),
        "vs_original": round(wall / original, 4) if original else None,
        "overhead_per_segment_s": round(sum(overheads) / len(overheads), 3) if overheads else None,
        "request_gap_ms": gaps,
        "run_startup_s": round(run_startup, 3) if run_startup is not None else None,
        "run_finish_s": round(run_finish, 3) if run_finish is not None else None,
        "retries": state.get("retries"),
        "segments": segments,
    }


def cache_write_figures(answered: list[dict[str, Any]]) -> dict[str, Any]:
    """``cache_write_ratio``: the cache-write tokens of the run over those of one write per
    cached prefix (each prefix's own part: the skill once, each agent's vocabulary once)."""
    own: dict[str, int] = {}
    for r in answered:
        before = 0
        for key, count in r.get("prefixes") or []:
            own.setdefault(key, count - before)
            before = count
    written = sum(r["usage"]["cache_creation_input_tokens"] for r in answered)
    read = sum(r["usage"]["cache_read_input_tokens"] for r in answered)
    prompt = read + written + sum(r["usage"]["input_tokens"] for r in answered)
    once = sum(own.values())
    return {
        "cache_write_ratio": round(written / once, 4) if once else None,
        "cache_write_tokens": written,
        "cache_write_once_tokens": once,
        "cached_input_pct": round(100 * read / prompt, 2) if prompt else None,
    }


def binding_figures(plans: list[SegmentPlan], requests: list[dict[str, Any]], config: Config) -> dict[str, Any]:
    """The achieved request rate while work remains (per segment, from its first request to its
    last), against the request limit: the admitted requests (not answered 429) a second."""
    limits = config.rate_limits()
    if limits is None:
        return {}
    limit = limits["fake_per_second"]["requests"]
    where = {i: plan.segment_number for plan in plans for b in plan.orchestrator_batches for i in b.lego_ids}
    by_segment: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        if r.get("lego_id") in where and r.get("t"):
            by_segment[where[r["lego_id"]]].append(r)
    busy = admitted = 0.0
    for items in by_segment.values():
        times = sorted(r["t"] for r in items)
        busy += times[-1] - times[0]
        admitted += sum(1 for r in items if r.get("status") != 429)
    rate = admitted / busy if busy else None
    return {
        "request_limit_per_s": limit,
        "achieved_requests_per_s": round(rate, 2) if rate is not None else None,
        "achieved_share_of_limit": round(rate / limit, 4) if rate is not None and limit else None,
    }


def request_gaps(plans: list[SegmentPlan], requests: list[dict[str, Any]], latency: float) -> dict[str, float]:
    """Time an agent spends between two requests besides the latency: from one basket's last
    request arriving to the next basket's first one, minus L (server work, transfer, the
    worker's checks and journal write, CPU contention). Median and 90th percentile, in ms."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for r in requests:
        lego_id, t = r.get("lego_id"), r.get("t")
        if lego_id and t:
            first[lego_id] = min(first.get(lego_id, t), t)
            last[lego_id] = max(last.get(lego_id, t), t)
    gaps = []
    for plan in plans:
        for batch in plan.orchestrator_batches:
            for agent in batch.agent_batches:
                for a, b in zip(agent, agent[1:], strict=False):
                    if a in last and b in first and first[b] > last[a]:
                        gaps.append(first[b] - last[a] - latency)
    if not gaps:
        return {}
    gaps.sort()
    return {
        "median": round(1000 * gaps[len(gaps) // 2], 1),
        "p90": round(1000 * gaps[int(len(gaps) * 0.9)], 1),
        "count": len(gaps),
    }


def fault_figures(
    run: PipelineRun, course: Course, requests: list[dict[str, Any]], kills: list[Kill]
) -> dict[str, Any]:
    final = read_json_file(run.layout.final_baskets) if run.layout.final_baskets.exists() else {}
    lost = [i for i in course.ids if i not in final]
    saved = Counter(i for plan_seg in range(1, len(load_plans(course)) + 1) for i in journal_ids(run.layout, plan_seg))
    regenerated = sorted(i for i, n in saved.items() if n > 1)
    redone: list[str] = []
    in_flight: list[str] = []
    for kill in kills:
        if kill.kind != "worker" or kill.t is None:
            continue
        before = {r.get("lego_id") for r in requests if r.get("t") and r["t"] <= kill.t}
        after = {r.get("lego_id") for r in requests if r.get("t") and r["t"] > kill.t}
        flying = [i for i in kill.in_flight if i in before]
        in_flight.extend(flying)
        redone.extend(i for i in flying if i in after)
    statuses = Counter(str(r.get("status")) for r in requests)
    return {
        **fault_costs(run, course, requests, kills),
        "baskets_lost": len(lost),
        "lost_ids": lost[:20],
        "regenerated_saved": len(regenerated),
        "regenerated_ids": regenerated[:20],
        "in_flight_at_kills": len(in_flight),
        "redone_in_flight": len(redone),
        "answers": dict(sorted(statuses.items())),
        "kills": [asdict(k) | {"in_flight": k.in_flight[:12]} for k in kills],
        "worker_kills": sum(1 for k in kills if k.kind == "worker" and k.t is not None),
        "supervisor_kills": sum(1 for k in kills if k.kind == "supervisor" and k.t is not None),
    }


def fault_costs(run: PipelineRun, course: Course, requests: list[dict[str, Any]], kills: list[Kill]) -> dict[str, Any]:
    """Where the fault run's extra time goes: the wait before a failed request is retried (the
    SDK's backoff after a 500, retry-after after a 429), and for each kill how long until the
    work went on and how late the victim's orchestrator finished."""
    latency = run.config.latency
    by_lego: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in requests:
        if r.get("lego_id") and r.get("t"):
            by_lego[r["lego_id"]].append(r)
    waits = []
    for items in by_lego.values():
        items.sort(key=lambda r: r["t"])
        for a, b in zip(items, items[1:], strict=False):
            if str(a.get("status")) in ("429", "500", "529"):
                waits.append(b["t"] - a["t"] - latency)
    waits.sort()
    state = read_state(run.layout)
    plans = {plan.segment_number: plan for plan in load_plans(course)}
    recoveries = []
    for kill in kills:
        if kill.t is None:
            continue
        if kill.kind == "supervisor":
            restarted = state.get("run_started_at")
            recoveries.append(
                {
                    "kind": "supervisor",
                    "segment": kill.segment,
                    "restart_to_running_s": round(restarted - kill.t, 3) if restarted else None,
                }
            )
            continue
        plan, number = plans[kill.segment], int((kill.window or "s0-o0").split("-o")[1])
        orch = next((o for o in orch_states(state, kill.segment) if o.get("orch") == number), {})
        relaunched = orch.get("started_at")
        ids = set(plan.orchestrator(number).lego_ids)
        after = sorted(
            r["t"] for r in requests if r.get("lego_id") in ids and r.get("t") and r["t"] > (relaunched or 9e99)
        )
        files = {
            b.orchestrator_id: run.layout.orch_baskets(kill.segment, b.orchestrator_id)
            for b in plan.orchestrator_batches
        }
        mtimes = {k: p.stat().st_mtime for k, p in files.items() if p.exists()}
        others = [t for k, t in mtimes.items() if k != number]
        recoveries.append(
            {
                "kind": "worker",
                "segment": kill.segment,
                "window": kill.window,
                "kill_to_relaunch_s": round(relaunched - kill.t, 3) if relaunched and relaunched > kill.t else None,
                "relaunch_to_request_s": round(after[0] - relaunched, 3) if after and relaunched else None,
                "victim_late_s": round(mtimes[number] - max(others), 3) if number in mtimes and others else None,
            }
        )
    return {
        "retry_wait_ms": (
            {"median": round(1000 * waits[len(waits) // 2], 1), "count": len(waits), "total_s": round(sum(waits), 1)}
            if waits
            else {}
        ),
        "recoveries": recoveries,
    }


# -- the direct baseline ---------------------------------------------------------------------------------


def direct_run(sandbox: Sandbox, config: Config, concurrency: int) -> dict[str, Any]:
    """``phase5 generate --backend anthropic --concurrency N`` in one process, same server settings."""
    course = sandbox.copy_course(config.course, "direct")
    server = FakeServer(
        sandbox,
        course,
        sandbox.dir / "direct" / "fake_api.jsonl",
        config.fake_args(),
        max_seconds=config.timeout + 120,
    )
    env = clean_env(ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.base_url)
    proc: subprocess.Popen[bytes] | None = None
    sampler = TreeSampler(lambda: [proc.pid] if proc else [])
    sampler.start()
    started = time.time()
    try:
        proc = sandbox.popen(
            phase5_argv("generate", str(course), "--backend", "anthropic", "--concurrency", str(concurrency), "--json"),
            sandbox.dir / "direct" / "generate.log",
            env,
        )
        proc.wait(timeout=config.timeout)
        wall = time.time() - started
        server_cpu = cpu_seconds(server.pid)
    finally:
        sampler.stop()
        server.stop()
    requests = server.requests()
    return {
        "direct_s": round(wall, 3),
        "direct_exit_code": proc.returncode,
        "direct_requests": len(requests),
        "direct_peak_rss_mb": mb(sampler.peak_tree),
        "direct_cpu_s": {"generate": sampler.cpu_s, "fake_server": server_cpu},
    }


# -- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--course", type=Path, default=DEFAULT_COURSE, help="course folder (copied; default %(default)s)"
    )
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request at the fake API (L)")
    parser.add_argument("--stagger", type=float, default=None, help="seconds between launches [default: L]")
    parser.add_argument("--poll", type=float, default=None, help="supervisor poll seconds [default: L]")
    parser.add_argument("--faults", action="store_true", help="the fault run (after a fault-free baseline)")
    parser.add_argument("--no-baseline", action="store_true", help="with --faults: skip the fault-free run")
    parser.add_argument("--direct", action="store_true", help="also the one-process `phase5 generate` baseline")
    parser.add_argument("--no-direct", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument(
        "--latency-p99",
        type=float,
        default=4.0,
        help="the fake's latency is log-normal with median L and this 99th percentile over L (1: fixed)",
    )
    parser.add_argument(
        "--tier",
        choices=[*sorted(TIERS), "none"],
        default="start",
        help="the fake's rate limits: this tier's, scaled by --time-scale (none: unlimited)",
    )
    parser.add_argument("--time-scale", type=float, default=None, help="real seconds per fake second [30 / L]")
    parser.add_argument("--rpm", type=float, default=None, help="requests a minute (real API), overriding the tier's")
    parser.add_argument("--itpm", type=float, default=None, help="input tokens a minute (real API)")
    parser.add_argument("--otpm", type=float, default=None, help="output tokens a minute (real API)")
    parser.add_argument(
        "--binding",
        action="store_true",
        help="limits set to bind: requests a minute low enough that the course's demand is at least twice it"
        f" ({BINDING_RPM:g}, or --rpm), tokens unlimited; reports the achieved request rate against it",
    )
    parser.add_argument("--max-in-flight", type=int, default=None, help="phase5 run --max-in-flight")
    parser.add_argument(
        "--cold-baseline",
        action="store_true",
        help="also run the fault-free run with --cold-start (every worker imports the SDK itself)",
    )
    parser.add_argument("--cold-start", action="store_true", help="run with phase5 run --cold-start")
    parser.add_argument(
        "--stagger-segments",
        choices=["all", "first"],
        default="all",
        help="phase5 run --stagger-segments (the original plan always staggers every segment)",
    )
    parser.add_argument("--retry-after", type=float, default=None, help="retry-after of a 429, seconds [default: L]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws and phrase choice")
    parser.add_argument("--segments", type=int, default=None, help="plan shape [default 3]")
    parser.add_argument("--orchestrators", type=int, default=None, help="orchestrators per segment [default 3]")
    parser.add_argument("--agents", type=int, default=None, help="agents per orchestrator [default 10]")
    add_output_options(parser, timeout=900.0)
    args = parser.parse_args(argv)
    if args.latency <= 0:
        parser.error("--latency must be positive")
    return args


COLD_KEYS = (
    "wall_s",
    "efficiency",
    "vs_original",
    "overhead_per_segment_s",
    "peak_rss_mb",
    "peak_pss_mb",
    "processes_left",
    "windows_left",
    "validation_ok",
)


def targets(result: dict[str, Any], faults: bool, binding: bool = False) -> dict[str, dict[str, Any]]:
    def at_most(name: str) -> tuple[Any, str, bool]:
        value = result.get(name)
        return value, f"<= {TARGETS[name]:g}", value is not None and value <= TARGETS[name]

    checks: dict[str, tuple[Any, str, bool]] = {
        "processes_left": (result["processes_left"], "== 0", result["processes_left"] == 0),
        "windows_left": (result["windows_left"], "== 0", result["windows_left"] == 0),
        "peak_pss_mb": at_most("peak_pss_mb"),
        "validation_ok": (result["validation_ok"], "true", result["validation_ok"]),
    }
    if result.get("rate_limits") is not None:
        checks["rate_limited_pct"] = at_most("rate_limited_pct")
    if binding:
        share = result.get("achieved_share_of_limit")
        goal = TARGETS["achieved_share_of_limit"]
        checks["achieved_share_of_limit"] = (share, f">= {goal:g}", (share or 0) >= goal)
    elif not faults:
        checks["vs_original"] = at_most("vs_original")
        checks["cache_write_ratio"] = at_most("cache_write_ratio")
    else:
        checks["baskets_lost"] = (result["baskets_lost"], "== 0", result["baskets_lost"] == 0)
        checks["regenerated_saved"] = (result["regenerated_saved"], "== 0", result["regenerated_saved"] == 0)
    return {name: {"value": v, "target": t, "ok": bool(ok)} for name, (v, t, ok) in checks.items()}


def render(result: dict[str, Any]) -> str:
    r = result
    rows = [
        ("wall_s", r["wall_s"], f"phase5 run, {r['baskets']} baskets, exit {r['exit_code']}"),
        (
            "ideal_s",
            r["ideal_s"],
            f"ceil({r['baskets']}/{r['concurrent_agents']}) x {r['latency_s']} s x "
            f"{r['requests_per_basket']} requests/basket",
        ),
        ("efficiency", r["efficiency"], "ideal / wall"),
        ("ideal_plan_s", r["ideal_plan_s"], "this plan's bound (busiest agent per segment)"),
        ("original_plan_s", r["original_plan_s"], "the original static plan at the same latency"),
        ("vs_original", r["vs_original"], f"wall / original plan (target <= {TARGETS['vs_original']:g})"),
        (
            "latency_dist",
            " ".join(f"{k}:{v}" for k, v in r["latency_dist"].items()),
            "the fake's latency per request",
        ),
        ("rate_limits", json.dumps((r["rate_limits"] or {}).get("real_api")), "per minute, real API; x time scale"),
        ("rate_limited_pct", r["rate_limited_pct"], f"429s of the limits / requests; by limit {r['rate_limited_by']}"),
        ("cache_write_ratio", r["cache_write_ratio"], "cache-write tokens / one write per cached prefix"),
        ("cached_input_pct", r["cached_input_pct"], "cache reads / all input tokens"),
    ]
    if r.get("achieved_share_of_limit") is not None:
        rows.append(
            (
                "achieved_share_of_limit",
                r["achieved_share_of_limit"],
                f"{r['achieved_requests_per_s']} requests/s while work remains, limit {r['request_limit_per_s']:g}/s",
            )
        )
    if "direct_s" in r:
        rows += [
            ("direct_s", r["direct_s"], "phase5 generate in one process, same server"),
            ("supervision_ratio", r.get("supervision_ratio"), "wall / direct"),
        ]
    if "cold_start" in r:
        cold = r["cold_start"]
        rows += [
            (
                "cold_start",
                f"{cold['wall_s']} s",
                "the same run, --cold-start: efficiency "
                f"{cold['efficiency']}, overhead/segment {cold['overhead_per_segment_s']} s, "
                f"RSS sum {cold['peak_rss_mb']} MB, PSS {cold['peak_pss_mb']} MB",
            ),
            ("warm_vs_cold", r["warm_vs_cold"], "wall / cold-start wall"),
        ]
    rows += [
        ("overhead_per_segment_s", r["overhead_per_segment_s"], "segment start->first request + last file->closed"),
        (
            "request_gap_ms",
            " ".join(f"{k}:{v}" for k, v in r["request_gap_ms"].items()),
            "per basket besides L: server, transfer, checks, journal, contention",
        ),
        ("run_startup_s", r["run_startup_s"], "supervisor start -> segment 1"),
        ("run_finish_s", r["run_finish_s"], "last segment closed -> exit (final merge, validation)"),
        ("peak_rss_mb", r["peak_rss_mb"], f"supervisor + panes, peak of {r['rss_samples']} samples"),
        ("peak_pss_mb", r["peak_pss_mb"], "the same, shared pages counted once (PSS)"),
        ("peak_detail", ", ".join(r["peak_detail"]), "processes at the RSS peak, MB"),
        ("peak_pss_detail", ", ".join(r.get("peak_pss_detail", [])), "processes at the PSS peak, MB"),
        ("peak_tmux_rss_mb", r["peak_tmux_rss_mb"], "tmux server"),
        (
            "peak_rss_by_kind_mb",
            " ".join(f"{k}:{v}" for k, v in r["peak_rss_by_kind_mb"].items()),
            "largest process of each kind",
        ),
        ("cpu_s", " ".join(f"{k}:{v}" for k, v in r["cpu_s"].items()), "CPU seconds used"),
        ("processes_left", r["processes_left"], ""),
        ("windows_left", r["windows_left"], ""),
        ("validation_ok", r["validation_ok"], ""),
    ]
    if "baskets_lost" in r:
        rows += [
            ("baskets_lost", r["baskets_lost"], ""),
            ("regenerated_saved", r["regenerated_saved"], "saved baskets generated again"),
            ("redone_in_flight", r["redone_in_flight"], f"of {r['in_flight_at_kills']} in flight at worker kills"),
            ("kills", f"{r['worker_kills']}+{r['supervisor_kills']}", "workers + supervisor"),
            (
                "retry_wait_ms",
                " ".join(f"{k}:{v}" for k, v in r["retry_wait_ms"].items()),
                "failed request -> its retry, besides L",
            ),
            *[
                (
                    f"recovery {x['kind']} s{x['segment']}",
                    " ".join(f"{k}:{v}" for k, v in x.items() if k.endswith("_s")),
                    "",
                )
                for x in r["recoveries"]
            ],
            ("answers", " ".join(f"{k}:{v}" for k, v in r["answers"].items()), ""),
        ]
        if r.get("fault_free_wall_s") is not None:
            rows += [
                ("fault_free_wall_s", r["fault_free_wall_s"], "baseline run, same invocation"),
                ("makespan_ratio", r["makespan_ratio"], "wall / fault-free wall"),
            ]
    lines = [table(rows), "  per segment:"]
    for s in r["segments"]:
        lines.append("    " + ", ".join(f"{k} {v}" for k, v in s.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    config = Config(
        course=args.course.resolve(),
        latency=args.latency,
        stagger=args.stagger if args.stagger is not None else args.latency,
        poll=args.poll if args.poll is not None else args.latency,
        seed=args.seed,
        retry_after=args.retry_after if args.retry_after is not None else args.latency,
        segments=args.segments,
        orchestrators=args.orchestrators,
        agents=args.agents,
        timeout=args.timeout,
        keep=args.keep,
        direct=args.direct and not args.no_direct,
        warm=not args.cold_start,
        stagger_segments=args.stagger_segments,
        latency_p99=args.latency_p99,
        tier=None if args.tier == "none" else args.tier,
        time_scale=args.time_scale if args.time_scale is not None else ORIGINAL_STEP_S / args.latency,
        rpm=args.rpm if args.rpm is not None else (BINDING_RPM if args.binding else None),
        itpm=args.itpm if args.itpm is not None else (UNLIMITED_TOKENS if args.binding else None),
        otpm=args.otpm if args.otpm is not None else (UNLIMITED_TOKENS if args.binding else None),
        max_in_flight=args.max_in_flight,
        binding=args.binding,
    )
    out: dict[str, Any] = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    sandbox = Sandbox("bench-run", keep=args.keep)
    try:
        baseline = None
        if not args.faults or not args.no_baseline:
            baseline = PipelineRun(sandbox, config, "fault_free", faults=False).execute()
            if config.direct:
                baseline.update(direct_run(sandbox, config, baseline["concurrent_agents"]))
                baseline["supervision_ratio"] = round(baseline["wall_s"] / baseline["direct_s"], 4)
            if args.cold_baseline:
                cold = PipelineRun(sandbox, replace(config, warm=False), "cold_start", faults=False).execute()
                baseline["cold_start"] = {key: cold[key] for key in COLD_KEYS}
                baseline["warm_vs_cold"] = round(baseline["wall_s"] / cold["wall_s"], 4)
        if args.faults:
            result = PipelineRun(sandbox, config, "faults", faults=True).execute()
            result["fault_free_wall_s"] = result["makespan_ratio"] = None  # --no-baseline
            if baseline is not None:
                result["fault_free_wall_s"] = baseline["wall_s"]
                result["makespan_ratio"] = round(result["wall_s"] / baseline["wall_s"], 4)
                result["baseline"] = baseline
        else:
            assert baseline is not None
            result = baseline
    finally:
        sandbox.close()
    out.update(result)
    out["targets"] = targets(result, args.faults, args.binding)
    if "baseline" in result:
        out["baseline_targets"] = targets(result["baseline"], False)
    out["cleanup_left"] = sandbox.cleanup_left
    sections: list[tuple[str | None, str]] = [(None, render(result))]
    if "baseline" in result:
        sections = [("fault-free baseline:", render(result["baseline"])), ("with faults:", render(result))]
    return finish(out, args, "bench_run", sections, sandbox.cleanup_left)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
