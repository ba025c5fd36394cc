"""Errors that the CLI turns into one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path

from worker.exitcodes import ExitCode


class Phase5Error(Exception):
    """Bad input or a refused operation: one line for the user, exit status 2, nothing written.

    >>> str(InputError("lego_pairs.json", "S0003L02: empty target"))
    'lego_pairs.json: S0003L02: empty target'
    """

    exit_code: int = ExitCode.BAD_INPUT


class InputError(Phase5Error):
    """A file that cannot be used, naming the file and what is wrong in it."""

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")
