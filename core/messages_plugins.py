"""Messages of plugins and uploaded files (``client.register_worker_plugin``, ``upload_file``).

Part of the vocabulary of ``twofold.messages`` (registered with it).  The
scheduler keeps each worker plugin as opaque bytes by name (the client
pickled it; the machine never unpickles it) and sends the ones it holds to
every worker that joins (``WorkerPlugins``), whose *driver* loads them and
runs their ``setup``.  Requests are answered by a ``CoordinationReply``.
"""

from __future__ import annotations

from twofold.messages import Message, message


@message(by="client")
class WorkerPluginRequest(Message):
    """``action``: "register" (``data``: the pickled plugin), "unregister" or "list"."""

    client: str
    request_id: str
    action: str
    name: str = ""
    data: bytes | None = None


@message(to="worker")
class WorkerPlugins(Message):
    """To a worker that just joined: the plugins to set up, ``(name, pickled plugin)`` in
    registration order.  Its driver, not its machine, takes it."""

    worker: str
    plugins: tuple[tuple[str, bytes], ...]


__all__ = ["WorkerPluginRequest", "WorkerPlugins"]
