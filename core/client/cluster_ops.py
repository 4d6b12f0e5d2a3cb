"""Cluster operations: replicate, rebalance, retire_workers.

Each is one ``ClusterOpRequest`` that the scheduler answers (a
``CoordinationReply``) only once the operation is done — the copies are in
place, the data has moved, the workers are gone — so these calls block
without polling (on the simulator, virtual time passes while they wait).
How the scheduler chooses is in ``twofold.scheduler.cluster_ops``.

This is a mixin of :class:`~twofold.client.client.Client`.
"""

from __future__ import annotations

from twofold.client.modes import awaitable

from typing import TYPE_CHECKING, Any

from twofold.client.future import iter_futures, wait
from twofold.client.options import normalize_workers
from twofold.errors import CancelledError, CommClosedError
from twofold.messages_ops import ClusterOpRequest, RestartRequest

if TYPE_CHECKING:
    from twofold.client.client import Client


class ClusterOpsMethods:
    """Mixin of Client: moving data between workers, retiring workers."""

    def _cluster_op(self: Client, action: str, keys: Any = None, workers: Any = None, n: Any = None,
                    close: bool = True, remove: bool = True) -> Any:  # fmt: skip
        return self._coordinate(lambda now, sid, rid: ClusterOpRequest(now, sid, self.id, rid, action, keys, workers, n,
                                                                      close, remove))  # fmt: skip

    def _keys_in_memory(self: Client, futures: Any, what: str) -> tuple[str, ...]:
        """Wait for ``futures``; their keys, or the error of one that cannot be moved."""
        fs = list(dict.fromkeys(iter_futures(futures)))
        for f in fs:
            if f.client is not self:
                raise ValueError(f"cannot {what} {f.key!r}: the future belongs to another client")
        for f in fs:
            if f.cancelled():
                raise CancelledError(f"cannot {what} {f.key!r}: it was cancelled")
        wait(fs)
        for f in fs:
            if f.status == "cancelled":
                raise CancelledError(f"cannot {what} {f.key!r}: it was cancelled")
            if f.status == "error":
                raise ValueError(f"cannot {what} {f.key!r}: the task failed, there is no data to copy")
        return tuple(f.key for f in fs)

    @awaitable
    def replicate(self: Client, futures: Any, n: int | None = None, workers: Any = None,
                  branching_factor: int = 2, asynchronous: Any = None) -> None:  # fmt: skip
        """Keep ``n`` copies of each future's data on the workers of ``workers``
        (addresses or names; all workers if None); ``n=None``: one on every
        worker of that pool.  Copies beyond ``n`` in the pool are dropped
        (never the last one).

        Waits for the futures, then returns once the new copies are in place
        (a worker that dies meanwhile is not replaced: the call still
        returns, with fewer copies).  Raises ``CancelledError`` for a
        cancelled or released future and ``ValueError`` for an unknown
        worker or ``n < 1``; then nothing changes.  ``branching_factor`` is
        accepted for dask's signature: workers fetch from every holder.
        """
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            raise TypeError(f"n= must be an int >= 1 or None, got {n!r}")
        if n is not None and n < 1:
            raise ValueError(f"n= must be >= 1 (replicate cannot delete data), got {n!r}")
        if not isinstance(branching_factor, int) or isinstance(branching_factor, bool) or branching_factor < 1:
            raise ValueError(f"branching_factor= must be an int >= 1, got {branching_factor!r}")
        pool = normalize_workers(workers)
        self._check_running()
        keys = self._keys_in_memory(futures, "replicate")
        if keys:
            self._cluster_op("replicate", keys, pool, n)

    @awaitable
    def rebalance(self: Client, futures: Any = None, workers: Any = None, asynchronous: Any = None,
                  **kwargs: Any) -> None:  # fmt: skip
        """Even out the bytes each worker of ``workers`` (all if None) holds, counting
        the data of ``futures`` (every key in memory if None).

        dask's simple algorithm: from workers above the mean to the least
        loaded worker below it, biggest keys first; the sender's copy is
        dropped only once the receiver has the data (never the last copy).
        Returns once the moves are done.  ``ValueError`` for an unknown worker.
        """
        pool = normalize_workers(workers)
        self._check_running()
        keys = None if futures is None else self._keys_in_memory(futures, "rebalance")
        self._cluster_op("rebalance", keys, pool)

    @awaitable
    def retire_workers(self: Client, workers: Any = None, close_workers: bool = True, remove: bool = True,
                       asynchronous: Any = None, **kwargs: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
        """Retire workers gracefully: first copy every key they hold that no other
        worker has to the least loaded remaining workers (nothing is lost), then
        take them out of the scheduler (``remove``; their running tasks start
        over elsewhere, not counted as failures) and, with ``close_workers``,
        stop them for good (a nanny does not restart a retired worker; a
        simulated ``WorkerHost`` stays down).  Returns ``{address: info}`` of
        the retired workers.

        ``workers``: addresses or names; None: the idle ones (nothing
        processing), always keeping one worker.  Retiring workers that hold
        keys no remaining worker could take (retiring the last workers) is
        **refused** with ``ValueError``, and no worker is retired; so is an
        unknown worker.  ``remove=False`` and ``close_workers=False``: the data
        is moved but the workers stay.  ``close_workers=False`` alone: the
        workers leave the scheduler but live on; told they are unknown at their
        next heartbeat, they close (a nanny, or the simulator, then starts a
        fresh, empty one that joins again).
        """
        if not isinstance(close_workers, bool) or not isinstance(remove, bool):
            raise TypeError("close_workers= and remove= must be True or False")
        pool = normalize_workers(workers)
        if workers is not None and pool is None:
            return {}
        self._check_running()
        return self._cluster_op("retire", None, pool, None, close_workers, remove)

    @awaitable
    def restart(self: Client, timeout: float | None = 120.0, wait_for_workers: bool = True,
                asynchronous: Any = None, **kwargs: Any) -> None:  # fmt: skip
        """Restart every worker of the cluster, as dask's: running work stops, all data
        is deleted and every future of every client becomes cancelled
        (``CancelledError``, "scheduler-restart"); tasks interrupted this way are
        not counted as failures.  Worker processes are started again by their
        nannies (threads of a ``LocalCluster``: new in-process workers; a
        simulated worker comes back empty ``restart_delay`` later).

        With ``wait_for_workers`` returns once as many workers as before are back,
        raising ``twofold.TimeoutError`` if they are not within ``timeout``
        seconds (virtual seconds on the simulator; None: no limit).  A restart
        asked while another still waits for its workers is refused
        (``RuntimeError``).
        """
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):  # fmt: skip
            raise ValueError(f"timeout= must be a number >= 0 or None, got {timeout!r}")
        if not isinstance(wait_for_workers, bool):
            raise TypeError(f"wait_for_workers= must be True or False, got {wait_for_workers!r}")
        self._check_running()
        self._coordinate(lambda now, sid, rid: RestartRequest(now, sid, self.id, rid, "restart",
                                                              None if timeout is None else float(timeout),
                                                              wait_for_workers))  # fmt: skip

    @awaitable
    def shutdown(self: Client) -> None:
        """Shut the cluster down, then close this client.

        A cluster object (``LocalCluster``, ``SimCluster``) closes; with a client
        of a remote scheduler (``Client("tcp://...")``) the scheduler closes its
        workers for good (nannies do not restart them) and stops (the
        ``twofold scheduler`` process exits).  Other clients of the cluster see
        their waits end with ``CommClosedError``.
        """
        cluster = self.cluster
        try:
            if cluster is not None:
                cluster.close()
            elif self.status == "running":
                try:
                    self._coordinate(lambda now, sid, rid: RestartRequest(now, sid, self.id, rid, "shutdown"))
                except CommClosedError:
                    pass  # the scheduler closed the connection before its answer came: it is stopping
        finally:
            self.close()
