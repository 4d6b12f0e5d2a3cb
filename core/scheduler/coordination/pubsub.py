"""Publish/subscribe: the scheduler knows each topic's subscribers and forwards what is published.

A subscriber is a ``Sub`` object's id with the client that made it (and,
from inside a task, its worker).  Published items go to every subscriber
of the topic at the time, in the order they were published; a subscriber
whose client or worker leaves is dropped.  Nothing is stored: items
published while a topic has no subscribers are gone, as in dask.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_coordination import PubSubRequest, TopicMessages
from twofold.scheduler.coordination import items as I
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


class _Subscriber:
    __slots__ = ("client", "worker")

    def __init__(self, client: str, worker: str | None):
        self.client = client
        self.worker = worker


@dataclass(frozen=True, slots=True)
class PubSubStatistics:
    name: str
    topics: int
    subscribers: int
    published: int


class PubSub(CoordinationExtension):
    name = "pubsub"
    timer_prefix = None
    request_type = PubSubRequest
    actions = {"subscribe": "_subscribe", "unsubscribe": "_unsubscribe", "publish": "_publish",
               "subscribers": "_subscribers"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        #: topic -> subscriber id -> subscriber
        self.topics: dict[str, dict[str, _Subscriber]] = {}
        self._published = 0

    def _subscribe(self, event: PubSubRequest) -> None:
        if not isinstance(event.sub, str) or not event.sub:
            raise Refused("ValueError", "a subscriber id must be a non-empty str")
        self.topics.setdefault(event.name, {})[event.sub] = _Subscriber(event.client, event.worker)
        self.reply(event, True)

    def _unsubscribe(self, event: PubSubRequest) -> None:
        subs = self.topics.get(event.name)
        if subs is not None:
            subs.pop(event.sub, None)
            if not subs:
                del self.topics[event.name]
        self.reply(event, True)

    def _publish(self, event: PubSubRequest) -> None:
        if not isinstance(event.items, tuple):
            raise Refused("TypeError", "published items must be a tuple")
        items = tuple(I.check_item(item) for item in event.items)
        if any(kind != "value" for kind, _ in items):
            raise Refused("TypeError", "only msgpack-able values can be published, not futures")
        self._published += len(items)
        for sub_id, sub in self.topics.get(event.name, {}).items():
            self.send(TopicMessages(self.now, self.stimulus_id, sub.client, event.name, sub_id, items))
        self.reply(event, True)

    def _subscribers(self, event: PubSubRequest) -> None:
        subs = self.topics.get(event.name, {})
        self.reply(event, {sub_id: {"client": s.client, "worker": s.worker} for sub_id, s in subs.items()})

    def client_removed(self, client: str) -> None:
        self._drop(lambda s: s.client == client)

    def worker_removed(self, ws) -> None:
        address = ws.address
        self._drop(lambda s: s.worker == address)

    def _drop(self, gone) -> None:
        for name, subs in list(self.topics.items()):
            for sub_id in [i for i, s in subs.items() if gone(s)]:
                del subs[sub_id]
            if not subs:
                del self.topics[name]

    def validate(self) -> None:
        for name, subs in self.topics.items():
            assert subs, f"topic {name!r} has no subscribers but is kept"

    def statistics(self) -> PubSubStatistics:
        return PubSubStatistics(self.name, len(self.topics), sum(len(s) for s in self.topics.values()),
                                self._published)  # fmt: skip
