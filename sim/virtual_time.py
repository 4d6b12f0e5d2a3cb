"""Tasks on the simulation's clock: ``time.sleep``, ``time.time``, ``time.monotonic`` inside tasks.

While a :class:`~twofold.sim.SimCluster` made with ``virtual_time=True``
is open (off by default for now: a task that busy-waits on
``time.monotonic()`` would never see time pass, since virtual time moves
only between events; a policy for that comes before the default flips), the ``time`` module's ``sleep``, ``time``, ``monotonic``,
``perf_counter`` (and their ``_ns`` forms) are replaced by dispatchers.
Called from a task (or an actor method) running on the simulator, which is
a greenlet the simulation runs, they read and advance virtual time:

* ``time.sleep(s)`` suspends the task for ``s`` virtual seconds while the
  simulation goes on (other tasks run, messages move); the task's virtual
  duration is what it slept plus its modelled duration;
* ``time.monotonic()`` and ``time.perf_counter()`` are the virtual clock;
  ``time.time()`` is ``epoch + clock`` (``SimCluster(epoch=...)``, fixed, so
  runs repeat).

Everywhere else (the user's thread outside tasks, pytest's threads, a
thread a task starts, any other code) they are the real functions: the
dispatch is one ``getcurrent()`` and one attribute read.  Names bound
before the cluster opened (``from time import sleep``) keep the real
function; C code (``datetime.now()``) is real time.  The originals are put
back when the last such cluster closes (or is dropped).
"""

from __future__ import annotations

import time as _time
from typing import Any

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


def _sim_here() -> Any:
    """The simulation whose task runs on this greenlet (virtual time on), else None."""
    task = getattr(getcurrent(), "twofold_task", None)
    if task is None:
        return None
    sim = task[0].sim
    return sim if sim.virtual_time and not sim.closed else None


def sleep(seconds: float) -> None:
    sim = _sim_here()
    if sim is None:
        return _real_sleep(seconds)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(f"'{type(seconds).__name__}' object cannot be interpreted as a number of seconds")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    sim.clock.run_until(_never, float(seconds))
    return None


def _never() -> bool:
    return False


def time() -> float:
    sim = _sim_here()
    return _real_time() if sim is None else sim.epoch + sim.clock.now


def monotonic() -> float:
    sim = _sim_here()
    return _real_monotonic() if sim is None else sim.clock.now


def perf_counter() -> float:
    sim = _sim_here()
    return _real_perf_counter() if sim is None else sim.clock.now


def time_ns() -> int:
    sim = _sim_here()
    return _real_time_ns() if sim is None else round((sim.epoch + sim.clock.now) * 1e9)


def monotonic_ns() -> int:
    sim = _sim_here()
    return _real_monotonic_ns() if sim is None else round(sim.clock.now * 1e9)


def perf_counter_ns() -> int:
    sim = _sim_here()
    return _real_perf_counter_ns() if sim is None else round(sim.clock.now * 1e9)


_PATCH = {"sleep": sleep, "time": time, "monotonic": monotonic, "perf_counter": perf_counter, "time_ns": time_ns,
          "monotonic_ns": monotonic_ns, "perf_counter_ns": perf_counter_ns}  # fmt: skip


def hold() -> None:
    """A cluster with virtual time opened: patch the time module (the first one)."""
    global _holders
    _holders += 1
    if _holders == 1:
        for name, fn in _PATCH.items():
            setattr(_time, name, fn)


def release() -> None:
    """That cluster closed (or was dropped): restore the time module (the last one)."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        for name, fn in _REAL.items():
            setattr(_time, name, fn)
