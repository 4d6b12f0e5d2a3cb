"""Plugins and uploaded files, the client's side (see :mod:`twofold.plugins`).

``register_worker_plugin`` stores the pickled plugin with the scheduler (so
workers that join later get it), then sets it up on every current worker
with ``client.run``.  A ``setup`` that raises on any worker: the plugin is
unregistered again (torn down where it was set up, forgotten by the
scheduler) and the first error is raised.  ``upload_file`` reads (and, for a
``.py``, compiles) the file here first, so a missing file or a syntax error
raises before anything is sent.
"""

from __future__ import annotations

from twofold.client.modes import awaitable

import os
import uuid
from typing import Any

from twofold.plugins import SchedulerPlugin, UploadFile, WorkerPlugin, _Callback


class PluginMethods:
    """Mixin of :class:`~twofold.Client`."""

    def _plugin_request(self, action: str, name: str = "", data: bytes | None = None) -> Any:
        from twofold.messages_plugins import WorkerPluginRequest

        return self._coordinate(lambda now, sid, rid: WorkerPluginRequest(now, sid, self.id, rid, action, name, data))

    @awaitable
    def register_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> Any:
        """A :class:`~twofold.SchedulerPlugin` or a :class:`~twofold.WorkerPlugin`."""
        if isinstance(plugin, SchedulerPlugin):
            return self.register_scheduler_plugin(plugin, name=name, idempotent=idempotent)
        if isinstance(plugin, WorkerPlugin) or callable(getattr(plugin, "setup", None)):
            return self.register_worker_plugin(plugin, name=name)
        raise TypeError(f"register_plugin() takes a WorkerPlugin or a SchedulerPlugin, got {type(plugin).__name__}")

    @awaitable
    def register_worker_plugin(self, plugin: Any = None, name: str | None = None, nanny: bool | None = None,
                               **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        """Set ``plugin`` up on every worker, now and as workers join: ``{address: {"status": "OK"}}``.
        Registering a name again replaces the plugin (torn down first)."""
        from twofold.plugins import install

        if isinstance(plugin, type):
            raise TypeError(f"register_worker_plugin() takes a plugin instance, got the class {plugin.__name__}")
        if isinstance(plugin, SchedulerPlugin):
            raise TypeError("register_worker_plugin() got a SchedulerPlugin: use register_scheduler_plugin()")
        if nanny:
            raise NotImplementedError("nanny plugins: twofold's nannies run no user code")
        if plugin is None or not callable(getattr(plugin, "setup", None)) and not isinstance(plugin, WorkerPlugin):
            raise TypeError(f"register_worker_plugin() takes a WorkerPlugin (with setup(worker)), got {plugin!r}")
        name = _name_of(plugin, name)
        data = self._backend.dump_value(plugin)
        self._plugin_request("register", name, data)
        outcomes = self.run(install, name, plugin, on_error="return")
        errors = [v for v in outcomes.values() if isinstance(v, BaseException)]
        if errors:
            self._unregister_quietly(name)
            raise errors[0]
        return {address: {"status": "OK"} for address in outcomes}

    @awaitable
    def unregister_worker_plugin(self, name: str, nanny: bool | None = None) -> dict[str, Any]:
        """Tear the plugin ``name`` down on every worker; later workers do not get it.
        ValueError if no worker plugin has that name."""
        from twofold.plugins import remove

        if not isinstance(name, str):
            raise TypeError(f"unregister_worker_plugin() takes the plugin's name (str), got {name!r}")
        self._plugin_request("unregister", name)
        outcomes = self.run(remove, name, on_error="return")
        return {address: {"status": "OK"} for address in outcomes}

    def _unregister_quietly(self, name: str) -> None:
        from twofold.plugins import remove

        try:
            self._plugin_request("unregister", name)
        except ValueError:
            pass
        self.run(remove, name, on_error="ignore")

    @awaitable
    def register_worker_callbacks(self, setup: Any = None) -> Any:
        """Run ``setup`` (given ``dask_worker`` if it takes it) on every worker, now and as they join."""
        if not callable(setup):
            raise TypeError(f"register_worker_callbacks(setup=) takes a callable, got {setup!r}")
        fn_name = getattr(setup, "__name__", type(setup).__name__)
        return self.register_worker_plugin(_Callback(setup), name=f"worker-setup-{fn_name}-{uuid.uuid4().hex[:8]}")

    @awaitable
    def register_scheduler_plugin(self, plugin: Any, name: str | None = None, idempotent: bool | None = None) -> None:
        """Run ``plugin`` in the scheduler's driver: ``start(scheduler)`` now, then its hooks
        (``add_worker``, ``remove_worker``, ``transition``, ``update_graph``) as things happen."""
        from twofold.plugins import add_scheduler_plugin

        if isinstance(plugin, type) or not isinstance(plugin, SchedulerPlugin):
            raise TypeError(f"register_scheduler_plugin() takes a SchedulerPlugin instance, got {plugin!r}")
        name = _name_of(plugin, name)
        if idempotent and name in self.run_on_scheduler(_scheduler_plugin_names):
            return None
        self.run_on_scheduler(add_scheduler_plugin, name, plugin)
        return None

    @awaitable
    def unregister_scheduler_plugin(self, name: str) -> None:
        """Stop (``close()``) and forget the scheduler plugin ``name``; ValueError if none has it."""
        from twofold.plugins import remove_scheduler_plugin

        self.run_on_scheduler(remove_scheduler_plugin, name)

    @awaitable
    def upload_file(self, filename: str, load: bool = True) -> dict[str, Any]:
        """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker, now and as they join; it
        lands in a directory on their ``sys.path``, and a ``.py`` is imported (reloaded)."""
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"upload_file() takes a file name, got {filename!r}")
        filename = os.fspath(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"upload_file(): no such file: {filename!r}")
        with open(filename, "rb") as f:
            data = f.read()
        base = os.path.basename(filename)
        if base.endswith(".py"):
            compile(data, filename, "exec")  # a SyntaxError names the file and line; nothing is sent
        return self.register_worker_plugin(UploadFile(base, data, load), name=f"upload-file-{base}")


def _name_of(plugin: Any, name: str | None) -> str:
    if name is None:
        name = getattr(plugin, "name", None)
    if name is None:
        name = f"{type(plugin).__name__}-{uuid.uuid4().hex}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"a plugin's name must be a non-empty str, got {name!r}")
    return name


def _scheduler_plugin_names(dask_scheduler: Any = None) -> list[str]:
    hub = getattr(dask_scheduler, "plugin_hub", None)
    return list(hub.plugins) if hub is not None else []
