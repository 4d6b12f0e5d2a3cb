"""Connections between twofold processes: batched message frames over asyncio streams.

A :class:`Comm` is one connection after a successful handshake.  The rules:

* **Batching without timers.**  ``send`` only queues; the first send after a
  flush schedules the next flush with ``loop.call_soon``, so everything sent
  while the event loop is busy (a whole incoming batch handled, 10,000
  ``submit`` calls) leaves in one frame as soon as the loop is free.  Idle,
  a message leaves within the same loop iteration: no fixed window to wait
  out (dask's 2-10 ms batching timers are most of its latency, see
  PERFORMANCE.md).  A batch that reaches ``max_batch_messages`` is flushed
  at once, so a huge burst is pipelined rather than held back.
* **Payloads ride along in order.**  ``send(msgs, payloads)`` appends to the
  pending messages and payload frames alike; ``recv`` returns a frame's
  messages and the concatenation, in send order, of the payloads of the sends
  it holds.  Messages that own payloads say how many frames they own (a
  :mod:`twofold.serialize` header carries its frame count), so a receiver
  walks the messages in order and takes frames as it goes.
* **Handshake first.**  The listening side sends a :class:`Hello` (protocol
  version, kind, name, a fresh nonce); the connecting side answers with its
  own and, when it holds a shared secret, an HMAC-SHA256 proof over both
  nonces; the listening side checks it with ``hmac.compare_digest`` and
  answers with a :class:`Verdict` carrying its own proof.  A side holding a
  secret requires the peer to prove it (both ways: a client never talks to an
  impostor server).  Until then only small handshake frames are read (no
  payloads, 4 KiB): a peer that fails is dropped before any batch is read,
  with a logged reason, and the handler never sees it.
* **Errors close only their connection.**  A bad frame, a lost peer or a
  batch that cannot be encoded closes that :class:`Comm` with a reason (logged
  once; ``recv`` and ``send`` then raise :class:`CommClosedError` carrying
  it).  Nothing is shared between connections but the listener.

Not thread-safe: call ``send``/``recv`` from the event loop's thread (task
threads go through ``loop.call_soon_threadsafe``).  Loopback is the default
address; :func:`listen` refuses any other without a secret or TLS.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from twofold.errors import CommClosedError, ProtocolError
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.messages import Message
from twofold.runtime.framing import (
    BATCH,
    DEFAULT_LIMITS,
    HANDSHAKE,
    HANDSHAKE_LIMITS,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameLimits,
    Hello,
    Verdict,
    as_payload,
    decode_batch,
    decode_handshake,
    encode_batch,
    encode_handshake,
    frame_parts,
    handshake_proof,
    read_frame,
    write_frame,
)

__all__ = [
    "Comm",
    "CommStats",
    "HandshakeError",
    "Listener",
    "ListenerStats",
    "connect",
    "format_address",
    "is_loopback",
    "listen",
    "parse_address",
]

logger = logging.getLogger("twofold.runtime.comm")

#: StreamReader buffer limit: reading pauses past twice this; 1 MiB measured
#: faster than asyncio's 64 KiB default for large payloads.
READ_LIMIT = 1 << 20
#: A batch this long is flushed at once instead of at the end of the loop iteration.
MAX_BATCH_MESSAGES = 10_000

Handler = Callable[["Comm"], Awaitable[None]]


class HandshakeError(ProtocolError):
    """The peer was refused, or refused us, during the handshake (the reason says which and why)."""


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------


def parse_address(address: str) -> tuple[str, str, int]:
    """``"tcp://host:port"`` (or ``tls://``, or bare ``host:port``) as ``(scheme, host, port)``."""
    if not isinstance(address, str):
        raise TypeError(f"an address is a string like 'tcp://127.0.0.1:8786', got {type(address).__name__}")
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"unsupported scheme {scheme!r} in {address!r} (use tcp:// or tls://)")
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"malformed address {address!r}: expected '{scheme}://host:port'")
    return scheme, host, int(port)


