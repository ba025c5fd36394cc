"""Warm start: one process that has imported the worker's code and loaded the course, and forks
a ready worker for each tmux window that asks.

A cold worker spends ~1.5 s of CPU importing the Anthropic SDK (~3,500 modules, ~1,500 pydantic
models) and ~65 MB holding it, in every window of every segment and again on every relaunch. The
fork server pays that once per run: the supervisor starts it (:class:`ForkServer`), each worker
window runs :mod:`supervisor.stub`, which hands its terminal to the server over a Unix socket;
the server forks, the child takes the terminal as its standard streams and runs ``phase5 worker``
exactly as a cold process would. Forked workers share the imported code's pages with the server
(copy on write; the heap is frozen out of the garbage collector's reach so that it stays shared).

What stays the same for the supervisor and for people: the window's pane process (the stub) lives
as long as its worker and exits with its status; SIGTERM, SIGINT and SIGHUP sent to the pane are
passed to the worker; the worker reports the pane's pid in its progress file; a worker whose stub
disappears (SIGKILL, window closed) kills itself at once, as the pane's own process would have
died. The server's children are the run's workers, checked at each segment's end like the panes.

Why not :mod:`multiprocessing`'s forkserver: it forks children for the process that asks (here
the supervisor) and hands back ``Process`` handles; a worker must instead be the window's own
program, on the window's terminal, asked for by that window and outliving a killed supervisor.

The socket lives in a private folder (mode 0700) and the server serves only its own user
(``SO_PEERCRED``): a forked worker inherits the API key, so nobody else may ask for one.
Python (3.11) and the server keep no threads, so forking is safe.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from supervisor import procs
from supervisor.procs import FORK_SERVER_MODULE

SOCKET_NAME = "fork.sock"
PANE_PID_ENV = "PHASE5_PANE_PID"  # set in a forked worker: the pid of the window's process
READY_WAIT = 5.0  # seconds for the server to bind its socket (it does so before its imports)
MAX_REQUEST = 1 << 20  # bytes: argv, working directory and environment of one worker
#: what the server imports before forking: everything a worker runs, the SDK included
WARM_MODULES = (
    "supervisor.cli",
    "supervisor.commands.worker",
    "worker.generators.anthropic_backend",
    "worker.generators.batch_backend",
    "worker.generators.corpus",
    "worker.batch_runner",
    "worker.pane",
)


class ForkServer:
    """The supervisor's handle on its fork server: start it, list its workers, stop it.

    >>> server = ForkServer(Path("vfs/courses/spa_demo"), log=Path("/tmp/fork.log"))  # doctest: +SKIP
    >>> server.start(); server.socket  # doctest: +SKIP
    PosixPath('/tmp/phase5-fork-x1y2/fork.sock')
    """

    def __init__(self, course_root: Path, log: Path) -> None:
        self.course_root = Path(course_root).resolve()
        self.log = log
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / SOCKET_NAME

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the server and wait until it listens (its imports go on while workers queue)."""
        self.folder = Path(tempfile.mkdtemp(prefix="phase5-fork-"))  # mode 0700
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", FORK_SERVER_MODULE, str(self.socket), str(self.course_root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_WAIT
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the fork server did not start (see {self.log})")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def unusable(self) -> str | None:
        """Why the server cannot fork a worker now (gone, or stopped by SIGSTOP or a debugger: a
        stub would wait a minute for an answer), or None when it can."""
        if not self.alive():
            return "has exited"
        try:
            status = psutil.Process(self.process.pid).status()  # type: ignore[union-attr]
        except psutil.Error:
            return "has exited"
        if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            return "is stopped (SIGSTOP?)"
        return None

    def workers(self) -> list[psutil.Process]:
        """The workers it forked that are still running."""
        if not self.alive():
            return []
        try:
            children = psutil.Process(self.process.pid).children()  # type: ignore[union-attr]
        except psutil.Error:
            return []
        return [child for child in children if procs.alive(child.pid)]

    def stop(self, grace: float = 5.0) -> None:
        """End the server (its workers are stopped through their windows, before this)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def stub_argv(socket_path: Path, args: list[str]) -> list[str]:
    """A window's command under warm start: the stub, run by file path in isolated mode without
    ``site`` (``-I -S``): it needs only the standard library, and so starts in ~20 ms with
    ~9 MB instead of ~100 ms with ~14 MB."""
    stub = Path(__file__).with_name("stub.py")
    return [sys.executable, "-I", "-S", str(stub), str(socket_path), *args]


# -- the server process -------------------------------------------------------------------------------


def serve(socket_path: Path, course_root: Path) -> None:
    """Listen first (windows may connect while the imports run), warm up, then fork on request
    until SIGTERM or until the supervisor that started it is gone."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    try:
        _warm(course_root)
        listener.settimeout(1.0)
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                _spawn(conn, listener)
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            socket_path.unlink()
            socket_path.parent.rmdir()  # its private folder (a supervisor killed cannot remove it)


def _warm(course_root: Path) -> None:
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    import anthropic

    # A process's first client imports the HTTP stack and builds its TLS settings (~6 MB, ~0.15 s
    # of CPU): done once here, so that each worker's own client costs ~1 MB and ~30 ms. No request.
    anthropic.Anthropic(api_key="phase5-warm-start", base_url="http://127.0.0.1:9").close()
    from worker.generators.anthropic_backend import warm_answer_types

    warm_answer_types()  # the SDK's validators for answers, built once and shared by the workers
    from worker.course import preload

    with contextlib.suppress(Exception):  # bad input: each worker reports it in its own window
        preload(course_root)
    gc.collect()
    gc.freeze()  # the collector never touches (and so never copies) what the workers share


def _spawn(conn: socket.socket, listener: socket.socket) -> None:
    conn.settimeout(10.0)
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != os.getuid():
        return
    try:
        data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
            more = conn.recv(MAX_REQUEST)
            if not more:
                break
            data += more
        request = json.loads(data)
    except (OSError, ValueError):
        return
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return
    child = os.fork()
    if child == 0:
        code = 1
        try:
            code = _worker(conn, listener, request, fds, pid)
        except BaseException:  # said in the window (or the server's log), then gone
            traceback.print_exc()
        finally:
            os._exit(code)  # never back into the server's loop
    for fd in fds:
        os.close(fd)


def _worker(
    conn: socket.socket, listener: socket.socket, request: dict[str, Any], fds: list[int], stub_pid: int
) -> int:
    """In the forked child: become the window's worker, run it, report its exit status."""
    listener.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()  # out of the server's session and process group
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    # new streams on the window's terminal, line-buffered like a cold process's on a terminal
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams, never closed
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[PANE_PID_ENV] = str(stub_pid)
    argv = [str(arg) for arg in request["argv"]]
    sys.argv = ["phase5", *argv]
    conn.settimeout(None)
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    finished = threading.Event()
    threading.Thread(target=_watch_stub, args=(conn, finished), daemon=True).start()
    code = _run_cli(argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    finished.set()
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
    return code


def _watch_stub(conn: socket.socket, finished: threading.Event) -> None:
    """The stub never writes after its request: end of file means it is gone (killed, window
    closed). Die the way a worker in that window would have died, at once."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    if not finished.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


def _run_cli(argv: list[str]) -> int:
    from supervisor.cli import main

    try:
        main(args=argv, prog_name="phase5")
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:  # a crash is reported in the window, like a cold worker's
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
