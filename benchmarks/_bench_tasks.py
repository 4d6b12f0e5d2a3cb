"""Task functions for ``bench_vs_dask.py``.

They live in their own small module so that worker processes import them by
name (``bench_vs_dask.py`` puts this directory on ``PYTHONPATH`` before it
starts any cluster) instead of receiving them pickled by value: both
libraries then ship the same small reference per task.
"""

from __future__ import annotations


def noop(x):
    return None


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def make_array(nbytes, salt):
    """A fresh ``nbytes`` numpy array (uint8), made on the worker."""
    import numpy as np

    a = np.empty(nbytes, dtype=np.uint8)
    a.fill(salt % 251)
    return a


def nbytes_of(a):
    return int(a.nbytes)


class Counter:
    """An actor (``submit(Counter, actor=True)``): the round-trip workload calls ``increment``."""

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


# --------------------------------------------------------------------------
# coordination primitives: one loop, run from the client or inside a task
# --------------------------------------------------------------------------

#: where each library keeps its primitives (imported by name on the side that runs the loop)
PRIMITIVES = {
    "twofold": {"lock": ("twofold", "Lock"), "queue": ("twofold", "Queue"),
                "event": ("twofold", "Event"), "variable": ("twofold", "Variable")},
    "dask": {"lock": ("distributed", "Lock"), "queue": ("distributed", "Queue"),
             "event": ("distributed", "Event"), "variable": ("distributed", "Variable")},
}


def primitive_class(lib, op):
    import importlib

    module, name = PRIMITIVES[lib][op]
    return getattr(importlib.import_module(module), name)


def primitive_loop(lib, op, name, n, warm=5):
    """``n`` timed round trips of ``op`` on the primitive called ``name`` of
    ``lib`` ("twofold" or "dask"); a list of seconds, one per iteration.

    The same code runs in the client's process (the primitive finds the
    default client) and inside a task (it finds the task's client):

    * lock:     ``with lock: pass`` (acquire + release);
    * queue:    ``q.put(i); q.get()``;
    * event:    ``e.set(); e.wait()`` (the second finds it set: a round trip each);
    * variable: ``v.set(i); v.get()``.

    ``warm`` untimed iterations first (a task's client connects on first use).
    """
    import time

    obj = primitive_class(lib, op)(name)
    samples = []
    for i in range(-warm, n):
        t0 = time.perf_counter()
        if op == "lock":
            with obj:
                pass
        elif op == "queue":
            obj.put(i)
            r = obj.get()
            if r != i:
                raise AssertionError(f"queue {name}: put({i}) then get() gave {r!r}")
        elif op == "event":
            obj.set()
            if obj.wait() is not True:
                raise AssertionError(f"event {name}: wait() after set() did not return True")
        elif op == "variable":
            obj.set(i)
            r = obj.get()
            if r != i:
                raise AssertionError(f"variable {name}: set({i}) then get() gave {r!r}")
        else:
            raise ValueError(f"unknown primitive op {op!r}")
        elapsed = time.perf_counter() - t0
        if i >= 0:
            samples.append(elapsed)
    return samples
