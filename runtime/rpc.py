"""Requests to workers' data ports over pooled connections.

One connection per remote worker, opened on first use and kept; many
requests share it at once (each carries a ``request_id``; a reader task
hands every reply to the request waiting for it).  A connection that breaks
fails every request waiting on it with :class:`CommClosedError` and is
dropped from the pool, so the next request reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

from twofold.errors import CommClosedError
from twofold.messages import Message
from twofold.runtime.comm import Comm, connect

logger = logging.getLogger("twofold.runtime.rpc")


class _Peer:
    __slots__ = ("comm", "waiting", "reader")

    def __init__(self, comm: Comm):
        self.comm = comm
        self.waiting: dict[int, asyncio.Future] = {}
        self.reader: asyncio.Task | None = None


class ConnectionPool:
    """Connections from this process to workers' data ports, by address."""

    def __init__(self, *, kind: str, name: str, secret: bytes | None = None,
                 ssl_for: Callable[[str], object] | None = None, timeout: float = 10.0):  # fmt: skip
        self._kind = kind
        self._name = name
        self._secret = secret
        self._ssl_for = ssl_for
        self._timeout = timeout
        self._peers: dict[str, _Peer] = {}
        self._connecting: dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def next_id(self) -> int:
        return next(self._ids)

    async def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is not None and not peer.comm.closed:
            return peer
        pending = self._connecting.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        pending = self._connecting[address] = loop.create_future()
        try:
            ssl = self._ssl_for(address) if self._ssl_for is not None else None
            comm = await connect(address, kind=self._kind, name=self._name, secret=self._secret, ssl=ssl,
                                 timeout=self._timeout, expect_kind="worker")  # fmt: skip
            peer = _Peer(comm)
            peer.reader = loop.create_task(self._read(address, peer))
            self._peers[address] = peer
            pending.set_result(peer)
            return peer
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._connecting[address]

    async def _read(self, address: str, peer: _Peer) -> None:
        comm = peer.comm
        try:
            while True:
                msgs, frames = await comm.recv()
                offset = 0
                for msg in msgs:
                    count = sum(h["count"] for h in getattr(msg, "headers", ()))
                    mine = frames[offset:offset + count]
                    offset += count
                    waiter = peer.waiting.pop(getattr(msg, "request_id", -1), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result((msg, mine))
        except CommClosedError as exc:
            error = exc
        except Exception as exc:  # a reply we cannot make sense of: drop the connection
            logger.warning("bad reply from %s: %s", address, exc)
            comm.abort(f"bad reply: {exc}")
            error = CommClosedError(f"connection to {address} dropped: {exc}")
        if self._peers.get(address) is peer:
            del self._peers[address]
        for waiter in peer.waiting.values():
            if not waiter.done():
                waiter.set_exception(error)
        peer.waiting.clear()

    async def request(self, address: str, msg: Message, frames: list = ()) -> tuple[Message, list]:
        """Send ``msg`` (with payload ``frames``) to ``address``; its reply and reply frames.

        ``msg.request_id`` must come from :meth:`next_id`.  Raises
        :class:`CommClosedError` when the worker cannot be reached or the
        connection breaks before the reply.
        """
        if self._closed:
            raise CommClosedError("connection pool is closed")
        peer = await self._peer(address)
        waiter = asyncio.get_running_loop().create_future()
        peer.waiting[msg.request_id] = waiter
        try:
            peer.comm.send(msg, frames)
        except Exception:
            peer.waiting.pop(msg.request_id, None)
            raise
        return await waiter

    def drop(self, address: str) -> None:
        """Forget the connection to a worker that left (its requests fail)."""
        peer = self._peers.pop(address, None)
        if peer is not None:
            peer.comm.abort("worker left")

    async def close(self) -> None:
        self._closed = True
        peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            peer.comm.abort("pool closed")
        for peer in peers:
            if peer.reader is not None:
                try:
                    await asyncio.wait_for(peer.reader, 1.0)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    pass
