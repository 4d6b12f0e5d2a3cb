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

from twofold.client.modes import awaitable

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

    @awaitable
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

    @awaitable
    def run_on_scheduler(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the scheduler's process (see the module docstring)."""
        from twofold.messages_sharing import RunOnScheduler

        if not callable(function):
            raise TypeError(f"run_on_scheduler() needs a callable, got {type(function).__name__}")
        data = self._backend.dump_value((function, args, kwargs))
        value = self._coordinate(lambda now, sid, rid: RunOnScheduler(now, sid, self.id, rid, data))
        return self._backend.load_inline(value)

    # -- not supported ------------------------------------------------------------------

    def start_ipython_workers(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: upstream dask removed IPython kernels on workers (and twofold has none)."""
        raise NotImplementedError("start_ipython_workers: IPython kernels on workers are not supported "
                                  "(dask.distributed dropped them too); use client.run(...) to run code there")  # fmt: skip

    def start_ipython_scheduler(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: upstream dask removed the IPython kernel on the scheduler."""
        raise NotImplementedError("start_ipython_scheduler: an IPython kernel on the scheduler is not supported "
                                  "(dask.distributed dropped it too); use client.run_on_scheduler(...)")  # fmt: skip

    # -- versions and logs -------------------------------------------------------------

    @awaitable
    def get_versions(self, check: bool = False, packages: Any = None) -> dict[str, Any]:
        """Python, platform and package versions of this client, the scheduler and each worker
        (``packages``: more package names to report); ``check``: ValueError if the
        packages twofold needs differ between them."""
        extra = tuple(packages or ())
        if not all(isinstance(p, str) for p in extra):
            raise TypeError(f"packages= takes package names (str), got {packages!r}")
        versions = {
            "client": versions_here(extra),
            "scheduler": self.run_on_scheduler(versions_here, extra),
            "workers": self.run(versions_here, extra),
        }
        if check:
            mismatched = _mismatches(versions)
            if mismatched:
                lines = "\n".join(f"  {name}: {sorted(set(found.values()))} ({found})" for name, found in mismatched.items())
                raise ValueError(f"mismatched versions found:\n{lines}")
        return versions

    @awaitable
    def get_scheduler_logs(self, n: int | None = None) -> list[tuple[str, str]]:
        """The scheduler's last ``n`` log records, ``(level, message)``, oldest first.  On a
        SimCluster: its faults and worker events, with their virtual times."""
        n = _count(n)
        records = getattr(self.cluster, "records", None)
        if callable(records):  # a simulated cluster: what happened to it
            return _last([("INFO", _fault_line(r)) for r in records("fault")], n)
        return self.run_on_scheduler(recent_logs, "twofold.runtime.scheduler", n)

    @awaitable
    def get_worker_logs(self, n: int | None = None, nanny: bool = False, workers: Any = None) -> dict:
        """Each worker's last ``n`` log records, by address (workers sharing a process
        share their records).  On a SimCluster: each worker's faults and events."""
        from twofold.client.options import normalize_workers

        n = _count(n)
        if nanny:
            raise NotImplementedError("get_worker_logs(nanny=True): nannies keep no log buffer; their lines "
                                      "go to the LocalCluster's own log")  # fmt: skip
        records = getattr(self.cluster, "records", None)
        if callable(records):
            wanted = normalize_workers(workers)
            addresses = [w for w in self.scheduler_info()["workers"] if wanted is None or w in wanted]
            faults = records("fault")
            return {w: _last([("INFO", _fault_line(r)) for r in faults if r["target"] == w], n) for w in addresses}
        return self.run(recent_logs, "twofold.runtime.worker", n, workers=workers)


def _count(n: Any) -> int:
    if n is None:
        return 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TypeError(f"n= must be an int >= 0 or None, got {n!r}")
    return n


def _last(items: list, n: int) -> list:
    return items[-n:] if n else items


def _fault_line(record: dict) -> str:
    detail = f" ({record['detail']})" if record.get("detail") else ""
    return f"t={record['time']:.6f} {record['what']} {record['target']}{detail}"


def recent_logs(name: str, n: int) -> list[tuple[str, str]]:
    """(Runs on the scheduler or a worker) the last ``n`` records of logger ``name``."""
    from twofold.runtime.logs import recent

    return recent(name, n)


#: packages twofold cannot run without: versions must agree across a cluster
REQUIRED = ("python", "twofold", "msgpack", "cloudpickle")
_REPORTED = (*REQUIRED, "greenlet", "sortedcontainers", "networkx", "numpy", "dask", "distributed")


def versions_here(extra: tuple = ()) -> dict[str, Any]:
    """(Runs anywhere) this process's host and package versions."""
    import locale
    import platform
    import struct
    import sys
    from importlib import metadata

    packages: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in (*_REPORTED[1:], *extra):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    host = {
        "python": sys.version.split()[0], "python-bits": struct.calcsize("P") * 8, "OS": platform.system(),
        "OS-release": platform.release(), "machine": platform.machine(), "processor": platform.processor(),
        "byteorder": sys.byteorder, "locale": locale.getlocale()[0],
    }  # fmt: skip
    return {"host": host, "packages": packages}


def _mismatches(versions: dict) -> dict[str, dict[str, Any]]:
    """Required package -> {who: version}, for the packages whose versions differ."""
    who = {"client": versions["client"], "scheduler": versions["scheduler"], **versions["workers"]}
    out = {}
    for name in REQUIRED:
        found = {w: v["packages"].get(name) for w, v in who.items()}
        if len(set(found.values())) > 1:
            out[name] = found
    return out
