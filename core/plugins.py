"""Worker and scheduler plugins, the part that runs next to the cluster (dask's API).

A :class:`WorkerPlugin` is set up on every worker, current and future:
``client.register_worker_plugin`` stores it (pickled, opaque bytes) with the
scheduler's ``worker_plugins`` extension, which sends the stored ones to each
worker that joins (``WorkerPlugins``); the client installs it on the workers
already there with ``client.run``.  The worker's *driver* (never its state
machine) unpickles it and calls ``setup(worker)`` (:func:`install`); it is
torn down on ``unregister_worker_plugin`` and when the worker closes.

A :class:`SchedulerPlugin` runs in the scheduler's process, in its driver
(as ``run_on_scheduler`` code does): :class:`SchedulerPluginHub`, hung on the
machine as ``state.plugin_hub``, is told by the driver after each event the
machine handled (and routed) which transitions happened and which workers
came and went, and calls the plugins' hooks then.  The machine stays pure: it
only appends transitions to an observer, like the simulator's trace.

``upload_file`` is a worker plugin (:class:`UploadFile`) that writes the file
into a per-worker directory on ``sys.path`` and imports a ``.py`` there.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections import deque
from typing import Any

logger = logging.getLogger("twofold.plugins")


class WorkerPlugin:
    """Base class of worker plugins: override what you need.  ``name`` (optional): the
    name it is registered under (re-registering a name replaces the plugin)."""

    def setup(self, worker: Any) -> None:
        """On each worker, once, when the plugin arrives (or the worker joins)."""

    def teardown(self, worker: Any) -> None:
        """When the plugin is unregistered or the worker closes."""

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        """A task of this worker moved from ``start`` to ``finish`` (``stimulus_id=``), called by
        the worker's driver after the machine's event (only if some plugin overrides this)."""


class SchedulerPlugin:
    """Base class of scheduler plugins: override what you need (``scheduler``: the
    scheduler's state machine; read it, never change it)."""

    def start(self, scheduler: Any) -> None:
        """When registered."""

    def close(self) -> None:
        """When unregistered."""

    def update_graph(self, scheduler: Any, *, client: str, keys: set, tasks: list, **kwargs: Any) -> None:
        """A client submitted tasks."""

    def add_worker(self, scheduler: Any, worker: str) -> None:
        """A worker joined."""

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        """A worker left."""

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A task moved from ``start`` to ``finish``."""


# -- worker side ---------------------------------------------------------------

_LOCK = threading.RLock()  # workers sharing a process share sys.path and sys.modules


def plugins_of(worker: Any) -> dict:
    """The worker's plugins, by name (``worker.plugins``, made on first use)."""
    plugins = getattr(worker, "plugins", None)
    if plugins is None:
        plugins = worker.plugins = {}
    return plugins


def install(name: str, plugin: Any, dask_worker: Any = None) -> Any:
    """(On a worker's driver) replace the plugin named ``name`` with ``plugin`` and set it up.
    A ``setup`` that raises leaves it out (and raises); an async ``setup`` is returned
    for the driver to await."""
    worker = dask_worker
    if type(worker).__module__.startswith("twofold.sim"):
        plugin = _own_copy(plugin)  # simulated workers share a process: each its own plugin, as elsewhere
    with _LOCK:
        plugins = plugins_of(worker)
        old = plugins.pop(name, None)
        if old is not None:
            _teardown(old, worker, name)
        setup = getattr(plugin, "setup", None)
        result = setup(worker=worker) if setup is not None else None
        if inspect.isawaitable(result):
            return _finish(result, plugins, name, plugin, worker)
        plugins[name] = plugin
        _retap(worker)
        return None


def _own_copy(plugin: Any) -> Any:
    import copy

    try:
        return copy.deepcopy(plugin)
    except Exception:  # (locks, sockets...): shared, then
        return plugin


async def _finish(result: Any, plugins: dict, name: str, plugin: Any, worker: Any) -> None:
    await result
    with _LOCK:
        plugins[name] = plugin
        _retap(worker)


def remove(name: str, dask_worker: Any = None) -> bool:
    """(On a worker's driver) tear down and forget the plugin named ``name``."""
    with _LOCK:
        plugin = plugins_of(dask_worker).pop(name, None)
        if plugin is not None:
            _retap(dask_worker)
            _teardown(plugin, dask_worker, name)
        return plugin is not None


def teardown_all(worker: Any) -> None:
    """(A worker's driver, as it closes) tear down every plugin."""
    plugins = getattr(worker, "plugins", None)
    if plugins:
        _untap(worker)
    while plugins:
        name, plugin = plugins.popitem()
        _teardown(plugin, worker, name)


def _teardown(plugin: Any, worker: Any, name: str) -> None:
    teardown = getattr(plugin, "teardown", None)
    if teardown is None:
        return
    try:
        result = teardown(worker=worker)
        if inspect.iscoroutine(result):
            result.close()  # (an async teardown is not awaited here)
    except Exception:
        logger.exception("worker plugin %r: teardown failed", name)


class _TransitionTap(deque):
    """The worker machine's story log, tapped while a worker plugin overrides ``transition``:
    each entry is also kept for the driver, which hands it to the plugins after the event."""

    def __init__(self, old: Any, maxlen: int) -> None:
        super().__init__(old or (), maxlen=maxlen)
        self.pending: list = []
        self.plugins: list = []

    def append(self, entry: tuple) -> None:
        deque.append(self, entry)
        self.pending.append(entry)


def _retap(worker: Any) -> None:
    """Tap the worker machine's transitions iff a plugin overrides ``transition``."""
    state = getattr(worker, "state", None)
    if state is None or not hasattr(state, "_story"):
        return
    wanting = [(n, p) for n, p in plugins_of(worker).items() if _wants_transitions(p)]
    if not wanting:
        _untap(worker)
        return
    story = state._story
    if not isinstance(story, _TransitionTap):
        story = state._story = _TransitionTap(story, story.maxlen if story is not None else 0)
    story.plugins = wanting
    worker.plugin_tap = story


def _untap(worker: Any) -> None:
    tap = getattr(worker, "plugin_tap", None)
    if tap is None:
        return
    worker.plugin_tap = None
    state = getattr(worker, "state", None)
    if state is not None and state._story is tap:
        state._story = deque(tap, maxlen=tap.maxlen) if tap.maxlen else None


def _wants_transitions(plugin: Any) -> bool:
    if isinstance(plugin, WorkerPlugin):
        return type(plugin).transition is not WorkerPlugin.transition
    return callable(getattr(plugin, "transition", None))


def flush_transitions(tap: _TransitionTap) -> None:
    """(The worker's driver, after an event, when ``worker.plugin_tap`` is set) call the
    plugins' ``transition(key, start, finish, stimulus_id=...)`` for what just happened."""
    entries = tap.pending
    if not entries:
        return
    tap.pending = []
    for key, start, finish, sid, _now in entries:
        for name, plugin in tap.plugins:
            try:
                plugin.transition(key, start, finish, stimulus_id=sid)
            except Exception:
                logger.exception("worker plugin %r: transition failed", name)


def install_stored(worker: Any, plugins: Any, load: Any) -> None:
    """(A worker's driver, on ``WorkerPlugins``) set up the plugins the scheduler stored;
    ``load`` turns the stored bytes into the plugin.  One that fails is logged and left out."""
    for name, data in plugins:
        try:
            result = install(name, load(data), worker)
            if inspect.iscoroutine(result):
                _run_sync(result)
        except Exception:
            logger.exception("worker %s: worker plugin %r failed to set up", getattr(worker, "address", "?"), name)


def _run_sync(coro: Any) -> None:
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an async worker plugin setup that waits cannot run when a worker joins")


class _Callback(WorkerPlugin):
    """``register_worker_callbacks(setup=fn)``."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def setup(self, worker: Any) -> Any:
        from twofold.client.remote import call_with

        return call_with(self.fn, (), {}, "dask_worker", worker)


class UploadFile(WorkerPlugin):
    """``client.upload_file``: the file, written into this worker's upload directory (on
    ``sys.path``); a ``.py`` is imported (again, if it was); a ``.zip``/``.egg`` goes on ``sys.path``."""

    def __init__(self, filename: str, data: bytes, load: bool = True) -> None:
        self.filename = filename
        self.data = data
        self.load = load

    def setup(self, worker: Any) -> None:
        directory = upload_dir(worker)
        path = os.path.join(directory, self.filename)
        with open(path, "wb") as f:
            f.write(self.data)
        stem, ext = os.path.splitext(self.filename)
        cache = os.path.join(directory, "__pycache__")
        if os.path.isdir(cache):
            for entry in os.listdir(cache):
                if entry.startswith(stem + "."):
                    os.remove(os.path.join(cache, entry))
        importlib.invalidate_caches()
        if ext in (".zip", ".egg", ".whl"):
            if path not in sys.path:
                sys.path.insert(0, path)
            for name in [m for m in sys.modules if _from(sys.modules[m], path)]:
                del sys.modules[name]
        elif ext == ".py" and self.load:
            spec = importlib.util.spec_from_file_location(stem, path)
            module = importlib.util.module_from_spec(spec)
            old = sys.modules.get(stem)
            sys.modules[stem] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                if old is None:
                    sys.modules.pop(stem, None)
                else:
                    sys.modules[stem] = old
                raise


def _from(module: Any, path: str) -> bool:
    return str(getattr(module, "__file__", "") or "").startswith(path + os.sep)


#: worker -> its upload directory (kept on the worker as ``_upload_dir``)
def upload_dir(worker: Any) -> str:
    """This worker's upload directory, made (and put first on ``sys.path``) on first use."""
    directory = getattr(worker, "_upload_dir", None)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="twofold-upload-")
        worker._upload_dir = directory
        sys.path.insert(0, directory)
    return directory


