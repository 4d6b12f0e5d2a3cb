"""Asking the scheduler about its workers: scheduler_info, nthreads/ncores, wait_for_workers.

All three ride on one message pair, ``SchedulerInfoRequest`` ->
``SchedulerInfoReply``, which carries, per worker address (in the order the
workers joined), what the scheduler machine knows: ``name``, ``nthreads``,
``memory_limit``, ``resources``, ``active`` (tasks processing there),
``stored`` (keys in memory there), ``nbytes`` (bytes stored) and
``last_seen`` (the scheduler's own clock: virtual seconds on the simulator,
``time.monotonic()`` of the scheduler process on the runtime).

``wait_for_workers`` does not poll: its request names how many workers it
needs, and the scheduler answers once that many are connected.  The client
waits for the answer through the backend like any other reply, so on the
simulator virtual time passes (a worker restarted at t=5 ends the wait then)
and a wait nothing can end is reported as a stall; on the runtime the reply
wakes the waiting thread.

This is a mixin of :class:`~twofold.client.client.Client` (it uses the
Client's request plumbing, ``_ask``, from ``DataMethods``).
"""

from __future__ import annotations

from twofold.client.modes import awaitable

from typing import TYPE_CHECKING, Any

from twofold.client.options import check_timeout, normalize_workers
from twofold.errors import TimeoutError
from twofold.client.future import iter_futures
from twofold.messages import SchedulerInfoReply, SchedulerInfoRequest
from twofold.messages_sharing import InspectRequest

if TYPE_CHECKING:
    from twofold.client.client import Client


