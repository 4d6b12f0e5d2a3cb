"""What a running task can reach: its client, and the thread pool (secede/rejoin).

Drivers register a *provider*: a function returning the current task's
:class:`TaskContext`, or None when not called from inside one of their
tasks (the simulator looks at the running greenlet; the socket runtime at
the worker thread).  ``get_client()``, ``secede()`` and ``rejoin()`` ask
the providers in turn.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class TaskContext(Protocol):
    key: str
    worker: str

    def client(self) -> Any:
        """A Client connected to the task's cluster (one per worker, reused)."""

    def secede(self) -> None:
        """Give the task's thread slot back to the worker."""

    def rejoin(self) -> None:
        """Block until the worker has a thread slot for the task again."""

    def worker_object(self) -> Any:
        """The driver's worker running the task (``get_worker()``): ``address``, ``name``,
        ``nthreads``, ``data`` (the keys it holds)."""


_providers: list[Callable[[], TaskContext | None]] = []


def register_provider(provider: Callable[[], TaskContext | None]) -> None:
    if provider not in _providers:
        _providers.append(provider)


def current_task() -> TaskContext | None:
    for provider in _providers:
        ctx = provider()
        if ctx is not None:
            return ctx
    return None


def secede() -> None:
    """Have this task leave the worker's thread pool while it waits (see dask's ``secede``)."""
    ctx = current_task()
    if ctx is None:
        raise RuntimeError("secede() can only be called from inside a running task")
    ctx.secede()


def rejoin() -> None:
    """Have this task wait for a thread slot again after ``secede()``."""
    ctx = current_task()
    if ctx is None:
        raise RuntimeError("rejoin() can only be called from inside a running task")
    ctx.rejoin()


def get_worker() -> Any:
    """The worker running the current task: ``address``, ``name``, ``nthreads``, ``data``
    (a mapping of the keys it holds to their values).  ValueError outside a task."""
    ctx = current_task()
    if ctx is None:
        raise ValueError("No worker found: get_worker() can only be called from inside a running task")
    return ctx.worker_object()


# --------------------------------------------------------------------------
# Coroutine tasks
# --------------------------------------------------------------------------

from contextvars import ContextVar  # noqa: E402

#: True inside the context of an ``async def`` task (its own asyncio task's context)
_async_task: ContextVar[bool] = ContextVar("twofold_async_task", default=False)


def in_async_task() -> bool:
    """True when called from an ``async def`` task: its client's methods return awaitables there."""
    return _async_task.get()


async def as_async_task(coro: Any) -> Any:
    """Await a coroutine task's coroutine, marked as one (drivers wrap ``async def`` tasks in it)."""
    _async_task.set(True)  # this asyncio task's own context: no other coroutine sees it
    return await coro


#: True while a sync method body runs on behalf of an awaiting caller (``twofold.client.modes``)
_force_sync: ContextVar[bool] = ContextVar("twofold_force_sync", default=False)


def forced_sync() -> bool:
    return _force_sync.get()


#: True while a real cluster's client waits (``twofold.runtime``): its timed waits are real
#: seconds even in a thread that drives a simulation on virtual time (``twofold.sim.virtual_time``)
_real_time: ContextVar[bool] = ContextVar("twofold_real_time", default=False)


class real_time:
    """``with real_time(): ...``: timed ``Condition``/``Event``/``Queue`` waits in the block
    are real waits, whatever simulation this thread drives (one instance per ``with``)."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _real_time.set(True)

    def __exit__(self, *exc: Any) -> None:
        _real_time.reset(self._token)


def in_real_time() -> bool:
    return _real_time.get()
