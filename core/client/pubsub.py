"""Pub and Sub: publish small values to every current subscriber of a topic.

The scheduler introduces publishers to subscribers
(``twofold.scheduler.coordination.pubsub`` has the rules).  A Pub used
inside a task (on a worker) registers its client as a publisher of the
topic, once per client and topic (a *view*, shared by that client's Pubs
of the topic), and is kept told of the subscribers; ``put`` then sends
straight to each subscriber on a worker over the workers' data plane
(``Backend.topic_post``) and to the scheduler only when some subscriber
lives on a client, naming those it reached directly.  A Pub on a client
sends everything through the scheduler, as in dask.

A Sub is registered when its constructor returns: every publisher knows it
by then, so everything published after that reaches it, exactly once, in
publishing order per publisher.  A Sub inside a task is also in this
process's registry (:func:`deliver`), where direct deliveries land; those
that arrive before its subscription is confirmed are held back until then,
behind what the scheduler forwarded.  What nobody subscribed to is dropped;
so is what is sent to a subscriber whose worker died.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from typing import Any

from twofold.client.client import default_client
from twofold.client.coordinating import _unpack, check_name, pack_value, parse_timeout
from twofold.client.coordination import _client_here, _task_here
from twofold.context import current_task
from twofold.errors import CommClosedError, TimeoutError
from twofold.messages_coordination import PubSubRequest, TopicPeers

_subs = itertools.count(1)

#: this process's Subs made inside tasks, by id: where direct deliveries land
_LOCAL: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

#: client -> topic -> the _View its Pubs on a worker share
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _View:
    """What a client on a worker knows of a topic's subscribers (changed only by
    :class:`TopicPeers`, under the client's lock, in message order)."""

    __slots__ = ("subs", "state", "registered")

    def __init__(self) -> None:
        #: subscriber id -> its worker ("": on a client, reached through the scheduler)
        self.subs: dict[str, str] = {}
        #: (worker -> its subscriber ids, every id reached directly, does the scheduler forward to anyone?)
        self.state: tuple[dict[str, tuple[str, ...]], tuple[str, ...], bool] = ({}, (), False)
        self.registered = False

    def update(self, msg: TopicPeers) -> None:
        subs = dict(msg.subs) if msg.reset else self.subs
        if not msg.reset:
            subs.update(msg.subs)
        for sub_id in msg.removed:
            subs.pop(sub_id, None)
        self.subs = subs
        by_worker: dict[str, list[str]] = {}
        routed = False
        for sub_id, worker in subs.items():
            if worker:
                by_worker.setdefault(worker, []).append(sub_id)
            else:
                routed = True
        direct = tuple(sub_id for ids in by_worker.values() for sub_id in ids)
        self.state = ({w: tuple(ids) for w, ids in by_worker.items()}, direct, routed)  # one assignment: put reads it
        if msg.reset:
            self.registered = True


def _view(client: Any, name: str, worker: str) -> _View:
    """``client``'s view of topic ``name``, registered with the scheduler (one round trip, the first time)."""
    views = _VIEWS.get(client)
    if views is None:
        views = _VIEWS.setdefault(client, {})
    view = views.get(name)
    if view is None:
        view = views.setdefault(name, _View())
    if not view.registered:
        # the scheduler answers with the subscribers (TopicPeers, handled in order) and then replies
        client._coordinate(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "publisher", name, "",
                                                              (), worker))  # fmt: skip
        if not view.registered:
            raise RuntimeError(f"the scheduler registered a publisher of {name!r} without naming the subscribers")
    return view


def _on_topic_peers(client: Any, msg: TopicPeers) -> list:
    """(Client receive path, under its lock) the subscribers of a topic we publish on changed."""
    views = _VIEWS.get(client)
    view = views.get(msg.name) if views is not None else None
    if view is not None:
        view.update(msg)
    if msg.ack:  # sent under the lock: it follows everything published before this change
        _, sid = client._next_sid("coord")
        try:
            client._backend.send([PubSubRequest(client._backend.now(), sid, client.id, "", "ack", msg.name,
                                                msg.ack)])  # fmt: skip
        except CommClosedError:
            pass  # the scheduler is gone: nobody waits for the ack any more
    return []



def deliver(subs: tuple, payloads: tuple, client: Any = None) -> list:
    """Drivers: values published straight to the subscribers ``subs`` living in this process
    (of ``client`` only, if given).  Returns the Subs whose clients' waits must look again
    (those that had nothing to give before: a ``get`` may be waiting on them)."""
    wake = []
    for sub_id in subs:
        sub = _LOCAL.get(sub_id)
        if sub is not None and (client is None or sub._bound is client) and sub._direct(payloads) == _WAKE:
            wake.append(sub)
    return wake


#: what Sub._direct did with values: dropped them, kept them, kept them in an empty buffer (wake its waits)
_DROPPED, _KEPT, _WAKE = 0, 1, 2


