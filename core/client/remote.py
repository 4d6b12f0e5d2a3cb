"""Running user code next to the cluster's parts: ``run_on_scheduler``.

The scheduler's *driver* runs the function (the state machine never
unpickles user data), in the scheduler's process: on the runtime on its
event loop (a coroutine function is awaited there; a plain one blocks the
scheduler while it runs, as in dask), on the simulator in the event loop,
taking no virtual time.  A function with a ``dask_scheduler`` parameter is
given the scheduler's state machine (``.tasks``, ``.workers``, ...: read
it, never change it).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


def call_with(func: Callable, args: tuple, kwargs: dict, name: str, value: Any) -> Any:
    """``func(*args, **kwargs)``, with ``name=value`` if it takes it (``dask_scheduler``, ``dask_worker``)."""
    if name not in kwargs and _names(func, name):
        kwargs = {**kwargs, name: value}
    return func(*args, **kwargs)


def _names(func: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


class RemoteMethods:
    """Mixin of :class:`~twofold.Client`."""

    def run_on_scheduler(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the scheduler's process (see the module docstring)."""
        from twofold.messages_sharing import RunOnScheduler

        if not callable(function):
            raise TypeError(f"run_on_scheduler() needs a callable, got {type(function).__name__}")
        data = self._backend.dump_value((function, args, kwargs))
        value = self._coordinate(lambda now, sid, rid: RunOnScheduler(now, sid, self.id, rid, data))
        return self._backend.load_inline(value)
