"""Lock, Event and Semaphore: cluster-wide, named, usable from clients and from tasks.

Each object names its primitive; the state lives on the scheduler (one
small machine per kind, ``twofold.scheduler.coordination``).  An object
finds its client when it is used: inside a task the task's own client
(``get_client()``), else the ``client=`` it was made with, else the
default client.  So a primitive passed into a task (pickled by name on the
runtime, the same object on the simulator) works there, and the same name
re-created anywhere is the same primitive.

A Lock's holder, and a Semaphore lease's, is the object *in its context*:
its id plus the running task's key, so two tasks given the same object (the
simulator does not pickle arguments) are two holders, as two unpickled
copies are on the runtime.
"""

from __future__ import annotations

import itertools
from typing import Any

from twofold.client.coordinating import check_name, parse_timeout
from twofold.messages_coordination import EventRequest, LockRequest, SemaphoreRequest

#: object ids, unique in this process (with the client id, unique in the cluster)
_instances = itertools.count(1)


def _client_here(explicit: Any) -> Any:
    """The client a primitive uses right now (see the module docstring)."""
    from twofold.client.client import default_client
    from twofold.context import current_task

    ctx = current_task()
    if ctx is not None:
        return ctx.client()
    return default_client(explicit)


def _task_here() -> tuple[str, str | None]:
    """(key, worker) of the running task, or ("", None) outside tasks."""
    from twofold.context import current_task

    ctx = current_task()
    return (ctx.key, ctx.worker) if ctx is not None else ("", None)


class Primitive:
    """What every coordination object has: a name, a client to find, pickling by name."""

    kind = "primitive"

    def __init__(self, name: str | None = None, client: Any = None):
        self._client = client
        self._id = next(_instances)
        if name is None:
            name = f"{self.kind}-{_client_here(client)._backend.new_token()}"
        check_name(name, self.kind)
        self.name = name

    @property
    def client(self) -> Any:
        return _client_here(self._client)

    def _holder(self, client: Any) -> str:
        key, _ = _task_here()
        return f"{client.id}/{self._id}/{key}"

    def __reduce__(self) -> tuple:
        return (type(self)._rebuild, (self.name, *self._state()))

    def _state(self) -> tuple:
        return ()

    @classmethod
    def _rebuild(cls, name: str, *state: Any) -> Primitive:
        return cls(name, *state)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


class Lock(Primitive):
    """A cluster-wide lock (as ``threading.Lock``, across clients and tasks)."""

    kind = "lock"

    def acquire(self, blocking: bool = True, timeout: Any = None) -> bool:
        """Take the lock; False if ``timeout`` seconds passed first (or, not ``blocking``, it is held)."""
        if not isinstance(blocking, bool):
            raise TypeError(f"blocking= must be True or False, got {blocking!r}")
        seconds = parse_timeout(timeout)
        if not blocking:
            if timeout is not None:
                raise ValueError("can't specify a timeout for a non-blocking call")
            seconds = 0.0
        client = self.client
        holder = self._holder(client)
        _, worker = _task_here()

        def undo(granted: Any) -> Any:  # the acquire was given up (cancelled) but the lock granted
            if granted:
                return lambda now, sid, rid: LockRequest(now, sid, client.id, rid, "release", self.name, holder)
            return None

        return client._coordinate(lambda now, sid, rid: LockRequest(now, sid, client.id, rid, "acquire", self.name,
                                                                   holder, seconds, worker), orphan=undo)  # fmt: skip

    def release(self) -> None:
        """Let go; RuntimeError if this Lock (in this task) does not hold it."""
        client = self.client
        holder = self._holder(client)
        return client._coordinate(lambda now, sid, rid: LockRequest(now, sid, client.id, rid, "release", self.name, holder))

    def locked(self) -> bool:
        """Does anyone hold the lock?"""
        client = self.client
        return client._coordinate(lambda now, sid, rid: LockRequest(now, sid, client.id, rid, "locked", self.name))

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.release()


class Event(Primitive):
    """A cluster-wide flag (as ``asyncio.Event``): every waiter wakes when it is set."""

    kind = "event"

    def _ask(self, action: str, timeout: float | None = None) -> Any:
        client = self.client
        return client._coordinate(lambda now, sid, rid: EventRequest(now, sid, client.id, rid, action, self.name,
                                                                    timeout))  # fmt: skip

    def set(self) -> None:
        """Set the flag: every waiter wakes."""
        return self._ask("set")

    def clear(self) -> None:
        """Clear the flag: waits block again."""
        return self._ask("clear")

    def is_set(self) -> bool:
        return self._ask("is_set")

    def wait(self, timeout: Any = None) -> bool:
        """Block until the flag is set; False if ``timeout`` seconds passed first."""
        return self._ask("wait", parse_timeout(timeout))


