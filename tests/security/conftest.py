"""The security tests: what a hostile user, course file or API answer must not achieve. They use the
supervisor tests' helpers (real `phase5` processes, a real isolated tmux server per test)."""

from __future__ import annotations

from tests.supervisor.conftest import cleanup_course, p5, started  # noqa: F401 (fixtures for this folder)
