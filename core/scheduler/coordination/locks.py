"""Locks: at most one holder per name; waiters served first come, first served.

A holder is a Lock object's lease id (one per Lock object and task), with
the client that asked and, from inside a task, the worker it runs on: when
that client or worker goes, its locks are released and the next waiter
gets them.  A lock nobody holds or waits for is forgotten (a new one of the
same name starts free).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_coordination import LockRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused, Waiter


class _Lock:
    __slots__ = ("holder", "client", "worker", "waiters")

    def __init__(self) -> None:
        self.holder: str | None = None
        self.client = ""
        self.worker: str | None = None
        self.waiters: deque[Waiter] = deque()


@dataclass(frozen=True, slots=True)
class LockStatistics:
    name: str
    locks: int
    held: int
    waiting: int
    requests: int


class Locks(CoordinationExtension):
    name = "locks"
    timer_prefix = "lock"
    request_type = LockRequest
    actions = {"acquire": "_acquire", "release": "_release", "locked": "_locked"}

    def __init__(self) -> None:
        super().__init__()
        self.locks: dict[str, _Lock] = {}

    def _acquire(self, event: LockRequest) -> None:
        if not isinstance(event.holder, str) or not event.holder:
            raise Refused("ValueError", "a lock holder id must be a non-empty str")
        lock = self.locks.get(event.name)
        if lock is None:
            lock = self.locks[event.name] = _Lock()
        if lock.holder is None:
            self._grant(lock, event)
            self.reply(event, True)
        elif event.timeout == 0:
            self.reply(event, False)
        else:
            self.wait(event, lock.waiters)

    def _grant(self, lock: _Lock, event: LockRequest) -> None:
        lock.holder = event.holder
        lock.client = event.client
        lock.worker = event.worker

    def _release(self, event: LockRequest) -> None:
        lock = self.locks.get(event.name)
        if lock is None or lock.holder != event.holder:
            raise Refused("RuntimeError", f"released lock {event.name!r}, which this Lock does not hold")
        self._free(event.name, lock)
        self.reply(event, True)

    def _free(self, name: str, lock: _Lock) -> None:
        """The holder let go (or left): the first waiter gets the lock."""
        lock.holder = None
        lock.worker = None
        if lock.waiters:
            waiter = lock.waiters.popleft()
            self.done_waiting(waiter)
            self._grant(lock, waiter.event)
            self.reply(waiter.event, True)
        else:
            del self.locks[name]

    def _locked(self, event: LockRequest) -> None:
        lock = self.locks.get(event.name)
        self.reply(event, lock is not None and lock.holder is not None)

    def expired(self, waiter: Waiter) -> None:
        lock = self.locks[waiter.event.name]
        lock.waiters.remove(waiter)
        self.reply(waiter.event, False)

    # -- holders leaving ---------------------------------------------------------

    def client_removed(self, client: str) -> None:
        self._drop(lambda holder_client, worker: holder_client == client)

    def worker_removed(self, ws) -> None:
        address = ws.address
        self._drop(lambda holder_client, worker: worker == address)

    def _drop(self, gone) -> None:
        for name, lock in list(self.locks.items()):
            self.drop_waiters(lock.waiters, lambda w: not gone(w.event.client, w.event.worker))
            if lock.holder is not None and gone(lock.client, lock.worker):
                self._free(name, lock)
            elif lock.holder is None and not lock.waiters:
                del self.locks[name]

    # -- inspection --------------------------------------------------------------

    def validate(self) -> None:
        for name, lock in self.locks.items():
            assert lock.holder is not None, f"lock {name!r} is free but kept (waiters: {list(lock.waiters)})"
        self.check_waiters(lock.waiters for lock in self.locks.values())

    def statistics(self) -> LockStatistics:
        held = sum(lock.holder is not None for lock in self.locks.values())
        waiting = sum(len(lock.waiters) for lock in self.locks.values())
        return LockStatistics(self.name, len(self.locks), held, waiting, self._served)