class InfoMethods:
    """Mixin of Client: what the scheduler knows of the cluster's workers."""

    def _workers_info(self: Client, n_workers: int = 0, deadline: float | None = None,
                      timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """``SchedulerInfoReply.workers`` once the scheduler has ``n_workers`` workers (copied)."""
        req = self._ask([], deadline, timeout, lambda sid: SchedulerInfoRequest(
            self._backend.now(), sid, self.id, sid, n_workers))
        reply: SchedulerInfoReply = req.reply
        return {
            address: {**info, "resources": dict(info.get("resources") or {})}
            for address, info in reply.workers.items()
        }

    @awaitable
    def scheduler_info(self: Client, asynchronous: Any = None) -> dict[str, Any]:
        """Basic information about the scheduler and its workers, as dask gives it::

            {"type": "Scheduler", "id": "Scheduler-<address>", "address": <address>,
             "workers": {<address>: {"name", "nthreads", "memory_limit", "resources",
                                     "active", "stored", "nbytes", "last_seen"}}}

        ``active``: tasks processing on the worker; ``stored``: keys in its
        memory, ``nbytes`` their size; ``last_seen``: the scheduler's clock
        when the worker joined or last sent a heartbeat.
        """
        self._check_running()
        address = self.scheduler.address
        return {
            "type": "Scheduler",
            "id": f"Scheduler-{address}",
            "address": address,
            "workers": self._workers_info(),
        }

    @awaitable
    def nthreads(self: Client, workers: Any = None, asynchronous: Any = None) -> dict[str, int]:
        """The number of threads of each worker, by address.

        ``workers``: addresses or names to report on (those the scheduler
        does not know are left out); all workers if None.
        """
        wanted = normalize_workers(workers)
        self._check_running()
        info = self._workers_info()
        return {
            address: w["nthreads"]
            for address, w in info.items()
            if wanted is None or address in wanted or w["name"] in wanted
        }

    ncores = nthreads

    @awaitable
    def wait_for_workers(self: Client, n_workers: int = 0, timeout: float | None = None) -> None:
        """Block until the scheduler has at least ``n_workers`` workers.

        Raises :class:`~twofold.errors.TimeoutError` if that takes longer
        than ``timeout`` seconds (virtual seconds on the simulator).
        """
        if not isinstance(n_workers, int) or isinstance(n_workers, bool):
            raise TypeError(f"n_workers= must be an int >= 0, got {n_workers!r}")
        if n_workers < 0:
            raise ValueError(f"n_workers= must be >= 0, got {n_workers!r}")
        timeout = check_timeout(timeout)
        self._check_running()
        if n_workers == 0:
            return
        try:
            self._workers_info(n_workers, self._deadline(timeout), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"wait_for_workers: the scheduler at {self.scheduler.address} still had fewer than "
                f"{n_workers} worker(s) after {timeout:g} s"
            ) from None

    # -- keys and workers ------------------------------------------------------------

    def _inspect(self: Client, action: str, workers: Any = None, keys: Any = None, summary: bool = False) -> Any:
        pool = normalize_workers(workers)
        return self._coordinate(lambda now, sid, rid: InspectRequest(now, sid, self.id, rid, action, pool, keys,
                                                                    summary))  # fmt: skip

    @awaitable
    def has_what(self: Client, workers: Any = None, **kwargs: Any) -> dict[str, tuple[str, ...]]:
        """The keys each worker holds in memory, by address (``workers``: some of them)."""
        return self._inspect("has_what", workers)

    @awaitable
    def processing(self: Client, workers: Any = None) -> dict[str, tuple[str, ...]]:
        """The keys each worker is processing (assigned, not yet finished), by address."""
        return self._inspect("processing", workers)

    @awaitable
    def nbytes(self: Client, keys: Any = None, summary: bool = True, **kwargs: Any) -> dict[str, int]:
        """Bytes of each key in memory (``keys``: futures or keys; all if None); with
        ``summary`` (the default, as dask's), totals by key prefix (``"inc"`` for ``"inc-3f2a"``)."""
        if not isinstance(summary, bool):
            raise TypeError(f"summary= must be True or False, got {summary!r}")
        if keys is not None:
            keys = tuple(k if isinstance(k, str) else k.key for k in iter_futures_or_keys(keys))
        return self._inspect("nbytes", keys=keys, summary=summary)

    @awaitable
    def call_stack(self: Client, futures: Any = None, keys: Any = None) -> dict[str, dict[str, list[str]]]:
        """The stacks of executing tasks, by worker address then key (those of ``futures``/``keys``
        only, if given): lines as ``traceback.format_stack`` gives them."""
        from twofold.client.stacks import task_stacks

        wanted: list[str] = []
        for source in (futures, keys):
            if source is not None:
                wanted += [k if isinstance(k, str) else k.key for k in iter_futures_or_keys(source)]
        return self.run(task_stacks, tuple(wanted))


    @awaitable
    def dump_cluster_state(self: Client, filename: str = "dump-cluster-state", write_from_scheduler: Any = None,
                           exclude: Any = (), format: str = "msgpack", **storage_options: Any) -> str:  # noqa: A002
        """Write the scheduler's and every worker's state to ``filename`` (``.msgpack.gz``, or
        ``.yaml`` with ``format="yaml"``), for a post-mortem; returns the path."""
        from twofold.client import dumps

        if format not in ("msgpack", "yaml"):
            raise ValueError(f"format= must be 'msgpack' or 'yaml', got {format!r}")
        state = {
            "scheduler": self.run_on_scheduler(dumps.scheduler_state),
            "workers": {w: v if not isinstance(v, BaseException) else repr(v)
                        for w, v in self.run(dumps.worker_state, on_error="return").items()},
            "versions": self.get_versions(),
        }  # fmt: skip
        return dumps.write(state, filename, format)

    @awaitable
    def profile(self: Client, key: str | None = None, start: Any = None, stop: Any = None, workers: Any = None,
                merge_workers: bool = True, plot: bool = False, filename: str | None = None, server: bool = False,
                scheduler: bool = False) -> dict:  # fmt: skip
        """A statistical profile of the workers' tasks, as dask's tree (see ``twofold.client.profiles``):
        ``key``, a task prefix; ``start``/``stop``, wall-clock times (``time.time()``; virtual
        time on the simulator); ``merge_workers=False``: one tree per worker address."""
        from twofold.client import profiles
        from twofold.client.options import normalize_workers

        if plot or filename or server or scheduler:
            raise NotImplementedError("profile(plot=, filename=, server=, scheduler=): only the workers' tasks "
                                      "are profiled, as data (no plot yet)")  # fmt: skip
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key= is a task prefix (str), got {key!r}")
        for edge in (start, stop):
            if edge is not None and (isinstance(edge, bool) or not isinstance(edge, (int, float))):
                raise TypeError(f"start= and stop= are times (numbers), got {edge!r}")
        records = getattr(self.cluster, "records", None)
        if callable(records):  # a simulated cluster: from its trace
            wanted = normalize_workers(workers)
            trees = profiles.from_trace(records("task"), key, start, stop, wanted)
            for address in self.scheduler_info()["workers"]:
                if wanted is None or address in wanted:
                    trees.setdefault(address, profiles.root())
        else:
            from twofold.runtime.profiler import worker_profile

            trees = self.run(worker_profile, key, start, stop, workers=workers)
        return profiles.merge(trees.values()) if merge_workers else trees

    def run_coroutine(self: Client, function: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """Deprecated in dask: ``run`` takes coroutine functions."""
        import warnings

        warnings.warn("run_coroutine is deprecated: use client.run, which runs coroutine functions",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.run(function, *args, **kwargs)


def iter_futures_or_keys(obj: Any):
    """Keys (str) and futures, from one or a collection of them."""
    if isinstance(obj, str):
        yield obj
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            if isinstance(item, str):
                yield item
            else:
                yield from iter_futures(item)
        return
    yield from iter_futures(obj)
