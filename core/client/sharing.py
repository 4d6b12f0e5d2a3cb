"""What clients share through the scheduler: datasets, metadata, structured events.

* **Datasets** (``publish_dataset``/``get_dataset``/``list_datasets``/
  ``unpublish_dataset``, ``client.datasets[...]``): a value, usually futures
  or collections of futures, published under a name; the scheduler keeps
  the futures' data until it is unpublished.  The value is serialized by
  this client with its futures as placeholders, and rebuilt by the getter
  with futures of its own.
* **Metadata** (``set_metadata``/``get_metadata``): a nested dict of small
  msgpack-able values on the scheduler, addressed by key paths.
* **Events** (``log_event``/``get_events``/``subscribe_topic``/
  ``unsubscribe_topic``): messages logged to topics with the scheduler's
  time; a subscribed client's handler is called with ``(time, msg)`` for
  every event logged after it subscribed, in the thread that receives
  scheduler messages (keep it short; it must not block on the cluster).
"""

from __future__ import annotations

from twofold.client.modes import awaitable

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Callable, Iterator

import msgpack

from twofold.client.coordinating import check_name
from twofold.client.future import Future
from twofold.client.spec import replace_futures, substitute
from twofold.messages_sharing import DatasetRequest, EventLogRequest, MetadataRequest

if TYPE_CHECKING:
    from twofold.client.client import Client
    from twofold.messages_sharing import TopicEvent

_NO_DEFAULT = object()


def _packb(value: Any, what: str) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what} takes msgpack-able values (numbers, strings, bytes, lists, dicts), "
                        f"not {type(value).__name__}: {exc}") from None  # fmt: skip


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _path(keys: Any) -> tuple:
    path = tuple(keys) if isinstance(keys, (list, tuple)) else (keys,)
    if not path:
        raise ValueError("a metadata key path must not be empty")
    for part in path:
        if isinstance(part, bool) or not isinstance(part, (str, int)):
            raise TypeError(f"metadata keys are str or int (or a list of them), got {type(part).__name__} {part!r}")
    return path


def _topics(topic: Any) -> tuple[str, ...]:
    topics = tuple(topic) if isinstance(topic, (list, tuple)) else (topic,)
    if not topics:
        raise ValueError("no topic given")
    for t in topics:
        if not isinstance(t, str):
            raise TypeError(f"a topic must be a str, got {type(t).__name__} {t!r}")
    return topics


def _unpack_tree(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _unpack_tree(v) for k, v in node.items()}
    return _unpackb(node)