class Pub:
    """Publish to topic ``name``: ``pub.put(msg)`` reaches every current ``Sub(name)``."""

    def __init__(self, name: str, worker: Any = None, client: Any = None):
        if worker is not None and client is not None:
            raise ValueError("Pub takes worker= or client=, not both")
        check_name(name, "topic")
        self.name = name
        self._client = client
        #: (weakref to the task client, its view of the topic): the last put's, for the next
        self._cached: tuple | None = None
        _, here = _task_here()
        if here is not None:  # on a worker: learn the subscribers now (dask's Pub does it when made)
            _view(self.client, name, here)

    @property
    def client(self) -> Any:
        return _client_here(self._client)

    def put(self, msg: Any) -> None:
        """Send ``msg`` (msgpack-able) to the topic's subscribers; returns at once."""
        item = pack_value(msg, "Pub.put")
        if item[0] != "value":
            raise TypeError("Pub.put takes msgpack-able values, not futures (share futures with a Queue)")
        name = self.name
        ctx = current_task()
        if ctx is None:  # on a client: everything through the scheduler
            client = default_client(self._client)
            client._tell(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "publish", name, "",
                                                             (item,)))  # fmt: skip
            return
        client = ctx.client()
        cached = self._cached
        if cached is not None and cached[0]() is client:
            view = cached[1]
        else:
            view = _view(client, name, ctx.worker)
            self._cached = (weakref.ref(client), view)
        if client.status != "running":
            client._check_running()
        by_worker, direct, routed = view.state
        if routed:
            worker = ctx.worker
            with client._lock:  # the view read and the send to the scheduler, atomic with the view's changes
                by_worker, direct, routed = view.state
                if routed:
                    client._tell(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "publish", name,
                                                                     "", (item,), worker, direct))  # fmt: skip
        if by_worker:
            payloads = (item[1],)
            post = client._backend.topic_post
            for address, subs in by_worker.items():
                post(address, name, subs, payloads)

    @property
    def subscribers(self) -> dict:
        """The topic's subscribers on workers, by worker address (values ``{}``), as dask's:
        on a worker what this Pub sends to directly; on a client, what the scheduler knows."""
        client = self.client
        _, worker = _task_here()
        if worker is not None:
            return {address: {} for address in _view(client, self.name, worker).state[0]}
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
        self._closed = False
        client = self._bound = _client_here(client)
        self.id = f"{client.id}/sub-{next(_subs)}"
        _, here = _task_here()
        #: direct deliveries that came before the subscription was confirmed (None: since then)
        self._held: list | None = [] if here is not None else None
        self._gate = threading.Lock() if here is not None else None
        client._subs[self.id] = self
        if here is not None:
            _LOCAL[self.id] = self
        try:
            client._coordinate(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "subscribe", self.name,
                                                                  self.id, (), here))  # fmt: skip
        except BaseException:
            self._closed = True
            _LOCAL.pop(self.id, None)
            client._subs.pop(self.id, None)
            raise
        if here is not None:
            # everything the scheduler forwarded from a publisher before it knew us came before
            # its reply; what publishers sent directly since goes after it
            with self._gate:
                held, self._held = self._held, None
                self._buffer.extend(held)

    def _direct(self, payloads: tuple) -> int:
        """Values sent straight here (any thread): _DROPPED (closed, or a Sub on a client), _KEPT,
        or _WAKE (the buffer was empty: a ``get`` may wait on it)."""
        gate = self._gate
        if gate is None or self._closed:
            return _DROPPED
        values = [_unpack(payload) for payload in payloads]
        with gate:  # (get takes from the buffer under it too: "was empty" is exact)
            if self._closed:
                return _DROPPED
            held = self._held
            if held is not None:
                held.extend(values)  # (the constructor's thread waits for the reply, not for these)
                return _KEPT
            buffer = self._buffer
            empty = not buffer
            buffer.extend(values)
        return _WAKE if empty else _KEPT

    def get(self, timeout: Any = None) -> Any:
        """The next message; TimeoutError after ``timeout`` seconds."""
        seconds = parse_timeout(timeout)
        buffer = self._buffer
        gate = self._gate
        if gate is not None:
            with gate:
                if buffer:
                    return buffer.popleft()
        elif buffer:
            return buffer.popleft()
        client = self._bound
        if not client._wait(lambda: bool(buffer), client._deadline(seconds)):
            raise TimeoutError(f"no message on topic {self.name!r} within {seconds:g} s")
        return buffer.popleft()

    next = get

    def __iter__(self) -> Sub:
        return self

    def __next__(self) -> Any:
        return self.get()

    def close(self) -> None:
        """Stop receiving (the scheduler drops the subscription and tells the publishers)."""
        self._closed = True
        _LOCAL.pop(self.id, None)
        client = self._bound
        client._subs.pop(self.id, None)
        if client.status == "running":
            client._tell(lambda now, sid, rid: PubSubRequest(now, sid, client.id, rid, "unsubscribe", self.name,
                                                             self.id))  # fmt: skip

    def __reduce__(self) -> tuple:
        return (Sub, (self.name,))

    def __repr__(self) -> str:
        return f"<Sub: {self.name}>"
