"""Queues: FIFO items per name, with an optional ``maxsize``; getters and putters wait in order.

A ``get`` of ``count`` items takes them one at a time as they come (as
dask's ``get(batch=n)`` does), so waiting puts get in even when ``count``
exceeds ``maxsize``; it is answered once it has ``count`` (``count=-1``:
whatever is there now, at once).  A get that times out or whose client
leaves puts what it had taken back at the front, in order.  A ``put`` into
a full queue waits for room; its future is held from the moment the put
arrives.  Queues live
until the scheduler goes (an empty queue costs a few hundred bytes): a
queue re-created by name finds its items.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_coordination import QueueRequest
from twofold.scheduler.coordination import items as I
from twofold.scheduler.coordination.base import CoordinationExtension, Refused, Waiter


class _Queue:
    __slots__ = ("maxsize", "items", "getters", "putters")

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.items: deque[tuple] = deque()
        self.getters: deque[Waiter] = deque()
        #: waiting puts; each waiter's data is its item (already held)
        self.putters: deque[Waiter] = deque()

    def full(self) -> bool:
        return bool(self.maxsize) and len(self.items) >= self.maxsize


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    name: str
    queues: int
    items: int
    getters: int
    putters: int


def holder_of(name: str) -> str:
    return f"queue:{name}"


class Queues(CoordinationExtension):
    name = "queues"
    timer_prefix = "queue"
    request_type = QueueRequest
    actions = {"put": "_put", "get": "_get", "qsize": "_qsize"}

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, _Queue] = {}

    def _queue(self, event: QueueRequest) -> _Queue:
        q = self.queues.get(event.name)
        if q is None:
            maxsize = event.maxsize
            if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
                raise Refused("ValueError", f"maxsize must be an int >= 0, got {maxsize!r}")
            q = self.queues[event.name] = _Queue(maxsize)
        return q

    def _put(self, event: QueueRequest) -> None:
        if not isinstance(event.items, tuple) or len(event.items) != 1:
            raise Refused("ValueError", "a put carries exactly one item")
        item = I.check_item(event.items[0])
        q = self._queue(event)
        if q.full() and event.timeout == 0:
            self.fail(event, "TimeoutError", f"queue {event.name!r} is full ({q.maxsize} items)")
            return
        I.hold(self, holder_of(event.name), item)
        if q.full():
            self.wait(event, q.putters, item)
            return
        q.items.append(item)
        self.reply(event, True)
        self._serve(event.name, q)

    def _get(self, event: QueueRequest) -> None:
        count = event.count
        if isinstance(count, bool) or not isinstance(count, int) or count == 0 or count < -1:
            raise Refused("ValueError", f"a get takes count >= 1 or -1 (all), got {count!r}")
        q = self._queue(event)
        if count == -1:
            self._deliver(event, q, len(q.items))
            self._serve(event.name, q)
        elif not q.getters and len(q.items) >= count:
            self._deliver(event, q, count)
            self._serve(event.name, q)
        elif event.timeout == 0:
            self.fail(event, "TimeoutError", f"queue {event.name!r} has {len(q.items)} items, not {count}")
        else:
            self.wait(event, q.getters, [])  # data: the items taken so far
            self._serve(event.name, q)

    def _deliver(self, event: QueueRequest, q: _Queue, count: int, taken: list | None = None) -> None:
        taken = (taken or []) + [q.items.popleft() for _ in range(count - len(taken or ()))]
        self.reply(event, taken)
        I.hand_over(self, holder_of(event.name), event.client, taken)

    def _serve(self, name: str, q: _Queue) -> None:
        """Let waiting puts in and hand items to waiting gets while they can, oldest first."""
        progress = True
        while progress:
            progress = False
            while q.putters and not q.full():
                waiter = q.putters.popleft()
                self.done_waiting(waiter)
                q.items.append(waiter.data)
                self.reply(waiter.event, True)
                progress = True
            while q.getters and q.items:
                waiter = q.getters[0]
                taken = waiter.data
                while q.items and len(taken) < waiter.event.count:
                    taken.append(q.items.popleft())
                progress = True
                if len(taken) < waiter.event.count:
                    break  # it waits for more; the room it made may let putters in
                q.getters.popleft()
                self.done_waiting(waiter)
                self._deliver(waiter.event, q, len(taken), taken)

    def _give_back(self, q: _Queue, waiter: Waiter) -> None:
        """A get that ends unanswered: what it had taken goes back to the front, in order."""
        q.items.extendleft(reversed(waiter.data))
        waiter.data = []

    def _qsize(self, event: QueueRequest) -> None:
        q = self.queues.get(event.name)
        self.reply(event, len(q.items) if q is not None else 0)

    def expired(self, waiter: Waiter) -> None:
        q = self.queues[waiter.event.name]
        if waiter in q.getters:
            q.getters.remove(waiter)
            self._give_back(q, waiter)
            what = "an item" if waiter.event.count == 1 else f"{waiter.event.count} items"
        else:
            q.putters.remove(waiter)
            I.release(self, holder_of(waiter.event.name), waiter.data)
            what = "room"
        self.fail(waiter.event, "TimeoutError",
                  f"timed out after {waiter.event.timeout:g} s waiting for {what} in queue {waiter.event.name!r}")
        self._serve(waiter.event.name, q)

    def client_removed(self, client: str) -> None:
        for name, q in self.queues.items():
            for waiter in reversed(self.drop_waiters(q.getters, lambda w: w.client != client)):
                self._give_back(q, waiter)
            for waiter in self.drop_waiters(q.putters, lambda w: w.client != client):
                I.release(self, holder_of(name), waiter.data)  # its put never happened
            self._serve(name, q)

    def validate(self) -> None:
        for name, q in self.queues.items():
            holder = holder_of(name)
            taken = [item for w in q.getters for item in w.data]
            for item in (*q.items, *(w.data for w in q.putters), *taken):
                assert I.holds(self, holder, item), f"queue {name!r}: its future {item[1]!r} is not held"
            assert not q.getters or not q.items, f"queue {name!r}: a getter could take an item"
            for w in q.getters:
                assert len(w.data) < w.event.count, f"queue {name!r}: a served getter still waits"
            assert all(not w.data for w in list(q.getters)[1:]), f"queue {name!r}: a later getter took items first"
            assert not q.putters or q.full(), f"queue {name!r}: a putter could be served"
        self.check_waiters([*(q.getters for q in self.queues.values()), *(q.putters for q in self.queues.values())])

    def statistics(self) -> QueueStatistics:
        qs = self.queues.values()
        return QueueStatistics(self.name, len(self.queues), sum(len(q.items) for q in qs),
                               sum(len(q.getters) for q in qs), sum(len(q.putters) for q in qs))  # fmt: skip
