"""The exit statuses of every ``phase5`` command, the worker's included.

The supervisor reads a worker's status back from tmux (``pane_dead_status``), so the two sides
share this one table. A process stopped by a signal exits ``128 + signum`` (130 for SIGINT, 143
for SIGTERM), as a shell reports it.

>>> int(ExitCode.BUDGET), ExitCode.signalled(15)
(4, 143)
>>> ExitCode.BAD_INPUT.pane_text  # as ``pane_dead_status`` shows it
'2'
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: run: an orchestrator out of attempts, or the final validation failed; worker: agents failed
    #: after their attempts; generate: baskets failed; validate: coverage or an absolute rule.
    FAILED = 1
    #: bad input or a refused operation (one line naming file and id); a run already going.
    BAD_INPUT = 2
    #: worker: another worker holds this orchestrator's lock.
    BUSY = 3
    #: ``--max-cost`` reached: no new request started, everything resumable.
    BUDGET = 4
    #: the disk (or quota) is full: stopped cleanly, nothing running, resumable once there is space.
    NO_SPACE = 5

    @staticmethod
    def signalled(signum: int) -> int:
        """The status of a process that stopped on signal ``signum``."""
        return 128 + signum

    @property
    def pane_text(self) -> str:
        """This status as tmux records a dead pane's (and the run state keeps it)."""
        return str(self.value)
