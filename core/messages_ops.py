"""Messages of the cluster operations clients ask of the scheduler: replicate, rebalance,
retire workers.

Part of the vocabulary of ``twofold.messages`` (registered with it).  One
request type with an ``action``, answered by one ``CoordinationReply`` once
the operation is done (the data has moved, the workers are gone): the
client blocks on that reply, it never polls.
"""

from __future__ import annotations

from twofold.messages import Message, message

#: the ``CloseWorker.reason`` of a retired worker: its driver stops it for good (no restart)
RETIRE_REASON = "retired (retire_workers)"


@message(by="client")
class ClusterOpRequest(Message):
    """``action``: "replicate" (``keys``, ``n``: copies, None: one per pool worker),
    "rebalance" (``keys``: None for every key in memory) or "retire" (``workers``:
    None for the idle ones; ``close``: close them; ``remove``: take them out of the
    scheduler).  ``workers`` is the pool (replicate, rebalance) or who retires."""

    client: str
    request_id: str
    action: str
    keys: tuple[str, ...] | None = None
    workers: tuple[str, ...] | None = None
    n: int | None = None
    close: bool = True
    remove: bool = True


#: the ``CloseWorker.reason`` of ``Client.restart``: its driver starts the worker again, empty
RESTART_REASON = "restarting (Client.restart)"
#: the ``CloseWorker.reason`` of ``Client.shutdown``: its driver stops it for good (no restart)
SHUTDOWN_REASON = "cluster shut down (Client.shutdown)"
#: the ``CancelledError`` message of the futures a restart dropped (as dask's)
RESTART_MESSAGE = "scheduler-restart: the scheduler restarted its workers; please re-run your work"


@message(by="client")
class RestartRequest(Message):
    """``action``: "restart" (every worker restarts, every task is released, every
    future cancelled; answered once ``wait_for_workers`` as many workers as before
    are back, or an error after ``timeout``) or "shutdown" (every worker closes for
    good, then the scheduler's driver stops the scheduler)."""

    client: str
    request_id: str
    action: str = "restart"
    timeout: float | None = None
    wait_for_workers: bool = True


@message(to="driver")
class StopScheduler(Message):
    """The scheduler's driver: stop the scheduler (``Client.shutdown``)."""

    reason: str


__all__ = ["ClusterOpRequest", "RETIRE_REASON", "RESTART_REASON", "SHUTDOWN_REASON", "RESTART_MESSAGE",
           "RestartRequest", "StopScheduler"]
