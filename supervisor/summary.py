"""The end of a run: the final merge, its validation against the course and the summary (saved in
the run state for ``status``), or, when an orchestrator failed for good, the failed run left for
people to read."""

from __future__ import annotations

import os
import time
from typing import Any

from supervisor.context import RunContext
from supervisor.detach import SUPERVISOR_WINDOW
from supervisor.state import OrchStatus, RunStatus
from worker.exitcodes import ExitCode
from worker.merge import merge_final
from worker.plan import SegmentPlan
from worker.progress import read_progress
from worker.redo import Redo, apply_redo
from worker.report import Report, format_report, load_basket_file, validate_baskets


def finish(ctx: RunContext, plans: list[SegmentPlan]) -> ExitCode:
    """Every segment merged: the final merge, validation, the summary; every window closed."""
    state = ctx.state
    result = merge_final(ctx.course)
    report, _, summary = _close_out(ctx, plans, {"baskets": result.count, "expected": result.expected}, total_time=True)
    tokens, spend = summary["tokens"], summary["cost_usd"]
    ctx.log(f"final merge: {result.summary()}")
    for line in format_report(report, limit=5).splitlines():
        ctx.log.show(line)
    ctx.log(
        f"done in {summary['wall_time_s']} s (since first start"
        f" {summary['wall_time_total_s']} s), retries {state.retries}, tokens "
        + (", ".join(f"{k} {v}" for k, v in tokens.items() if v) or "none")
        + f", spend ${spend:.4f}"
    )
    ctx.save()
    ctx.teardown.close_all(own_pane(ctx))
    return ExitCode.OK if report.ok else ExitCode.FAILED


def finish_redo(ctx: RunContext, redo: Redo) -> ExitCode:
    """Every segment of a redo merged: its baskets put into ``lego_baskets.json`` (every other
    basket unchanged, byte for byte), the file validated, the redo summarised; windows closed."""
    state = ctx.state
    applied = apply_redo(ctx.course, redo)
    before = validate_baskets(ctx.course, applied.before)
    fields: dict[str, Any] = {
        "redo": redo.number,
        "selection": redo.info.selection,
        "baskets": len(applied.ids),
        "changed": len(applied.changed),
        "kept": applied.kept,
        "rewritten": applied.rewritten,
        "redone_before": _counts(before),
    }
    report, baskets, summary = _close_out(ctx, redo.plans, fields)
    tokens, spend = summary["tokens"], summary["cost_usd"]
    after = validate_baskets(ctx.course, {i: baskets[i] for i in applied.ids})
    state.summary = summary = {**fields, "redone_after": _counts(after), **summary}
    kept = (
        f"{applied.kept} others unchanged byte for byte"
        if not applied.rewritten
        else f"{applied.kept} others unchanged in content (the file was not in a layout phase5 can cut apart,"
        " so it was written whole)"
    )
    ctx.log(
        f"redo {redo.number} applied: {len(applied.ids)} baskets into {ctx.layout.final_baskets.name}"
        f" ({len(applied.changed)} changed; {kept})"
    )
    was, now_ = summary["redone_before"], summary["redone_after"]
    ctx.log(
        f"redo {redo.number}: of the {len(applied.ids)} baskets, usable (3-5 e-phrases) {was['usable']} -> "
        f"{now_['usable']}, short {was['short']} -> {now_['short']}, empty {was['empty']} -> {now_['empty']}"
    )
    for line in format_report(report, limit=5).splitlines():
        ctx.log.show(line)
    ctx.log(
        f"redo {redo.number} done in {summary['wall_time_s']} s, retries {state.retries}, tokens "
        + (", ".join(f"{k} {v}" for k, v in tokens.items() if v) or "none")
        + f", spend ${spend:.4f} (phase5 cost COURSE shows it with the rest)"
    )
    ctx.save()
    ctx.teardown.close_all(own_pane(ctx))
    return ExitCode.OK if report.ok else ExitCode.FAILED


