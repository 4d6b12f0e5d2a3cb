"""Semaphores: at most ``max_leases`` leases per name; leases of holders that died expire.

A lease is held by a Semaphore object's lease id, with the client that
asked and, from inside a task, its worker.  A lease goes back when it is
released, when its client or worker leaves, or when its holder has not
refreshed it for ``config.semaphore_lease_timeout`` seconds (a holder cut
off by a partition: dask's ``lease-timeout``).  Clients refresh their
leases every third of that; the acquire reply tells them the timeout.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_coordination import SemaphoreRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused, Waiter


class _Lease:
    __slots__ = ("client", "worker", "seen")

    def __init__(self, client: str, worker: str | None, seen: float):
        self.client = client
        self.worker = worker
        self.seen = seen


class _Semaphore:
    __slots__ = ("max_leases", "leases", "waiters", "expiry_at")

    def __init__(self, max_leases: int):
        self.max_leases = max_leases
        self.leases: dict[str, _Lease] = {}
        self.waiters: deque[Waiter] = deque()
        #: when the pending expiry check fires (None: none pending)
        self.expiry_at: float | None = None


@dataclass(frozen=True, slots=True)
class SemaphoreStatistics:
    name: str
    semaphores: int
    leases: int
    waiting: int
    expired: int


def _check_max(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Refused("ValueError", f"max_leases must be an int >= 1, got {value!r}")
    return value


class Semaphores(CoordinationExtension):
    name = "semaphores"
    timer_prefix = "semaphore"
    request_type = SemaphoreRequest
    actions = {"register": "_register", "acquire": "_acquire", "release": "_release", "refresh": "_refresh",
               "value": "_value", "close": "_close"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.semaphores: dict[str, _Semaphore] = {}
        self._expired = 0

    @property
    def lease_timeout(self) -> float:
        return self.state.config.semaphore_lease_timeout

    def _get(self, event: SemaphoreRequest) -> _Semaphore:
        sem = self.semaphores.get(event.name)
        if sem is None:
            sem = self.semaphores[event.name] = _Semaphore(_check_max(event.max_leases))
        return sem

    def _register(self, event: SemaphoreRequest) -> None:
        sem = self._get(event)
        self.reply(event, sem.max_leases)

    def _acquire(self, event: SemaphoreRequest) -> None:
        if not isinstance(event.lease, str) or not event.lease:
            raise Refused("ValueError", "a lease id must be a non-empty str")
        sem = self._get(event)
        if event.lease in sem.leases:
            raise Refused("RuntimeError", f"lease {event.lease!r} of semaphore {event.name!r} is already held")
        if len(sem.leases) < sem.max_leases:
            self._grant(event.name, sem, event)
        elif event.timeout == 0:
            self.reply(event, [False, self.lease_timeout])
        else:
            self.wait(event, sem.waiters)

    def _grant(self, name: str, sem: _Semaphore, event: SemaphoreRequest) -> None:
        sem.leases[event.lease] = _Lease(event.client, event.worker, self.now)
        self._arm(name, sem)
        self.reply(event, [True, self.lease_timeout])

    def _release(self, event: SemaphoreRequest) -> None:
        sem = self.semaphores.get(event.name)
        if sem is None or event.lease not in sem.leases:
            self.reply(event, False)  # expired (or never held): nothing to give back
            return
        del sem.leases[event.lease]
        self._serve(event.name, sem)
        self.reply(event, True)

    def _refresh(self, event: SemaphoreRequest) -> None:
        sem = self.semaphores.get(event.name)
        leases = event.leases if isinstance(event.leases, tuple) else ()
        if sem is not None:
            for lease_id in leases:
                lease = sem.leases.get(lease_id)
                if lease is not None:
                    lease.seen = self.now
        self.reply(event, True)

    def _value(self, event: SemaphoreRequest) -> None:
        sem = self.semaphores.get(event.name)
        self.reply(event, len(sem.leases) if sem is not None else 0)

    def _close(self, event: SemaphoreRequest) -> None:
        sem = self.semaphores.pop(event.name, None)
        if sem is not None:
            for waiter in sem.waiters:
                self.done_waiting(waiter)
                self.fail(waiter.event, "RuntimeError", f"semaphore {event.name!r} was closed")
            if sem.expiry_at is not None:
                self.cancel_timer(f"x{event.name}")
        self.reply(event, True)

    def _serve(self, name: str, sem: _Semaphore) -> None:
        """Hand free leases to waiters, oldest first."""
        while sem.waiters and len(sem.leases) < sem.max_leases:
            waiter = sem.waiters.popleft()
            self.done_waiting(waiter)
            if waiter.event.lease in sem.leases:
                self.fail(waiter.event, "RuntimeError", f"lease {waiter.event.lease!r} is already held")
                continue
            self._grant(name, sem, waiter.event)

    def expired(self, waiter: Waiter) -> None:
        sem = self.semaphores[waiter.event.name]
        sem.waiters.remove(waiter)
        self.reply(waiter.event, [False, self.lease_timeout])

    # -- lease expiry ------------------------------------------------------------

    def _arm(self, name: str, sem: _Semaphore) -> None:
        if sem.expiry_at is None and sem.leases:
            oldest = min(lease.seen for lease in sem.leases.values())
            sem.expiry_at = oldest + self.lease_timeout
            self.set_timer(sem.expiry_at, f"x{name}", background=True)

    def on_other_timer(self, arg: str) -> None:
        name = arg[1:]
        sem = self.semaphores.get(name)
        if sem is None:
            return
        sem.expiry_at = None
        now, timeout = self.now, self.lease_timeout
        # (seen + timeout, as the timer was set: now - timeout can round below seen)
        stale = [lease_id for lease_id, lease in sem.leases.items() if lease.seen + timeout <= now]
        for lease_id in stale:
            del sem.leases[lease_id]
        self._expired += len(stale)
        if stale:
            self._serve(name, sem)
        self._arm(name, sem)

    # -- holders leaving ---------------------------------------------------------

    def client_removed(self, client: str) -> None:
        self._drop(lambda c, w: c == client)

    def worker_removed(self, ws) -> None:
        address = ws.address
        self._drop(lambda c, w: w == address)

    def _drop(self, gone) -> None:
        for name, sem in self.semaphores.items():
            self.drop_waiters(sem.waiters, lambda w: not gone(w.event.client, w.event.worker))
            stale = [lease_id for lease_id, lease in sem.leases.items() if gone(lease.client, lease.worker)]
            for lease_id in stale:
                del sem.leases[lease_id]
            if stale:
                self._serve(name, sem)

    # -- inspection --------------------------------------------------------------

    def validate(self) -> None:
        for name, sem in self.semaphores.items():
            assert len(sem.leases) <= sem.max_leases, f"semaphore {name!r}: {len(sem.leases)} > {sem.max_leases}"
            assert not sem.waiters or len(sem.leases) == sem.max_leases, f"semaphore {name!r}: free lease, waiters"
            assert not sem.leases or sem.expiry_at is not None, f"semaphore {name!r}: leases without expiry check"
        self.check_waiters(sem.waiters for sem in self.semaphores.values())

    def statistics(self) -> SemaphoreStatistics:
        leases = sum(len(s.leases) for s in self.semaphores.values())
        waiting = sum(len(s.waiters) for s in self.semaphores.values())
        return SemaphoreStatistics(self.name, len(self.semaphores), leases, waiting, self._expired)
