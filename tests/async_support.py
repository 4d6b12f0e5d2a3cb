"""Task functions and actor classes for ``test_async_client.py``.

They run as tasks (on the simulator, on threads and in worker processes),
so they live at module level in an importable module: worker processes
import them by name from this file.
"""

from __future__ import annotations

from twofold import get_client

from client_support import inc


async def submit_from_a_coroutine(x):
    """An ``async def`` task: its client is asynchronous there, so its calls are awaited."""
    c = get_client()
    one = await c.submit(inc, x, pure=False)
    many = await c.gather(c.map(inc, [one, one + 1], pure=False))
    return one, many


def blob(i, size=10_000):
    return bytes([i % 256]) * size


class Counter:
    """The reference's actor example."""

    n = 0

    def __init__(self, start=0):
        self.n = start

    def increment(self, by=1):
        self.n += by
        return self.n
