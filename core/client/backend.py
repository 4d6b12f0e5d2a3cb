"""The interface between the Client and a cluster driver.

The Client speaks the message vocabulary (``twofold.messages``) to the
scheduler and moves data straight to and from workers.  Everything that
depends on *where* the cluster runs is behind :class:`Backend`: the
simulator (``twofold.sim``) implements it on virtual time, the socket
runtime (``twofold.runtime``) on real connections.

Threading contract: the backend calls the receiver (``set_receiver``) with
scheduler -> client messages, in order, from whatever thread or greenlet it
uses; the Client guards its state with its own lock.  ``wait_until`` is the
only place a Client blocks: the simulator advances virtual time inside it
(so a blocking call never deadlocks the simulation); the runtime waits on a
condition that the receiver notifies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence

from twofold.messages import Message, TaskError


def keys_by_worker(placement: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``{key: workers}`` (a ScatterPlan's placement) turned into ``{worker: keys}``,
    both in the placement's order: what each worker of a ``Backend.put`` receives."""
    by_worker: dict[str, list[str]] = {}
    for key, workers in placement.items():
        for worker in workers:
            by_worker.setdefault(worker, []).append(key)
    return by_worker


class Backend(ABC):
    """What a :class:`~twofold.Client` needs from a cluster driver."""

    #: the scheduler's address (``Client.scheduler.address``)
    scheduler_address: str
    #: the cluster object the Client was made from (``Client.cluster``), if any
    cluster: Any = None

    # -- identity and time ---------------------------------------------------

    @abstractmethod
    def client_id(self) -> str:
        """A name for this client, unique in the cluster (deterministic in the simulator)."""

    @abstractmethod
    def new_token(self) -> str:
        """A fresh 32-hex-digit token for keys that must be unique (``pure=False``).

        Drawn from the cluster's seeded generator in the simulator, so keys
        (and so traces) repeat exactly from the seed.
        """

    @abstractmethod
    def now(self) -> float:
        """The backend's clock in seconds (virtual time in the simulator)."""

    # -- messages ------------------------------------------------------------

    @abstractmethod
    def set_receiver(self, receiver: Callable[[Message], None]) -> None:
        """Deliver every scheduler -> client message to ``receiver``, in order."""

    @abstractmethod
    def send(self, msgs: Sequence[Message], background: bool = False) -> None:
        """Send messages to the scheduler, in order (the backend may batch).

        ``background``: keep-alives (lease refreshes) that, in the simulator,
        do not keep a stalled run alive."""

    # -- user objects ----------------------------------------------------------

    @abstractmethod
    def dump_task(self, func: Callable, args: tuple, kwargs: dict) -> bytes:
        """The opaque ``run_spec`` for a task (futures in args already replaced by
        :class:`~twofold.client.spec.Dep` placeholders)."""

    @abstractmethod
    def load_error(self, error: TaskError) -> BaseException:
        """The exception a failed task raised, with its traceback attached
        (``__traceback__``) where the backend can carry it; for scheduler-made
        errors (``error.exception is None``) build it from ``error.typename``
        with :func:`twofold.errors.error_class`."""

    def run(self, workers: Sequence[str], function: bytes, wait: bool = True) -> dict[str, tuple[bool, Any]]:
        """``client.run``: run ``function`` (from :meth:`dump_value`: ``(func, args, kwargs)``)
        on each worker, in its process, with ``dask_worker`` if it takes it; per worker
        ``(True, result)`` or ``(False, exception)``, in ``workers`` order (empty if not ``wait``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot run functions on workers")

    def dump_value(self, obj: Any) -> bytes:
        """``obj`` as opaque bytes the scheduler may keep for other clients (a published
        dataset); :meth:`load_inline` turns them back."""
        raise NotImplementedError(f"{type(self).__name__} cannot serialize values")

    @abstractmethod
    def load_inline(self, data: bytes) -> Any:
        """A result that rode along with its completion (``KeyInMemory.inline``)."""

    # -- blocking --------------------------------------------------------------

    @abstractmethod
    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate()`` is true; False if ``timeout`` (backend
        seconds) passed first.  The simulator raises
        :class:`~twofold.errors.SimulationStalled` if nothing left to simulate
        can make it true."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback()`` once, ``delay`` backend seconds from now, in the backend's
        own thread or loop (keep-alives such as semaphore lease refreshes); returns a
        function that cancels it.  The simulator runs it as a background event (it
        does not keep a stalled simulation alive)."""
        raise NotImplementedError(f"{type(self).__name__} cannot schedule callbacks")

    # -- data plane ------------------------------------------------------------

    @abstractmethod
    def fetch(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
        """Get data straight from workers: ``(data, missing)``, where
        ``missing`` maps each key no listed holder could deliver to the
        last holder that failed (for a ``MissingData`` report)."""

    async def afetch(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
        """:meth:`fetch` for the async API (by default the blocking one: right for a
        backend that blocks only on virtual time, such as the simulator's)."""
        return self.fetch(who_has)

    async def aput(self, placement: Mapping[str, Sequence[str]], data: Mapping[str, Any],
                   free_seqs: Mapping[str, int] | None = None) -> dict[str, tuple[int, str]]:  # fmt: skip
        """:meth:`put` for the async API (by default the blocking one, see :meth:`afetch`)."""
        if free_seqs:
            return self.put(placement, data, free_seqs)
        return self.put(placement, data)

    #: the simulator's clock when the backend's time is virtual (an async client then
    #: waits on an event loop that runs on this clock, see ``twofold.sim.aio``), else None
    virtual_clock: Any = None

    @abstractmethod
    def put(
        self,
        placement: Mapping[str, Sequence[str]],
        data: Mapping[str, Any],
        free_seqs: Mapping[str, int] | None = None,
    ) -> dict[str, tuple[int, str]]:
        """Store each key's object on the workers ``placement`` names; block
        until done; return ``{key: (nbytes, typename)}``.  ``free_seqs`` (from
        the ScatterPlan) goes with the data to each worker (``DataPut.after``).  Raises
        :class:`~twofold.errors.CommClosedError` if a worker is gone."""

    # -- actors --------------------------------------------------------------------

    def actor_call(self, worker: str, key: str, kind: str, name: str, args: tuple, kwargs: dict,
                   call: Any) -> None:
        """Send an actor request straight to ``worker`` (not via the scheduler) and return at once.

        ``kind`` is ``"call"`` (``name(*args, **kwargs)``) or ``"getattr"``
        (read ``name``).  Later, from any thread, settle ``call`` (a
        :class:`~twofold.client.actor.PendingCall`) once with the outcome and
        wake ``wait_until``; a worker that is gone, dies before answering or
        no longer holds ``key`` settles it with ``call.lost(why)``.  Calls
        from one backend to one actor run in the order they were sent.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support actors")

    # -- pub/sub -------------------------------------------------------------------

    def topic_post(self, worker: str, name: str, subs: tuple[str, ...], payloads: tuple[bytes, ...]) -> None:
        """Send published values (msgpack bytes) straight to the subscribers ``subs`` of topic
        ``name`` that live on ``worker`` (not via the scheduler), and return at once.

        Called by a client on a worker (a task's Pub).  On arrival the values go into those
        Sub objects in that worker's process (``twofold.client.pubsub.deliver``), whose
        waits then look again.  Posts from one backend to one worker arrive in the order
        they were made; what cannot be delivered (the worker is gone or unreachable) is
        dropped, never waited for.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot publish to workers directly")

    @abstractmethod
    def close(self) -> None:
        """Disconnect (the scheduler releases this client's keys)."""
