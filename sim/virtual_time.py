"""The program on the simulation's clock: ``time.sleep``, ``time.time``, ``threading.Event.wait``, ...

While a :class:`~twofold.sim.SimCluster` made with ``virtual_time=True``
is open (off by default for now: code that times itself with
``time.monotonic()`` next to an open cluster would measure virtual seconds),
the ``time`` module's ``sleep``, ``time``, ``monotonic``,
``perf_counter`` (and their ``_ns`` forms) are replaced by dispatchers.  Called from a task (or an actor method)
running on the simulator, which is a greenlet the simulation runs, or from
the thread that made the cluster (the client's), they read and advance
virtual time:

* ``time.sleep(s)`` in a task suspends it for ``s`` virtual seconds while
  the simulation goes on (its virtual duration is what it slept plus its
  modelled duration); in the client's thread it runs the simulation
  forward by ``s`` (done callbacks fire on the way, at their instants);
* ``time.monotonic()`` and ``time.perf_counter()`` are the virtual clock;
  ``time.time()`` is ``epoch + clock`` (``SimCluster(epoch=...)``, fixed, so
  runs repeat).

Waits built on ``threading.Condition`` (``Event.wait``, ``Condition.wait``,
``Semaphore.acquire``, ``queue.Queue.get``/``put``, ``concurrent.futures``
results) are virtual too: in a task every one of them (it suspends the task
until a notify, or its timeout in virtual seconds); in the client's thread the
timed ones (the simulation runs meanwhile, callbacks fire in it).  Untimed
waits in the client's thread stay real (``Thread.start`` and friends wait for
real threads); so does ``Thread.start`` everywhere, and every wait inside
``twofold.context.real_time()`` (a real cluster's client uses it).  A real
thread (one a task started) may notify a virtual wait: it wakes after the
next event, and when only heartbeats are left the simulation gives it
``REAL_WAIT_GRACE`` real seconds before time moves on — where such a wait
wakes in virtual time depends on real timing, so a run whose tasks wait on
threads of their own is not guaranteed to repeat exactly.

Everywhere else (other threads: pytest's, a thread a task starts, a
logging thread) the functions are the real ones: the dispatch is one
``getcurrent()``, one attribute read and one dict lookup.  Names bound
before the cluster opened (``from time import sleep``) keep the real
function; C code (``datetime.now()``), ``Lock.acquire(timeout=)`` and
``Thread.join(timeout=)`` are real time.  The originals are put back when
the last such cluster closes (or is dropped).
"""

from __future__ import annotations

import queue as _queue
import threading as _threading
import time as _time
import weakref
from functools import partial
from threading import get_ident
from typing import Any

from _thread import allocate_lock as _allocate_lock

from greenlet import getcurrent

from twofold.context import in_real_time, real_time

