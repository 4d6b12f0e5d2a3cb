"""An asyncio event loop on the simulation's clock: async programs on virtual time.

``twofold.sim.run(main())`` is ``asyncio.run(main())`` on a :class:`VirtualTimeLoop`.
Its ``time()`` is the simulation's virtual clock, and where a normal loop
would sleep in ``select`` until a socket is ready or its next timer is due,
this one runs the simulation instead: until a coroutine of the loop can go
on (an async client's waiter was woken), or for as long as the loop would
have slept.  So ``await asyncio.sleep(5)`` takes 5 virtual seconds and no
wall time, ``asyncio.wait_for(..., 10)`` times out on virtual time, and a
run is a function of the program and the seed, as a sync one is.

The loop attaches to a simulation's clock when the first async client of a
:class:`~twofold.sim.SimCluster` is made in it (one simulation per loop);
before that, its time is its own and sleeps take no wall time either.

``async def`` tasks on the simulator run on such a loop too, on the task's
greenlet: a wait there suspends the task, and the simulation goes on.
Real file descriptors (``call_soon_threadsafe``'s pipe) are still polled,
without blocking.
"""

from __future__ import annotations

import asyncio
import selectors
from asyncio import events
from typing import Any, Coroutine

from twofold.sim.clock import Clock


class _VirtualSelector(selectors.BaseSelector):
    """A selector whose waiting runs the simulation (see the module docstring)."""

    def __init__(self, loop: VirtualTimeLoop):
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list:
        ready = self._inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        self._loop._advance(timeout)
        return self._inner.select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock and sleeps are a simulation's (see the module docstring)."""

    def __init__(self, clock: Clock | None = None, outer: asyncio.AbstractEventLoop | None = None):
        super().__init__(_VirtualSelector(self))
        #: the simulation's clock once attached (``twofold_attach``), else None
        self.twofold_clock: Clock | None = None
        #: async waits of clients on this loop (``twofold.client.aio``), tested as the simulation runs
        self.twofold_waiters: list = []
        self._own_time = 0.0
        self._base = 0.0
        #: the loop that was running when this one started (a task's loop inside a user's loop)
        self._outer = outer
        if clock is not None:
            self.twofold_attach(clock)

    def twofold_attach(self, clock: Clock) -> None:
        if self.twofold_clock is clock:
            return
        if self.twofold_clock is not None:
            raise RuntimeError("this virtual-time event loop already runs on another SimCluster's clock: "
                               "use one SimCluster per twofold.sim.run()")  # fmt: skip
        self._base = self._own_time - clock.now
        self.twofold_clock = clock

    def time(self) -> float:
        clock = self.twofold_clock
        return self._own_time if clock is None else self._base + clock.now

    def _advance(self, timeout: float | None) -> None:
        """Run the simulation until a callback of this loop is ready, or for ``timeout``."""
        clock = self.twofold_clock
        if clock is None:
            if timeout is None:
                raise RuntimeError("the virtual-time loop has nothing to wait for: no timer, no simulation")
            self._own_time += timeout
            return
        ready = self._ready  # (the base loop's deque of ready callbacks)
        waiters = self.twofold_waiters

        def can_go_on() -> bool:
            for waiter in waiters:
                future = waiter.future
                if not future.done() and waiter.predicate():
                    future.set_result(True)
            return bool(ready)

        mine = events._get_running_loop()
        # while the simulation runs, the loop running "outside" this one is current again:
        # an async task's own loop on a greenlet inside a user's loop (see sim.hosts)
        events._set_running_loop(self._outer)
        try:
            clock.run_until(can_go_on, timeout, client_wait=True)
        finally:
            events._set_running_loop(mine)


def run(main: Coroutine, *, debug: bool | None = None) -> Any:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`: run ``main`` on virtual time, return its result."""
    if events._get_running_loop() is not None:
        raise RuntimeError("twofold.sim.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise TypeError(f"twofold.sim.run() takes a coroutine, got {type(main).__name__} {main!r}")
    loop = VirtualTimeLoop()
    if debug is not None:
        loop.set_debug(debug)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def run_task_coroutine(coro: Coroutine, clock: Clock) -> Any:
    """An ``async def`` task's coroutine, on a virtual-time loop of its own (on the task's greenlet)."""
    from twofold.context import as_async_task

    outer = events._get_running_loop()
    loop = VirtualTimeLoop(clock, outer=outer)
    events._set_running_loop(None)
    try:
        return loop.run_until_complete(as_async_task(coro))
    finally:
        try:
            _cancel_all(loop)
        finally:
            loop.close()
            events._set_running_loop(outer)
