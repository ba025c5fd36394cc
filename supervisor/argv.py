"""The commands that the run's tmux windows execute (as argv: tmux runs them without a shell)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from supervisor.forkserver import ForkServer, stub_argv
from supervisor.options import RunOptions
from worker.generators import API_BACKENDS

TEST_WORKER_ENV = "PHASE5_TEST_WORKER"
LOG_TAIL_LINES = 40  # earlier lines the first window shows of the log (this run's start among them)


def cli_argv(*args: str) -> list[str]:
    """A ``phase5`` command run by this same interpreter.

    Test hook: ``$PHASE5_TEST_WORKER`` names a script that runs instead of ``-m supervisor.cli`` for
    worker commands (a stand-in that obeys the worker contract, e.g. one that goes silent)."""
    standin = os.environ.get(TEST_WORKER_ENV)
    if standin and args[:1] == ("worker",):
        return [sys.executable, standin, *args]
    return [sys.executable, "-m", "supervisor.cli", *args]


def worker_argv(root: Path, segment: int, orch: int, options: RunOptions, forks: ForkServer | None = None) -> list[str]:
    """Orchestrator ``orch`` of ``segment``'s worker: forked by the warm-start server through the
    stub when there is a live one, else a cold ``phase5 worker``."""
    args = [
        "worker",
        str(root),
        "--segment",
        str(segment),
        "--orch",
        str(orch),
        "--backend",
        options.backend,
        "--max-attempts",
        str(options.agent_attempts),
    ]
    if options.backend in API_BACKENDS:
        args += options.worker_api_args
    if forks is not None and forks.alive():
        return stub_argv(forks.socket, args)
    return cli_argv(*args)


def supervisor_argv(root: Path, options: RunOptions) -> list[str]:
    """The ``phase5 run`` that a detached supervisor runs in the session's first window."""
    return cli_argv("run", str(root), *dataclasses.replace(options, in_session=True).to_args())


def log_follow_argv(log_path: Path) -> list[str]:
    """The first window's command outside --detach: the log's last lines, then each new one
    (``-F``: it waits for the file if it is not there yet)."""
    return ["tail", "-n", str(LOG_TAIL_LINES), "-F", str(log_path)]
