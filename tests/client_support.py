"""Task functions and simulator helpers shared by the Client test modules.

The functions run as tasks (on the simulator, on threads and in worker
processes), so they live at module level in an importable module: worker
processes import them by name from this file.
"""

from __future__ import annotations

import pytest

from twofold import get_client, rejoin, secede
from twofold.sim import SimCluster

L = 0.001  # the simulator's default latency
TOL = 1e-5


def approx(x):
    """Equal up to the bytes-over-bandwidth part of a hop (see test_client_sim)."""
    return pytest.approx(x, abs=TOL)


def cluster_of(n=1, threads=1, **kw):
    """A validated SimCluster of ``n`` workers."""
    kw.setdefault("validate", True)
    return SimCluster(n_workers=n, threads_per_worker=threads, **kw)


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def ident(x):
    return x


def slowinc(x):
    return x + 1


def combine(x, y=0, *, z=0):
    return (x, y, z)


def total(items, extra=None):
    s = sum(items[0]) + sum(items[1])
    if extra is not None:
        s += sum(extra.values())
    return s


def div(x, y):
    return x / y


class CustomError(Exception):
    pass


def raise_custom(msg):
    raise CustomError(msg)


def spawner(n):
    c = get_client()
    futs = c.map(inc, range(n), key=[f"child-{i}" for i in range(n)])
    secede()
    results = c.gather(futs)
    rejoin()
    return sum(results)
