"""``phase5 redo`` under the supervisor: the chosen baskets as segments of their own, run by the
same segment loop as the course (:class:`~supervisor.runner.Runner` with a :class:`RedoJob`),
then put into ``lego_baskets.json`` (:func:`~supervisor.summary.finish_redo`).

A redo that did not finish (a crash, ``phase5 stop``, the budget) is resumed with
``phase5 redo COURSE --resume`` or the same selection again: its saved baskets are kept, the
rest made with the backend and model it was started with. A new redo waits until it is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from supervisor.context import RunContext
from supervisor.options import RunOptions
from supervisor.summary import finish_redo
from worker.course import Course
from worker.errors import Phase5Error
from worker.exitcodes import ExitCode
from worker.paths import course_arg
from worker.plan import SegmentPlan
from worker.redo import Redo, unfinished, write_redo


@dataclass
class RedoRequest:
    """What the command line asked for: the baskets (None with ``--resume``) and how they were
    chosen, the backend and model, and the shape of the redo's plan."""

    ids: list[str] | None
    selection: str
    backend: str
    model: str | None
    segments: int | None = None
    orchestrators: int | None = None
    agents: int | None = None


def to_resume(course: Course, request: RedoRequest) -> Redo | None:
    """The unfinished redo this request continues: any with ``--resume`` (ids None), else the one
    whose baskets are exactly the ones asked for. A new redo while another is unfinished, or
    ``--resume`` with none, is refused in one line."""
    pending = unfinished(course)
    if request.ids is None:
        if pending is None:
            raise Phase5Error(f"{course.root.name}: no unfinished redo to resume")
        return pending
    if pending is None:
        return None
    if set(pending.ids) == set(request.ids):
        return pending
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(pending.info.created_at))
    raise Phase5Error(
        f"{pending.describe()} (started {started}) is unfinished; finish it first with"
        f" `phase5 redo {course_arg(course.root)} --resume`"
    )


class RedoJob:
    """A redo for :class:`~supervisor.runner.Runner`: the new (or resumed) redo's segments, and
    at the end its baskets put into ``lego_baskets.json``."""

    def __init__(self, request: RedoRequest) -> None:
        self.request = request
        self.redo: Redo | None = None

    def plans(self, course: Course, options: RunOptions) -> tuple[list[SegmentPlan], list[str]]:
        """Checked again under the course's lock: no other redo began since the command looked."""
        request = self.request
        self.redo = to_resume(course, request)
        if self.redo is None:
            assert request.ids is not None
            self.redo = write_redo(
                course,
                request.ids,
                request.backend,
                request.model,
                request.selection,
                request.segments,
                request.orchestrators,
                request.agents,
            )
        return self.redo.plans, []

    def describe(self, plans: list[SegmentPlan]) -> str:
        assert self.redo is not None
        return self.redo.describe(backend=False)  # the runner names the backend

    def finish(self, ctx: RunContext, plans: list[SegmentPlan]) -> ExitCode:
        assert self.redo is not None
        return finish_redo(ctx, self.redo)
