"""The benchmark scripts at small scale, so they cannot rot: each runs as a whole process on the
example course with a short latency and ``--json``; the figures themselves are not judged here
(a loaded test machine says nothing about them), only that every key is reported, the run is
complete and valid, nothing is lost, and nothing is left behind: no process, no tmux window, no
temporary folder, also when the benchmark is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.tmux]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "courses" / "spa_demo"
RUN_KEYS = {
    "wall_s",
    "latency_dist",
    "rate_limits",
    "rate_limited_pct",
    "cache_write_ratio",
    "ideal_s",
    "efficiency",
    "original_plan_s",
    "overhead_per_segment_s",
    "peak_rss_mb",
    "peak_pss_mb",
    "processes_left",
    "windows_left",
    "validation_ok",
    "segments",
    "machine",
    "targets",
    "cleanup_left",
}
FAULT_KEYS = {"baskets_lost", "regenerated_saved", "redone_in_flight", "validation_ok", "fault_free_wall_s"}
OFFLINE_KEYS = {
    "run_wall_s",
    "generate_wall_s",
    "supervision_ratio",
    "peak_rss_mb",
    "validate_wall_s",
    "load_wall_s",
    "validate_ratio",
    "validation_ok",
    "processes_left",
    "windows_left",
}


def bench_env() -> dict[str, str]:
    """No tmux, phase5 or Anthropic settings of the caller leak into the benchmark."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHASE5_", "ANTHROPIC_")) and k not in ("TMUX", "TMUX_PANE")
    }


def run_script(name: str, *args: str, timeout: float = 150) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=bench_env(),
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    # exit 1 only says a target was missed, which a small run on a busy machine may well do
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


def leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        line = " ".join(proc.info["cmdline"] or [])
        if marker in line:
            found.append(line[:200])
    return found


def assert_clean_run(data: dict) -> None:
    assert data["processes_left"] == 0, data.get("processes_left_cmdlines")
    assert data["windows_left"] == 0
    assert data["validation_ok"] is True
    assert data["cleanup_left"] == []


def test_bench_run_small(tmp_path: Path) -> None:
    data = run_script("bench_run.py", "--course", str(DEMO), "--latency", "0.05", "--cold-baseline", "--direct")
    assert data.keys() >= RUN_KEYS
    assert data["cold_start"]["processes_left"] == data["cold_start"]["windows_left"] == 0
    assert data["cold_start"]["validation_ok"] is True and data["warm_vs_cold"] > 0
    assert "peak_pss_mb" in data["targets"]
    assert_clean_run(data)
    assert data["exit_code"] == 0 and data["saved_baskets"] == data["baskets"] == 125
    assert data["requests"] >= 124 and data["requests_per_basket"] > 0.9
    assert data["latency_dist"]["kind"] == "lognormal" and data["rate_limits"]["tier"] == "start"
    assert 0 <= data["rate_limited_pct"] <= 100 and 0.5 < data["cache_write_ratio"] < 2
    assert len(data["segments"]) == 3 and all(s["overhead_s"] > 0 for s in data["segments"])
    assert 0 < data["efficiency"] <= 1 and data["ideal_s"] > 0 and data["original_plan_s"] > data["ideal_s"]
    assert data["direct_exit_code"] == 0 and data["direct_s"] > 0 and data["supervision_ratio"] > 0
    assert data["peak_rss_mb"] > 0 and data["peak_processes"] >= 2


def test_bench_models_small() -> None:
    data = run_script("bench_models.py", "--models", "claude-sonnet-5-5", "claude-haiku-4-5", "--latency", "0.02")
    assert [m["model"] for m in data["models"]] == ["claude-sonnet-5-5", "claude-haiku-4-5"]
    for model in data["models"]:
        assert model["exit_code"] == 0 and model["validation_ok"] is True and model["baskets"] == 125
        assert model["answered_400"] == 0 and model["wasted_answers"] == 0 and model["repair_requests"] > 0
        assert model["cached_input_pct"] > 80 and model["processes_left"] == model["windows_left"] == 0
    assert data["cleanup_left"] == [] and "claude-haiku-4-5.cached_input_pct" in data["targets"]


def test_bench_run_faults_small() -> None:
    # One agent per orchestrator and one request in flight, so a segment lasts long enough to kill
    # a worker mid-way.
    data = run_script(
        "bench_run.py",
        "--course",
        str(DEMO),
        "--latency",
        "0.1",
        "--agents",
        "1",
        "--max-in-flight",
        "1",
        "--faults",
        "--no-baseline",
        "--no-direct",
    )
    assert data.keys() >= (RUN_KEYS | FAULT_KEYS)
    assert_clean_run(data)
    assert data["exit_code"] == 0
    assert data["baskets_lost"] == 0 and data["regenerated_saved"] == 0
    assert data["worker_kills"] == 3 and data["supervisor_kills"] == 1, data["kills"]
    assert data["redone_in_flight"] <= data["in_flight_at_kills"] <= 3
    assert data["answers"].get("500", 0) + data["answers"].get("429", 0) > 0
    assert data["fault_free_wall_s"] is None  # --no-baseline


def test_bench_offline_small() -> None:
    data = run_script("bench_offline.py", "--course", str(DEMO), "--poll", "0.2")
    assert data.keys() >= OFFLINE_KEYS
    assert_clean_run(data)
    assert data["run_exit_code"] == 0 and data["generate_exit_code"] == 0 and data["baskets"] == 125
    assert data["supervision_ratio"] > 0 and data["validate_ratio"] > 0


def test_bench_run_interrupted_leaves_nothing(procs: list) -> None:
    """Ctrl-C in the middle of a run: the benchmark stops the supervisor, its workers, the tmux
    server and the fake API, and removes its folder."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_run.py"),
            "--course",
            str(DEMO),
            "--latency",
            "0.5",
            "--no-direct",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench_env(),
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    procs.append(proc)
    marker = f"phase5-bench-run-{proc.pid}"
    wait_for(
        lambda: proc.poll() is not None or any(" worker " in f" {line} " for line in leftovers(marker)),
        60,
        "a worker of the benchmark's run",
    )
    assert proc.poll() is None, "the benchmark ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted" in err
    wait_for(lambda: not leftovers(marker), 10, "every process of the benchmark to end")
    assert not list(Path(tempfile.gettempdir()).glob(f"{marker}-*"))
    sockets = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    assert not list(sockets.glob(f"{marker}*")), "the private tmux socket file was left"
