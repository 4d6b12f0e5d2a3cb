"""Running user code next to the cluster's parts: ``run`` (on workers) and ``run_on_scheduler``.

``client.run`` sends the function straight to each worker (not through the
scheduler), which runs it in its process outside the task system: on the
runtime a plain function on a thread of the worker's loop executor and a
coroutine function on its loop; on the simulator at once on arrival,
taking no virtual time.  A function with a ``dask_worker`` parameter gets
the worker (``address``, ``name``, ``nthreads``, ``data``).

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

    def run(self, function: Callable, *args: Any, workers: Any = None, wait: bool = True, nanny: bool = False,
            on_error: str = "raise", **kwargs: Any) -> dict[str, Any] | None:  # fmt: skip
        """``function(*args, **kwargs)`` on every worker (or those of ``workers``, addresses or
        names): ``{address: result}``.  ``on_error``: "raise" the first worker's exception,
        "return" it as that worker's result, or "ignore" (leave the worker out).
        ``wait=False``: send and return None at once."""
        from twofold.client.options import normalize_workers

        if not callable(function):
            raise TypeError(f"run() needs a callable, got {type(function).__name__}")
        if on_error not in ("raise", "return", "ignore"):
            raise ValueError(f"on_error= must be 'raise', 'return' or 'ignore', got {on_error!r}")
        if not isinstance(wait, bool):
            raise TypeError(f"wait= must be True or False, got {wait!r}")
        if nanny:
            raise NotImplementedError("run(nanny=True): twofold's nannies run no user code; run it on the "
                                      "workers (nanny=False)")  # fmt: skip
        known = self.scheduler_info()["workers"]
        wanted = normalize_workers(workers)
        if wanted is None:
            targets = list(known)
        else:
            by_name = {info["name"]: address for address, info in known.items()}
            unknown = [w for w in wanted if w not in known and w not in by_name]
            if unknown:
                raise ValueError(f"run(): unknown workers {unknown}; the cluster's workers are {list(known)}")
            targets = list(dict.fromkeys(w if w in known else by_name[w] for w in wanted))
        data = self._backend.dump_value((function, args, kwargs))
        outcomes = self._backend.run(targets, data, wait)
        if not wait:
            return None
        results: dict[str, Any] = {}
        for address, (ok, value) in outcomes.items():
            if ok or on_error == "return":
                results[address] = value
            elif on_error == "raise":
                raise value
        return results

    def run_on_scheduler(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the scheduler's process (see the module docstring)."""
        from twofold.messages_sharing import RunOnScheduler

        if not callable(function):
            raise TypeError(f"run_on_scheduler() needs a callable, got {type(function).__name__}")
        data = self._backend.dump_value((function, args, kwargs))
        value = self._coordinate(lambda now, sid, rid: RunOnScheduler(now, sid, self.id, rid, data))
        return self._backend.load_inline(value)
