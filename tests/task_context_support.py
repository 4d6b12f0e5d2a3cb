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


async def async_inc(x):
    import asyncio

    await asyncio.sleep(0)
    return x + 1


async def async_uses_worker(x):
    return (get_worker().address, x)


async def async_fails():
    raise KeyError("from a coroutine")


def square(x):
    return x * x


def boom(x):
    raise ValueError(f"boom {x}")


def count_workers(dask_scheduler=None):
    return len(dask_scheduler.workers)


def scheduler_add(x, y):
    return x + y


async def scheduler_async(x):
    return x * 2


def scheduler_fails():
    raise ZeroDivisionError("on the scheduler")


def worker_address(dask_worker=None):
    return dask_worker.address


def plus(x, y=0):
    return x + y


async def async_plus(x):
    return x + 100


def fails_on(address, dask_worker=None):
    if dask_worker.address == address:
        raise OSError(f"fails on {address}")
    return "fine"


def sleepy_marker(path):
    """Waits (runtime: until ``path`` exists; simulator: on an Event that the test sets)."""
    import os
    import time

    from twofold.context import current_task
    from twofold import Event

    if type(current_task()).__name__ == "SimTaskContext":
        Event(path).wait(timeout=30)
        return "done"
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


def busy_loop(seconds):
    """Burns CPU in a function of its own, so a profile shows it."""
    import time

    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n