def format_address(host: str, port: int, scheme: str = "tcp") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs; any other name counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _sockname(writer: asyncio.StreamWriter, which: str, scheme: str) -> str:
    name = writer.get_extra_info(which)
    if isinstance(name, tuple) and len(name) >= 2:
        return format_address(str(name[0]), int(name[1]), scheme)
    return f"{scheme}://{name}"


def _as_secret(secret: bytes | str | None) -> bytes | None:
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"a shared secret is bytes or str, got {type(secret).__name__}")
    if not secret:
        raise ValueError("an empty shared secret protects nothing: pass None for no secret")
    return bytes(secret)


# --------------------------------------------------------------------------
# Comm
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommStats:
    """A snapshot of one connection's counters."""

    frames_sent: int
    messages_sent: int
    payload_bytes_sent: int
    frames_received: int
    messages_received: int
    payload_bytes_received: int


class Comm:
    """One handshaken connection: ``send`` (batched), ``recv``, ``close``.

    Made by :func:`connect` and :func:`listen`, not directly.  ``peer`` is
    the peer's :class:`Hello` (``peer.kind``, ``peer.name``).
    """

    __slots__ = (
        "_reader", "_writer", "_loop", "_limits", "_max_batch", "local", "peer",
        "local_address", "peer_address", "_pending", "_pending_payloads", "_pending_nbytes",
        "_flush_handle", "_close_reason", "_receiving",
        "_frames_sent", "_messages_sent", "_payload_bytes_sent",
        "_frames_received", "_messages_received", "_payload_bytes_received",
    )  # fmt: skip

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        local: Hello,
        peer: Hello,
        scheme: str = "tcp",
        limits: FrameLimits = DEFAULT_LIMITS,
        max_batch_messages: int = MAX_BATCH_MESSAGES,
    ):
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._limits = limits
        self._max_batch = max_batch_messages
        self.local = local
        self.peer = peer
        self.local_address = _sockname(writer, "sockname", scheme)
        self.peer_address = _sockname(writer, "peername", scheme)
        self._pending: list = []
        self._pending_payloads: list = []
        self._pending_nbytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._close_reason: str | None = None
        self._receiving = False
        self._frames_sent = self._messages_sent = self._payload_bytes_sent = 0
        self._frames_received = self._messages_received = self._payload_bytes_received = 0

    def __repr__(self) -> str:
        state = "open" if self._close_reason is None else f"closed: {self._close_reason}"
        return f"<Comm {self.local_address} -> {self.peer_address} ({self.peer.kind} {self.peer.name!r}), {state}>"

    @property
    def closed(self) -> bool:
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    def stats(self) -> CommStats:
        return CommStats(
            self._frames_sent, self._messages_sent, self._payload_bytes_sent,
            self._frames_received, self._messages_received, self._payload_bytes_received,
        )  # fmt: skip

    def _describe(self) -> str:
        who = f"{self.peer.kind} {self.peer.name!r}" if self.peer.name else self.peer.kind
        return f"{self.peer_address} ({who})"

    def _closed_error(self) -> CommClosedError:
        return CommClosedError(f"connection to {self._describe()} is closed: {self._close_reason}")

    # -- sending -------------------------------------------------------------

    def send(self, msgs: Message | Iterable[Message], payloads: Iterable = ()) -> None:
        """Queue messages (and payload frames) for the peer; they leave when the loop is free.

        Raises at once (nothing queued) for a non-message, a payload that is
        not a contiguous buffer or over the frame limits, or a closed Comm.
        Payload buffers are not copied: leave them unchanged until sent
        (``await drain()`` to know).
        """
        if self._close_reason is not None:
            raise self._closed_error()
        if isinstance(msgs, Message):
            msgs = (msgs,)
        else:
            if type(msgs) is not list and type(msgs) is not tuple:
                msgs = list(msgs)
            for msg in msgs:
                if not isinstance(msg, Message):
                    raise TypeError(f"Comm.send takes twofold messages, got a {type(msg).__name__}")
        if payloads:
            self._queue_payloads(payloads)
        self._pending.extend(msgs)
        if len(self._pending) >= self._max_batch:
            self._flush_now()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _queue_payloads(self, payloads: Iterable) -> None:
        limits = self._limits
        frames = [as_payload(p) for p in payloads]
        nbytes = 0
        for frame in frames:
            if len(frame) > limits.max_frame_bytes:
                raise FrameError(f"payload frame of {len(frame)} bytes is over the {limits.max_frame_bytes}-byte limit")
            nbytes += len(frame)
        if len(frames) > limits.max_frames or nbytes > limits.max_total_bytes:
            raise FrameError(f"{len(frames)} payload frames of {nbytes} bytes in all are over the frame limits")
        pending = self._pending_payloads
        over = len(pending) + len(frames) > limits.max_frames or self._pending_nbytes + nbytes > limits.max_total_bytes
        if pending and over:
            self._flush_now()  # what is queued goes first, in a frame of its own
            pending = self._pending_payloads
        pending.extend(frames)
        self._pending_nbytes += nbytes

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        """Write everything queued as one frame (a ``call_soon`` callback: never raises)."""
        self._flush_handle = None
        msgs, payloads = self._pending, self._pending_payloads
        if not msgs and not payloads:
            return
        self._pending, self._pending_payloads, self._pending_nbytes = [], [], 0
        if self._close_reason is not None:
            return
        if self._writer.transport.is_closing():
            self._fail("connection lost", logging.INFO)
            return
        try:
            header = encode_batch(msgs)
        except Exception as exc:
            self._fail(_encode_failure(msgs, exc), logging.ERROR)
            return
        try:
            parts = frame_parts(BATCH, header, payloads, self._limits)
        except FrameError as exc:
            self._fail(f"cannot send a batch of {len(msgs)} messages: {exc.reason}", logging.ERROR)
            return
        write_frame(self._writer, parts)
        self._frames_sent += 1
        self._messages_sent += len(msgs)
        if payloads:
            self._payload_bytes_sent += sum(len(p) for p in payloads)

    async def drain(self) -> None:
        """Flush now and wait until the transport's buffer is low (back-pressure for big payloads)."""
        self._flush_now()
        if self._close_reason is not None:
            raise self._closed_error()
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            self._fail(f"connection lost: {exc}", logging.INFO)
            raise self._closed_error() from exc

    # -- receiving -----------------------------------------------------------

    async def recv(self) -> tuple[tuple[Message, ...], list]:
        """The next frame's messages and payload frames (``bytearray`` each).

        Raises :class:`CommClosedError` once the connection is closed, by
        either side or because the peer sent a bad frame (the reason says).
        """
        if self._close_reason is not None:
            raise self._closed_error()
        if self._receiving:
            raise RuntimeError("another task is already waiting in recv() on this Comm")
        self._receiving = True
        try:
            frame = await read_frame(self._reader, self._limits, BATCH)
            msgs = decode_batch(frame.header) if frame is not None else ()
        except FrameError as exc:
            if self._close_reason is None:
                self._fail(f"bad frame: {exc.reason}", logging.WARNING)
            raise self._closed_error() from exc
        except OSError as exc:
            if self._close_reason is None:
                self._fail(f"connection lost: {exc!r}", logging.INFO)
            raise self._closed_error() from exc
        finally:
            self._receiving = False
        if frame is None:
            if self._close_reason is None:
                self._close_reason = "closed by the peer"
                logger.debug("connection to %s closed by the peer", self._describe())
                self._writer.close()
            raise self._closed_error()
        self._frames_received += 1
        self._messages_received += len(msgs)
        if frame.payloads:
            self._payload_bytes_received += sum(len(p) for p in frame.payloads)
        return msgs, frame.payloads

    # -- closing -------------------------------------------------------------

    def _fail(self, reason: str, level: int) -> None:
        if self._close_reason is not None:
            return
        self._close_reason = reason
        logger.log(level, "closing connection to %s: %s", self._describe(), reason)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending, self._pending_payloads, self._pending_nbytes = [], [], 0
        self._writer.transport.abort()

    def abort(self, reason: str = "aborted") -> None:
        """Close at once, dropping anything not yet written."""
        self._fail(reason, logging.DEBUG)

    async def close(self, reason: str = "closed", timeout: float = 5.0) -> None:
        """Send what is queued, then close; idempotent (the first reason stays)."""
        if self._close_reason is None:
            self._flush_now()
            if self._close_reason is None:
                self._close_reason = reason
                logger.debug("closing connection to %s: %s", self._describe(), reason)
                self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout)
        except (OSError, RuntimeError, asyncio.TimeoutError):
            self._writer.transport.abort()


