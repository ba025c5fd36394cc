"""The options of a supervisor run, defined once: each :class:`RunOptions` field carries its
command-line form, from which come the ``phase5 run`` options (:func:`run_options`), the options
object (:meth:`RunOptions.from_cli`) and the command line of a detached supervisor
(:meth:`RunOptions.to_args`).

>>> options = RunOptions(backend="anthropic", stagger=2.0, restart_stuck=True, api={"model": "m", "prices": None})
>>> options.stagger_s, options.worker_api_args
(2.0, ['--model=m'])
>>> args = options.to_args()
>>> args[:2], "--restart-stuck" in args, "--cold-start" in args, args[-1]
(['--backend', 'anthropic'], True, False, '--model=m')
>>> RunOptions.from_cli({"backend": "corpus", "poll": 1.0, "model": "m"}).api
{'model': 'm'}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from supervisor.tmux import SOCKET_ENV
from worker.generators import API_BACKENDS, BACKENDS, default_backend

F = Callable[..., Any]
DEFAULT_API_STAGGER = 30.0  # seconds between launches for API backends (offline ones: none)


def _cli(default: Any, *decls: str, **click_kwargs: Any) -> Any:
    """A field whose command-line option is ``click.option(*decls, default=default, **click_kwargs)``;
    ``cli_default`` in ``click_kwargs`` replaces the default on the command line only."""
    return field(default=default, metadata={"cli": (decls, click_kwargs)})


TMUX_SOCKET_HELP = "tmux server socket name (tmux -L NAME) [env PHASE5_TMUX_SOCKET; default: your default tmux server]"


@dataclass(frozen=True)
class RunOptions:
    """How one supervisor runs a course (``phase5 run``)."""

    backend: str = _cli(
        "corpus",
        "--backend",
        type=click.Choice(BACKENDS),
        cli_default=default_backend,
        show_default="corpus or $PHASE5_BACKEND",
    )
    stagger: float | None = _cli(
        None,
        "--stagger",
        type=click.FloatRange(min=0),
        help="Seconds between launches of a segment's orchestrators [default: 30 for API backends, 0 offline].",
    )
    stagger_segments: str = _cli(
        "all",
        "--stagger-segments",
        type=click.Choice(["all", "first"]),
        show_default=True,
        help="Stagger the launches of every segment, or only of the first one this run launches"
        " (later segments start while the API is still busy with the last).",
    )
    poll: float = _cli(
        2.0,
        "--poll",
        type=click.FloatRange(min=0.05),
        show_default=True,
        help="Seconds between looks at the files and panes.",
    )
    # the plan's shape: None keeps the existing plan (or takes the defaults when there is none)
    segments: int | None = _cli(
        None, "--segments", type=click.IntRange(min=1), help="Plan shape, when preparing [default 3]."
    )
    orchestrators: int | None = _cli(
        None, "--orchestrators", type=click.IntRange(min=1), help="Orchestrators per segment [3]."
    )
    agents: int | None = _cli(None, "--agents", type=click.IntRange(min=1), help="Agents per orchestrator [10].")
    max_attempts: int = _cli(
        3,
        "--max-attempts",
        type=click.IntRange(min=1),
        show_default=True,
        help="Launches of one orchestrator (a failed or stuck one is relaunched alone).",
    )
    agent_attempts: int = _cli(
        3,
        "--agent-attempts",
        type=click.IntRange(min=1),
        show_default=True,
        help="Attempts per LEGO inside a worker (an agent fails when one of its LEGOs has used them all).",
    )
    stuck_after: float = _cli(
        300.0,
        "--stuck-after",
        type=click.FloatRange(min=1),
        show_default=True,
        help="Seconds without a heartbeat before a worker is shown as STUCK.",
    )
    restart_stuck: bool = _cli(False, "--restart-stuck", is_flag=True, help="Kill and relaunch a stuck worker.")
    grace: float = _cli(
        5.0,
        "--grace",
        type=click.FloatRange(min=0),
        show_default=True,
        help="Seconds between SIGTERM and SIGKILL when killing process trees.",
    )
    warm_start: bool = _cli(
        True,
        "--warm-start/--cold-start",
        show_default=True,
        help="API backends: fork each worker from one process that has already imported the SDK and"
        " loaded the course (saves ~1.5 s of start-up and ~65 MB per worker), or start each cold.",
    )
    tmux_socket: str | None = _cli(None, "--tmux-socket", envvar=SOCKET_ENV, metavar="NAME", help=TMUX_SOCKET_HELP)
    #: this supervisor runs in the session's first window (what ``--detach`` starts)
    in_session: bool = _cli(False, "--supervisor-window", is_flag=True, hidden=True)
    #: the API and budget options (``--model``, ``--max-cost``, ...) by name, passed on to the workers
    api: Mapping[str, object] = field(default_factory=dict)

    @property
    def stagger_s(self) -> float:
        if self.stagger is not None:
            return self.stagger
        return DEFAULT_API_STAGGER if self.backend in API_BACKENDS else 0.0

    @property
    def worker_api_args(self) -> list[str]:
        """The API options as worker arguments (they carry no secret: the key is in the
        environment), ``--max-cost`` and ``--prices`` included."""
        return [f"--{name.replace('_', '-')}={value}" for name, value in self.api.items() if value is not None]

    @classmethod
    def from_cli(cls, values: Mapping[str, Any]) -> RunOptions:
        """The options of the values click collected: the fields by name, the rest as ``api``."""
        names = {f.name for f in _cli_fields()}
        return cls(
            **{k: v for k, v in values.items() if k in names},
            api={k: v for k, v in values.items() if k not in names},
        )

    def to_args(self) -> list[str]:
        """These options as ``phase5 run`` arguments (every one given, none left to defaults or
        the environment): what a detached supervisor is started with."""
        args: list[str] = []
        for f in _cli_fields():
            decls, kwargs = f.metadata["cli"]
            value = getattr(self, f.name)
            if "/" in decls[0]:
                on, off = decls[0].split("/")
                args.append(on if value else off)
            elif kwargs.get("is_flag"):
                args += [decls[0]] if value else []
            elif value is not None:
                args += [decls[0], str(value)]
        return args + self.worker_api_args


def _cli_fields() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(RunOptions) if "cli" in f.metadata]


def run_options(func: F) -> F:
    """The options of every :class:`RunOptions` field, as ``phase5 run`` takes them."""
    for f in reversed(_cli_fields()):
        decls, kwargs = f.metadata["cli"]
        kwargs = dict(kwargs)
        default = kwargs.pop("cli_default", f.default)
        func = click.option(*decls, f.name, default=default, **kwargs)(func)
    return func


def tmux_socket_option(func: F) -> F:
    """``--tmux-socket NAME`` (env PHASE5_TMUX_SOCKET), as status, attach and stop take it."""
    return click.option("--tmux-socket", envvar=SOCKET_ENV, default=None, metavar="NAME", help=TMUX_SOCKET_HELP)(func)
