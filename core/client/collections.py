"""Dask collections on twofold: ``client.compute``, ``client.persist``, ``normalize_collection``.

Needs the ``dask`` package (the ``dask`` extra); it is imported when one of
these methods is first called, never at ``import twofold``.

* ``compute`` builds dask's expression for the collections (as
  dask.distributed does: ``collections_to_expr``, ``FinalizeCompute``,
  ``optimize``), submits its graph through :func:`twofold.client.graphs.submit_graph`
  and gives one Future per collection: the Future of a bag is the whole
  list, of an array the whole numpy array.
* ``persist`` submits the collections' own keys (no finalize step) and
  rebuilds each collection with ``__dask_postpersist__`` on a graph of
  ``{key: Future}``; computing such a collection again reuses the futures.
* ``dask.compute(x, scheduler=client)`` and ``dask.config.set(scheduler=client)``
  go through ``client.get`` (dask asks a "Client" object for ``get`` and
  ``asynchronous``); ``dask.persist(x, scheduler=client)`` through
  ``client.persist``.
* ``dask.config.set(scheduler=twofold.client.collections.get)`` makes the
  current twofold client (``default_client()``: the task's client inside a
  task) dask's scheduler, whichever it is when a computation starts.
* Called from inside a task with the task's client (``x.compute(scheduler=get_client())``),
  ``get`` and ``compute(sync=True)`` secede while they wait and rejoin
  afterwards, so that a one-thread worker does not deadlock.
* A default Client makes itself dask's scheduler while it is open (a bare
  ``x.compute()``): see :mod:`twofold.client.dask_default`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twofold.client.graphs import name_of, submit_graph

if TYPE_CHECKING:
    from twofold.client.client import Client


def _import_dask() -> Any:
    try:
        import dask
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("dask collections need the dask package: pip install 'twofold[dask]'") from e
    return dask


def _flatten(keys: Any) -> list:
    from dask.core import flatten

    return list(flatten(keys))


def _graph_future(key: str, client: Client) -> Any:
    """A Future of ``key`` that dask's graph code takes for a reference (``__dask_future__``):
    a persisted graph's values, so that dask's optimizations never inline one as data."""
    global _GraphFuture
    if _GraphFuture is None:
        from twofold.client.future import Future

        class GraphFuture(Future):
            """A :class:`Future` inside a dask graph (a persisted collection's)."""

            __dask_future__ = True

        _GraphFuture = GraphFuture
    return _GraphFuture(key, client)


_GraphFuture: Any = None


def _seceded(ctx: Any) -> bool:
    """Whether the running task has left its worker's thread pool (both drivers' workers keep
    their WorkerState as ``.state``; a read of its ``long_running``, nothing changed)."""
    state = getattr(ctx.worker_object(), "state", None)
    tasks = getattr(state, "tasks", None)
    if tasks is None:
        return False
    ts = tasks.get(ctx.key)
    return ts is not None and ts in state.long_running


def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's ``get`` on the current twofold client (see :func:`twofold.client.client.default_client`):
    ``dask.config.set(scheduler=twofold.client.collections.get)``."""
    from twofold.client.client import default_client

    return default_client().get(dsk, keys, **kwargs)


class CollectionMethods:
    """Client methods for dask collections (mixed into :class:`twofold.Client`)."""

    @property
    def asynchronous(self) -> bool:
        """Always False: this Client's methods block (dask's ``dask.compute`` asks)."""
        return False

    def _gather_from_task(self: Client, futures: Any) -> Any:
        """``gather``, seceding meanwhile (and rejoining after) when called from inside a task."""
        from twofold.context import current_task, rejoin, secede

        ctx = current_task()
        if ctx is None or _seceded(ctx):  # seceded already (worker_client()): it stays so
            return self.gather(futures)
        secede()  # as dask.distributed: on a worker thread, whichever client this is
        try:
            return self.gather(futures)
        finally:
            rejoin()

    def compute(
        self: Client,
        collections: Any,
        sync: bool = False,
        optimize_graph: bool = True,
        workers: Any = None,
        allow_other_workers: bool = False,
        resources: dict | None = None,
        retries: int | None = 0,
        priority: int = 0,
        fifo_timeout: Any = "60s",
        actors: Any = None,
        traverse: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Compute dask collections on the cluster: a Future per collection (the same
        shape: one, or a list), or their results with ``sync=True``.  Other objects
        pass through unchanged; with ``traverse``, lists/tuples/dicts of collections
        are computed as one ``dask.delayed`` each."""
        dask = _import_dask()
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr

        singleton = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if singleton else list(collections)
        if traverse:
            items = [dask.delayed(a) if isinstance(a, (list, set, tuple, dict, Iterator)) else a for a in items]
        variables = [a for a in items if dask.is_dask_collection(a)]
        futures_of: list = []
        if variables:
            expr = FinalizeCompute(collections_to_expr(variables, optimize_graph)).optimize()
            names = _flatten(expr.__dask_keys__())
            futures_of = submit_graph(self, expr, names, workers=workers, allow_other_workers=allow_other_workers,
                                      resources=resources, retries=retries, priority=priority)  # fmt: skip
        it = iter(futures_of)
        out = [next(it) if dask.is_dask_collection(a) else a for a in items]
        if sync:
            out = self._gather_from_task(out)
        return out[0] if singleton else out

    def persist(
        self: Client,
        collections: Any,
        optimize_graph: bool = True,
        workers: Any = None,
        allow_other_workers: bool = False,
        resources: dict | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: Any = "60s",
        actors: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Start computing dask collections; the same collections (one, or a list),
        whose graphs are the futures of their keys.  Returns at once."""
        dask = _import_dask()
        from dask.base import collections_to_expr

        singleton = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if singleton else list(collections)
        for a in items:
            if not dask.is_dask_collection(a):
                raise TypeError(f"persist() takes dask collections, got {type(a).__name__}")
        if not items:
            return collections
        expr = collections_to_expr(items, optimize_graph).optimize()
        per_collection = [_flatten(k) for k in expr.__dask_keys__()]
        if len(per_collection) != len(items):
            raise TypeError("persist() cannot rebuild these collections (their expression regrouped them)")
        names = [k for ks in per_collection for k in ks]
        futures = dict(zip(names, submit_graph(self, expr, names, workers=workers, resources=resources,
                                               allow_other_workers=allow_other_workers, retries=retries,
                                               priority=priority)))  # fmt: skip
        out = []
        for a, ks in zip(items, per_collection):
            rebuild, state = a.__dask_postpersist__()
            out.append(rebuild({k: _graph_future(futures[k].key, self) for k in ks}, *state))
        return out[0] if singleton else out

    def normalize_collection(self: Client, collection: Any) -> Any:
        """``collection`` with the tasks of keys this client already holds replaced by
        their futures, and the tasks only they needed left out (the same collection
        if it has no such keys)."""
        _import_dask()
        dsk = dict(collection.__dask_graph__())
        held = [k for k in dsk if name_of(k) in self._states]
        if not held:
            return collection
        for k in held:
            dsk[k] = _graph_future(name_of(k), self)
        from dask.optimization import cull

        dsk, _ = cull(dsk, _flatten(collection.__dask_keys__()))  # what only the held keys needed goes
        rebuild, state = collection.__dask_postpersist__()
        return rebuild(dsk, *state)
