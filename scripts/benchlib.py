"""Shared parts of the benchmark scripts (``bench_run.py``, ``bench_offline.py``).

- :class:`Sandbox`: a temporary folder with a writable copy of the course, a private tmux socket
  name, and every process the benchmark starts; :meth:`Sandbox.close` stops all of them (also on
  Ctrl-C, SIGTERM or an error) and checks with psutil that nothing is left.
- :class:`TreeSampler`: peak resident memory of process trees, sampled in a thread.
- :class:`FakeServer`: ``scripts/fake_anthropic.py`` on a free port of 127.0.0.1.
- :func:`leftovers`, :func:`windows_left`: what a run left behind.
- :func:`machine`, :func:`table`: the report's header and layout.

Benchmarks are whole processes and report their figures as ratios against a baseline measured
in the same invocation: on a shared 2-core machine an absolute time alone means little.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without install

from scripts.fake_anthropic import ServerProcess  # noqa: E402
from supervisor.procs import FORK_SERVER_MODULE  # noqa: E402

DEFAULT_COURSE = ROOT.parent / "shared" / "data" / "spa_for_eng"
FAKE_KEY = "sk-ant-bench-not-a-real-key"
SAMPLE_EVERY = 0.2  # seconds between memory samples
INPUT_FILES = ("lego_pairs.json", "seed_pairs.json")


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so every ``finally`` cleans up."""


def install_signal_handlers() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def phase5_argv(*args: str) -> list[str]:
    """A ``phase5`` command run by this interpreter (as the supervisor runs its workers)."""
    return [sys.executable, "-m", "supervisor.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without tmux, phase5 or Anthropic settings, plus ``extra``: a benchmark
    never talks to a real API or a user's tmux server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PHASE5_", "ANTHROPIC_")) and k not in ("TMUX", "TMUX_PANE")
    }
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# -- processes ---------------------------------------------------------------------------------------


