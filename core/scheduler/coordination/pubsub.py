"""Publish/subscribe: the scheduler introduces publishers to subscribers, and forwards what it must.

Rules:

* A *subscriber* is a ``Sub`` object's id with the client that made it
  and, from inside a task, its worker.  A *publisher* is a client on a
  worker (a task's client) that publishes on the topic; clients elsewhere
  publish through the scheduler and are not registered.
* A registered publisher is kept told of the topic's subscribers
  (:class:`TopicPeers`: all of them when it registers, then each change)
  and sends to the subscribers on workers directly, over the workers' data
  plane.  What it sends here ("publish") names in ``delivered`` the
  subscribers it reached directly: everyone else of the topic gets it from
  here (clients' subscribers, and any the publisher did not know of yet),
  in the order published.  A publisher on a worker sends nothing here when
  the topic has no subscriber on a client.
* A subscription is answered only once every registered publisher has
  acknowledged the new subscriber ("ack" of the ``TopicPeers`` naming it).
  So a ``Sub`` whose constructor returned is known to every publisher: each
  later ``put`` reaches it, exactly once (directly, or from here when not in
  ``delivered``).  Whatever a publisher sent here before taking the
  subscriber in was forwarded to it *before* that answer (one connection,
  in order), and the subscriber holds back direct deliveries until the
  answer: one publisher's messages arrive in publishing order.
* A subscriber, or a publisher, goes with its client and its worker;
  subscriptions waiting on a publisher that left stop waiting for it.
  Nothing is stored: what is published while a topic has no subscribers is
  gone, as in dask.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_coordination import PubSubRequest, TopicMessages, TopicPeers
from twofold.scheduler.coordination import items as I
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


class _Subscriber:
    __slots__ = ("client", "worker")

    def __init__(self, client: str, worker: str | None):
        self.client = client
        self.worker = worker


class _Topic:
    """A topic's subscribers, its publishers (client -> worker) and the subscriptions
    waiting for publishers to acknowledge them (sub id -> (request, publishers))."""

    __slots__ = ("subs", "pubs", "pending")

    def __init__(self) -> None:
        self.subs: dict[str, _Subscriber] = {}
        self.pubs: dict[str, str] = {}
        self.pending: dict[str, tuple[PubSubRequest, dict[str, None]]] = {}


@dataclass(frozen=True, slots=True)
class PubSubStatistics:
    name: str
    topics: int
    subscribers: int
    #: items published through the scheduler
    published: int
    publishers: int = 0
    #: (item, subscriber) pairs the scheduler forwarded
    forwarded: int = 0
    #: subscriptions waiting for publishers' acknowledgements
    waiting: int = 0


def _worker_of(sub: _Subscriber) -> str:
    return sub.worker or ""


class PubSub(CoordinationExtension):
    name = "pubsub"
    timer_prefix = None
    request_type = PubSubRequest
    actions = {"subscribe": "_subscribe", "unsubscribe": "_unsubscribe", "publish": "_publish",
               "subscribers": "_subscribers", "publisher": "_publisher", "ack": "_ack"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        #: topic name -> its state (kept while it has subscribers, publishers or waiting subscriptions)
        self.topics: dict[str, _Topic] = {}
        self._published = 0
        self._forwarded = 0

    # -- requests ------------------------------------------------------------

    def _subscribe(self, event: PubSubRequest) -> None:
        sub_id = event.sub
        if not isinstance(sub_id, str) or not sub_id:
            raise Refused("ValueError", "a subscriber id must be a non-empty str")
        if event.worker is not None and not isinstance(event.worker, str):
            raise Refused("TypeError", "a subscriber's worker must be a str or None")
        topic = self.topics.get(event.name)
        if topic is None:
            topic = self.topics[event.name] = _Topic()
        if sub_id in topic.subs:
            raise Refused("ValueError", f"{sub_id!r} is subscribed to {event.name!r} already")
        topic.subs[sub_id] = _Subscriber(event.client, event.worker)
        if not topic.pubs:
            self.reply(event, True)
            return
        added = {sub_id: event.worker or ""}
        for client in topic.pubs:
            self.send(TopicPeers(self.now, self.stimulus_id, client, event.name, added, (), False, sub_id))
        topic.pending[sub_id] = (event, dict.fromkeys(topic.pubs))

    def _ack(self, event: PubSubRequest) -> None:
        topic = self.topics.get(event.name)
        if topic is not None:
            self._acknowledged(topic, event.sub, event.client)

    def _unsubscribe(self, event: PubSubRequest) -> None:
        topic = self.topics.get(event.name)
        if topic is not None:
            sub = topic.subs.get(event.sub)
            if sub is not None and sub.client == event.client:  # (only its own client may end it)
                del topic.subs[event.sub]
                waiting = topic.pending.pop(event.sub, None)
                if waiting is not None:
                    self.reply(waiting[0], True)
                self._tell_publishers(event.name, topic, (event.sub,))
                self._forget_if_empty(event.name, topic)
        self.reply(event, True)

    def _publish(self, event: PubSubRequest) -> None:
        if not isinstance(event.items, tuple):
            raise Refused("TypeError", "published items must be a tuple")
        delivered = event.delivered
        if not isinstance(delivered, tuple) or not all(isinstance(s, str) for s in delivered):
            raise Refused("TypeError", "delivered must be a tuple of subscriber ids")
        items = tuple(I.check_item(item) for item in event.items)
        if any(kind != "value" for kind, _ in items):
            raise Refused("TypeError", "only msgpack-able values can be published, not futures")
        self._published += len(items)
        topic = self.topics.get(event.name)
        if topic is not None:
            skip = frozenset(delivered)  # (membership only: iteration follows the subscription order)
            for sub_id, sub in topic.subs.items():
                if sub_id not in skip:
                    self._forwarded += len(items)
                    self.send(TopicMessages(self.now, self.stimulus_id, sub.client, event.name, sub_id, items))
        self.reply(event, True)

    def _publisher(self, event: PubSubRequest) -> None:
        worker = event.worker
        if not isinstance(worker, str) or not worker:
            raise Refused("ValueError", "only a client on a worker registers as a publisher (worker= missing)")
        topic = self.topics.get(event.name)
        if topic is None:
            topic = self.topics[event.name] = _Topic()
        topic.pubs[event.client] = worker
        subs = {sub_id: _worker_of(sub) for sub_id, sub in topic.subs.items()}
        self.send(TopicPeers(self.now, self.stimulus_id, event.client, event.name, subs, (), True))
        self.reply(event, True)

    def _subscribers(self, event: PubSubRequest) -> None:
        """The topic's subscribers on workers, as dask's ``Pub.subscribers``: address -> {}."""
        topic = self.topics.get(event.name)
        subs = topic.subs.values() if topic is not None else ()
        self.reply(event, {sub.worker: {} for sub in subs if sub.worker})

    # -- helpers ----------------------------------------------------------------

    def _acknowledged(self, topic: _Topic, sub_id: str, client: str) -> None:
        waiting = topic.pending.get(sub_id)
        if waiting is not None:
            event, publishers = waiting
            publishers.pop(client, None)
            if not publishers:
                del topic.pending[sub_id]
                self.reply(event, True)

    def _tell_publishers(self, name: str, topic: _Topic, removed: tuple[str, ...]) -> None:
        for client in topic.pubs:
            self.send(TopicPeers(self.now, self.stimulus_id, client, name, {}, removed))

    def _forget_if_empty(self, name: str, topic: _Topic) -> None:
        if not topic.subs and not topic.pubs and not topic.pending:
            del self.topics[name]

    # -- the cluster changing -------------------------------------------------------

    def client_removed(self, client: str) -> None:
        self._drop(lambda sub: sub.client == client, lambda pub_client, worker: pub_client == client)

    def worker_removed(self, ws) -> None:
        address = ws.address
        self._drop(lambda sub: sub.worker == address, lambda pub_client, worker: worker == address)

    def _drop(self, sub_gone, pub_gone) -> None:
        for name, topic in list(self.topics.items()):
            gone = tuple(sub_id for sub_id, sub in topic.subs.items() if sub_gone(sub))
            for sub_id in gone:
                del topic.subs[sub_id]
                topic.pending.pop(sub_id, None)  # (its client or worker is gone: nobody to answer)
            for client in [c for c, w in topic.pubs.items() if pub_gone(c, w)]:
                del topic.pubs[client]
                for sub_id in list(topic.pending):
                    self._acknowledged(topic, sub_id, client)
            if gone:
                self._tell_publishers(name, topic, gone)
            self._forget_if_empty(name, topic)

    # -- inspection -------------------------------------------------------------------

    def validate(self) -> None:
        for name, topic in self.topics.items():
            assert topic.subs or topic.pubs or topic.pending, f"topic {name!r} is empty but kept"
            for sub_id, (event, publishers) in topic.pending.items():
                assert sub_id in topic.subs, f"topic {name!r}: {sub_id!r} waits but is not subscribed"
                assert publishers, f"topic {name!r}: {sub_id!r} waits for nobody"
                assert all(p in topic.pubs for p in publishers), f"topic {name!r}: {sub_id!r} waits on a non-publisher"
                assert event.sub == sub_id

    def statistics(self) -> PubSubStatistics:
        topics = self.topics.values()
        return PubSubStatistics(self.name, len(self.topics), sum(len(t.subs) for t in topics), self._published,
                                sum(len(t.pubs) for t in topics), self._forwarded,
                                sum(len(t.pending) for t in topics))  # fmt: skip