def _close_out(
    ctx: RunContext, plans: list[SegmentPlan], fields: dict[str, Any], total_time: bool = False
) -> tuple[Report, dict[str, Any], dict[str, Any]]:
    """The end of a run or a redo: ``lego_baskets.json`` validated, the spend added up, the
    summary (``fields`` first, then the rule figures, times, retries, tokens and cost) and the
    run's final state recorded. Returns the report, the baskets and the summary."""
    state = ctx.state
    baskets, duplicates = load_basket_file(ctx.layout.final_baskets)
    report = validate_baskets(ctx.course, baskets, duplicates)
    tokens, spend = _spend(ctx, plans)
    now = time.time()
    times = {"wall_time_s": round(now - state.run_started_at, 1)}
    if total_time:
        times["wall_time_total_s"] = round(now - state.first_started_at, 1)
    state.summary = summary = {
        "expected": report.expected,
        **fields,
        **_rules(report),
        **times,
        "retries": state.retries,
        "tokens": tokens,
        "cost_usd": round(spend, 6),
    }
    state.state = RunStatus.DONE if report.ok else RunStatus.FAILED
    state.finished_at = now
    return report, baskets, summary


def _counts(report: Report) -> dict[str, int]:
    return {"usable": report.usable, "short": report.short, "empty": report.empty, "flagged": len(report.flagged())}


def finish_failed(ctx: RunContext) -> ExitCode:
    """An orchestrator failed for good: stop every process, keep the failed windows' dead panes
    for people to read; the next ``run`` resumes."""
    state = ctx.state
    failed = [o for s in state.segments for o in s.orchs if o.state == OrchStatus.FAILED]
    mine = os.environ.get("TMUX_PANE")
    ctx.teardown.close_windows([p for p in ctx.session.panes() if not p.dead and p.pane_id != mine])
    state.state, state.finished_at = RunStatus.FAILED, time.time()
    names = ", ".join(f"{o.window} ({o.last_error})" for o in failed)
    ctx.log(f"run failed: {names}. Their windows stay open (dead panes) to read; fix and run again to resume")
    if ctx.options.in_session:
        ctx.session.set_remain_on_exit(mine or SUPERVISOR_WINDOW, True)
    ctx.save()
    bad_input = ExitCode.BAD_INPUT.pane_text
    if failed and all(o.exit_statuses[-1:] == [bad_input] for o in failed):
        return ExitCode.BAD_INPUT  # a worker refused its input (a file it cannot use): so does the run
    return ExitCode.FAILED


def own_pane(ctx: RunContext) -> str | None:
    """This supervisor's pane when it runs in the session (--detach): kept when closing windows."""
    return os.environ.get("TMUX_PANE") if ctx.options.in_session else None


def _rules(report: Report) -> dict[str, Any]:
    return {
        "coverage": round(report.coverage, 6),
        "valid": report.ok,
        "gate_phrases_pass": report.gate_phrases_pass,
        "e_phrases": report.e_phrases,
        "band_phrases_pass": report.band_phrases_pass,
        "band_phrases": report.band_phrases,
        "culminating_first_pass": report.culminating_first_pass,
        "culminating": report.culminating,
        "recency_pass": report.recency_pass,
        "recency_baskets": report.recency_baskets,
    }


def _spend(ctx: RunContext, plans: list[SegmentPlan]) -> tuple[dict[str, int], float]:
    """Tokens and cost of the whole run, as the workers' progress files report them."""
    tokens: dict[str, int] = {}
    spend = 0.0
    for plan in plans:
        for batch in plan.orchestrator_batches:
            progress = read_progress(ctx.layout, plan.segment_number, batch.orchestrator_id)
            if progress is None:
                continue
            for key, value in progress.tokens.items():
                tokens[key] = tokens.get(key, 0) + value
            spend += progress.cost_usd
    return tokens, spend
