"""Methods that talk to the cluster, awaitable when the client is asynchronous.

The core operations (results, gather, scatter, waits, the primitives'
requests) are written once as generators (:mod:`twofold.client.ops`) and
awaited natively.  The rest of the API (introspection, sharing, cluster
operations, plugins, ``run``) is made awaitable by :func:`awaitable`: its
sync body runs where blocking is harmless and its result is awaited —

* on the simulator, inline: its waits run the simulation on virtual time
  (on a task's greenlet they suspend the task), so nothing blocks for real;
* on the runtime, in the event loop's default executor thread, so the
  caller's loop keeps running.  A caller cancelled meanwhile stops waiting,
  but the request it sent still completes on the cluster (dataset published,
  file uploaded): these are one-shot requests that nothing needs to undo.

Inside that body the client behaves synchronously (``_force_sync``), so
the body's own calls block instead of returning awaitables.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from twofold.context import _force_sync


def _client_of(obj: Any) -> Any:
    return obj if hasattr(obj, "_core") else obj.client


def awaitable(method: Callable) -> Callable:
    """Make ``method`` return an awaitable of its result when its client is asynchronous."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _force_sync.get():
            return method(self, *args, **kwargs)
        client = _client_of(self)
        if not client.asynchronous:
            return method(self, *args, **kwargs)
        return _blocking_async(client, method, self, args, kwargs)

    return wrapper


async def _blocking_async(client: Any, method: Callable, self: Any, args: tuple, kwargs: dict) -> Any:
    def body() -> Any:
        token = _force_sync.set(True)
        try:
            return method(self, *args, **kwargs)
        finally:
            _force_sync.reset(token)

    if client._backend.virtual_clock is not None:
        return body()
    import asyncio
    import contextvars

    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, context.run, body)
