"""Queue and Variable: futures and small values shared through the scheduler.

Values go through msgpack (numbers, strings, bytes, lists, dicts; a tuple
comes back as a list, as in dask), checked before anything is sent; a
Future goes by its key, and the queue or variable keeps its data alive
until it is taken (or replaced).  See ``twofold.client.coordination`` for
how an object finds its client.
"""

from __future__ import annotations

from typing import Any

from twofold.client.coordinating import pack_value, parse_timeout
from twofold.client.coordination import Primitive
from twofold.messages_coordination import QueueRequest, VariableRequest


class Queue(Primitive):
    """A cluster-wide FIFO queue of futures and small values (``maxsize`` 0: unbounded)."""

    kind = "queue"

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize= must be an int >= 0, got {maxsize!r}")
        if maxsize < 0:
            raise ValueError(f"maxsize= must be >= 0 (0: unbounded), got {maxsize!r}")
        super().__init__(name, client)
        self.maxsize = maxsize

    def _state(self) -> tuple:
        return (None, self.maxsize)

    def _ask(self, action: str, items: tuple = (), count: int = 1, timeout: float | None = None,
             then: Any = None) -> Any:  # fmt: skip
        client = self.client
        return client._coordinate(
            lambda now, sid, rid: QueueRequest(now, sid, client.id, rid, action, self.name, items, count,
                                               self.maxsize, timeout),
            items=action == "get", then=then,
        )

    def put(self, value: Any, timeout: Any = None, **kwargs: Any) -> None:
        """Append ``value``; on a full queue wait for room (TimeoutError after ``timeout`` seconds)."""
        seconds = parse_timeout(timeout)
        return self._ask("put", (pack_value(value, "Queue.put"),), timeout=seconds)

    def get(self, timeout: Any = None, batch: bool | int = False, **kwargs: Any) -> Any:
        """The oldest item (TimeoutError after ``timeout`` seconds); ``batch=True``: a list of
        all items there now; ``batch=n``: a list of the next ``n``."""
        seconds = parse_timeout(timeout)
        if batch is True:
            return self._ask("get", count=-1, timeout=seconds)
        if batch is False:
            return self._ask("get", count=1, timeout=seconds, then=_first)
        if not isinstance(batch, int):
            raise TypeError(f"batch= must be True, False or an int >= 1, got {batch!r}")
        if batch < 1:
            raise ValueError(f"batch= must be >= 1 when an int, got {batch!r}")
        return self._ask("get", count=batch, timeout=seconds)

    def qsize(self, **kwargs: Any) -> int:
        """How many items are in the queue now."""
        return self._ask("qsize")

    def __repr__(self) -> str:
        return f"<Queue: {self.name} maxsize={self.maxsize}>"


class Variable(Primitive):
    """A cluster-wide variable holding one future or small value."""

    kind = "variable"

    def __init__(self, name: str | None = None, client: Any = None, maxsize: int = 0):
        super().__init__(name, client)

    def _ask(self, action: str, items: tuple = (), timeout: float | None = None, then: Any = None) -> Any:
        client = self.client
        return client._coordinate(
            lambda now, sid, rid: VariableRequest(now, sid, client.id, rid, action, self.name, items, timeout),
            items=action == "get", then=then,
        )

    def set(self, value: Any, **kwargs: Any) -> None:
        """Replace the value (a future's data is kept until the next set or delete)."""
        return self._ask("set", (pack_value(value, "Variable.set"),))

    def get(self, timeout: Any = None, **kwargs: Any) -> Any:
        """The value; waits until one is set (TimeoutError after ``timeout`` seconds)."""
        return self._ask("get", timeout=parse_timeout(timeout), then=_first)

    def delete(self) -> None:
        """Forget the value, for every client."""
        return self._ask("delete")


def _first(items: list) -> Any:
    return items[0]
