"""Large payload frames read straight from the socket into their own buffer.

Through an ``asyncio.StreamReader`` every byte is copied three times after
the kernel's: into a 256 KiB ``bytes``, into the reader's buffer, out of it
into a ``bytes`` chunk, and then into the frame's buffer; 50 MB between two
workers took 1.4x as long as dask's, which reads with ``recv_into``.  For a
frame of at least :data:`DIRECT_MIN` bytes, :func:`fill` takes what the
reader already holds, then swaps the transport's protocol for a
``BufferedProtocol`` whose buffer *is* the rest of the frame (the kernel
writes into it: one copy), and swaps the reader's protocol back the moment
the frame is full.  It never asks for more than the frame's remaining bytes,
so whatever follows the frame arrives through the reader as before.

Plain TCP selector transports only (they support ``set_protocol`` with a
buffered protocol); anything else keeps the reader path.  This looks at the
reader's private ``_buffer``/``_transport``/``_paused`` (stable since 3.7).
"""

from __future__ import annotations

import asyncio
from typing import Any

#: frames at least this big bypass the StreamReader
DIRECT_MIN = 1 << 20


class _Filler(asyncio.BufferedProtocol):
    """Hands the kernel ``view[pos:]`` until the view is full, then restores ``original``."""

    def __init__(self, transport: Any, original: Any, view: memoryview, pos: int, done: asyncio.Future):
        self.transport = transport
        self.original = original
        self.view = view
        self.pos = pos
        self.done = done

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.pos:]

    def buffer_updated(self, nbytes: int) -> None:
        self.pos += nbytes
        if self.pos >= len(self.view):
            self._restore()
            if not self.done.done():
                self.done.set_result(self.pos)

    def _restore(self) -> None:
        if self.transport.get_protocol() is self:
            self.transport.set_protocol(self.original)

    def eof_received(self) -> bool | None:
        self._restore()
        if not self.done.done():
            self.done.set_result(self.pos)  # short: the caller reports the truncation
        return self.original.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._restore()
        if not self.done.done():
            self.done.set_result(self.pos)
        self.original.connection_lost(exc)

    # flow control of the writing side belongs to the original protocol
    def pause_writing(self) -> None:
        self.original.pause_writing()

    def resume_writing(self) -> None:
        self.original.resume_writing()


def usable(reader: asyncio.StreamReader) -> bool:
    transport = getattr(reader, "_transport", None)
    return (
        transport is not None
        and not transport.is_closing()
        and transport.get_extra_info("sslcontext") is None
        and type(transport).__name__ == "_SelectorSocketTransport"
        and getattr(reader, "_exception", None) is None
        and not reader.at_eof()
        and isinstance(getattr(reader, "_buffer", None), bytearray)
    )


def take_buffered(reader: asyncio.StreamReader, view: memoryview, pos: int) -> int:
    """Move what the reader already holds (up to the view's end) into ``view[pos:]``."""
    buffered = reader._buffer
    take = min(len(buffered), len(view) - pos)
    if take:
        view[pos:pos + take] = memoryview(buffered)[:take]
        del buffered[:take]
    return pos + take


async def fill(reader: asyncio.StreamReader, view: memoryview, pos: int) -> int:
    """Fill ``view[pos:]`` from the socket; the position reached (short only at EOF or loss)."""
    pos = take_buffered(reader, view, pos)
    if pos >= len(view):
        return pos
    transport = reader._transport
    done = asyncio.get_running_loop().create_future()
    filler = _Filler(transport, transport.get_protocol(), view, pos, done)
    transport.set_protocol(filler)
    if getattr(reader, "_paused", False):  # the reader had paused reading: its buffer is empty now
        reader._paused = False
        transport.resume_reading()
    try:
        return await done
    finally:
        filler._restore()
