"""Pub and Sub: publish small values to every current subscriber of a topic.

The scheduler introduces publishers to subscribers and forwards what is
published (from clients and, for now, from tasks too: a direct
worker-to-worker path is not built yet).  A Sub is registered when its
constructor returns, so everything published after that reaches it, in
publishing order per publisher.  What nobody subscribed to is dropped.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from twofold.client.coordinating import check_name, pack_value, parse_timeout
from twofold.client.coordination import _client_here, _task_here
from twofold.errors import TimeoutError
from twofold.messages_coordination import PubSubRequest

_subs = itertools.count(1)


class Pub:
    """Publish to topic ``name``: ``pub.put(msg)`` reaches every current ``Sub(name)``."""

    def __init__(self, name: str, worker: Any = None, client: Any = None):
        if worker is not None and client is not None:
            raise ValueError("Pub takes worker= or client=, not both")
        check_name(name, "topic")
        self.name = name
        self._client = client

    @property
    def client(self) -> Any:
        return _client_here(self._client)

    def put(self, msg: Any) -> None:
        """Send ``msg`` (msgpack-able) to the topic's subscribers; returns at once."""
        item = pack_value(msg, "Pub.put")
        if item[0] != "value":
            raise TypeError("Pub.put takes msgpack-able values, not futures (share futures with a Queue)")
        client = self.client
        _, worker = _task_here()
        client._tell(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "publish", self.name, "",
                                                         (item,), worker))  # fmt: skip

    @property
    def subscribers(self) -> dict:
        """The topic's current subscribers: id -> {"client": ..., "worker": ...}."""
        client = self.client
        return client._coordinate(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "subscribers",
                                                                     self.name))  # fmt: skip

    def __reduce__(self) -> tuple:
        return (Pub, (self.name,))

    def __repr__(self) -> str:
        return f"<Pub: {self.name}>"


class Sub:
    """Receive what is published to topic ``name`` from now on: ``get()``, or iterate."""

    def __init__(self, name: str, worker: Any = None, client: Any = None):
        if worker is not None and client is not None:
            raise ValueError("Sub takes worker= or client=, not both")
        check_name(name, "topic")
        self.name = name
        self._buffer: deque = deque()
        client = self._bound = _client_here(client)
        self.id = f"{client.id}/sub-{next(_subs)}"
        _, worker = _task_here()
        client._subs[self.id] = self
        client._coordinate(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "subscribe", self.name,
                                                              self.id, (), worker))  # fmt: skip

    def get(self, timeout: Any = None) -> Any:
        """The next message; TimeoutError after ``timeout`` seconds."""
        seconds = parse_timeout(timeout)
        client = self._bound
        buffer = self._buffer
        if not buffer and not client._wait(lambda: bool(buffer), client._deadline(seconds)):
            raise TimeoutError(f"no message on topic {self.name!r} within {seconds:g} s")
        return buffer.popleft()

    next = get

    def __iter__(self) -> Sub:
        return self

    def __next__(self) -> Any:
        return self.get()

    def close(self) -> None:
        """Stop receiving (the scheduler drops the subscription)."""
        client = self._bound
        client._subs.pop(self.id, None)
        if client.status == "running":
            client._tell(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "unsubscribe", self.name,
                                                             self.id))  # fmt: skip

    def __reduce__(self) -> tuple:
        return (Sub, (self.name,))

    def __repr__(self) -> str:
        return f"<Sub: {self.name}>"
