"""Running user functions on a worker: run specs, the thread pool, task context.

* **Run specs.**  The client pickles each distinct function once
  (:class:`RunSpecEncoder`, cached by identity) and every task's run spec carries
  the function's bytes and the arguments' pickle; the worker unpickles each distinct
  function once (:class:`FunctionCache`).  Layout: a 4-byte length, the
  function's pickle, then the pickle of ``(args, kwargs)``.  A ``map`` over 20,000 items pays
  for cloudpickling a lambda once, not 20,000 times.
* **Threads.**  :class:`TaskThreads` runs work items on threads that wait
  on one queue, starting a new thread only when none is idle; the state
  machine decides how many tasks run at once (a seceded task leaves its
  slot, and the next task needs a thread while it still runs).
* **Outcome.**  :func:`describe_result` measures a result and pickles it
  inline when it is small, in the task's thread, so the loop only forwards
  bytes; :func:`task_error` turns an exception into a :class:`TaskError`.
* **Context.**  Inside a task, ``get_client()``, ``secede()`` and
  ``rejoin()`` find their worker through a thread-local.
"""

from __future__ import annotations

import pickle
import struct
import threading
import traceback as tb_module
from collections import OrderedDict
from contextvars import ContextVar
from queue import SimpleQueue
from threading import get_ident
from typing import Any, Callable

from twofold import serialize
from twofold.context import register_provider
from twofold.messages import TaskError
from twofold.runtime import tracebacks
from twofold.runtime.payload import dumps_small

# --------------------------------------------------------------------------
# Run specs
# --------------------------------------------------------------------------


_LENGTH = struct.Struct("!I")


class RunSpecEncoder:
    """The client side: ``(func, args, kwargs)`` to run-spec bytes, functions pickled once."""

    def __init__(self, size: int = 512):
        self._size = size
        #: id(func) -> (func, its bytes); the strong reference keeps the id valid
        self._funcs: OrderedDict[int, tuple[Callable, bytes]] = OrderedDict()

    def function_bytes(self, func: Callable) -> bytes:
        hit = self._funcs.get(id(func))
        if hit is not None and hit[0] is func:
            return hit[1]
        data = dumps_small(func)
        self._funcs[id(func)] = (func, data)
        if len(self._funcs) > self._size:
            self._funcs.popitem(last=False)
        return data

    def encode(self, func: Callable, args: tuple, kwargs: dict) -> bytes:
        # the function apart: a __main__ function's bytes would send every task's args through cloudpickle
        fbytes = self.function_bytes(func)
        return _LENGTH.pack(len(fbytes)) + fbytes + dumps_small((args, kwargs))


class FunctionCache:
    """The worker side: run-spec bytes back to ``(func, args, kwargs)``, functions loaded once."""

    def __init__(self, size: int = 512):
        self._size = size
        self._funcs: OrderedDict[bytes, Callable] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, run_spec: bytes) -> tuple[Callable, tuple, dict]:
        (n,) = _LENGTH.unpack_from(run_spec)
        end = _LENGTH.size + n
        fbytes = run_spec[_LENGTH.size:end]
        args, kwargs = pickle.loads(memoryview(run_spec)[end:])
        func = self._funcs.get(fbytes)
        if func is None:
            func = pickle.loads(fbytes)
            with self._lock:
                self._funcs[fbytes] = func
                if len(self._funcs) > self._size:
                    self._funcs.popitem(last=False)
        return func, args, kwargs


# --------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------


