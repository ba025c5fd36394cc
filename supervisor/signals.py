"""Signals and waiting: SIGINT, SIGTERM and SIGHUP stop a supervisor cleanly. The handler only
records the signal and wakes the wait; the loop then raises :class:`StopRequested` at its next
check, where stopping the workers is safe."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WATCH_EVERY = 0.05  # seconds between looks at ``watch`` while waiting for the next poll


class StopRequested(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: stop the workers cleanly and leave the state resumable."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Installs the handlers while in use (``with``), and restores the previous ones after."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self._wake.set()

    def check(self) -> None:
        """Raise :class:`StopRequested` if a signal came."""
        if self.received is not None:
            raise StopRequested(self.received)

    def wait(self, seconds: float, watch: Callable[[], object] | None = None, since: object = None) -> None:
        """Sleep between polls; a signal wakes it at once (and raises), and so does a change of
        ``watch()`` (looked at every :data:`WATCH_EVERY` s: it must be cheap) from ``since``, what
        it was when the caller last looked (else from what it is now). A change that came while
        the caller was busy (a second worker's file written while the first one's was checked)
        ends the wait at once instead of after ``seconds``."""
        if seconds > 0:
            if watch is None:
                self._wake.wait(seconds)
            else:
                deadline = time.monotonic() + seconds
                before = watch() if since is None else since
                while watch() == before and time.monotonic() < deadline:
                    if self._wake.wait(max(0.0, min(WATCH_EVERY, deadline - time.monotonic()))):
                        break
        self.check()