#: the real functions, taken at import (before any patch)
_REAL = {name: getattr(_time, name) for name in
         ("sleep", "time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "perf_counter_ns")}  # fmt: skip
_real_sleep = _REAL["sleep"]
_real_time = _REAL["time"]
_real_monotonic = _REAL["monotonic"]
_real_perf_counter = _REAL["perf_counter"]
_real_time_ns = _REAL["time_ns"]
_real_monotonic_ns = _REAL["monotonic_ns"]
_real_perf_counter_ns = _REAL["perf_counter_ns"]

#: how many open clusters want the patch
_holders = 0
#: thread id -> weak references to the open simulations with virtual time that thread
#: made (the last one wins; weak, so that a cluster dropped unclosed is collected)
_owners: dict[int, list] = {}


#: what one read of the clock costs a task, in virtual seconds: a task that busy-waits on
#: the clock sees time pass, and is charged for it (see ``clock_debt``)
READ_COST = 1e-6


def _sim_here() -> Any:
    """The simulation whose task runs on this greenlet, or that this thread made (with
    virtual time on, still open), else None."""
    task = getattr(getcurrent(), "twofold_task", None)
    if task is not None:
        sim = task[0].sim
        return sim if sim.virtual_time and not sim.closed else None
    sims = _owners.get(get_ident())
    if sims:
        sim = sims[-1][1]()
        return None if sim is None or sim.closed else sim
    return None


def _now() -> float | None:
    """Virtual now here, or None where time is real.

    In a task each read costs :data:`READ_COST`, owed by the task (its greenlet's
    ``twofold_debt``) and paid at its next sleep or when it returns (the driver
    adds it to the task's duration): so ``while time.monotonic() < end: ...``
    ends after ``end`` virtual seconds of reads, deterministically."""
    g = getcurrent()
    task = getattr(g, "twofold_task", None)
    if task is not None:
        sim = task[0].sim
        if not sim.virtual_time or sim.closed:
            return None
        debt = getattr(g, "twofold_debt", 0.0) + READ_COST
        g.twofold_debt = debt
        return sim.clock.now + debt
    sims = _owners.get(get_ident())
    if sims:
        sim = sims[-1][1]()
        if sim is not None and not sim.closed:
            return sim.clock.now
    return None


def clock_debt() -> float:
    """Take the clock-read debt of the task on this greenlet (the driver adds it to the task's duration)."""
    g = getcurrent()
    debt = getattr(g, "twofold_debt", 0.0)
    if debt:
        g.twofold_debt = 0.0
    return debt


def _seconds(seconds: Any, what: str) -> float:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(f"'{type(seconds).__name__}' object cannot be interpreted as {what}")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    return float(seconds)


def sleep(seconds: float) -> None:
    sim = _sim_here()
    if sim is None:
        return _real_sleep(seconds)
    seconds = _seconds(seconds, "a number of seconds")
    clock = sim.clock
    if clock.in_task:
        clock.run_until(_never, seconds + clock_debt())  # suspends this task until then (reads paid)
        return None
    # the client's thread: run the simulation up to then (an event there, so that a
    # cluster with nothing else to do simply reaches it)
    target = clock.now + seconds
    clock.at(target, _nothing)
    clock.run_until(lambda: clock.now >= target)
    return None


def _never() -> bool:
    return False


def _nothing() -> None:
    pass


def time() -> float:
    now = _now()
    return _real_time() if now is None else _epoch_here() + now


def monotonic() -> float:
    now = _now()
    return _real_monotonic() if now is None else now


def perf_counter() -> float:
    now = _now()
    return _real_perf_counter() if now is None else now


def time_ns() -> int:
    now = _now()
    return _real_time_ns() if now is None else round((_epoch_here() + now) * 1e9)


def monotonic_ns() -> int:
    now = _now()
    return _real_monotonic_ns() if now is None else round(now * 1e9)


def perf_counter_ns() -> int:
    now = _now()
    return _real_perf_counter_ns() if now is None else round(now * 1e9)


def _epoch_here() -> float:
    sim = _sim_here()
    return sim.epoch if sim is not None else 0.0


# -- waits built on threading.Condition -------------------------------------

_real_cond_wait = _threading.Condition.wait


def _wait_sim(timeout: Any) -> Any:
    """The simulation a ``Condition.wait(timeout)`` here waits on, or None for a real wait.

    In a task every wait is virtual (a real one would block the whole simulation,
    which runs on one thread); in the client's thread only timed ones (an untimed
    wait there is what ``Thread.start()`` and the like do, for real threads), and
    not inside ``twofold.context.real_time()`` (a real cluster's client)."""
    sim = _sim_here()
    if sim is None or in_real_time():
        return None
    if sim.clock.in_task or timeout is not None:
        return sim
    return None


def condition_wait(self: Any, timeout: float | None = None) -> bool:
    """``threading.Condition.wait`` on virtual time where :func:`_wait_sim` says so: the
    lock is released, the simulation runs (a task is suspended meanwhile) until a
    ``notify()`` or ``timeout`` virtual seconds, and the lock is taken back."""
    sim = _wait_sim(timeout)
    if sim is None:
        return _real_cond_wait(self, timeout)
    if not self._is_owned():
        raise RuntimeError("cannot wait on un-acquired lock")
    if timeout is not None:
        timeout = max(0.0, float(timeout))
    clock = sim.clock
    if clock.in_task:
        debt = clock_debt()  # the task's clock reads are paid before it waits
        if debt:
            clock.run_until(_never, debt)
    waiter = _allocate_lock()
    waiter.acquire()
    self._waiters.append(waiter)
    _virtual_waiters[waiter] = None
    clock.idle_hook = _idle
    if timeout is not None and not clock.in_task:
        # the client's thread: time reaches the deadline even if nothing else happens
        clock.at(clock.now + timeout, _nothing, background=True)
    saved = self._release_save()
    notified = False
    try:
        notified = clock.run_until(partial(waiter.acquire, False), timeout)
        return notified
    finally:
        _virtual_waiters.pop(waiter, None)
        _spent.pop(waiter, None)
        self._acquire_restore(saved)
        if not notified:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass


#: waiters of virtual Condition waits now under way (their locks are released by notify)
_virtual_waiters: dict = {}
#: those whose grace of real waiting ran out (see :func:`_idle`)
_spent: dict = {}

#: how long (real seconds) a simulation with nothing left to do but virtual waits waits
#: for a real thread (one a task started) to notify one, before going on in virtual time
REAL_WAIT_GRACE = 1.0


def _idle() -> bool:
    """The clock's idle hook (only background events are left): True if a virtual wait can wake.

    A notify from the simulation itself is seen after the event that made it; one from a
    real thread (a task's own thread pool, say) whenever it comes.  Here, with nothing else
    to do, the simulation gives such threads :data:`REAL_WAIT_GRACE` real seconds per wait
    to do so before time moves on (heartbeats) and, eventually, the run is called stalled."""
    pending = []
    for w in _virtual_waiters:
        if not w.locked():
            return True
        if w not in _spent:
            pending.append(w)
    if not pending or _threading.active_count() < 2:
        return False
    end = _real_monotonic() + REAL_WAIT_GRACE
    while _real_monotonic() < end:
        _real_sleep(0.0005)
        for w in pending:
            if not w.locked():
                return True
    for w in pending:
        _spent[w] = None
    return False


_real_thread_start = _threading.Thread.start


def thread_start(self: Any) -> None:
    """``Thread.start`` waits (untimed) for the new thread to run: a real wait, always."""
    with real_time():
        _real_thread_start(self)


_PATCH = {"sleep": sleep, "time": time, "monotonic": monotonic, "perf_counter": perf_counter, "time_ns": time_ns,
          "monotonic_ns": monotonic_ns, "perf_counter_ns": perf_counter_ns}  # fmt: skip


def hold(sim: Any, thread: int) -> object:
    """A cluster with virtual time opened in ``thread``: patch (the first one); the token
    to :func:`release` it with (the finalizer of an unclosed cluster holds no reference to it)."""
    global _holders
    _holders += 1
    token = object()
    _owners.setdefault(thread, []).append((token, weakref.ref(sim)))
    if _holders == 1:
        for name, fn in _PATCH.items():
            setattr(_time, name, fn)
        _patch_waits(True)
        _keep_asyncio_real(True)
    return token


def release(token: object, thread: int) -> None:
    """That cluster closed (or was dropped): restore the originals (the last one)."""
    global _holders
    sims = _owners.get(thread, [])
    mine = next((entry for entry in sims if entry[0] is token), None)
    if mine is not None:
        sims.remove(mine)
        _holders = max(0, _holders - 1)
        if not sims:
            _owners.pop(thread, None)
    if _holders == 0:
        for name, fn in _REAL.items():
            setattr(_time, name, fn)
        _patch_waits(False)
        _keep_asyncio_real(False)


def _patch_waits(on: bool) -> None:
    """``Condition.wait`` (under ``Event.wait``, ``Semaphore.acquire``, ``Queue.get``/``put``,
    ``concurrent.futures``), and the clocks ``threading`` and ``queue`` bound at their import
    (``from time import monotonic``) to compute what is left of a timeout."""
    _threading.Condition.wait = condition_wait if on else _real_cond_wait
    _threading.Thread.start = thread_start if on else _real_thread_start
    clock = monotonic if on else _real_monotonic
    _threading._time = clock
    _queue.time = clock


_loop_time: Any = None


def _keep_asyncio_real(on: bool) -> None:
    """A plain asyncio loop keeps the real clock: ``BaseEventLoop.time`` reads
    ``time.monotonic()``, and its timers and ``select`` timeouts are real waits
    (``twofold.sim.run``'s loop has a virtual clock of its own)."""
    global _loop_time
    from asyncio import base_events

    if on:
        _loop_time = base_events.BaseEventLoop.__dict__.get("time")
        base_events.BaseEventLoop.time = _real_loop_time
    elif _loop_time is not None:
        base_events.BaseEventLoop.time = _loop_time
        _loop_time = None


def _real_loop_time(self: Any) -> float:
    return _real_monotonic()

