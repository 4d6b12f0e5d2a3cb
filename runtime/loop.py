"""One background event loop per process for clients and in-process clusters.

A :class:`~twofold.Client` is synchronous; its connection lives on an
asyncio loop.  Every client (and a ``LocalCluster``'s scheduler and
in-process workers) in a process shares one daemon thread running one loop,
started on first use, as dask does: one thread to wake, not one per client.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import TimeoutError as ConcurrentTimeoutError
from typing import Any, Coroutine

from twofold.context import real_time

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, running in its daemon thread (started if needed)."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=_run, args=(loop, ready), name="twofold-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """True when called from the thread running ``loop`` (blocking there would deadlock)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def run_sync(loop: asyncio.AbstractEventLoop, coro: Coroutine, timeout: float | None = None) -> Any:
    """Run ``coro`` on ``loop`` from another thread and return its result."""
    if in_loop_thread(loop):
        coro.close()
        raise RuntimeError(
            "a blocking twofold call was made on the event loop's own thread; "
            "call it from a regular thread (or use the async API of the runtime)"
        )
    future: ConcurrentFuture = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        with real_time():  # real seconds, even in a thread that drives a simulation
            return future.result(timeout)
    except ConcurrentTimeoutError:  # (the builtin TimeoutError only from Python 3.11)
        future.cancel()
        raise
