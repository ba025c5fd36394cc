"""The course's tmux session (libtmux): one window per orchestrator, dead panes kept visible.

- The session is ``phase5-<course code>-<hash of the folder's path>`` (two folders named alike
  get two sessions; ``tmux attach -t phase5-<course code>`` finds it by prefix) on the server
  chosen by ``--tmux-socket`` (env ``PHASE5_TMUX_SOCKET``; default: the user's default server).
  Tests pass libtmux's isolated per-test server.
- Windows run their command as an argv (tmux execs it without a shell), so the pane PID is the
  worker's PID.
- tmux expands formats (``#{...}``, and ``#(...)``, which runs a shell command) in some of its
  arguments: the start directory (``-c``) and the window name (``-n``) of ``new-window`` and
  ``respawn-pane``, and the session name. A folder may be named ``#(touch pwned)``, so every such
  argument goes through :func:`literal`, which doubles each ``#`` (tmux reads ``##`` as one ``#``);
  commands (an argv) and ``set-environment`` values are not expanded and go as they are.
- A session hook sets ``remain-on-exit on`` on every window created after the first, inside
  tmux's own command queue, so even a worker that dies at once leaves a dead pane whose exit
  status (``pane_dead_status``/``pane_dead_signal``) can be read.
- The workers' variables (``PHASE5_*``, ``ANTHROPIC_BASE_URL``) go into the session environment;
  the secrets (:data:`SECRET_NAMES`, the API key) into no environment of tmux at all, only into
  the worker windows (and the detached supervisor's) that need them, as ``-e NAME=value`` of
  their ``new-window``/``respawn-pane``. Both travel as commands on the stdin of ``tmux
  source-file -``: never on a command line (``ps`` is readable by others), never in a file. The
  session marks the secrets for removal, so that no other window of it inherits them from the
  server's global environment.
- The session is created by ``tmux start-server ; source-file -`` with ``new-session`` on stdin
  and the workers' variables left out of the client's environment: when this starts the tmux
  server, the server keeps that client's argv as its command line and its environment as the
  global one (which every session inherits), so neither may name the course nor hold the key.
  ``new-session`` is also the atomic test: tmux refuses a second session of the same name.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtmux
from libtmux import exc as tmux_exc

from worker.errors import Phase5Error
from worker.paths import course_id
from worker.safetext import printable

SOCKET_ENV = "PHASE5_TMUX_SOCKET"
#: Variables handed to workers.
PASS_PREFIXES = ("PHASE5_",)
PASS_NAMES = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
#: Of those, the ones only the windows that call the API may hold.
SECRET_NAMES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PANE_FORMAT = "#{window_id} #{pane_id} #{pane_pid}"
PLACEHOLDER = "sleep 86400"  # the first window's command until respawn-pane gives it the real one


def literal(text: str) -> str:
    """``text`` as an argument that tmux format-expands but must take literally.

    >>> literal("/tmp/#(touch pwned)/#{session_name}")
    '/tmp/##(touch pwned)/##{session_name}'
    """
    return text.replace("#", "##")


def session_name(course_root: Path) -> str:
    return f"phase5-{course_id(course_root)}"


def _is_worker_variable(name: str) -> bool:
    return (name in PASS_NAMES or name.startswith(PASS_PREFIXES)) and name != SOCKET_ENV


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default ``os.environ``) that workers need, secrets included."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if _is_worker_variable(k)}


def worker_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secrets of ``environ`` (default ``os.environ``): what a worker window gets with ``-e``."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in SECRET_NAMES if k in environ}


def server_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` without the workers' variables: the environment of a tmux client that may
    start the server (whose global environment every session inherits)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not _is_worker_variable(k)}


def _quote(value: str) -> str:
    """A tmux config-language word for ``value``: single quotes (nothing is expanded in them), with
    ``'`` spliced in as ``"'"``. A line break would end the command: refused."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise Phase5Error(f"{printable(value)[:80]}: a value for tmux holds a line break; refusing to pass it")
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _env_args(env: Mapping[str, str]) -> list[str]:
    for key in env:
        if not _ENV_NAME.match(key):
            raise Phase5Error(f"{key!r}: not a valid environment variable name")
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


@dataclass
class PaneInfo:
    """One pane of the session (one per window: orchestrator windows have a single pane)."""

    window_id: str
    window_name: str
    pane_id: str
    pane_pid: int | None
    dead: bool
    dead_status: int | None
    dead_signal: int | None
    start_command: str

    @property
    def exit_text(self) -> str:
        if self.dead_signal:
            return f"signal {self.dead_signal}"
        return str(self.dead_status) if self.dead_status is not None else "?"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


