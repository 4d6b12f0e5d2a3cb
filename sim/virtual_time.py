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

Everywhere else (other threads: pytest's, a thread a task starts, a
logging thread) they are the real functions: the dispatch is one
``getcurrent()``, one attribute read and one dict lookup.  Not virtual
yet: ``threading.Event.wait``/``Condition.wait``/``queue.Queue.get``
timeouts (the threading module waits on them itself, ``Thread.start``
included, for events real threads set: they need a rule of their own).  Names bound
before the cluster opened (``from time import sleep``) keep the real
function; C code (``datetime.now()``) is real time.  The originals are put
back when the last such cluster closes (or is dropped).
"""

from __future__ import annotations

import time as _time
import weakref
from typing import Any

from threading import get_ident

from greenlet import getcurrent

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
        _keep_asyncio_real(False)


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

