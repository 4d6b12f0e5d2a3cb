"""The simulation's event loop on virtual time, and blocking without deadlock.

Events run in order of time, and events at the same time in the order they
were scheduled, so a run is a pure function of the program and the seed.
They are kept in *buckets*, one FIFO of ``(background, callback, args)``
per distinct time, with a heap of the distinct times: a cluster's events
bunch at the same instants (workers finishing in lockstep, a message fanned
out), and appending to a bucket costs a fraction of a push and pop on one
heap of ``(time, sequence, ...)`` tuples.  *Background* events (heartbeats, liveness
timers) keep happening forever; a blocking call whose condition nothing
*foreground* can bring about any more is a stall, reported instead of
looping forever.

User code blocks through :meth:`Clock.run_until`.  Called from the top (the
user's program), it runs the loop until the condition holds.  Called from a
task (user functions run on greenlets, see ``hosts.py``), it suspends that
greenlet and hands control back to the loop, which resumes it once the
condition holds: one thing runs at a time, in an order fixed by the heap.
"""

from __future__ import annotations

import gc
import weakref
from collections import deque
from functools import partial
from heapq import heappop, heappush
from typing import Any, Callable

from greenlet import getcurrent, greenlet

from twofold.errors import SimulationStalled
from twofold.sim import gcpolicy