class CourseSession:
    """The tmux session of one course on one tmux server."""

    def __init__(self, course_root: Path, socket_name: str | None = None) -> None:
        if not shutil.which("tmux"):
            raise Phase5Error("tmux is not installed (or not on PATH); phase5 run needs tmux 3.0 or later")
        self.course_root = Path(course_root).resolve()
        self.name = session_name(self.course_root)
        self.socket_name = socket_name or None
        self.server = libtmux.Server(socket_name=self.socket_name)

    # -- the session ------------------------------------------------------------------------------

    def _tmux(self) -> list[str]:
        return ["tmux", *(["-L", self.socket_name] if self.socket_name else [])]

    def exists(self) -> bool:
        try:
            return self.server.has_session(self.name)
        except tmux_exc.LibTmuxException:
            return False

    def ensure(self, first_window: str = "supervisor") -> bool:
        """Create the session unless it exists (first window ``first_window``, running a
        placeholder until :meth:`respawn` gives it a command). True when this call created it:
        tmux itself refuses a second session of the same name, so of two runs starting at once
        exactly one creates it."""
        command = ["new-session", "-d", "-s", literal(self.name), "-n", literal(first_window)]
        result = self._source([[*command, "-x", "200", "-y", "50", PLACEHOLDER]], server_environment())
        created = result.returncode == 0
        if not created and "duplicate session" not in result.stderr:
            raise Phase5Error(f"tmux new-session: {printable(result.stderr.strip())[:200]}")
        self._set_hook()
        return created

    def _source(self, commands: Sequence[Sequence[str]], env: Mapping[str, str] | None = None) -> Any:
        """Run tmux ``commands`` given on the stdin of ``tmux start-server ; source-file -``
        (values never on a command line; the server started if need be, with ``env``)."""
        text = "".join(" ".join(_quote(word) for word in command) + "\n" for command in commands)
        return subprocess.run(
            [*self._tmux(), "start-server", ";", "source-file", "-"],
            input=text,
            text=True,
            capture_output=True,
            timeout=30,
            env=dict(env) if env is not None else None,
        )

    def _set_hook(self) -> None:
        self._cmd("set-hook", "-t", self._target(), "after-new-window", "set-option -w remain-on-exit on")

    def _target(self) -> str:
        """The session's id (``$3``): exact, and accepted by every command (``set-hook`` in tmux 3.3
        does not take the ``=name`` form)."""
        for line in self.server.cmd("list-sessions", "-F", "#{session_id} #{session_name}").stdout:
            session_id, _, name = line.partition(" ")
            if name == self.name:
                return session_id
        raise Phase5Error(f"tmux session {self.name} is gone")

    def _cmd(self, *args: str) -> list[str]:
        result = self.server.cmd(*args)
        if result.stderr:
            raise Phase5Error(f"tmux {args[0]}: {' '.join(result.stderr)}")
        return result.stdout

    def set_environment(self, values: Mapping[str, str], unset: Iterable[str] = ()) -> None:
        """Put ``values`` into the session environment (and remove ``unset``), with the commands on
        tmux's stdin so no value ever appears on a command line."""
        lines = []
        target = self._target()
        for key, value in values.items():
            if not _ENV_NAME.match(key):
                raise Phase5Error(f"{key!r}: not a valid environment variable name")
            lines.append(f"set-environment -t {_quote(target)} {key} {_quote(value)}\n")
        for key in unset:
            if _ENV_NAME.match(key) and key not in values:
                # -r, not -u: a name removed from the session would show the server's global value
                lines.append(f"set-environment -r -t {_quote(target)} {key}\n")
        if not lines:
            return
        result = subprocess.run(
            [*self._tmux(), "source-file", "-"], input="".join(lines), text=True, capture_output=True, timeout=30
        )
        if result.returncode != 0:
            # stderr names the failing line number, never echoes the value
            raise Phase5Error(
                f"tmux source-file: could not set the session environment ({result.stderr.strip()[:200]})"
            )

    def environment_names(self, scope: str = "session") -> list[str]:
        """Names set (not marked for removal) in the session's or the server's global environment."""
        out = self._cmd("show-environment", *(["-g"] if scope == "global" else ["-t", self._target()]))
        return [line.split("=", 1)[0] for line in out if "=" in line and not line.startswith("-")]

    def sync_environment(self, environ: Mapping[str, str] | None = None) -> None:
        """The workers' variables of this process into the session, but the secrets, which go to
        the worker windows only (:meth:`launch` ``env``); every secret, and any other workers'
        variable that the session or the server's global environment holds (from an earlier run,
        or from whoever started the server), is marked for removal, so windows do not inherit it."""
        values = {k: v for k, v in worker_environment(environ).items() if k not in SECRET_NAMES}
        names = set(self.environment_names("session")) | set(self.environment_names("global")) | set(SECRET_NAMES)
        stale = sorted(n for n in names if _is_worker_variable(n) and n not in values)
        self.set_environment(values, stale)

    def kill(self) -> None:
        if self.exists():
            self.server.cmd("kill-session", "-t", f"={self.name}")

    # -- windows ----------------------------------------------------------------------------------

    def launch(self, name: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> PaneInfo:
        """A new window ``name`` running ``argv`` (in the background: it does not take the focus),
        with ``env`` (secrets) in its environment only."""
        command = ["new-window", "-d", "-t", f"{self._target()}:", "-n", literal(name), "-c", literal(str(cwd))]
        out = self._run([*command, *_env_args(env or {}), "-P", "-F", PANE_FORMAT, *argv], bool(env))
        window_id, pane_id, pid = out[0].split()
        return PaneInfo(window_id, name, pane_id, _int(pid), False, None, None, shlex.join(argv))

    def respawn(
        self, target: str, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> PaneInfo | None:
        """Replace the process of pane/window ``target`` with ``argv`` (killing what ran there),
        with ``env`` (secrets) in its environment only."""
        self._run(
            ["respawn-pane", "-k", "-t", target, "-c", literal(str(cwd)), *_env_args(env or {}), *argv], bool(env)
        )
        return self.pane(target)

    def _run(self, command: list[str], secret: bool) -> list[str]:
        """A tmux command: through ``source-file -`` when it carries a secret, else as usual."""
        if not secret:
            return self._cmd(*command)
        result = self._source([command])
        if result.returncode != 0:
            # stderr names the failing command's line, never echoes a value
            raise Phase5Error(f"tmux {command[0]}: {printable(result.stderr.strip())[:200]}")
        return result.stdout.splitlines()

    def panes(self) -> list[PaneInfo]:
        """Every pane of the session (empty when there is no session)."""
        if not self.exists():
            return []
        fmt = "\t".join(
            [
                "#{window_id}",
                "#{window_name}",
                "#{pane_id}",
                "#{pane_pid}",
                "#{pane_dead}",
                "#{pane_dead_status}",
                "#{pane_dead_signal}",
                "#{pane_start_command}",
            ]
        )
        result = self.server.cmd("list-panes", "-s", "-t", f"={self.name}", "-F", fmt)
        panes = []
        for line in result.stdout:
            parts = line.split("\t")
            if len(parts) < 8:
                continue
            panes.append(
                PaneInfo(
                    parts[0],
                    parts[1],
                    parts[2],
                    _int(parts[3]),
                    parts[4] == "1",
                    _int(parts[5]),
                    _int(parts[6]),
                    parts[7],
                )
            )
        return panes

    def pane(self, target: str) -> PaneInfo | None:
        """The pane of window id / pane id ``target`` (or of the window named ``target``)."""
        for pane in self.panes():
            if target in (pane.window_id, pane.pane_id, pane.window_name):
                return pane
        return None

    def kill_window(self, window_id: str) -> None:
        self.server.cmd("kill-window", "-t", window_id)

    def reap(self) -> None:
        """Make the tmux server collect exited pane processes now. tmux 3.3a can miss a SIGCHLD
        and leave a pane's process a zombie, its pane dead but without exit status, until the
        next child of the server exits (tmux/tmux#4841 is a related race); ``run-shell true``
        forks such a child, and tmux's waitpid loop then reaps every exited pane process.

        In the background (``-b``): a foreground ``run-shell`` makes this command wait for the
        job's exit, which a server that misses SIGCHLDs may never notice when no other child of
        it exits later (both workers of a segment dead at once): the supervisor then hung on
        this very call (seen once in CI, 180 s without a line). Whether this nudge works or not,
        the caller gives tmux a bounded time to record the exit."""
        self.server.cmd("run-shell", "-b", "true")

    def set_remain_on_exit(self, target: str, on: bool) -> None:
        """Keep (or not) ``target``'s pane visible after its process exits."""
        self.server.cmd("set-option", "-w", "-t", target, "remain-on-exit", "on" if on else "off")

    def capture(self, target: str, lines: int = 20) -> list[str]:
        """The last ``lines`` non-blank lines shown in pane ``target`` (for error messages; what a
        worker printed may hold anything, so each line comes through :func:`printable`)."""
        out = self.server.cmd("capture-pane", "-p", "-t", target).stdout
        return [printable(line) for line in out if line.strip()][-lines:]

    def select_window(self, window_id: str) -> None:
        self.server.cmd("select-window", "-t", window_id)

    def attach_argv(self, window_id: str | None, inside_tmux: bool) -> list[str]:
        """The tmux command that shows ``window_id`` (or the session) to a person."""
        target = window_id or self.name  # a person may retype it: the name, not the $id
        verb = ["switch-client", "-t", target] if inside_tmux else ["attach-session", "-t", target]
        return [*self._tmux(), *verb]


def own_pane() -> str | None:
    """The tmux pane this process runs in, if any."""
    return os.environ.get("TMUX_PANE") or None
