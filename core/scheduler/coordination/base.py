"""What every coordination extension shares: replies, checked requests, waiters with timeouts.

A *waiter* is a request that cannot be answered yet (a lock held by someone
else, an empty queue).  It is answered when the primitive's state lets it,
or when its timeout passes (a timer ``<prefix>:w<n>``), or dropped when its
client leaves.  Requests are checked here too: a client may be buggy or
hostile, so a malformed request gets an error reply, never an exception
(an exception would close that client's connection on the runtime).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable

from twofold.messages_coordination import CoordinationReply
from twofold.scheduler.extension import Extension


class Refused(Exception):
    """A request that cannot be served: becomes an error reply of ``error_type``."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


class Waiter:
    """A request waiting to be answered."""

    __slots__ = ("event", "number", "deadline", "data")

    def __init__(self, event: Any, number: int, deadline: float | None, data: Any = None):
        self.event = event
        self.number = number
        self.deadline = deadline
        #: what the extension keeps with the waiter (e.g. the item a putter waits to put)
        self.data = data

    @property
    def client(self) -> str:
        return self.event.client

    def __repr__(self) -> str:
        return f"<Waiter {self.event.action} {self.event.name!r} from {self.event.client!r}>"


class CoordinationExtension(Extension):
    """Base of the primitives' extensions: one request type, an ``action`` per operation.

    Subclasses set ``request_type`` and ``actions`` (action -> method name),
    and implement :meth:`expired` (a waiter's timeout passed).
    """

    request_type: type
    #: action -> name of the method handling it (``method(event)``)
    actions: dict[str, str] = {}
    #: the longest name accepted (a name is state on the scheduler)
    max_name = 10_000

    def __init__(self) -> None:
        self._waiters: dict[int, Waiter] = {}
        self._counter = 0
        self._served = 0

    def handlers(self) -> dict:
        return {self.request_type: self._on_request}

    # -- requests ------------------------------------------------------------

    def _on_request(self, event: Any) -> None:
        self._served += 1
        try:
            name = getattr(event, "name", "")
            if not isinstance(name, str) or len(name) > self.max_name:
                raise Refused("TypeError", f"a {self.name} name must be a str, got {type(name).__name__}")
            method = self.actions.get(event.action) if isinstance(event.action, str) else None
            if method is None:
                raise Refused("ValueError", f"{self.name}: unknown action {event.action!r}")
            timeout = getattr(event, "timeout", None)
            if timeout is not None and (
                isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
            ):
                raise Refused("ValueError", f"timeout must be a number >= 0 or None, got {timeout!r}")
            getattr(self, method)(event)
        except Refused as refusal:
            self.fail(event, refusal.error_type, str(refusal))

    def reply(self, event: Any, value: Any = None) -> None:
        if event.request_id:
            self.send(CoordinationReply(self.now, self.stimulus_id, event.client, event.request_id, True, value))

    def fail(self, event: Any, error_type: str, message: str) -> None:
        if event.request_id:
            self.send(CoordinationReply(self.now, self.stimulus_id, event.client, event.request_id, False, None,
                                        error_type, message))

    # -- waiters -------------------------------------------------------------

    def wait(self, event: Any, queue: deque, data: Any = None) -> Waiter:
        """Park ``event`` at the end of ``queue`` (and time it out if it has a timeout)."""
        self._counter += 1
        timeout = event.timeout
        deadline = None if timeout is None or math.isinf(timeout) else self.now + timeout
        waiter = Waiter(event, self._counter, deadline, data)
        self._waiters[waiter.number] = waiter
        queue.append(waiter)
        if deadline is not None:
            self.set_timer(deadline, f"w{waiter.number}")
        return waiter

    def done_waiting(self, waiter: Waiter) -> None:
        """``waiter`` was answered (the caller took it off its queue)."""
        del self._waiters[waiter.number]
        if waiter.deadline is not None:
            self.cancel_timer(f"w{waiter.number}")

    def on_timer(self, token: str, arg: str) -> None:
        if arg.startswith("w"):
            waiter = self._waiters.pop(int(arg[1:]), None)
            if waiter is not None:
                self.expired(waiter)
        else:
            self.on_other_timer(arg)

    def expired(self, waiter: Waiter) -> None:
        """``waiter``'s timeout passed (it is out of the waiter index; take it off its queue)."""
        raise NotImplementedError

    def on_other_timer(self, arg: str) -> None:
        """A timer of the subclass's own (not a waiter's)."""

    def drop_waiters(self, queue: deque, keep: Callable[[Waiter], bool]) -> list[Waiter]:
        """Remove the waiters of ``queue`` that ``keep`` rejects; return them."""
        gone = [w for w in queue if not keep(w)]
        if gone:
            kept = [w for w in queue if keep(w)]
            queue.clear()
            queue.extend(kept)
            for w in gone:
                self.done_waiting(w)
        return gone

    # -- inspection ------------------------------------------------------------

    def check_waiters(self, queues: Any) -> None:
        """Every parked waiter is in the index, once; every indexed one is parked."""
        parked = [w.number for q in queues for w in q]
        assert len(parked) == len(set(parked)), f"{self.name}: a waiter is parked twice"
        assert set(parked) == set(self._waiters), f"{self.name}: waiter index {sorted(self._waiters)} != {parked}"