def describe_result(result: Any, rides_inline: Callable[[int], bool]) -> tuple[int, str, bytes | None]:
    """``(nbytes, typename, inline pickle or None)`` of a task's result.

    ``rides_inline`` is the worker's rule (``WorkerConfig.rides_inline``, which the
    simulator follows too), asked of the measured size and then of the pickle's length.
    """
    typename = type(result).__name__
    n = getattr(result, "nbytes", None)
    if type(n) is int and n >= 0:
        if not rides_inline(n):
            return n, typename, None
        try:
            inline = dumps_small(result)
        except Exception:
            return n, typename, None
        return n, typename, inline if rides_inline(len(inline)) else None
    try:
        header, frames = serialize.dumps(result)
    except serialize.SerializationError:
        return serialize.nbytes_of(result), typename, None
    nbytes = serialize.frames_nbytes(frames)
    if not rides_inline(nbytes):
        return nbytes, typename, None
    if header["serializer"] == "raw":
        return nbytes, typename, pickle.dumps(result, protocol=5)
    if header["count"] != 1:
        return nbytes, typename, dumps_small(result)
    frame = frames[0]
    return nbytes, typename, frame if type(frame) is bytes else bytes(frame)


def task_error(exc: BaseException) -> TaskError:
    """The exception as the scheduler and clients see it; its pickle when it has one."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_globals.get("__name__") == "twofold.runtime.worker":
        tb = tb.tb_next  # the worker's own frame that called the task: not the user's business
    text = "".join(tb_module.format_exception(type(exc), exc, tb))
    try:
        pickled = dumps_small(exc)
        pickle.loads(pickled)  # an exception that pickles but does not load is no use to the client
    except Exception:
        pickled = None
    try:
        message = str(exc)
    except Exception:
        message = f"<{type(exc).__name__} whose str() failed>"
    return TaskError(type(exc).__name__, message, pickled, tracebacks.entries(tb), text)


# --------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------


class TaskThreads:
    """Threads running ``run(item)`` for each submitted item; a new one only when none is idle."""

    def __init__(self, run: Callable[[Any], None], name: str):
        self._run = run
        self._name = name
        self._queue: SimpleQueue = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, item: Any) -> None:
        with self._lock:
            if self._closed:
                return
            if self._idle:
                self._idle -= 1
            else:
                thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put(item)

    def _loop(self) -> None:
        queue, run, lock = self._queue, self._run, self._lock
        while True:
            item = queue.get()
            if item is None:
                return
            run(item)
            with lock:
                self._idle += 1

    def close(self, timeout: float = 0.0) -> None:
        """Stop the idle threads (running tasks finish on their own; their results are dropped)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            if timeout > 0:
                thread.join(timeout)


# --------------------------------------------------------------------------
# Task context
# --------------------------------------------------------------------------

_local = threading.local()


class RuntimeTaskContext:
    __slots__ = ("server", "key", "worker")

    def __init__(self, server: Any, key: str):
        self.server = server
        self.key = key
        self.worker = server.address

    def client(self) -> Any:
        return self.server.task_client()

    def secede(self) -> None:
        self.server.secede(self.key)

    def rejoin(self) -> None:
        self.server.rejoin(self.key)

    def worker_object(self) -> Any:
        return self.server


#: the task of a coroutine function running on the worker's event loop (one per asyncio task)
_task_var: ContextVar[tuple | None] = ContextVar("twofold_task", default=None)


#: thread ident -> (worker server, key) of the task that thread runs (``call_stack``)
RUNNING: dict[int, tuple] = {}


def set_current(server: Any, key: str | None) -> None:
    if key is not None:
        _local.task = RUNNING[get_ident()] = (server, key)
    else:
        _local.task = None
        RUNNING.pop(get_ident(), None)


def _current() -> RuntimeTaskContext | None:
    task = getattr(_local, "task", None) or _task_var.get()
    if task is None:
        return None
    return RuntimeTaskContext(*task)


async def _in_task_context(server: Any, key: str, coro: Any) -> Any:
    from twofold.context import as_async_task

    _task_var.set((server, key))  # this asyncio task's own context: no other coroutine sees it
    return await as_async_task(coro)


def run_coroutine(server: Any, key: str, coro: Any) -> Any:
    """Run a coroutine function's coroutine on the worker's event loop, from the task's
    thread, which waits for its result (as dask runs ``async def`` tasks)."""
    import asyncio

    return asyncio.run_coroutine_threadsafe(_in_task_context(server, key, coro), server._loop).result()


register_provider(_current)
