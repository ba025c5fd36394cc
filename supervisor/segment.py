"""One segment, from its launches to its merge: the orchestrators without a valid file are
launched ``--stagger`` seconds apart (live windows of them adopted), polled every ``--poll``
seconds (:meth:`~supervisor.lifecycle.OrchLifecycle.transition`), and once every orchestrator
file is in and valid the segment is merged, its process trees killed and its windows closed,
and nothing of it may be left before the next segment starts."""

from __future__ import annotations

import time

from supervisor.context import RunContext
from supervisor.display import segment_rows
from supervisor.lifecycle import OrchLifecycle
from supervisor.options import RunOptions
from supervisor.state import OrchStatus, SegmentStatus
from worker.checks import segment_file_ok
from worker.merge import merge_segment
from worker.plan import SegmentPlan

SETTLE_POLL = 0.1  # seconds between polls while tmux has yet to record a dead worker's pane


class Stagger:
    """The delay between a segment's launches: ``--stagger`` for every segment, or with
    ``--stagger-segments first`` only for the first segment this run launches (the API is busy
    by then: the previous segment's agents just stopped)."""

    def __init__(self, options: RunOptions) -> None:
        self.seconds = options.stagger_s
        self.first_only = options.stagger_segments == "first"
        self.launched = False

    def for_segment(self, launches: int) -> float:
        delay = 0.0 if self.first_only and self.launched else self.seconds
        self.launched = self.launched or launches > 0
        return delay


def run_segment(ctx: RunContext, plan: SegmentPlan, stagger: Stagger, total_segments: int) -> bool:
    """Run one segment to its merge. False when an orchestrator failed for good."""
    number = plan.segment_number
    seg = ctx.state.ensure_segment(number)
    orchs = [OrchLifecycle(ctx, plan, seg.ensure_orch(b.orchestrator_id)) for b in plan.orchestrator_batches]
    if segment_file_ok(ctx.course, number, plan):
        if seg.state != SegmentStatus.MERGED:
            seg.state, seg.finished_at = SegmentStatus.MERGED, seg.finished_at or time.time()
        close_segment(ctx, plan)
        ctx.save()
        return True
    seg.state, seg.started_at, seg.finished_at = SegmentStatus.RUNNING, seg.started_at or time.time(), None
    ctx.log(f"{plan.label}: {plan.total_legos} baskets, {len(plan.orchestrator_batches)} orchestrators")
    panes = ctx.session.panes()
    pending = [o for o in orchs if o.resume(panes) == OrchStatus.PENDING]
    ctx.save()
    delay = stagger.for_segment(len(pending))
    next_launch = time.monotonic()

    def watch() -> tuple[object, ...]:
        return tuple(o.fingerprint() for o in orchs)

    while True:
        seen = watch()  # before looking: what changes while this round looks ends the next wait
        ctx.signals.check()
        ctx.check_files()
        if pending and time.monotonic() >= next_launch:
            pending.pop(0).launch()
            next_launch = time.monotonic() + delay
        by_window = {p.window_id: p for p in ctx.session.panes()}
        for orch in orchs:
            if orch.state.active:
                orch.transition(by_window)
        ctx.save()
        title = f"segment {number}/{total_segments}" if plan.redo is None else plan.label
        ctx.log.display.rows(title, segment_rows(ctx.layout, plan, ctx.state))
        states = {o.state for o in orchs}
        if states == {OrchStatus.DONE} and not pending:
            break
        if not pending and not any(state.active for state in states):
            seg.state = SegmentStatus.FAILED
            ctx.save()
            return False
        timeout = ctx.options.poll
        if pending:
            timeout = min(timeout, max(0.0, next_launch - time.monotonic()))
        if any(o.gone_since is not None for o in orchs):
            timeout = min(timeout, SETTLE_POLL)  # a worker just ended: read tmux's verdict soon
        ctx.signals.wait(timeout, watch=watch, since=seen)
    result = merge_segment(ctx.course, number)
    ctx.log(f"{plan.label} merged: {result.summary()}")
    close_segment(ctx, plan)
    seg.state, seg.finished_at = SegmentStatus.MERGED, time.time()
    ctx.save()
    return True


def close_segment(ctx: RunContext, plan: SegmentPlan) -> None:
    """Kill every pane's process tree of the segment, close its windows, and check that no
    worker of it is left."""
    number = plan.segment_number
    closed = ctx.teardown.close_segment(number, [b.orchestrator_id for b in plan.orchestrator_batches])
    if closed:
        ctx.log(f"segment {number}: {closed} windows closed, no process left")
