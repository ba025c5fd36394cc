"""Fixtures shared by the worker tests: the example course loaded, and the fake API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.course import Course

#: The API key the tests give the SDK (the fake server takes any).
KEY = "test-key"


@pytest.fixture
def course(demo_course: Path) -> Course:
    return Course.load(demo_course)


@pytest.fixture
def api(fake_api, demo_course: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Start a fake server with the given arguments; the SDK (in this process and in workers,
    which inherit the environment) talks to it, at the default prices."""

    def start(*args: str):  # type: ignore[no-untyped-def]
        server = fake_api(demo_course, *args)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.delenv("PHASE5_PRICES", raising=False)
        return server

    return start
