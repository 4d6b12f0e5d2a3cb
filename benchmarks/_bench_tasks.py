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