def _cmdline(proc: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def leftovers(marks: Iterable[str], socket: str | None = None) -> list[psutil.Process]:
    """Live processes (not this one) whose command line contains one of ``marks`` (the sandbox
    folder), or that run tmux on ``socket``."""
    marks = [m for m in marks if m]
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        cmdline = proc.info.get("cmdline") or []
        text = "\0".join(cmdline)
        hit = any(mark in text for mark in marks)
        if socket and not hit:
            hit = (
                any(a == "-L" and b == socket for a, b in zip(cmdline, cmdline[1:], strict=False))
                or f"-L{socket}" in cmdline
            )
        if hit and _alive(proc):
            found.append(proc)
    return found


def tmux(socket: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def socket_path(socket: str) -> Path:
    """Where tmux keeps the socket file of ``tmux -L socket``."""
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / socket


def windows_left(socket: str) -> int:
    """Windows on the private tmux server (0 when the server is gone)."""
    result = tmux(socket, "list-windows", "-a", "-F", "#{window_id}")
    return len(result.stdout.split()) if result.returncode == 0 else 0


def tmux_server_pid(socket: str) -> int | None:
    result = tmux(socket, "display-message", "-p", "#{pid}")
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.isdigit() else None


class TmuxServerPid:
    """The private tmux server's pid, looked up at most once a second while it is missing (for
    the memory sampler: the workers are the server's children, not the supervisor's)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self._pid: int | None = None
        self._next_look = 0.0

    def __call__(self) -> list[int]:
        if self._pid is not None and psutil.pid_exists(self._pid):
            return [self._pid]
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + 1.0
            self._pid = tmux_server_pid(self.socket)
        return [self._pid] if self._pid else []


def run_leftovers(course: Path, socket: str, exclude: Iterable[int] = (), wait: float = 5.0) -> tuple[list[str], int]:
    """What a finished run left: live processes naming its course folder (but ``exclude``, the
    fake server) or running tmux on its socket, after up to ``wait`` s for them to end (the tmux
    server exits a moment after its last session); and its windows. The processes are returned
    as command lines."""
    skip = set(exclude)

    def left() -> list[psutil.Process]:
        return [p for p in leftovers([str(course)], socket) if p.pid not in skip]

    remaining = [] if wait_for(lambda: not left(), wait) else left()
    return [" ".join(_cmdline(p))[:200] for p in remaining], windows_left(socket)


class LineCounter:
    """Lines of growing files (journals), reading only what was appended since the last look."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int]] = {}  # path -> (bytes read, lines)

    def count(self, paths: Iterable[Path]) -> int:
        total = 0
        for path in paths:
            offset, lines = self._seen.get(path, (0, 0))
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                chunk = b""
            lines += chunk.count(b"\n")
            self._seen[path] = (offset + len(chunk), lines)
            total += lines
        return total


def kill_procs(procs: Sequence[psutil.Process], grace: float = 5.0) -> list[psutil.Process]:
    """SIGTERM, wait up to ``grace`` s, SIGKILL; return what still lives."""
    procs = [p for p in procs if p.pid != os.getpid()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    return [p for p in alive if _alive(p)]


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class Sandbox:
    """A temporary folder holding a copy of the course, a private tmux socket name, and the
    processes the benchmark starts. Use as a context manager: leaving it (normally, by an error
    or by Ctrl-C) stops every process, kills the private tmux server, removes the folder (unless
    ``keep``), and records in :attr:`cleanup_left` what could not be stopped (normally nothing)."""

    def __init__(self, label: str, keep: bool = False) -> None:
        # The pid in both names lets a caller find what this benchmark started.
        self.dir = Path(tempfile.mkdtemp(prefix=f"phase5-{label}-{os.getpid()}-"))
        self.socket = f"phase5-{label}-{os.getpid()}"
        self.keep = keep
        self.children: list[subprocess.Popen] = []
        self.cleanup_left: list[int] = []
        self._sockets = [self.socket]

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def new_socket(self, suffix: str) -> str:
        """Another private tmux socket name (one per run inside one invocation)."""
        name = f"{self.socket}-{suffix}"
        self._sockets.append(name)
        return name

    def copy_course(self, source: Path, under: str) -> Path:
        """A writable copy of the course's input files (never an earlier run's output), in
        ``<sandbox>/<under>/<course folder name>`` (the folder name is the course code)."""
        if not (source / "lego_pairs.json").is_file():
            raise SystemExit(f"{source}: no lego_pairs.json (give a course folder with --course)")
        dest = self.dir / under / source.resolve().name
        dest.mkdir(parents=True)
        for name in INPUT_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, dest / name)
                (dest / name).chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        return dest

    def popen(self, argv: Sequence[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        """A child in its own session (Ctrl-C reaches the benchmark only, which then stops the
        children in order), output to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.children.append(proc)
        return proc

    def close(self) -> None:
        # A second Ctrl-C must not cut the cleanup short: signals wait until it is done.
        previous = {
            signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            self._close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _close(self) -> None:
        try:
            # The supervisors first, politely (they stop their workers and close their windows).
            for proc in reversed(self.children):
                if proc.poll() is None:
                    with contextlib.suppress(OSError):
                        proc.send_signal(signal.SIGTERM)
            for proc in self.children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            for socket in self._sockets:
                with contextlib.suppress(Exception):
                    tmux(socket, "kill-server")
            for proc in self.children:
                if proc.poll() is None:
                    kill_procs(tree(proc.pid), grace=2)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=10)
            left = []
            for socket in self._sockets:
                left.extend(leftovers([str(self.dir)], socket))
            left = kill_procs(list({p.pid: p for p in left}.values()), grace=2)
            self.cleanup_left = sorted(
                {p.pid for p in left} | {p.pid for s in self._sockets for p in leftovers([str(self.dir)], s)}
            )
            for socket in self._sockets:  # tmux leaves the socket file of a server that exited
                if tmux(socket, "list-sessions").returncode != 0:
                    with contextlib.suppress(OSError):
                        socket_path(socket).unlink()
        finally:
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)


# -- memory --------------------------------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Every ``interval`` s: the summed RSS of the processes :attr:`roots` returns and of all their
    descendants (each counted once), and the RSS of ``separate`` processes (the tmux server: its
    children are counted in the tree, the server itself apart). Keeps the peaks."""

    def __init__(
        self,
        roots: Callable[[], list[int]],
        separate: Callable[[], list[int]] | None = None,
        interval: float = SAMPLE_EVERY,
    ) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots = roots
        self.separate = separate or (lambda: [])
        self.interval = interval
        self.peak_tree = 0
        self.peak_separate = 0
        self.peak_processes = 0
        self.samples = 0
        self.peak_pss = 0  # proportional set size: pages shared between processes counted once
        self.peak_detail: list[tuple[str, float]] = []  # (kind, RSS MB) of each process at the RSS peak
        self.peak_pss_detail: list[tuple[str, float]] = []  # (kind, PSS MB) of each process at the PSS peak
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds, last seen (tree and separate)
        self.peak_by_name: dict[str, int] = {}  # the largest RSS seen per kind of process
        self._stop_event = threading.Event()

    def sample(self) -> None:
        seen: dict[int, int] = {}
        pss = 0
        shares: dict[int, int] = {}
        kinds: dict[int, str] = {}
        cmdlines: dict[int, list[str]] = {}
        apart = set(self.separate())
        for pid in self.roots():
            for proc in tree(pid):
                if proc.pid in apart or proc.pid in seen:
                    continue
                with contextlib.suppress(psutil.Error):
                    with proc.oneshot():
                        cmdline = proc.cmdline()
                        parent = proc.ppid()
                        if parent in cmdlines and cmdlines[parent] == cmdline and not is_fork_server(cmdline):
                            # A fork that has not exec'd yet (subprocess starting tmux): it shares
                            # its parent's pages; counting its RSS would count them twice. (The
                            # fork server's children are the workers: they count, PSS shares.)
                            continue
                        memory = proc.memory_full_info()
                        times = proc.cpu_times()
                    kind = process_kind(cmdline)
                    cmdlines[proc.pid] = cmdline
                    seen[proc.pid], kinds[proc.pid] = memory.rss, kind
                    shares[proc.pid] = getattr(memory, "pss", memory.rss)
                    pss += shares[proc.pid]
                    self.cpu[proc.pid] = times.user + times.system
                    self.peak_by_name[kind] = max(self.peak_by_name.get(kind, 0), memory.rss)
        separate = 0
        for pid in apart:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                with proc.oneshot():
                    separate += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu[pid] = times.user + times.system
        if sum(seen.values()) > self.peak_tree:
            self.peak_tree = sum(seen.values())
            self.peak_detail = sorted(((kinds[p], mb(r)) for p, r in seen.items()), key=lambda x: -x[1])
        if pss > self.peak_pss:
            self.peak_pss = pss
            self.peak_pss_detail = sorted(((kinds[p], mb(r)) for p, r in shares.items()), key=lambda x: -x[1])
        self.peak_separate = max(self.peak_separate, separate)
        self.peak_processes = max(self.peak_processes, len(seen))
        self.samples += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.monotonic()
            with contextlib.suppress(Exception):  # a process ending mid-sample is normal
                self.sample()
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    @property
    def cpu_s(self) -> float:
        """CPU seconds used by every process sampled (as last seen: a process's last 0.2 s may
        be missing)."""
        return round(sum(self.cpu.values()), 2)


def is_fork_server(cmdline: list[str]) -> bool:
    """The warm-start fork server, or a worker it forked (which keeps its command line)."""
    return FORK_SERVER_MODULE in cmdline[1:3]


def process_kind(cmdline: list[str]) -> str:
    """``worker``, ``run``, ``status`` ... for a ``phase5`` command line (``forkserver`` for the
    warm-start server and its forked workers, ``stub`` for their windows); else the program name."""
    if is_fork_server(cmdline):
        return "forkserver"
    if any(arg.endswith("/supervisor/stub.py") for arg in cmdline[1:4]):  # see supervisor.forkserver.stub_argv
        return "stub"
    for word in ("worker", "run", "status", "generate", "validate"):
        if word in cmdline[1:5]:
            return word
    return Path(cmdline[0]).name if cmdline else "?"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None when it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return round(times.user + times.system, 2)


def mb(value: int | float) -> float:
    return round(value / 2**20, 1)


# -- the fake API ------------------------------------------------------------------------------------


class FakeServer(ServerProcess):
    """``scripts/fake_anthropic.py`` as a child of the sandbox (stopped with it), on a free port."""

    def __init__(self, sandbox: Sandbox, course: Path, log: Path, args: Sequence[str], max_seconds: float) -> None:
        super().__init__(
            course,
            log,
            list(args),
            max_seconds=max_seconds,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        sandbox.children.append(self.process)


# -- the report ----------------------------------------------------------------------------------------


def code_version() -> str:
    """The checkout's commit, and how many files differ from it (figures depend on the code)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "worker", "supervisor", "scripts"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}" + (f" + {len(dirty)} changed files" if dirty else "")


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "code": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_at_start": [round(x, 2) for x in load],
    }


def table(rows: Sequence[tuple[str, Any, str]]) -> str:
    """``name  value  note`` lines, aligned."""
    width = max(len(name) for name, _, _ in rows)
    lines = []
    for name, value, note in rows:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"  {name:<{width}}  {text:>10}  {note}".rstrip())
    return "\n".join(lines)


def add_output_options(parser: Any, timeout: float) -> None:
    """The options every benchmark has: ``--timeout``, ``--keep``, ``--json``, ``--json-out``
    (read by :func:`finish` and :class:`Sandbox`)."""
    parser.add_argument("--timeout", type=float, default=timeout, help="give up on a step after this long")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON object to this file")


def finish(
    out: dict[str, Any], args: Any, name: str, sections: list[tuple[str | None, str]], cleanup_left: list[str]
) -> int:
    """Write ``--json-out``, print the JSON (``--json``) or the rendered ``sections`` (title, text)
    with the targets; return the exit status: 0 when every target is met and nothing was left."""
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print_json(out)
    else:
        m = out["machine"]
        print(f"{name} {out['command']}  ({m['date']}, {m['cores']} cores, {m['memory_gb']} GB, code {m['code']})")
        for title, text in sections:
            if title:
                print(title)
            print(text)
        print(
            "targets: "
            + ", ".join(
                f"{k} {v['value']} {v['target']} {'ok' if v['ok'] else 'MISSED'}" for k, v in out["targets"].items()
            )
        )
        if cleanup_left:
            print(f"WARNING: processes left after cleanup: {cleanup_left}")
    return 0 if all(t["ok"] for t in out["targets"].values()) and not cleanup_left else 1


def print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False))