def _encode_failure(msgs: list, exc: Exception) -> str:
    """Name the first message that does not encode (a driver bug, not a peer's)."""
    for msg in msgs:
        try:
            encode_batch([msg])
        except Exception as inner:
            return f"cannot encode {msg.op} (stimulus {msg.stimulus_id!r}): {type(inner).__name__}: {inner}"
    return f"cannot encode a batch of {len(msgs)} messages: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------


def _write_record(writer: asyncio.StreamWriter, record: Hello | Verdict) -> None:
    write_frame(writer, frame_parts(HANDSHAKE, encode_handshake(record), [], HANDSHAKE_LIMITS))


async def _read_record(reader: asyncio.StreamReader, expect: type) -> Hello | Verdict | None:
    frame = await read_frame(reader, HANDSHAKE_LIMITS, HANDSHAKE)
    return None if frame is None else decode_handshake(frame.header, expect)


async def _client_handshake(
    reader, writer, local_kind: str, name: str, secret: bytes | None, address: str
) -> tuple[Hello, Hello]:
    """(our Hello, the listener's Hello) once both sides are satisfied; else HandshakeError."""
    try:
        server = await _read_record(reader, Hello)
        if server is None:
            raise HandshakeError(f"{address} closed the connection before saying hello")
        if server.protocol != PROTOCOL_VERSION:
            raise HandshakeError(f"{address} speaks protocol {server.protocol}, this side {PROTOCOL_VERSION}")
        if secret is not None and not server.secret:
            raise HandshakeError(
                f"a shared secret is configured here but {address} ({server.kind}) does not use one,"
                " so it cannot prove it"
            )
        nonce = os.urandom(NONCE_BYTES)
        proof = handshake_proof(secret, "client", server.nonce, nonce) if secret is not None else b""
        local = Hello(PROTOCOL_VERSION, local_kind, name, nonce, secret is not None, proof)
        _write_record(writer, local)
        verdict = await _read_record(reader, Verdict)
    except FrameError as exc:
        raise HandshakeError(f"handshake with {address} failed: {exc.reason}") from None
    if verdict is None:
        raise HandshakeError(f"{address} closed the connection during the handshake")
    if not verdict.ok:
        raise HandshakeError(f"{address} refused the connection: {verdict.reason}")
    expected = handshake_proof(secret, "server", server.nonce, nonce) if secret is not None else b""
    if secret is not None and not hmac.compare_digest(verdict.proof, expected):
        raise HandshakeError(f"{address} did not prove the shared secret")
    return local, server


