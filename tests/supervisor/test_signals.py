"""The supervisor's wait between polls (supervisor.signals.StopSignals.wait)."""

from __future__ import annotations

import time

from supervisor.signals import StopSignals


def test_a_change_that_came_while_the_caller_looked_ends_the_wait_at_once() -> None:
    """The segment loop takes what it watches (the workers' files and processes) before it looks
    at them; a file that appeared meanwhile (a second worker ending while the first one's file was
    checked) ends the next wait at once, not after the poll interval."""
    signals = StopSignals()
    state = {"files": 1}
    watch = lambda: state["files"]  # noqa: E731
    seen = watch()
    state["files"] = 2  # while the caller was busy
    started = time.monotonic()
    signals.wait(5.0, watch=watch, since=seen)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    signals.wait(0.3, watch=watch, since=watch())  # nothing changes: the whole interval
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    signals.wait(0.3, watch=watch)  # without ``since``: from what it is now
    assert time.monotonic() - started >= 0.3
