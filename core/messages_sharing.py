"""Messages of what clients share through the scheduler: datasets, metadata, events.

Part of the vocabulary of ``twofold.messages`` (registered with it).  Each
kind has one request type with an ``action``, answered by one
``CoordinationReply`` (the coordination primitives' reply).  User objects
are opaque to the scheduler: a dataset's structure is bytes the client made
(with its futures replaced by placeholders, their keys listed in ``keys``
so the scheduler keeps their data), metadata and event messages are msgpack
bytes the clients pack and unpack.
"""

from __future__ import annotations

from twofold.messages import message
from twofold.messages import Message


@message(by="client")
class DatasetRequest(Message):
    """``action``: "publish" (``data``, ``keys``, ``override``), "get", "list", "unpublish"."""

    client: str
    request_id: str
    action: str
    name: str
    data: bytes | None = None
    keys: tuple[str, ...] = ()
    override: bool = False


@message(by="client")
class MetadataRequest(Message):
    """``action``: "set" (``value``: msgpack bytes) or "get", at the nested ``path`` of keys."""

    client: str
    request_id: str
    action: str
    path: tuple[str | int, ...]
    value: bytes | None = None


@message(by="client")
class EventLogRequest(Message):
    """``action``: "log" (``topics``, ``msg``: msgpack bytes), "get" (``topics`` empty: all),
    "subscribe", "unsubscribe"."""

    client: str
    request_id: str
    action: str
    topics: tuple[str, ...]
    msg: bytes | None = None


@message(to="client")
class TopicEvent(Message):
    """An event logged to ``topic`` at the scheduler's time ``time``, for a subscribed client."""

    client: str
    topic: str
    time: float
    msg: bytes


__all__ = ["DatasetRequest", "EventLogRequest", "MetadataRequest", "TopicEvent"]


@message(by="client")
class InspectRequest(Message):
    """What the scheduler knows of keys and workers: ``action`` "has_what", "processing"
    (``workers``: addresses or names, None: all) or "nbytes" (``keys``, None: all in
    memory; ``summary``: totals by key prefix)."""

    client: str
    request_id: str
    action: str
    workers: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None
    summary: bool = False


__all__ += ["InspectRequest"]


@message(by="client")
class RunOnScheduler(Message):
    """Run user code in the scheduler's process (``client.run_on_scheduler``).

    The machine hands it to its driver as ``RunUserCode`` (it never
    unpickles user data; the driver runs it): ``function`` is the pickled ``(func, args, kwargs)``; the answer is
    a ``CoordinationReply`` whose value is the pickled result, or, not ok,
    the pickled exception (``error_type`` "pickled", ``error`` its text)."""

    client: str
    request_id: str
    function: bytes


@message(to="driver")
class RunUserCode(Message):
    """The scheduler's driver: run ``function`` (RunOnScheduler's) and answer ``client``."""

    client: str
    request_id: str
    function: bytes


__all__ += ["RunOnScheduler", "RunUserCode"]


@message(by="client")
class TaskStreamRequest(Message):
    """Finished task runs the scheduler recorded: ``action`` "get" (those that ended at
    ``start <= stop_time < stop`` on the scheduler's clock, the last ``count``; None: no
    bound) or "now" (the scheduler's clock, to mark the start of a window)."""

    client: str
    request_id: str
    action: str
    start: float | None = None
    stop: float | None = None
    count: int | None = None


__all__ += ["TaskStreamRequest"]
