"""The async shell: how an awaiting coroutine waits for the client's state to change.

The sync Client blocks in ``Backend.wait_until``.  An awaiting coroutine
instead registers a *waiter* (its condition and an asyncio future) on the
client; after every delivery from the scheduler (``Client._receive``), and
after local changes that may satisfy a condition (cancel, close, scatter),
:func:`wake` resolves the waiters whose condition holds, on their own loop.

Where the backend's time is virtual (the simulator: ``Backend.virtual_clock``),
nothing happens unless someone runs the simulation:

* on a virtual-time loop (``twofold.sim.run``, ``twofold.sim.aio``) the loop
  itself runs the simulation whenever it would otherwise sleep, so awaits
  interleave as on a real cluster and ``asyncio.sleep`` takes virtual time;
* on any other loop (plain ``asyncio.run``), an await that cannot be
  satisfied yet runs the simulation inline until it can (no wall time passes;
  other coroutines of that loop resume afterwards).

This module imports asyncio lazily callers' way: only the async API uses it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from twofold.context import current_task, in_async_task

if TYPE_CHECKING:
    from twofold.client.client import Client


class _Waiter:
    __slots__ = ("predicate", "future", "loop")

    def __init__(self, predicate: Callable[[], bool], future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.predicate = predicate
        self.future = future
        self.loop = loop


async def done(value: Any) -> Any:
    """An awaitable of a value known now (dask's coroutine-returning methods, when nothing waits)."""
    return value


def in_coroutine_task(client: Client) -> bool:
    """True inside an ``async def`` task whose client is ``client``."""
    if not in_async_task():
        return False
    ctx = current_task()
    return ctx is not None and ctx.client() is client


def attach_loop(client: Client) -> None:
    """An async client made on a virtual-time loop puts that loop on its simulation's clock."""
    clock = client._backend.virtual_clock
    if clock is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    attach = getattr(loop, "twofold_attach", None)
    if attach is not None:
        attach(clock)


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(True)


def wake(client: Client) -> None:
    """Resolve the waiters whose condition holds now (called from any thread)."""
    with client._lock:
        waiters = list(client._waiters)
    closed = client.status == "closed"
    for w in waiters:
        if w.future.done():
            continue
        try:
            ready = closed or w.predicate()
        except Exception:  # the waiter re-tests and raises in its own task
            ready = True
        if not ready:
            continue
        try:  # (waiters of a virtual-time loop are in its own registry: see wait_async)
            w.loop.call_soon_threadsafe(_set, w.future)
        except RuntimeError:  # that loop is closed: nobody is left to wake
            pass


async def wait_async(client: Client, predicate: Callable[[], bool], deadline: float | None) -> bool:
    """Await ``predicate()``; False once ``deadline`` (backend time) passed (see the module docstring)."""
    if predicate():
        return True
    if client.status == "closed":
        raise RuntimeError(f"{client!r} is closed")
    client._flush()
    backend = client._backend
    loop = asyncio.get_running_loop()
    clock = backend.virtual_clock
    if clock is not None and getattr(loop, "twofold_clock", None) is not clock:
        attach = getattr(loop, "twofold_attach", None)
        if attach is not None and getattr(loop, "twofold_clock", None) is None:
            attach(clock)
        else:  # not a loop on this simulation's clock: run the simulation inline
            remaining = None if deadline is None else max(0.0, deadline - backend.now())
            backend.wait_until(lambda: client.status == "closed" or predicate(), remaining)
            return _outcome(client, predicate)
    future = loop.create_future()
    # a virtual-time loop polls its own waiters whenever the simulation moves (actor
    # replies and Sub values change state without a delivery to the client); elsewhere
    # the client's deliveries and the backend's wake-ups resolve them (see wake)
    registry = getattr(loop, "twofold_waiters", None)
    if registry is not None:
        waiter = _Waiter(lambda: client.status == "closed" or predicate(), future, loop)
        registry.append(waiter)
    else:
        waiter = _Waiter(predicate, future, loop)
        with client._lock:
            client._waiters.append(waiter)
    try:
        if not (predicate() or client.status == "closed"):  # (a delivery between the test and the append)
            if deadline is None:
                await future
            else:
                await asyncio.wait((future,), timeout=max(0.0, deadline - backend.now()))
    finally:
        if registry is not None:
            registry.remove(waiter)
        else:
            with client._lock:
                try:
                    client._waiters.remove(waiter)
                except ValueError:  # pragma: no cover - removed by close
                    pass
    return _outcome(client, predicate)


def _outcome(client: Client, predicate: Callable[[], bool]) -> bool:
    if predicate():
        return True
    if client.status == "closed":
        raise RuntimeError(f"{client!r} was closed while waiting")
    return False
