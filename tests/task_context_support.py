"""Task functions of test_task_context.py (module level: worker processes import them)."""

from __future__ import annotations

from twofold import get_worker, worker_client


def describe_worker(dep):
    w = get_worker()
    return {"address": w.address, "name": w.name, "nthreads": w.nthreads, "has_dep": dep in w.data.values()}


def fib(n):
    if n < 2:
        return n
    with worker_client() as client:
        a = client.submit(fib, n - 1)
        b = client.submit(fib, n - 2)
        return a.result() + b.result()


def keys_here(key):
    return key in get_worker().data
