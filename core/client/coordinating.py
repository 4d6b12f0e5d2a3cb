"""The Client's side of the coordination primitives: requests, replies, items, timeouts.

Every primitive operation is one request to the scheduler answered by one
``CoordinationReply`` (:meth:`CoordinationPlumbing._coordinate`, an
operation of :mod:`twofold.client.ops`, so awaitable as well).  Waiting
is the scheduler's business: a request with a timeout is timed out on the
scheduler's clock (virtual time in the simulator), so the client simply
waits for the reply.

Items that come back (a queue's or a variable's values) are turned into
Python objects *when the reply is received*, under the Client's lock and
in message order: a future among them must be known to the client before
the scheduler's next message about its key (its ``KeyInMemory``) arrives.
The scheduler gave this client a reference to each such key; a client that
already held the key sends that extra reference back with its next message.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from twofold.client.future import Future
from twofold.errors import CancelledError, TimeoutError

if TYPE_CHECKING:
    from twofold.client.client import Client
    from twofold.messages_coordination import CoordinationReply, TopicMessages

#: builtin exception types a reply's ``error_type`` may name
_ERRORS: dict[str, type[Exception]] = {
    "TimeoutError": TimeoutError, "RuntimeError": RuntimeError, "ValueError": ValueError, "TypeError": TypeError,
    "KeyError": KeyError, "CancelledError": CancelledError,
}  # fmt: skip

_UNITS = {
    "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6, "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip


def parse_timeout(timeout: Any, what: str = "timeout") -> float | None:
    """Seconds (None: no limit) from a number, a string such as ``"200ms"`` or a timedelta."""
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, str):
        text = timeout.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):] or "s"
        try:
            seconds = float(number) * _UNITS[unit]
        except (ValueError, KeyError):
            raise ValueError(f"{what}={timeout!r}: expected seconds, or a number with a unit such as '200ms', "
                             f"'5s', '2min'") from None  # fmt: skip
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(f"{what}= takes seconds (a number), a string such as '200ms' or a timedelta, "
                        f"got {type(timeout).__name__} {timeout!r}")  # fmt: skip
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{what}= must be >= 0, got {timeout!r}")
    return None if math.isinf(seconds) else seconds


def check_name(name: Any, kind: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a {kind} name must be a str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError(f"a {kind} name must not be empty")


def pack_value(value: Any, where: str) -> tuple:
    """An item for ``value``: a Future by key, anything else through msgpack."""
    if isinstance(value, Future):
        return ("future", value.key)
    try:
        return ("value", msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{where} takes futures or msgpack-able values (numbers, strings, bytes, lists, dicts), "
                        f"not {type(value).__name__}: {exc}; to share other objects, scatter them and pass "
                        "the future") from None  # fmt: skip


def _loaded_error(client: Client, reply: Any) -> BaseException:
    try:
        exc = client._backend.load_inline(reply.value)
    except Exception:
        exc = None
    return exc if isinstance(exc, BaseException) else RuntimeError(reply.error)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class CoordinationPlumbing:
    """Mixin of :class:`~twofold.Client`."""

    def _coordinate(
        self: Client, make: Callable[[float, str, str], Any], items: bool = False,
        decode: Callable[[Any, int], Any] | None = None, then: Callable[[Any], Any] | None = None,
        orphan: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Send ``make(now, stimulus_id, request_id)``, wait for its reply, return its value
        (an awaitable of it when the client is asynchronous); an error reply raises the
        error it names.

        ``items``: the value is a list of items, decoded on receipt;
        ``decode(value, seq)``: any other decoding that must happen on receipt
        (under the lock: it may adopt futures); ``then(value)``: what to return
        instead of the value, once it is there; ``orphan(value)``: if the wait is
        given up (an async caller was cancelled) and the reply still comes, a
        ``make`` for the request that undoes it (a lock granted to nobody is released)."""
        return self._run(self._coordinate_op(make, self._decode_items if items else decode, then, orphan))

    def _coordinate_op(self: Client, make: Callable, decode: Callable | None, then: Callable | None,
                       orphan: Callable | None) -> Any:  # fmt: skip
        from twofold.client import ops

        req = yield from ops.coordinate(self, make, decode, orphan=orphan)
        reply = req.reply
        if not reply.ok:
            if reply.error_type == "pickled":  # user code's own exception (run_on_scheduler)
                raise _loaded_error(self, reply)
            raise _ERRORS.get(reply.error_type, RuntimeError)(reply.error)
        value = req.value if decode is not None else reply.value
        return value if then is None else then(value)

    def _tell(self: Client, make: Callable[[float, str, str], Any], background: bool = False) -> None:
        """Send a request that wants no reply (``request_id`` empty); ``background``:
        a keep-alive (see ``Backend.send``)."""
        with self._lock:
            self._check_running()
            _, sid = self._next_sid("coord")
            msg = make(self._backend.now(), sid, "")
            if background:
                self._backend.send([msg], background=True)
            else:
                self._send([msg])

    # -- receiving (under the lock, in message order) -----------------------------

    def _decode_items(self: Client, value: Any, seq: int) -> list:
        return [self._item(item, seq) for item in value]

    def _item(self: Client, item: Any, seq: int) -> Any:
        kind, payload = item
        if kind == "value":
            return _unpack(payload)
        return self._adopt(payload, seq)

    def _adopt(self: Client, key: str, seq: int) -> Future:
        """A Future of ``key``, whose scheduler-side reference the scheduler just gave us."""
        return Future._attach(key, self, self._core.adopt(key, seq))

    def _on_topic_peers(self: Client, msg: Any) -> list:
        """A topic this client publishes on changed subscribers (see ``twofold.client.pubsub``)."""
        from twofold.client.pubsub import _on_topic_peers

        return _on_topic_peers(self, msg)

    def _on_topic(self: Client, msg: TopicMessages) -> list:
        sub = self._subs.get(msg.sub)
        if sub is not None:
            sub._buffer.extend(_unpack(payload) for kind, payload in msg.items if kind == "value")
        return []
