"""Pub/Sub's direct path on the socket runtime: published values from worker to worker.

Sending side (:func:`post`, for ``RuntimeBackend.topic_post``): a Pub in a
task hands each value for the subscribers on one worker to its backend's
:class:`_Sender`, from the task's thread, without waiting.  When that worker
runs in this process the values go straight into its Sub objects (nothing
is sent; the objects are still msgpack copies, as over the wire).  Otherwise
the sender queues them and wakes the event loop once per burst; on the loop,
consecutive values for the same subscribers of one worker become one
:class:`~twofold.runtime.protocol.TopicPost` (of up to ``POST_BYTES``) on
that worker's data port, over the backend's
:class:`~twofold.runtime.rpc.ConnectionPool` connection (the one fetches and
actor calls use; ``Comm`` batches what is sent in one loop iteration into
one frame).  Posts to one worker leave in the
order they were made, also while the connection opens.  A worker that
cannot be reached loses what was sent to it, and for ``RETRY`` seconds
after a failed connection what is sent next is dropped at once: a dead
subscriber never holds the publisher up (the scheduler soon tells the Pub
it is gone).

Receiving side (:func:`receive`, from ``WorkerServer._serve_data``): the
values go into the Subs of this process that the post names
(``twofold.client.pubsub.deliver``), and their clients' waits look again.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

from twofold.errors import CommClosedError
from twofold.runtime.protocol import TopicPost

logger = logging.getLogger("twofold.runtime.topics")

#: seconds during which posts to a worker that refused a connection are dropped without trying again
RETRY = 1.0
#: the most payload bytes one TopicPost gathers (values themselves are never split)
POST_BYTES = 1 << 20

_senders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_senders_lock = threading.Lock()


def _pubsub():
    from twofold.client import pubsub  # (not at import: a worker that never sees a topic does not load it)

    return pubsub


def _wake(subs: list) -> None:
    """The clients of Subs that just took values: their waits look again."""
    seen: list = []
    for sub in subs:
        backend = sub._bound._backend
        if backend not in seen:
            seen.append(backend)
            wake = getattr(backend, "_wake", None)
            if wake is not None:
                wake()


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


def post(backend: Any, worker: str, name: str, subs: tuple, payloads: tuple) -> None:
    """``RuntimeBackend.topic_post``: see the module docstring."""
    server = _local_workers().get(worker)
    if server is not None and not server._closing:  # in this process: into its Subs, here and now
        took = _pubsub().deliver(subs, payloads)
        if took:
            _wake(took)
        return
    last = _last
    if last[0]() is backend:  # (the common case: one publishing client per process)
        sender = last[1]
    else:
        sender = _sender_of(backend)
    sender.post(worker, name, subs, payloads)


def _local_workers() -> dict:
    """The workers running in this process, by address (``twofold.runtime.worker._LOCAL``)."""
    global _workers
    if _workers is None:
        from twofold.runtime.worker import _LOCAL  # (not at import: worker.py imports this module)

        _workers = _LOCAL
    return _workers


_workers: dict | None = None
#: (weak reference to the backend, its sender) of the last post
_last: tuple = (lambda: None, None)


def _sender_of(backend: Any) -> _Sender:
    global _last
    with _senders_lock:
        sender = _senders.get(backend)
        if sender is None:
            sender = _senders[backend] = _Sender(backend)
        _last = (weakref.ref(backend), sender)
    return sender


class _Sender:
    """One backend's direct posts: queued from any thread, sent from its loop."""

    def __init__(self, backend: Any):
        self._loop = backend._loop  # (not the backend itself: the registry holds senders weakly by backend)
        self._pool = backend._pool
        self._queue: deque = deque()
        self._pending = False
        #: address -> the open connection to its data port
        self._comms: dict[str, Any] = {}
        #: address -> posts waiting for the connection being opened, in order
        self._connecting: dict[str, list] = {}
        #: address -> until when posts to it are dropped (it refused a connection)
        self._down: dict[str, float] = {}

    def post(self, worker: str, name: str, subs: tuple, payloads: tuple) -> None:
        """Any thread."""
        self._queue.append((worker, name, subs, payloads))
        if not self._pending:
            self._pending = True
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop closed: this process is going away
                self._queue.clear()

    def _flush(self) -> None:
        """On the loop: everything queued, consecutive values for the same subscribers of a worker as one post."""
        self._pending = False
        queue = self._queue
        batches: dict[str, list] = {}
        while queue:
            worker, name, subs, payloads = queue.popleft()
            size = sum(map(len, payloads))
            runs = batches.get(worker)
            if runs is None:
                batches[worker] = [[name, subs, list(payloads), size]]
                continue
            last = runs[-1]
            if (last[1] is subs or (last[1] == subs and last[0] == name)) and last[3] + size <= POST_BYTES:
                last[2].extend(payloads)
                last[3] += size
            else:
                runs.append([name, subs, list(payloads), size])
        for worker, runs in batches.items():
            msgs = [TopicPost(0.0, "", name, subs, tuple(values)) for name, subs, values, _ in runs]
            comm = self._comms.get(worker)
            if comm is not None and not comm.closed and worker not in self._connecting:
                try:
                    comm.send(msgs)
                    continue
                except CommClosedError:
                    pass
            self._later(worker, msgs)

    def _later(self, worker: str, msgs: list) -> None:
        waiting = self._connecting.get(worker)
        if waiting is not None:
            waiting.extend(msgs)
            return
        until = self._down.get(worker)
        if until is not None:
            if time.monotonic() < until:
                return  # dropped: it refused us a moment ago
            del self._down[worker]
        if self._pool._closed:
            return
        self._comms.pop(worker, None)
        self._connecting[worker] = list(msgs)
        self._loop.create_task(self._connect(worker))

    async def _connect(self, worker: str) -> None:
        try:
            peer = await self._pool._peer(worker)
        except Exception as exc:
            lost = self._connecting.pop(worker, ())
            self._down[worker] = time.monotonic() + RETRY
            logger.info("dropping %d posts to topic subscribers on %s: %s", len(lost), worker, exc)
            return
        msgs = self._connecting.pop(worker, ())
        comm = self._comms[worker] = peer.comm
        try:  # (no await since the pop: later posts queue behind these)
            comm.send(msgs)
        except CommClosedError as exc:
            logger.info("dropping %d posts to topic subscribers on %s: %s", len(msgs), worker, exc)


# --------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------


def receive(msg: TopicPost) -> None:
    """On the worker's loop: a post from a peer's Pub, into this process's Subs."""
    subs, payloads = msg.subs, msg.payloads
    if (type(subs) is not tuple or type(payloads) is not tuple or not all(type(s) is str for s in subs)
            or not all(type(p) is bytes for p in payloads)):  # fmt: skip
        logger.warning("dropping a malformed TopicPost (topic %r)", msg.name)
        return
    try:
        took = _pubsub().deliver(subs, payloads)
    except Exception as exc:  # values that are not msgpack: the sender's bug, not ours
        logger.warning("dropping a TopicPost on topic %r: %s: %s", msg.name, type(exc).__name__, exc)
        return
    if took:
        _wake(took)
