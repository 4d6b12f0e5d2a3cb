"""A default twofold Client is dask's scheduler: a bare ``x.compute()`` runs on its cluster.

dask.distributed's default Client sets ``scheduler="dask.distributed"`` in dask's
config; that name means dask.distributed's own client, so twofold sets the
callable :data:`SCHEDULER` instead.  It resolves the client when a computation
starts (``default_client()``: the task's client inside a task, else the current
one, else the newest open default client) and secedes while it waits inside a
task (``Client.get``), so a one-thread worker never deadlocks.

* **Who calls.**  ``Client.__init__`` calls :func:`became_default` (with
  ``set_as_default=True``), ``Client.close`` calls :func:`closed`; a worker
  process calls :func:`worker_process_started`.
* **The user's choice wins.**  :data:`SCHEDULER` goes into dask's config only
  when no scheduler is set there (a ``scheduler`` set before, in a dask config
  file or in ``DASK_SCHEDULER`` stays); one set afterwards overrides it as
  usual, and a close never resets a value that is not :data:`SCHEDULER`.
* **Restoring.**  The config goes back (``set.__exit__``) when the last default
  client closes, in whatever order they close; until then the newest open one
  serves.  Should :data:`SCHEDULER` outlive every client anyway (a
  ``dask.config.set`` block that started before the close restores it on exit,
  or a client dropped without ``close``), it runs graphs on dask's threaded
  scheduler, as dask would without a client.
* **Not importing dask.**  ``import dask`` takes ~150-210 ms here, so a Client
  never imports it: if ``dask.config`` is imported already the config is set at
  once (a few microseconds); otherwise a finder on ``sys.meta_path`` sets it
  right after ``dask.config`` is imported (no cost when dask is never imported
  or not installed; ``importlib.util.find_spec("dask")`` alone would cost
  ~0.2 ms and still miss a later import).
* **Worker processes.**  A task's ``.compute()`` reads that process's config:
  a worker process sets it the same way (at start, or when a task first
  imports dask), for its life.  In-process workers (simulator, threads
  LocalCluster) share the config of the process of their clients, so a bare
  ``.compute()`` in their tasks uses the task's client while a default client
  is open (``scheduler=get_client()`` works always).
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

__all__ = ["SCHEDULER", "became_default", "closed", "worker_process_started"]


class TwofoldScheduler:
    """dask's scheduler callable (``get``) and ``persist`` hook for the current twofold client."""

    __slots__ = ()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        client = _client()
        if client is None:
            from dask.threaded import get

            return get(dsk, keys, **kwargs)
        return client.get(dsk, keys, **kwargs)

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        """``dask.persist``/``x.persist()`` ask a scheduler with ``persist`` to do it (futures, not data)."""
        client = _client()
        if client is None:
            import dask

            return list(dask.persist(*collections, scheduler="threads", **kwargs))
        return client.persist(collections, **kwargs)

    def __repr__(self) -> str:
        return "twofold.client.dask_default.SCHEDULER"

    def __reduce__(self) -> str:
        return "SCHEDULER"  # pickled by name: the same object in any process


#: the value twofold puts in dask's config (``dask.config.get("scheduler")``)
SCHEDULER = TwofoldScheduler()


def _client() -> Any:
    from twofold.client.client import default_client

    try:
        return default_client()
    except ValueError:
        return None


_lock = threading.RLock()
#: id -> weakref of the default clients not closed yet
_open: dict[int, weakref.ref] = {}
#: this process runs a worker: SCHEDULER stays for the life of the process
_worker_process = False
#: the ``dask.config.set`` that put SCHEDULER in (its ``__exit__`` restores), if it did
_applied: Any = None
_hook: _AfterDaskConfig | None = None


def became_default(client: Any) -> None:
    """``client`` is a default client now: make :data:`SCHEDULER` dask's scheduler, unless one is set."""
    config = _loaded_config()
    with _lock:
        _open[id(client)] = weakref.ref(client)
        _want(config)


def closed(client: Any) -> None:
    """``client`` closed: once no default client is open, dask's config goes back."""
    config = _loaded_config()
    with _lock:
        if _open.pop(id(client), None) is None or _wanted():
            return
        _open.clear()
        _unhook()
        if config is not None:
            _restore(config)


def worker_process_started() -> None:
    """This process is a twofold worker: tasks' bare ``.compute()`` go through their client."""
    global _worker_process
    config = _loaded_config()
    with _lock:
        _worker_process = True
        _want(config)


def _wanted() -> bool:
    """Whether SCHEDULER should be in dask's config (call under the lock)."""
    if _worker_process:
        return True
    for ref in _open.values():
        c = ref()
        if c is not None and getattr(c, "status", None) != "closed":
            return True
    return False


def _loaded_config() -> Any:
    """``dask.config`` if it is imported already (never imports dask)."""
    if sys.modules.get("dask.config") is None:
        return None
    import dask.config  # in sys.modules: waits only for an import still running in another thread

    return dask.config


def _want(config: Any) -> None:
    """Set SCHEDULER now, or once ``dask.config`` is imported (call under the lock)."""
    global _hook
    if config is not None:
        _install(config)
    elif _hook is None:
        _hook = _AfterDaskConfig()
        sys.meta_path.insert(0, _hook)


def _install(config: Any) -> None:
    global _applied
    if config.get("scheduler", None) is not None:  # the user's (or SCHEDULER already)
        return
    _applied = config.set(scheduler=SCHEDULER)


def _restore(config: Any) -> None:
    global _applied
    applied, _applied = _applied, None
    if config.get("scheduler", None) is not SCHEDULER:
        return  # the user set another one meanwhile: theirs stays
    if applied is not None:
        applied.__exit__(None, None, None)
    else:  # put back by the exit of a dask.config.set block that began while SCHEDULER was set
        config.set(scheduler=None)


def _unhook() -> None:
    global _hook
    hook, _hook = _hook, None
    if hook is not None:
        try:
            sys.meta_path.remove(hook)
        except ValueError:
            pass


def _config_imported(module: Any) -> None:
    """``dask.config`` has just been imported (by anyone): set SCHEDULER if still wanted."""
    with _lock:
        _unhook()
        if _wanted():
            _install(module)


class _AfterDaskConfig:
    """A ``sys.meta_path`` finder that lets the real finders load ``dask.config``, then
    calls :func:`_config_imported`; ``None`` (next finder) for every other module."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "dask.config":
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenCall(spec.loader)
                return spec
        return None


class _ThenCall:
    """The real loader of ``dask.config``, and :func:`_config_imported` after it ran."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the real one, for inspect and friends
        self.loader.exec_module(module)
        _config_imported(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
