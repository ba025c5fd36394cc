#!/usr/bin/env python3
"""Each model through the whole pipeline: ``phase5 run --backend anthropic --model M`` against the
fake API, which treats each model id as the real API does (400 for what the model refuses,
thinking blocks, structured output, its minimum cacheable length and tokenizer). Per model:
requests and how they were answered (``answered_400`` must be 0: no request the model refuses
was sent), answers wasted as prose, malformed JSON, refusals or cut at ``max_tokens``
(``wasted_answers`` must be 0), repair rounds (the fake puts a phrase with future vocabulary in
``--future`` of the first answers, so repairs send thinking blocks back), the share of input
tokens read from the cache (``cached_input_pct``, target >= 90), cost, validation, and what was
left behind.

    python scripts/bench_models.py                                   # example course, four models
    python scripts/bench_models.py --course ../shared/data/spa_for_eng --json-out models.json
    python scripts/bench_models.py --models claude-sonnet-5-5 claude-haiku-4-5 --latency 0.1

Everything runs in a temporary folder on a private tmux server and is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import (
    FAKE_KEY,
    FakeServer,
    Sandbox,
    add_output_options,
    clean_env,
    finish,
    install_signal_handlers,
    machine,
    phase5_argv,
    run_leftovers,
    table,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "courses" / "spa_demo"
MODELS = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-sonnet-5", "claude-haiku-4-5")
CACHED_TARGET = 90.0


def run_model(sandbox: Sandbox, args: argparse.Namespace, model: str) -> dict[str, Any]:
    label = model.replace("claude-", "")
    course = sandbox.copy_course(args.course, label)
    fake_args = ["--latency", str(args.latency), "--seed", str(args.seed), "--fault", f"future:{args.future}"]
    server = FakeServer(sandbox, course, sandbox.dir / label / "fake_api.jsonl", fake_args, args.timeout + 60)
    socket = sandbox.new_socket(label)
    env = clean_env(ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.base_url)
    argv = phase5_argv(
        "run", str(course), "--backend", "anthropic", "--model", model, "--stagger", str(args.latency),
        "--poll", str(max(args.latency, 0.05)), "--tmux-socket", socket, "--plain",
    )  # fmt: skip
    started = time.monotonic()
    proc = sandbox.popen(argv, sandbox.dir / label / "run.log", env)
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{model}: phase5 run still running after {args.timeout:.0f} s") from None
    wall = time.monotonic() - started
    left, windows = run_leftovers(course, socket, exclude=[server.pid])
    server.stop()
    requests = [r for r in server.requests() if r.get("op") == "message"]
    statuses = Counter(str(r.get("status")) for r in requests)
    answered = [r for r in requests if r.get("status") == 200]
    wasted: Counter[str] = Counter()
    for r in answered:
        if r.get("fault") in ("prose", "malformed", "refusal") and not r.get("fault_suppressed"):
            wasted[r["fault"]] += 1
        if r.get("cut"):
            wasted["cut at max_tokens"] += 1
    usage: Counter[str] = Counter()
    for r in answered:
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            usage[key] += r["usage"][key]
    prompt = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    validate = subprocess.run(
        phase5_argv("validate", str(course), "--json"), capture_output=True, text=True, env=clean_env(), timeout=300
    )
    cost = subprocess.run(
        phase5_argv("cost", str(course), "--json"), capture_output=True, text=True, env=clean_env(), timeout=300
    )
    try:
        report, spend = json.loads(validate.stdout), json.loads(cost.stdout)
    except ValueError:
        report, spend = {"ok": False}, {"run": {}, "repairs": {}}
    return {
        "model": model,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "baskets": report.get("expected"),
        "requests": len(requests),
        "answers": dict(statuses),
        "answered_400": statuses.get("400", 0),
        "wasted_answers": sum(wasted.values()),
        "wasted_by_kind": dict(wasted),
        "repair_requests": sum(1 for r in answered if r.get("repair")),
        "shapes": dict(Counter(r.get("shape") for r in answered)),
        "thinking_answers": sum(1 for r in answered if r["usage"]["output_tokens"] > args.thinking_floor),
        "tokens": dict(usage),
        "cached_input_pct": round(100 * usage["cache_read_input_tokens"] / prompt, 2) if prompt else None,
        "cache_write_pct": round(100 * usage["cache_creation_input_tokens"] / prompt, 2) if prompt else None,
        "cost_usd": (spend.get("run") or {}).get("cost_usd"),
        "repairs": spend.get("repairs"),
        "validation_ok": bool(report.get("ok")),
        "processes_left": len(left),
        "windows_left": windows,
    }


def targets(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for r in results:
        name = r["model"]
        checks = {
            "answered_400": (r["answered_400"], "== 0", r["answered_400"] == 0),
            "wasted_answers": (r["wasted_answers"], "== 0", r["wasted_answers"] == 0),
            "cached_input_pct": (
                r["cached_input_pct"],
                f">= {CACHED_TARGET:g}",
                (r["cached_input_pct"] or 0) >= CACHED_TARGET,
            ),
            "validation_ok": (r["validation_ok"], "true", r["validation_ok"]),
            "left": (r["processes_left"] + r["windows_left"], "== 0", r["processes_left"] + r["windows_left"] == 0),
        }
        for key, (value, target, ok) in checks.items():
            out[f"{name}.{key}"] = {"value": value, "target": target, "ok": bool(ok)}
    return out


def render(r: dict[str, Any]) -> str:
    rows = [
        ("exit / wall_s", f"{r['exit_code']} / {r['wall_s']}", f"{r['baskets']} baskets"),
        ("requests", r["requests"], f"answers {r['answers']}; shapes {r['shapes']}"),
        ("answered_400", r["answered_400"], "requests the model refused"),
        ("wasted_answers", r["wasted_answers"], f"{r['wasted_by_kind'] or 'none'}"),
        ("repair_requests", r["repair_requests"], "with the answer (thinking included) sent back"),
        ("cached_input_pct", r["cached_input_pct"], f"cache read / all input (writes {r['cache_write_pct']}%)"),
        ("cost_usd", r["cost_usd"], f"repairs {r['repairs']}"),
        ("validation_ok", r["validation_ok"], f"left: {r['processes_left']} processes, {r['windows_left']} windows"),
    ]
    return table(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--course", type=Path, default=EXAMPLE, help="course folder (copied; default %(default)s)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="model ids [default: %(default)s]")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request at the fake API")
    parser.add_argument("--future", type=float, default=0.1, help="share of answers with a future-vocabulary phrase")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fake's draws")
    parser.add_argument("--thinking-floor", type=int, default=500, help="output tokens above which an answer thought")
    add_output_options(parser, timeout=900.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    results: list[dict[str, Any]] = []
    with Sandbox("models", keep=args.keep) as sandbox:
        for model in args.models:
            results.append(run_model(sandbox, args, model))
    out = {
        "command": " ".join(["scripts/bench_models.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "course": str(args.course),
        "latency_s": args.latency,
        "models": results,
        "targets": targets(results),
    }
    out["cleanup_left"] = [str(pid) for pid in sandbox.cleanup_left]
    sections = [(f"-- {r['model']}", render(r)) for r in results]
    return finish(out, args, "bench_models", sections, out["cleanup_left"])


if __name__ == "__main__":
    sys.exit(main())
