"""Requests to workers' data ports over pooled connections.

One connection per remote worker, opened on first use and kept; many
requests share it at once (each carries a ``request_id``; a reader task
hands every reply to the request waiting for it).  A connection that breaks
fails every request waiting on it with :class:`CommClosedError` and is
dropped from the pool, so the next request reconnects.

:meth:`ConnectionPool.request` is awaited; :meth:`ConnectionPool.post`
sends without waiting and calls back with the reply, and keeps the order of
posts to one address even while the connection is being opened (actor
calls rely on it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
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
        #: posts waiting for their address's connection, in order
        self._posting: dict[str, deque] = {}
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

    def post(self, address: str, msg: Message, frames: list, done: Callable) -> None:
        """On the loop: send ``msg`` now (or once connected) and return; later
        ``done((reply, reply_frames), None)`` or ``done(None, error)`` runs on the loop.

        Posts to one address leave in the order they were made, also while
        the connection opens.
        """
        queue = self._posting.get(address)
        if queue is not None:
            queue.append((msg, frames, done))
            return
        peer = self._peers.get(address)
        if peer is not None and not peer.comm.closed and not self._closed:
            self._send_post(peer, msg, frames, done)
            return
        if self._closed:
            done(None, CommClosedError("connection pool is closed"))
            return
        self._posting[address] = deque([(msg, frames, done)])
        asyncio.get_running_loop().create_task(self._connect_posts(address))

    async def _connect_posts(self, address: str) -> None:
        try:
            peer = await self._peer(address)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else CommClosedError(f"connecting to {address} was cancelled")
            for _, _, done in self._posting.pop(address, ()):
                done(None, error)
            if not isinstance(exc, Exception):
                raise
            return
        for msg, frames, done in self._posting.pop(address, ()):  # no await in between: order holds
            self._send_post(peer, msg, frames, done)

    def _send_post(self, peer: _Peer, msg: Message, frames: list, done: Callable) -> None:
        waiter = asyncio.get_running_loop().create_future()

        def answered(fut: asyncio.Future) -> None:
            if fut.cancelled():
                done(None, CommClosedError("the request was cancelled"))
            elif fut.exception() is not None:
                done(None, fut.exception())
            else:
                done(fut.result(), None)

        waiter.add_done_callback(answered)
        peer.waiting[msg.request_id] = waiter
        try:
            peer.comm.send(msg, frames)
        except Exception as exc:
            peer.waiting.pop(msg.request_id, None)
            waiter.set_exception(exc)

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