class Datasets(MutableMapping):
    """``client.datasets``: the published datasets as a mapping (``del`` unpublishes)."""

    def __init__(self, client: Client):
        self._client = client

    def __getitem__(self, name: str) -> Any:
        return self._client.get_dataset(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._client.publish_dataset(value, name=name)

    def __delitem__(self, name: str) -> None:
        if name not in self._client.list_datasets():
            raise KeyError(name)
        self._client.unpublish_dataset(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._client.list_datasets())

    def __len__(self) -> int:
        return len(self._client.list_datasets())

    def __repr__(self) -> str:
        return f"<Datasets of {self._client.id}: {list(self)}>"


class SharingMethods:
    """Mixin of :class:`~twofold.Client`."""

    # -- datasets ------------------------------------------------------------------

    @awaitable
    def publish_dataset(self: Client, *args: Any, name: str | None = None, override: bool = False,
                        **kwargs: Any) -> None:  # fmt: skip
        """Publish ``publish_dataset(x=futures)`` or ``publish_dataset(futures, name="x")``;
        a name that exists raises KeyError unless ``override``."""
        if not isinstance(override, bool):
            raise TypeError(f"override= must be True or False, got {override!r}")
        if name is not None:
            if not args:
                raise ValueError("publish_dataset(..., name=...) needs the value to publish")
            kwargs[name] = args[0] if len(args) == 1 else args
        elif args:
            raise ValueError("give datasets as keywords (publish_dataset(x=...)) or one value and name=")
        if not kwargs:
            raise ValueError("publish_dataset() got nothing to publish")
        packed = []
        for key, value in kwargs.items():
            check_name(key, "dataset")
            deps: dict[str, None] = {}
            structure = replace_futures(value, lambda obj: isinstance(obj, Future), deps)
            packed.append((key, self._backend.dump_value(structure), tuple(deps)))
        for key, data, keys in packed:
            self._coordinate(lambda now, sid, rid, key=key, data=data, keys=keys: DatasetRequest(
                now, sid, self.id, rid, "publish", key, data, keys, override))

    @awaitable
    def get_dataset(self: Client, name: str, default: Any = _NO_DEFAULT, **kwargs: Any) -> Any:
        """The dataset published under ``name`` (its futures are this client's); KeyError
        if there is none and no ``default``."""
        check_name(name, "dataset")

        def adopt(value: Any, seq: int) -> tuple:
            data, keys = value
            return data, {key: self._adopt(key, seq) for key in keys}

        try:
            data, futures = self._coordinate(
                lambda now, sid, rid: DatasetRequest(now, sid, self.id, rid, "get", name), decode=adopt)
        except KeyError:
            if default is _NO_DEFAULT:
                raise
            return default
        return substitute(self._backend.load_inline(data), futures)

    @awaitable
    def list_datasets(self: Client, **kwargs: Any) -> tuple[str, ...]:
        """The names of the published datasets, in publishing order."""
        return tuple(self._coordinate(lambda now, sid, rid: DatasetRequest(now, sid, self.id, rid, "list", "")))

    @awaitable
    def unpublish_dataset(self: Client, name: str, **kwargs: Any) -> None:
        """Remove the dataset (its futures' data may be released)."""
        check_name(name, "dataset")
        self._coordinate(lambda now, sid, rid: DatasetRequest(now, sid, self.id, rid, "unpublish", name))

    @property
    def datasets(self: Client) -> Datasets:
        return Datasets(self)

    # -- metadata ------------------------------------------------------------------

    @awaitable
    def set_metadata(self: Client, key: Any, value: Any) -> None:
        """Store ``value`` (msgpack-able) at ``key``: a str, or a list of keys into nested dicts."""
        path = _path(key)
        data = _packb(value, "set_metadata")
        self._coordinate(lambda now, sid, rid: MetadataRequest(now, sid, self.id, rid, "set", path, data))

    @awaitable
    def get_metadata(self: Client, keys: Any, default: Any = _NO_DEFAULT) -> Any:
        """The value at ``keys`` (a str or a list of nested keys); KeyError without ``default``."""
        path = _path(keys)
        try:
            found = self._coordinate(lambda now, sid, rid: MetadataRequest(now, sid, self.id, rid, "get", path))
        except KeyError:
            if default is _NO_DEFAULT:
                raise
            return default
        return _unpack_tree(found)

    # -- events --------------------------------------------------------------------

    @awaitable
    def log_event(self: Client, topic: str | list[str], msg: Any) -> None:
        """Log ``msg`` (msgpack-able) to ``topic`` (or to each of a list of topics)."""
        topics = _topics(topic)
        data = _packb(msg, "log_event")
        self._coordinate(lambda now, sid, rid: EventLogRequest(now, sid, self.id, rid, "log", topics, data))

    @awaitable
    def get_events(self: Client, topic: str | None = None) -> Any:
        """``((time, msg), ...)`` logged to ``topic``; without a topic, a dict of every topic's."""
        topics = () if topic is None else _topics(topic)
        found = self._coordinate(lambda now, sid, rid: EventLogRequest(now, sid, self.id, rid, "get", topics))
        events = {t: tuple((time, _unpackb(data)) for time, data in log) for t, log in found.items()}
        return events if topic is None else events.get(topic, ())

    @awaitable
    def subscribe_topic(self: Client, topic: str, handler: Callable[[tuple], Any]) -> None:
        """Call ``handler((time, msg))`` for every event logged to ``topic`` from now on."""
        topics = _topics(topic)
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        with self._lock:
            for t in topics:
                self._topic_handlers[t] = handler
        self._coordinate(lambda now, sid, rid: EventLogRequest(now, sid, self.id, rid, "subscribe", topics))

    @awaitable
    def unsubscribe_topic(self: Client, topic: str) -> None:
        """Stop calling the handler of ``topic``."""
        topics = _topics(topic)
        with self._lock:
            for t in topics:
                self._topic_handlers.pop(t, None)
        self._coordinate(lambda now, sid, rid: EventLogRequest(now, sid, self.id, rid, "unsubscribe", topics))

    def _on_topic_event(self: Client, msg: TopicEvent) -> list:
        handler = self._topic_handlers.get(msg.topic)
        if handler is None:
            return []
        return [(handler, (msg.time, _unpackb(msg.msg)))]