class Clock:
    def __init__(self, stall_grace: float = 300.0) -> None:
        self.now = 0.0
        #: heap of the distinct times that have events
        self._times: list[float] = []
        #: time -> its events in scheduling order: (background, callback, args)
        self._buckets: dict[float, deque] = {}
        self._foreground = 0
        #: how much virtual time of only-background events we wait through
        #: before calling a blocked wait stalled (covers liveness timeouts)
        self.stall_grace = stall_grace
        #: greenlets of suspended tasks: [greenlet, predicate, deadline] in arrival order
        self._blocked: list[list] = []
        self._loop: greenlet | None = None
        self._idle: list[greenlet] = []
        #: bumped by whatever may change a client's state: a message delivered
        #: to a client, task code running (see ``run_until(client_wait=True)``)
        self.touches = 0
        #: called when only background events are left; True if it woke a wait (see
        #: ``twofold.sim.virtual_time``: a real thread's notify of a virtual wait)
        self.idle_hook: Callable[[], bool] | None = None

    # -- scheduling ----------------------------------------------------------

    def at(self, when: float, callback: Callable, *args: Any, background: bool = False) -> None:
        """Run ``callback(*args)`` at virtual time ``when`` (never in the past)."""
        self.schedule(when if when > self.now else self.now, callback, args, background)

    def schedule(self, when: float, callback: Callable, args: tuple, background: bool = False) -> None:
        """:meth:`at` for the hot paths: ``when`` not in the past (the caller's
        arithmetic guarantees it), arguments as one tuple."""
        if not background:
            self._foreground += 1
        bucket = self._buckets.get(when)
        if bucket is None:
            bucket = self._buckets[when] = deque()
            heappush(self._times, when)
        bucket.append((background, callback, args))

    def soon(self, callback: Callable, *args: Any) -> None:
        self.at(self.now, callback, *args)

    # -- blocking ------------------------------------------------------------

    @property
    def in_task(self) -> bool:
        """True when called from a suspended-able task greenlet."""
        return self._loop is not None and getcurrent() is not self._loop

    def run_until(
        self, predicate: Callable[[], bool], timeout: float | None = None, client_wait: bool = False
    ) -> bool:
        """Advance the simulation until ``predicate()``; False if ``timeout`` virtual seconds pass.

        ``client_wait``: the predicate reads only client state, so the loop
        tests it again only after an event that bumped :attr:`touches`
        (about half of them), not after every event.
        """
        if predicate():
            return True
        deadline = None if timeout is None else self.now + timeout
        if self.in_task:
            return self._suspend(predicate, deadline)
        outer = self._loop
        self._loop = getcurrent()
        thresholds = gcpolicy.relax() if outer is None else None
        try:
            return self._run(predicate, deadline, client_wait)
        finally:
            self._loop = outer
            if thresholds is not None:
                gc.set_threshold(*thresholds)

    def _run(self, predicate: Callable[[], bool], deadline: float | None, client_wait: bool = False) -> bool:
        """The event loop: pop and run events until ``predicate()`` (the hot loop,
        so one event costs no call beyond its own callback)."""
        times = self._times
        buckets = self._buckets
        blocked = self._blocked
        quiet_since = None
        tested = -1  # self.touches when the predicate last failed (client waits)
        while True:
            if tested != self.touches:
                if predicate():
                    return True
                if client_wait:
                    tested = self.touches
            if not times:
                idle = self.idle_hook
                if idle is not None and idle():
                    if blocked:
                        self._wake()
                    continue
                self._stalled("no events are left")
            when = times[0]
            if deadline is not None and when > deadline:
                self.now = max(self.now, deadline)
                return predicate()
            if self._foreground == 0:
                idle = self.idle_hook
                if idle is not None and idle():
                    # a real thread woke a virtual wait while nothing else could happen
                    quiet_since = None
                    if blocked:
                        self._wake()
                    continue
                if deadline is None:
                    # (with a deadline, a wait that cannot succeed simply times out)
                    if quiet_since is None:
                        quiet_since = self.now
                    elif when - quiet_since > self.stall_grace:
                        self._stalled(
                            f"only background events (heartbeats, timers) for {self.stall_grace:g} virtual seconds"
                        )
            else:
                quiet_since = None
            bucket = buckets[when]
            background, callback, args = bucket.popleft()
            if not bucket:
                heappop(times)
                del buckets[when]
            if not background:
                self._foreground -= 1
            self.now = when
            callback(*args)
            if blocked:
                self._wake()

    def _stalled(self, why: str) -> None:
        raise SimulationStalled(
            f"the simulated cluster can make no more progress at t={self.now:g}: {why}. "
            "Is there a worker that can run the task (workers=, resources=), "
            "or is a task waiting on something that never happens?"
        )

    def _suspend(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        me = getcurrent()
        entry = [me, predicate, deadline]
        self._blocked.append(entry)
        if deadline is not None:
            self.at(deadline, self._expire, entry)
        return self._loop.switch()

    def _expire(self, entry: list) -> None:
        if entry in self._blocked:
            self._blocked.remove(entry)
            self.touches += 1
            entry[0].switch(False)

    def _wake(self) -> None:
        """Resume suspended tasks whose condition now holds, oldest first."""
        while True:
            for entry in self._blocked:
                if entry[1]():
                    self._blocked.remove(entry)
                    self.touches += 1
                    entry[0].switch(True)
                    break
            else:
                return

    def spawn(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on a greenlet until it returns or suspends.

        A suspended one is resumed by the loop when what it waits for
        happens.  Greenlets are pooled: switching into an idle one costs
        less than creating a new one for every task.
        """
        g = self._idle.pop() if self._idle else greenlet(partial(_pooled, weakref.ref(self)))
        g.parent = getcurrent()
        self.touches += 1
        g.switch(fn, args)

    def abort(self, owner: Any) -> None:
        """End the suspended tasks of ``owner`` (a worker that died): their
        blocking call raises GreenletExit, which user code does not catch."""
        doomed = [e for e in self._blocked if (getattr(e[0], "twofold_task", None) or (None,))[0] is owner]
        for entry in doomed:
            self._blocked.remove(entry)
            self.touches += 1
            entry[0].throw()

    def close(self) -> None:
        """End the pooled greenlets (they hold stacks)."""
        idle, self._idle = self._idle, []
        for g in idle:
            g.throw()


def _pooled(clock_ref: weakref.ref, fn: Callable, args: tuple) -> None:
    """A pooled greenlet's life: run a task, go idle, wait for the next.

    It keeps only a weak reference to its clock and no reference to itself
    in its frame: a suspended greenlet's frame is invisible to the garbage
    collector, so a cycle through it would keep a whole simulation alive.
    """
    while True:
        try:
            fn(*args)
        finally:
            fn = args = None
        clock = clock_ref()
        if clock is None:
            return
        clock._idle.append(getcurrent())
        parent = getcurrent().parent
        del clock
        fn, args = parent.switch()
