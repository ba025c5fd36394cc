#!/usr/bin/env python3
"""Benchmark the offline path end to end: ``phase5 run --backend corpus --stagger 0`` on a course
(default ``../shared/data/spa_for_eng``, 1,766 baskets; prepare included, real tmux on a private
socket, real workers), then ``phase5 validate`` on its result. Each figure comes with a
baseline measured in the same invocation:

- ``run_wall_s`` against ``generate_wall_s``: ``phase5 generate --backend corpus`` on another
  copy, every basket in one process (no plan, no tmux, no segments, no worker start-ups);
  ``supervision_ratio`` = run / generate.
- ``peak_rss_mb``: the summed RSS of the supervisor and every pane's process tree, sampled every
  0.2 s (the tmux server apart), against ``generate_peak_rss_mb``.
- ``validate_wall_s`` (``phase5 validate --json``, a new process) against ``load_wall_s``: a new
  process that imports the same command line and only loads the course; ``validate_ratio`` =
  validate / load. ``validate_check_s`` is validate's own time for the checks alone.
- ``processes_left``, ``windows_left``: what the run left (must be 0).

    python scripts/bench_offline.py
    python scripts/bench_offline.py --course examples/courses/spa_demo --json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_COURSE,
    Sandbox,
    TmuxServerPid,
    TreeSampler,
    add_output_options,
    clean_env,
    finish,
    install_signal_handlers,
    machine,
    mb,
    phase5_argv,
    run_leftovers,
    table,
)

TARGET_RUN_S = 30.0


def timed(
    sandbox: Sandbox, argv: list[str], log: Path, timeout: float, sampler: TreeSampler | None = None
) -> tuple[float, int | None]:
    """Run ``argv`` as a child of the sandbox; (wall seconds, exit status)."""
    started = time.perf_counter()
    proc = sandbox.popen(argv, log, clean_env())
    if sampler is not None:
        sampler.roots = lambda: [proc.pid, *sampler.separate()]
        sampler.start()
    try:
        proc.wait(timeout=timeout)
    finally:
        if sampler is not None:
            sampler.stop()
    return time.perf_counter() - started, proc.returncode


def bench(sandbox: Sandbox, course_source: Path, poll: float | None, timeout: float) -> dict[str, Any]:
    # 1. The baseline: every basket in one process.
    gen_course = sandbox.copy_course(course_source, "generate")
    gen_sampler = TreeSampler(lambda: [])
    gen_wall, gen_code = timed(
        sandbox,
        phase5_argv("generate", str(gen_course), "--backend", "corpus", "--json"),
        sandbox.dir / "generate" / "generate.log",
        timeout,
        gen_sampler,
    )
    # 2. The supervised run, prepare included.
    course = sandbox.copy_course(course_source, "run")
    socket = sandbox.new_socket("offline")
    argv = phase5_argv("run", str(course), "--backend", "corpus", "--stagger", "0", "--tmux-socket", socket, "--plain")
    if poll is not None:
        argv += ["--poll", str(poll)]
    tmux_pid = TmuxServerPid(socket)
    run_sampler = TreeSampler(lambda: [], separate=tmux_pid)
    run_wall, run_code = timed(sandbox, argv, sandbox.dir / "run" / "run.log", timeout, run_sampler)
    processes, windows = run_leftovers(course, socket)
    # 3. validate on the result, against loading the course alone (same interpreter and imports).
    validate_log = sandbox.dir / "run" / "validate.json"
    validate_wall, validate_code = timed(sandbox, phase5_argv("validate", str(course), "--json"), validate_log, timeout)
    load_code_text = (
        "import json, time\nimport supervisor.cli\nfrom worker.course import Course\n"
        f"t = time.perf_counter()\nCourse.load({str(course)!r})\n"
        "print(json.dumps({'load_s': round(time.perf_counter() - t, 3)}))\n"
    )
    load_log = sandbox.dir / "run" / "load.log"
    load_wall, load_code = timed(sandbox, [sys.executable, "-c", load_code_text], load_log, timeout)
    try:
        load_s = json.loads(load_log.read_text().strip().splitlines()[-1])["load_s"]
    except (ValueError, IndexError, KeyError):
        load_s = None
    text = validate_log.read_text()
    try:  # the log holds stdout and stderr: the JSON object is the outermost braces
        report = json.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError:
        report = {"ok": False, "error": text[-500:]}
    return {
        "course": course_source.name,
        "baskets": report.get("expected"),
        "run_wall_s": round(run_wall, 3),
        "run_exit_code": run_code,
        "generate_wall_s": round(gen_wall, 3),
        "generate_exit_code": gen_code,
        "supervision_ratio": round(run_wall / gen_wall, 3) if gen_wall else None,
        "peak_rss_mb": mb(run_sampler.peak_tree),
        "peak_pss_mb": mb(run_sampler.peak_pss),
        "peak_detail": [f"{kind} {size}" for kind, size in run_sampler.peak_detail],
        "peak_tmux_rss_mb": mb(run_sampler.peak_separate),
        "generate_peak_rss_mb": mb(gen_sampler.peak_tree),
        "memory_ratio": round(run_sampler.peak_tree / gen_sampler.peak_tree, 3) if gen_sampler.peak_tree else None,
        "validate_wall_s": round(validate_wall, 3),
        "validate_check_s": report.get("seconds"),
        "load_wall_s": round(load_wall, 3),
        "load_exit_code": load_code,
        "validate_ratio": round(validate_wall / load_wall, 3) if load_wall else None,
        "load_s": load_s,
        "check_ratio": round(report["seconds"] / load_s, 3) if load_s and report.get("seconds") else None,
        "validation_ok": bool(report.get("ok")) and validate_code == 0,
        "coverage": report.get("coverage"),
        "cpu_s": {
            "run_tree": run_sampler.cpu_s,
            "generate": gen_sampler.cpu_s,
            "bench": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2),
        },
        "processes_left": len(processes),
        "processes_left_cmdlines": processes,
        "windows_left": windows,
    }


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    checks = {
        "run_wall_s": (result["run_wall_s"], f"< {TARGET_RUN_S:g}", result["run_wall_s"] < TARGET_RUN_S),
        "validation_ok": (result["validation_ok"], "true", result["validation_ok"]),
        "processes_left": (result["processes_left"], "== 0", result["processes_left"] == 0),
        "windows_left": (result["windows_left"], "== 0", result["windows_left"] == 0),
    }
    return {name: {"value": v, "target": t, "ok": bool(ok)} for name, (v, t, ok) in checks.items()}


def render(r: dict[str, Any]) -> str:
    return table(
        [
            (
                "run_wall_s",
                r["run_wall_s"],
                f"phase5 run --backend corpus --stagger 0, {r['baskets']} baskets, exit {r['run_exit_code']}",
            ),
            ("generate_wall_s", r["generate_wall_s"], "phase5 generate --backend corpus (one process)"),
            ("supervision_ratio", r["supervision_ratio"], "run / generate"),
            ("peak_rss_mb", r["peak_rss_mb"], "supervisor + panes (RSS sum)"),
            ("peak_pss_mb", r["peak_pss_mb"], "the same, shared pages counted once"),
            ("peak_detail", ", ".join(r["peak_detail"]), "processes at the peak, MB"),
            ("generate_peak_rss_mb", r["generate_peak_rss_mb"], "the one process"),
            ("memory_ratio", r["memory_ratio"], "run / generate"),
            ("validate_wall_s", r["validate_wall_s"], f"phase5 validate (checks alone {r['validate_check_s']} s)"),
            ("load_wall_s", r["load_wall_s"], "a process that loads the course only"),
            ("validate_ratio", r["validate_ratio"], "validate / load (whole processes)"),
            ("check_ratio", r["check_ratio"], f"validate's checks / Course.load alone ({r['load_s']} s), in-process"),
            ("validation_ok", r["validation_ok"], f"coverage {r['coverage']}"),
            ("cpu_s", " ".join(f"{k}:{v}" for k, v in r["cpu_s"].items()), "CPU seconds"),
            ("processes_left", r["processes_left"], ""),
            ("windows_left", r["windows_left"], ""),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--course", type=Path, default=DEFAULT_COURSE, help="course folder (copied; default %(default)s)"
    )
    parser.add_argument("--poll", type=float, default=None, help="supervisor poll seconds [default: phase5 run's]")
    add_output_options(parser, timeout=600.0)
    args = parser.parse_args(argv)
    install_signal_handlers()
    out: dict[str, Any] = {"machine": machine(), "command": " ".join(["bench_offline.py", *(argv or sys.argv[1:])])}
    sandbox = Sandbox("bench-offline", keep=args.keep)
    try:
        result = bench(sandbox, args.course.resolve(), args.poll, args.timeout)
    finally:
        sandbox.close()
    out.update(result)
    if args.keep:
        out["folder"] = str(sandbox.dir)
    out["targets"] = targets(result)
    out["cleanup_left"] = sandbox.cleanup_left
    return finish(out, args, "bench_offline", [(None, render(result))], sandbox.cleanup_left)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