def remove_upload_dir(worker: Any) -> None:
    """(A worker's driver, as it closes) take its upload directory off ``sys.path`` and delete it."""
    directory = getattr(worker, "_upload_dir", None)
    if directory is None:
        return
    worker._upload_dir = None
    with _LOCK:
        while directory in sys.path:
            sys.path.remove(directory)
        for entry in [p for p in sys.path if p.startswith(directory + os.sep)]:
            sys.path.remove(entry)
    shutil.rmtree(directory, ignore_errors=True)


def close_worker(worker: Any) -> None:
    """(A worker's driver, as it closes) tear down its plugins, remove its uploads."""
    try:
        teardown_all(worker)
    finally:
        remove_upload_dir(worker)


# -- scheduler side --------------------------------------------------------------


class SchedulerPluginHub:
    """The scheduler driver's plugins (``state.plugin_hub``); the driver calls
    :meth:`after` once per event the machine handled."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.plugins: dict[str, Any] = {}
        self._transitions: list = []  # plugins overriding transition
        self._entries: list = []
        self._observing = False
        self._known = list(state.workers)

    @classmethod
    def of(cls, state: Any) -> SchedulerPluginHub:
        hub = getattr(state, "plugin_hub", None)
        if hub is None:
            hub = state.plugin_hub = cls(state)
        return hub

    def add(self, name: str, plugin: Any) -> Any:
        old = self.plugins.pop(name, None)
        if old is not None:
            self._close(name, old)
        self.plugins[name] = plugin
        self._refresh()
        start = getattr(plugin, "start", None)
        return start(self.state) if start is not None else None

    def remove(self, name: str) -> None:
        plugin = self.plugins.pop(name, None)
        if plugin is None:
            raise ValueError(f"no scheduler plugin named {name!r}; registered: {sorted(self.plugins)}")
        self._refresh()
        self._close(name, plugin)

    def _close(self, name: str, plugin: Any) -> None:
        close = getattr(plugin, "close", None)
        if close is not None:
            self._call(name, close)

    def _refresh(self) -> None:
        self._transitions = [(n, p) for n, p in self.plugins.items() if _overrides(p, "transition", SchedulerPlugin)]
        if self._transitions and not self._observing:
            self._observing = True
            self.state.observe_transitions(self)

    def append(self, entry: tuple) -> None:
        """(The machine's transition observer) keep it for :meth:`after`."""
        if self._transitions:
            self._entries.append(entry)

    def after(self, event: Any) -> None:
        """(The driver, after the machine's outputs for ``event``) call the plugins' hooks."""
        state = self.state
        plugins = self.plugins
        if not plugins:
            self._entries.clear()
            self._known = list(state.workers)
            return
        from twofold.messages import UpdateGraph

        if type(event) is UpdateGraph:
            keys = {t.key for t in event.tasks}
            for name, plugin in list(plugins.items()):
                if _overrides(plugin, "update_graph", SchedulerPlugin):
                    self._call(name, plugin.update_graph, state, client=event.client, keys=keys,
                               tasks=[t.key for t in event.tasks])  # fmt: skip
        entries, self._entries = self._entries, []
        for key, start, finish, sid, _now in entries:
            for name, plugin in self._transitions:
                self._call(name, plugin.transition, key, start, finish, stimulus_id=sid)
        if len(state.workers) != len(self._known) or any(w not in state.workers for w in self._known):
            before = self._known
            now = self._known = list(state.workers)
            gone = [w for w in before if w not in state.workers]
            new = [w for w in now if w not in before]
            for name, plugin in list(plugins.items()):
                for w in gone:
                    self._call(name, plugin.remove_worker, scheduler=state, worker=w)
                for w in new:
                    self._call(name, plugin.add_worker, scheduler=state, worker=w)

    @staticmethod
    def _call(name: str, hook: Any, *args: Any, **kwargs: Any) -> None:
        try:
            result = hook(*args, **kwargs)
            if inspect.iscoroutine(result):
                result.close()
                logger.warning("scheduler plugin %r: async hooks other than start are not awaited", name)
        except Exception:
            logger.exception("scheduler plugin %r: %s failed", name, getattr(hook, "__name__", "hook"))


def _overrides(plugin: Any, hook: str, base: type) -> bool:
    method = getattr(type(plugin), hook, None)
    return method is not None and method is not getattr(base, hook, None)


def add_scheduler_plugin(name: str, plugin: Any, dask_scheduler: Any = None) -> Any:
    """(run_on_scheduler) hang ``plugin`` on the scheduler's driver and start it."""
    return SchedulerPluginHub.of(dask_scheduler).add(name, plugin)


def remove_scheduler_plugin(name: str, dask_scheduler: Any = None) -> None:
    """(run_on_scheduler) stop and forget the scheduler plugin ``name``."""
    SchedulerPluginHub.of(dask_scheduler).remove(name)
