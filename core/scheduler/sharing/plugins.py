"""Worker plugins (and uploaded files): the scheduler keeps them so that every worker gets them.

Each is opaque bytes by name, in registration order (re-registering a name
replaces it, at the end).  A worker that joins is sent every stored one
(``WorkerPlugins``), before anything else the machine tells it; its driver
loads and sets them up.  Workers already there get a new plugin from the
client directly (``client.run``).
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_coordination import CoordinationReply
from twofold.messages_plugins import WorkerPluginRequest, WorkerPlugins
from twofold.scheduler.extension import Extension


@dataclass(frozen=True, slots=True)
class WorkerPluginStatistics:
    name: str
    plugins: tuple[str, ...]
    sent: int


class WorkerPluginStore(Extension):
    name = "worker_plugins"

    def __init__(self) -> None:
        self.plugins: dict[str, bytes] = {}
        self._sent = 0

    def handlers(self) -> dict:
        return {WorkerPluginRequest: self._on_request}

    def _on_request(self, event: WorkerPluginRequest) -> None:
        action, name = event.action, event.name
        if action == "register" and isinstance(name, str) and name and isinstance(event.data, bytes):
            self.plugins.pop(name, None)
            self.plugins[name] = event.data
            self._reply(event, True)
        elif action == "unregister" and isinstance(name, str):
            if self.plugins.pop(name, None) is None:
                self._reply(event, False, "ValueError", f"no worker plugin named {name!r}")
            else:
                self._reply(event, True)
        elif action == "list":
            self._reply(event, True, value=tuple(self.plugins))
        else:
            self._reply(event, False, "ValueError", f"bad worker plugin request {action!r} {name!r}")

    def _reply(self, event: WorkerPluginRequest, ok: bool, error_type: str = "", error: str = "",
               value: object = None) -> None:  # fmt: skip
        self.send(CoordinationReply(self.now, self.stimulus_id, event.client, event.request_id, ok, value,
                                    error_type, error))  # fmt: skip

    def worker_added(self, ws) -> None:
        if self.plugins:
            self._sent += 1
            # first of this event's outputs: before any task the machine hands the new worker
            self.state._outs.insert(0, WorkerPlugins(self.now, self.stimulus_id, ws.address,
                                                     tuple(self.plugins.items())))  # fmt: skip

    def validate(self) -> None:
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in self.plugins.items())

    def statistics(self) -> WorkerPluginStatistics:
        return WorkerPluginStatistics(self.name, tuple(self.plugins), self._sent)
