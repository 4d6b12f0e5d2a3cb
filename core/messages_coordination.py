"""The coordination primitives' messages (part of the vocabulary of ``twofold.messages``).

Each primitive has one request type, client -> scheduler, whose ``action``
says what is asked (the extension behind the seam checks it), and every
request is answered by one :class:`CoordinationReply` with the same
``request_id``.  A request that waits (a lock, an event, a queue's get)
carries its ``timeout`` in seconds: the scheduler times it out on its own
clock (virtual time in the simulator) and replies then.

Values that travel through queues, variables and topics are *items*:
``("value", msgpack bytes)`` for small data (packed and unpacked by the
clients, opaque to the scheduler) or ``("future", key)`` for a future,
whose data the holder (queue, variable) keeps alive.
"""

from __future__ import annotations

from twofold.messages import Key, Message, message

#: an item: ("value", bytes) | ("future", key) (annotations spell it out: the
#: vocabulary's tests read them with twofold.messages' namespace)
Item = tuple


@message(by="client")
class LockRequest(Message):
    """``action``: "acquire" (``timeout``: None waits for ever, 0 only tries), "release", "locked".

    ``holder`` names the Lock object (and task) that holds it; ``worker`` the
    worker whose task asks, so that its leases go with it."""

    client: str
    request_id: str
    action: str
    name: str
    holder: str = ""
    timeout: float | None = None
    worker: str | None = None


@message(by="client")
class SemaphoreRequest(Message):
    """``action``: "register", "acquire", "release", "refresh" (``leases``), "value", "close"."""

    client: str
    request_id: str
    action: str
    name: str
    max_leases: int = 1
    lease: str = ""
    leases: tuple[str, ...] = ()
    timeout: float | None = None
    worker: str | None = None


@message(by="client")
class EventRequest(Message):
    """``action``: "set", "clear", "is_set", "wait" (``timeout``)."""

    client: str
    request_id: str
    action: str
    name: str
    timeout: float | None = None


@message(by="client")
class QueueRequest(Message):
    """``action``: "put" (``items``, one), "get" (``count`` items; -1: all there are, at once),
    "qsize"; ``maxsize`` creates the queue on first use."""

    client: str
    request_id: str
    action: str
    name: str
    items: tuple[tuple[str, str | bytes], ...] = ()
    count: int = 1
    maxsize: int = 0
    timeout: float | None = None


@message(by="client")
class VariableRequest(Message):
    """``action``: "set" (``items``, one), "get" (``timeout``), "delete"."""

    client: str
    request_id: str
    action: str
    name: str
    items: tuple[tuple[str, str | bytes], ...] = ()
    timeout: float | None = None


@message(by="client")
class PubSubRequest(Message):
    """``action``: "subscribe" / "unsubscribe" (``sub``: the subscriber's id; ``worker``: where
    it lives, None on a client), "publish" (``items``, for every subscriber but those in
    ``delivered``, which the publisher reached directly), "subscribers", "publisher" (a
    client on ``worker`` publishes on the topic: keep it told of the subscribers, with
    :class:`TopicPeers`), "ack" (a publisher took in the :class:`TopicPeers` whose ``ack``
    is ``sub``)."""

    client: str
    request_id: str
    action: str
    name: str
    sub: str = ""
    items: tuple[tuple[str, str | bytes], ...] = ()
    worker: str | None = None
    delivered: tuple[str, ...] = ()


@message(to="client")
class CoordinationReply(Message):
    """The answer to one request: ``value`` (msgpack-able; items for queues and
    variables), or, if not ``ok``, an error of type ``error_type`` (a builtin
    name or ``TimeoutError``) with ``error`` as its message."""

    client: str
    request_id: str
    ok: bool = True
    value: bool | int | float | str | bytes | None | dict | tuple[
        bool | int | float | str | None | tuple[str, str | bytes], ...] = None
    error_type: str = ""
    error: str = ""


@message(to="client")
class TopicMessages(Message):
    """Published items, for the subscriber ``sub`` of ``client``."""

    client: str
    name: str
    sub: str
    items: tuple[tuple[str, str | bytes], ...]


@message(to="client")
class TopicPeers(Message):
    """To a publisher's client: the topic's subscribers changed.

    ``subs`` maps subscriber ids to the worker each lives on (``""``: on a
    client, reached through the scheduler); ``reset``: they are all of them
    (the answer to "publisher"), else they are added; ``removed`` left.  A
    non-empty ``ack`` asks for an "ack" request naming it: the new
    subscriber's constructor returns once every publisher has taken it in.
    """

    client: str
    name: str
    subs: dict[str, str]
    removed: tuple[str, ...] = ()
    reset: bool = False
    ack: str = ""


__all__ = [
    "CoordinationReply",
    "EventRequest",
    "Item",
    "Key",
    "LockRequest",
    "PubSubRequest",
    "QueueRequest",
    "SemaphoreRequest",
    "TopicMessages",
    "TopicPeers",
    "VariableRequest",
]
