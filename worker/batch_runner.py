"""An orchestrator's agents driven through Message Batches (``--backend anthropic-batch``).

Instead of one thread per agent making one request at a time, the orchestrator collects the
requests of all its agents' unsaved LEGOs into one batch per round
(:class:`~worker.generators.batch_backend.BatchSession`). Each finished basket goes through the
agent it belongs to (:meth:`worker.agent.Agent.record`: the same journal line, the same counts)
and an agent whose baskets are all in writes its agent file (:meth:`~worker.agent.Agent.write_file`,
the same checks). A basket that cannot be made counts as a failed attempt of its LEGO
(:meth:`~worker.agent.Agent.attempt_failed`); the agent's unsaved baskets are started afresh in
the next round, until one of its LEGOs has failed ``max_attempts`` times: then the agent is
failed, as in the thread path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from worker.agent import Agent
from worker.generators.base import GeneratedBasket, GenerationError, SpendLimitReached
from worker.generators.batch_backend import BatchGenerator, BatchSession


class AgentsSink:
    """The :class:`~worker.generators.batch_backend.BatchSink` of an orchestrator's agents."""

    def __init__(self, agents: list[Agent], max_attempts: int) -> None:
        self.agents = agents
        self.max_attempts = max_attempts
        self.owner = {lego_id: agent for agent in agents for lego_id in agent.lego_ids}

    def wanted(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for agent in self.agents:
            st = agent.status
            if st.state in ("done", "failed"):
                continue
            if st.attempts == 0:
                st.attempts = 1
            st.state = "running"
            while not agent.left and st.state == "running":
                self._write(agent)  # everything saved (e.g. resumed from the journal): the file
            if st.state != "running":
                continue
            first = agent.course.lego(agent.lego_ids[0]).position
            out.extend((lego_id, first) for lego_id in agent.left)
        return out

    def saved(self, result: GeneratedBasket) -> None:
        agent = self.owner.get(result.lego_id)
        if agent is None or result.lego_id in agent.saved or agent.status.state in ("done", "failed"):
            return  # taken twice after a restart, or its agent has given up
        agent.record(result)
        if not agent.left:
            self._write(agent)

    def failed(self, lego_id: str, reason: str) -> None:
        agent = self.owner.get(lego_id)
        if agent is not None:
            self._attempt_failed(agent, [lego_id], reason)

    def fail_all(self, reason: str) -> None:
        """The batch service failed for good (past the SDK's retries): every agent with work left."""
        for agent in self.agents:
            if agent.status.state not in ("done", "failed"):
                agent.status.last_error = reason
                agent.status.state = "failed"

    def _write(self, agent: Agent) -> None:
        try:
            agent.write_file()
        except GenerationError as exc:  # a basket broke a rule: dropped, so it is made again
            self._attempt_failed(agent, agent.left, str(exc))

    def _attempt_failed(self, agent: Agent, lego_ids: list[str], reason: str) -> None:
        """An attempt of each of ``lego_ids`` failed (each LEGO is asked for once a round): the
        agent goes on in the next round, or is failed once one LEGO has used ``max_attempts``."""
        st = agent.status
        st.last_error = reason.splitlines()[0][:300] if reason else "failed"
        if st.state == "failed":
            return
        used = agent.attempt_failed(lego_ids)
        if used >= self.max_attempts:
            st.state = "failed"
        else:
            st.attempts = max(st.attempts, used + 1)  # its unsaved baskets start afresh in the next round
            st.state = "running"


def run_batches(
    agents: list[Agent],
    generator: BatchGenerator,
    state_path: Path,
    stop: threading.Event,
    max_attempts: int,
    may_submit: Callable[[], bool] | None,
    on_wait: Callable[[], None],
    on_session: Callable[[BatchSession], None] | None = None,
    on_halt: Callable[[str], None] | None = None,
) -> str:
    """Run ``agents`` to the end through batches: ``"done"`` (every agent done or failed),
    ``"stopped"`` or ``"budget"``. Agents left running when it stops are marked so."""
    sink = AgentsSink(agents, max_attempts)
    session = BatchSession(generator, state_path, sink, stop, may_submit=may_submit, on_wait=on_wait)
    if on_session is not None:
        on_session(session)
    try:
        outcome = session.run()
    except SpendLimitReached as exc:  # nothing more can be spent: stop, resumable, no attempt failed
        if on_halt is not None:
            on_halt(str(exc))
        outcome = "budget"
    except GenerationError as exc:
        sink.fail_all(str(exc))
        return "done"
    if outcome != "done":
        for agent in agents:
            if agent.status.state not in ("done", "failed"):
                agent.status.state = "budget" if outcome == "budget" else "stopped"
    return outcome