async def _server_handshake(reader, writer, local: Hello, secret: bytes | None) -> Hello:
    """The peer's Hello once it passed; else a refusing Verdict is sent and HandshakeError raised."""
    _write_record(writer, local)
    try:
        client = await _read_record(reader, Hello)
    except FrameError as exc:
        _refuse(writer, exc.reason)
        raise HandshakeError(exc.reason) from None
    if client is None:
        raise HandshakeError("the peer closed the connection before saying hello")
    reason = ""
    if client.protocol != PROTOCOL_VERSION:
        reason = f"protocol {client.protocol} is not supported (this side speaks {PROTOCOL_VERSION})"
    elif secret is not None and not client.proof:
        reason = "a shared secret is required"
    elif secret is not None and not hmac.compare_digest(
        client.proof, handshake_proof(secret, "client", local.nonce, client.nonce)
    ):
        reason = "wrong shared secret"
    if reason:
        _refuse(writer, reason)
        raise HandshakeError(reason)
    proof = handshake_proof(secret, "server", local.nonce, client.nonce) if secret is not None else b""
    _write_record(writer, Verdict(True, "", proof))
    return client


def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    if not writer.transport.is_closing():
        _write_record(writer, Verdict(False, reason[:200], b""))


# --------------------------------------------------------------------------
# Connecting and listening
# --------------------------------------------------------------------------


