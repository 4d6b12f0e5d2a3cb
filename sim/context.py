"""Task context in the simulator: the running greenlet knows its worker and key."""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent

from twofold.context import register_provider
from twofold.messages import Rejoin, Secede


class SimTaskContext:
    __slots__ = ("host", "key", "worker")

    def __init__(self, host: Any, key: str) -> None:
        self.host = host
        self.key = key
        self.worker = host.address

    def client(self) -> Any:
        host = self.host
        client = getattr(host, "client", None)
        if client is None or client.status != "running":
            from twofold.client import Client
            from twofold.sim.backend import SimBackend

            cluster = host.sim.cluster
            backend = SimBackend(cluster, f"client-{next(cluster._clients)}", node=host.address)
            client = host.client = Client(backend, set_as_default=False)
        return client

    def secede(self) -> None:
        host = self.host
        host.handle(Secede(host.sim.clock.now, host.sid("secede"), self.key))

    def worker_object(self) -> Any:
        return self.host

    def rejoin(self) -> None:
        host = self.host
        host.handle(Rejoin(host.sim.clock.now, host.sid("rejoin"), self.key))
        key = self.key
        granted = host.rejoin_granted
        host.sim.clock.run_until(lambda: key in granted)
        granted.discard(key)


def current() -> SimTaskContext | None:
    task = getattr(getcurrent(), "twofold_task", None)
    if task is None:
        return None
    return SimTaskContext(*task)


register_provider(current)
