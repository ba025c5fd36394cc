"""A run that finds the session of a run that has just ended (a detached supervisor's window
closes just after it lets go of the course's lock) makes the session again instead of failing on
tmux's "server exited unexpectedly". Unit test: the session is a stand-in."""

from __future__ import annotations

import pytest

from supervisor.detach import _ensure_with_environment
from worker.errors import Phase5Error


class VanishingSession:
    """Found (duplicate session) on the first ensure, gone before its environment is written."""

    def __init__(self, vanishes: int) -> None:
        self.vanishes = vanishes
        self.ensured = 0
        self.alive = True

    def ensure(self, first_window: str) -> bool:
        self.ensured += 1
        self.alive = True
        return self.ensured > 1

    def sync_environment(self) -> None:
        if self.ensured <= self.vanishes:
            self.alive = False
            raise Phase5Error("tmux show-environment: server exited unexpectedly")

    def exists(self) -> bool:
        return self.alive


def test_a_session_that_vanishes_under_us_is_made_again() -> None:
    session = VanishingSession(vanishes=1)
    _ensure_with_environment(session)  # type: ignore[arg-type]
    assert session.ensured == 2 and session.alive


def test_it_is_made_again_once_only() -> None:
    session = VanishingSession(vanishes=2)
    with pytest.raises(Phase5Error, match="server exited unexpectedly"):
        _ensure_with_environment(session)  # type: ignore[arg-type]
    assert session.ensured == 2
