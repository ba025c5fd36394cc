"""The command in a worker's tmux window under warm start (see :mod:`supervisor.forkserver`).

``python -m supervisor.stub SOCKET worker COURSE --segment S --orch O ...`` hands this window's
terminal (standard input, output and error), its working directory and environment to the fork
server and stands in for the forked worker: it passes on SIGTERM, SIGINT and SIGHUP, and exits
with the worker's status. When the server cannot be reached it becomes a cold worker (``exec``,
same pid), so a window never depends on the server being there.

It imports nothing beyond the standard library's basics: it starts in a few milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys

FIRST_ANSWER_WAIT = 60.0  # seconds for the server to fork (it may still be importing the SDK)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> None:
    socket_path, args = argv[0], argv[1:]
    try:
        _conn, reader, pid = _ask(socket_path, args)  # the socket stays open as long as this process
    except (OSError, ValueError, KeyError):
        cold(args)
    forwarded: list[int] = []
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: _forward(pid, signum, forwarded))
    for line in reader:
        with_exit = json.loads(line)
        if "exit" in with_exit:
            sys.exit(int(with_exit["exit"]))
    if forwarded:
        # The worker died of the signal it was passed (SIGHUP: its window was closed): so does the
        # stub, and tmux records that signal, as for a cold worker.
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    # No status: the worker was killed (or crashed hard); the pane shows it and exits 1.
    print(f"phase5: worker pid {pid} ended without an exit status (killed?)", file=sys.stderr)
    sys.exit(1)


def _ask(socket_path: str, args: list[str]) -> tuple[socket.socket, io.BufferedReader, int]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(FIRST_ANSWER_WAIT)
        conn.connect(socket_path)
        request = {"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reader = conn.makefile("rb")
        pid = int(json.loads(reader.readline())["pid"])
        conn.settimeout(None)
    except BaseException:
        conn.close()  # a worker forked after all finds the stub gone and ends itself
        raise
    return conn, reader, pid


def _forward(pid: int, signum: int, forwarded: list[int]) -> None:
    forwarded.append(signum)
    try:  # noqa: SIM105 - contextlib is one import more than a stub that must start at once needs
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def cold(args: list[str]) -> None:
    """Become the worker itself (no server): the same command, started the usual way."""
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.cli", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
