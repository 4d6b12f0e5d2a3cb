"""A statistical profiler of a worker process's task threads (``client.profile``).

One daemon thread per process wakes every ``INTERVAL`` seconds and, if
tasks are executing (``twofold.runtime.execution.RUNNING``), records each
task thread's stack below the worker's own frames, with the wall-clock
time and the task's key.  It keeps the last ``KEEP`` samples.

It is off until asked for: it starts in a worker process the first time a
client asks that worker for a profile, or with the worker when
``TWOFOLD_PROFILE=1`` is in its environment (``LocalCluster`` workers inherit
the client's).  Why not always on, as dask's: 500 submit->result round
trips did not change with it (0.565 / 0.583 / 0.571 ms without, 0.562 /
0.581 / 0.591 with), but ``tests/test_client_api.py`` took 149 s with it
running in every worker against 24 s without; the cause is not found yet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

from twofold.client.profiles import INTERVAL, add, root

KEEP = 200_000

#: (wall time, worker server, key, stack)
_samples: deque = deque(maxlen=KEEP)
_lock = threading.Lock()
_thread: threading.Thread | None = None


def wanted() -> bool:
    """Profile from the worker's start (``TWOFOLD_PROFILE=1``)?"""
    import os

    return os.environ.get("TWOFOLD_PROFILE", "0") not in ("", "0")


def start() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_sample, name="twofold-profiler", daemon=True)
            _thread.start()


def _sample() -> None:
    from twofold.runtime.execution import RUNNING

    while True:
        time.sleep(INTERVAL)
        if not RUNNING:
            continue
        frames = sys._current_frames()
        now = time.time()
        for ident, (server, key) in list(RUNNING.items()):
            frame = frames.get(ident)
            if frame is not None:
                _samples.append((now, server, key, _stack(frame)))


def _stack(frame: Any) -> tuple:
    """The frames below the worker's ``_run_one`` (the task's own code), outermost first."""
    out = []
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_run_one" and code.co_filename.endswith("worker.py"):
            break
        out.append((code.co_filename, code.co_name, frame.f_lineno))
        frame = frame.f_back
    return tuple(reversed(out))


def worker_profile(prefix: str | None, start: float | None, stop: float | None, dask_worker: Any = None) -> dict:
    """(Runs on a worker) the tree of this worker's samples in ``[start, stop]`` (wall clock);
    starts the sampler if it is not running yet (so a first call finds little)."""
    globals()["start"]()  # (the parameter ``start`` shadows the function)
    tree = root()
    for when, server, key, stack in list(_samples):
        if server is not dask_worker or (start is not None and when < start) or (stop is not None and when > stop):
            continue
        if prefix is not None and (key.rpartition("-")[0] or key) != prefix:
            continue
        add(tree, stack)
    return tree