class Semaphore(Primitive):
    """At most ``max_leases`` holders at once, cluster-wide.

    A lease whose holder died (its worker or client gone) or stopped
    refreshing it (cut off by a partition) for the scheduler's
    ``semaphore_lease_timeout`` (30 s, as dask's) is given back.  The
    client refreshes its leases in the background.
    """

    kind = "semaphore"

    def __init__(self, max_leases: int = 1, name: str | None = None, register: bool = True, scheduler_rpc: Any = None,
                 loop: Any = None, *, client: Any = None):  # fmt: skip
        if isinstance(max_leases, bool) or not isinstance(max_leases, int):
            raise TypeError(f"max_leases= must be an int >= 1, got {max_leases!r}")
        if max_leases < 1:
            raise ValueError(f"max_leases= must be >= 1, got {max_leases!r}")
        super().__init__(name, client)
        self.max_leases = max_leases
        #: (client id, task key) -> lease ids this object holds there, oldest first
        self._leases: dict[tuple[str, str], list[str]] = {}
        self._count = itertools.count(1)
        if register:
            client = self.client
            if client.asynchronous:  # (no reply needed: this client's later requests come after it)
                client._tell(lambda now, sid, rid: SemaphoreRequest(now, sid, client.id, rid, "register", self.name,
                                                                   self.max_leases))  # fmt: skip
            else:
                self._ask("register")

    def _state(self) -> tuple:
        return (self.max_leases, self.name, False)

    @classmethod
    def _rebuild(cls, name: str, max_leases: int, _name: str, register: bool) -> Semaphore:
        return cls(max_leases, name, register)

    def _ask(self, action: str, lease: str = "", timeout: float | None = None, client: Any = None,
             then: Any = None, orphan: Any = None) -> Any:  # fmt: skip
        client = client or self.client
        _, worker = _task_here()
        return client._coordinate(lambda now, sid, rid: SemaphoreRequest(
            now, sid, client.id, rid, action, self.name, self.max_leases, lease, (), timeout, worker),
            then=then, orphan=orphan)

    def _where(self, client: Any) -> tuple[str, str]:
        return (client.id, _task_here()[0])

    def acquire(self, timeout: Any = None) -> bool:
        """Take a lease; False if ``timeout`` seconds passed first."""
        seconds = parse_timeout(timeout)
        client = self.client
        lease = f"{self._holder(client)}/{next(self._count)}"
        where = self._where(client)

        def granted(value: Any) -> bool:
            ok, lease_timeout = value
            if ok:
                self._leases.setdefault(where, []).append(lease)
                _keeper(client).hold(self.name, lease, lease_timeout)
            return ok

        def undo(value: Any) -> Any:  # given up (cancelled) but granted: give the lease back
            if value and value[0]:
                return lambda now, sid, rid: SemaphoreRequest(now, sid, client.id, rid, "release", self.name,
                                                              self.max_leases, lease, (), None, None)  # fmt: skip
            return None

        return self._ask("acquire", lease, seconds, client, then=granted, orphan=undo)

    def release(self) -> bool:
        """Give back the oldest lease this object holds here; RuntimeError if it holds none.

        False if that lease had already expired (the scheduler gave it away)."""
        client = self.client
        held = self._leases.get(self._where(client))
        if not held:
            raise RuntimeError(f"released semaphore {self.name!r} more often than it was acquired")
        lease = held.pop(0)
        _keeper(client).drop(self.name, lease)
        return self._ask("release", lease, client=client)

    def get_value(self) -> int:
        """How many leases are held now (by anyone)."""
        return self._ask("value")

    def close(self) -> None:
        """Forget the semaphore on the scheduler (its waiters get RuntimeError)."""
        return self._ask("close")

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<Semaphore: {self.name} max_leases={self.max_leases}>"


class _LeaseKeeper:
    """A client's held semaphore leases, refreshed every third of their timeout while any is held."""

    def __init__(self, client: Any):
        self.client = client
        #: semaphore name -> lease ids
        self.leases: dict[str, dict[str, None]] = {}
        self.interval: float | None = None
        self._cancel: Any = None

    def hold(self, name: str, lease: str, lease_timeout: float) -> None:
        with self.client._lock:
            self.leases.setdefault(name, {})[lease] = None
            interval = max(lease_timeout / 3.0, 1e-3)
            if self._cancel is None or interval != self.interval:
                if self._cancel is not None:
                    self._cancel()
                self.interval = interval
                self._cancel = self.client._backend.call_later(interval, self._refresh)

    def drop(self, name: str, lease: str) -> None:
        with self.client._lock:
            leases = self.leases.get(name)
            if leases is not None:
                leases.pop(lease, None)
                if not leases:
                    del self.leases[name]

    def _refresh(self) -> None:
        client = self.client
        with client._lock:
            self._cancel = None
            if not self.leases or client.status != "running":
                return
            held = [(name, tuple(leases)) for name, leases in self.leases.items()]
        for name, ids in held:
            try:
                client._tell(lambda now, sid, rid: SemaphoreRequest(now, sid, client.id, rid, "refresh", name,
                                                                   1, "", ids), background=True)  # fmt: skip
            except Exception:  # the client closed meanwhile
                return
        with client._lock:
            if self._cancel is None:
                self._cancel = client._backend.call_later(self.interval, self._refresh)


def _keeper(client: Any) -> _LeaseKeeper:
    keeper = getattr(client, "_lease_keeper", None)
    if keeper is None:
        with client._lock:
            keeper = getattr(client, "_lease_keeper", None)
            if keeper is None:
                keeper = client._lease_keeper = _LeaseKeeper(client)
    return keeper
