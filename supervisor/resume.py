"""A run starts from what is on disk: the plan (written now when missing), and the saved run
state fitted to it. The basket files are the truth about what is done; the run state keeps what
they cannot say (window ids, pane PIDs, attempts, times), for the segments and orchestrators the
plan still has (a plan may have been redone with ``prepare --force``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from supervisor.options import RunOptions
from supervisor.state import RunState, RunStatus
from worker.course import Course
from worker.paths import CourseLayout
from worker.plan import (
    DEFAULT_AGENTS,
    DEFAULT_ORCHESTRATORS,
    DEFAULT_SEGMENTS,
    SegmentPlan,
    load_plans,
    plans_complete,
    prepare,
    saved_shape,
)


def plans_for(course: Course, options: RunOptions) -> tuple[list[SegmentPlan], list[str]]:
    """The course's plan and what was done to it, in words: written now when missing or when a
    shape was asked for (prepare is a no-op for the same shape and refuses a different one over
    saved baskets); a plan file lost or damaged is written again when the rest of the plan and
    the saved baskets confirm it (the plan follows from the course and its shape)."""
    layout = CourseLayout(course.root)
    shape = (options.segments, options.orchestrators, options.agents)
    if shape == (None, None, None) and plans_complete(layout):
        return load_plans(course), []
    segments, orchestrators, agents = saved_shape(layout) or (DEFAULT_SEGMENTS, DEFAULT_ORCHESTRATORS, DEFAULT_AGENTS)
    result = prepare(
        course, options.segments or segments, options.orchestrators or orchestrators, options.agents or agents
    )
    notes = [
        f"plan file {name} written again: the other plan files and the saved baskets agree with it"
        for name in result.rewritten
    ]
    return load_plans(course), notes


def resume_state(
    saved: RunState | None, root: Path, session: str, options: RunOptions, plans: list[SegmentPlan]
) -> RunState:
    """The run state of a supervisor starting now: the saved one (when it is this course's)
    fitted to ``plans``, with every segment and orchestrator of the plan present, this
    supervisor's pid, options and start, and no launch counted yet."""
    state = saved if saved is not None and saved.course == str(root) else RunState(course=str(root), session=session)
    state.session, state.tmux_socket = session, options.tmux_socket
    state.state, state.supervisor_pid, state.run_started_at = RunStatus.RUNNING, os.getpid(), time.time()
    state.backend, state.stuck_after = options.backend, options.stuck_after
    state.finished_at, state.summary = None, None
    shape = {p.segment_number: {b.orchestrator_id for b in p.orchestrator_batches} for p in plans}
    state.segments = [s for s in state.segments if s.segment in shape]
    for seg in state.segments:
        seg.orchs = [o for o in seg.orchs if o.orch in shape[seg.segment]]
    for number, orchs in shape.items():
        seg = state.ensure_segment(number)
        for orch in orchs:
            seg.ensure_orch(orch).run_attempts = 0
    return state
