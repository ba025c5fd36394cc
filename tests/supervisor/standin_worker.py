"""A stand-in for `phase5 worker` that obeys the worker contract and can go silent.

The supervisor runs it instead of ``python -m supervisor.cli`` for workers when
``PHASE5_TEST_WORKER`` names this file. With ``PHASE5_TEST_HANG=S-O`` the first launch of
orchestrator O of segment S takes the orchestrator's lock, writes one heartbeat and then hangs:
alive, silent (a stuck worker; SIGSTOP cannot make one under tmux, which continues stopped pane
processes). Every other launch is the real worker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]  # worker COURSE --segment S --orch O ...
root = Path(args[1])
segment = int(args[args.index("--segment") + 1])
orch = int(args[args.index("--orch") + 1])
marker = root / "phase5_segments" / f"hung_{segment:02d}_{orch:02d}"

if os.environ.get("PHASE5_TEST_HANG") == f"{segment}-{orch}" and not marker.exists():
    from worker.atomic import write_json, write_text
    from worker.lock import FileLock
    from worker.paths import CourseLayout

    write_text(marker, "")
    layout = CourseLayout(root)
    lock = FileLock(layout.orch_lock(segment, orch))
    assert lock.__enter__()
    now = time.time()
    write_json(
        layout.orch_progress(segment, orch),
        {
            "segment": segment,
            "orch": orch,
            "pid": os.getpid(),
            "backend": "corpus",
            "state": "running",
            "started_at": now,
            "updated_at": now,
            "total": 1,
            "done": 0,
            "rate_per_s": 0.0,
            "eta_s": None,
            "tokens": {},
            "agents": [],
            "error": None,
        },
    )
    print("stand-in worker: one heartbeat, now silent", flush=True)
    time.sleep(3600)
else:
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.cli", *args])