async def connect(
    address: str,
    *,
    kind: str = "client",
    name: str = "",
    secret: bytes | str | None = None,
    ssl=None,
    limits: FrameLimits = DEFAULT_LIMITS,
    timeout: float = 10.0,
    expect_kind: str | None = None,
    max_batch_messages: int = MAX_BATCH_MESSAGES,
) -> Comm:
    """Connect to ``tcp://host:port`` and handshake; a :class:`Comm` once accepted.

    Raises :class:`CommClosedError` (an ``OSError``) when the address cannot
    be reached, :class:`HandshakeError` when either side refuses (wrong or
    missing secret, other protocol, ``expect_kind`` not met), and
    :class:`twofold.errors.TimeoutError` past ``timeout`` seconds.
    """
    scheme, host, port = parse_address(address)
    if scheme == "tls" and ssl is None:
        raise ValueError(f"{address} is a tls:// address: pass ssl=<an ssl.SSLContext>")
    secret = _as_secret(secret)

    async def attempt() -> Comm:
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl, limit=READ_LIMIT)
        except OSError as exc:
            raise CommClosedError(f"cannot connect to {address}: {exc}") from exc
        try:
            local, peer = await _client_handshake(reader, writer, kind, name, secret, address)
            if expect_kind is not None and peer.kind != expect_kind:
                raise HandshakeError(f"expected a {expect_kind} at {address}, found a {peer.kind} ({peer.name!r})")
        except BaseException:
            writer.transport.abort()
            raise
        return Comm(
            reader, writer, local=local, peer=peer, scheme=scheme, limits=limits, max_batch_messages=max_batch_messages
        )

    try:
        return await asyncio.wait_for(attempt(), timeout)
    except asyncio.TimeoutError:
        raise TwofoldTimeoutError(f"no connection to {address} within {timeout} s (connect and handshake)") from None


@dataclass(frozen=True, slots=True)
class ListenerStats:
    """How many peers passed the handshake, how many were refused, how many are connected now."""

    accepted: int
    refused: int
    open: int


