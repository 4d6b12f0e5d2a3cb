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


__all__ = ["ClusterOpRequest", "RETIRE_REASON"]