class Listener:
    """Accepts connections, handshakes them, and runs ``handler(comm)`` for each (see :func:`listen`)."""

    def __init__(self, handler: Handler, *, kind: str, name: str, secret: bytes | None, scheme: str,
                 limits: FrameLimits, handshake_timeout: float, max_batch_messages: int):  # fmt: skip
        self._handler = handler
        self._kind = kind
        self._name = name
        self._secret = secret
        self._scheme = scheme
        self._limits = limits
        self._handshake_timeout = handshake_timeout
        self._max_batch = max_batch_messages
        self._server: asyncio.base_events.Server | None = None
        self._comms: set[Comm] = set()
        self._handshaking: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._accepted = 0
        self._refused = 0
        self.address = ""

    def __repr__(self) -> str:
        return f"<Listener {self.address} ({self._kind}), {len(self._comms)} open>"

    def stats(self) -> ListenerStats:
        return ListenerStats(self._accepted, self._refused, len(self._comms))

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        where = _sockname(writer, "peername", self._scheme)
        local = Hello(PROTOCOL_VERSION, self._kind, self._name, os.urandom(NONCE_BYTES), self._secret is not None)
        self._handshaking.add(writer)
        try:
            handshake = _server_handshake(reader, writer, local, self._secret)
            peer = await asyncio.wait_for(handshake, self._handshake_timeout)
        except Exception as exc:
            self._refused += 1
            if isinstance(exc, asyncio.TimeoutError):
                reason, level = f"no handshake within {self._handshake_timeout} s", logging.WARNING
                _refuse(writer, reason)
            elif isinstance(exc, HandshakeError):
                reason = str(exc)
                level = logging.INFO if "before saying hello" in reason else logging.WARNING
            elif isinstance(exc, OSError):
                reason, level = f"connection lost: {exc!r}", logging.INFO
            else:  # a bug here must not take the listener down
                logger.exception("handshake with %s failed unexpectedly", where)
                reason, level = f"{type(exc).__name__}: {exc}", logging.ERROR
            logger.log(level, "refused connection from %s: %s", where, reason)
            writer.close()  # the Verdict, if any, is flushed first
            return
        finally:
            self._handshaking.discard(writer)
        comm = Comm(reader, writer, local=local, peer=peer, scheme=self._scheme, limits=self._limits,
                    max_batch_messages=self._max_batch)  # fmt: skip
        self._accepted += 1
        self._comms.add(comm)
        logger.debug("accepted %r", comm)
        try:
            await self._handler(comm)
        except CommClosedError as exc:
            logger.debug("handler for %s ended: %s", where, exc)
        except Exception as exc:
            logger.exception("handler for connection from %s failed", where)
            comm.abort(f"handler failed: {type(exc).__name__}: {exc}")
        finally:
            self._comms.discard(comm)
            await comm.close("handler returned")

    async def start(self, host: str, port: int, ssl) -> None:
        self._server = await asyncio.start_server(self._on_connection, host, port, ssl=ssl, limit=READ_LIMIT)
        sockname = self._server.sockets[0].getsockname()
        self.address = format_address(str(sockname[0]), int(sockname[1]), self._scheme)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, and wait (up to ``timeout``) for the handlers."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._handshaking):
            writer.transport.abort()
        for comm in list(self._comms):
            comm.abort("listener closed")
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await self._server.wait_closed()

    async def __aenter__(self) -> "Listener":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()


async def listen(
    host: str = "127.0.0.1",
    port: int = 0,
    handler: Handler | None = None,
    *,
    kind: str = "scheduler",
    name: str = "",
    secret: bytes | str | None = None,
    ssl=None,
    limits: FrameLimits = DEFAULT_LIMITS,
    handshake_timeout: float = 10.0,
    max_batch_messages: int = MAX_BATCH_MESSAGES,
) -> Listener:
    """Listen on ``host:port`` (port 0: any free one; ``listener.address`` says which).

    Each connection that passes the handshake gets ``await handler(comm)``;
    the comm is closed when the handler returns or raises.  Listening on an
    address other than loopback requires ``secret`` or ``ssl``.
    """
    if handler is None:
        raise TypeError("listen() needs a handler: an async function taking a Comm")
    secret = _as_secret(secret)
    if not is_loopback(host) and secret is None and ssl is None:
        raise ValueError(
            f"listening on {host!r}, which is not loopback, requires a shared secret or TLS: pass secret=... or ssl=..."
        )
    listener = Listener(
        handler, kind=kind, name=name, secret=secret, scheme="tls" if ssl is not None else "tcp",
        limits=limits, handshake_timeout=handshake_timeout, max_batch_messages=max_batch_messages,
    )  # fmt: skip
    await listener.start(host, port, ssl)
    return listener
