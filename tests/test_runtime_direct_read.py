"""Big payload frames are read straight into their buffer (runtime/direct_read.py): exact bytes,
frames after them intact, and a connection lost mid-frame reported as a truncated frame."""

from __future__ import annotations

import asyncio
import os

import pytest

from twofold.runtime import direct_read, framing
from twofold.runtime.framing import BATCH, FrameError, frame_parts


def _frame(payloads: list[bytes], header: bytes = b"\x90") -> bytes:
    return b"".join(bytes(p) for p in frame_parts(BATCH, header, payloads))


async def _serve_bytes(data: bytes, chunk: int, close_early: bool = False):
    """A server that writes ``data`` in ``chunk``-sized writes (with pauses), then closes."""

    async def handle(reader, writer):
        for i in range(0, len(data), chunk):
            writer.write(data[i:i + chunk])
            await writer.drain()
            await asyncio.sleep(0)
        if close_early:
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("chunk", [1_000, 65_536, 3_000_000])
def test_big_frames_then_small_ones_arrive_exactly(chunk, monkeypatch):
    fills = []
    real_fill = direct_read.fill

    async def counting_fill(reader, view, pos):
        fills.append(len(view))
        return await real_fill(reader, view, pos)

    monkeypatch.setattr(direct_read, "fill", counting_fill)
    big1, big2 = os.urandom(3 * direct_read.DIRECT_MIN + 17), os.urandom(direct_read.DIRECT_MIN)
    data = _frame([big1, b"tail"]) + _frame([b"small"]) + _frame([big2])

    async def go():
        server, port = await _serve_bytes(data, chunk)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        frames = [await framing.read_frame(reader) for _ in range(3)]
        assert await framing.read_frame(reader) is None  # then a clean end
        writer.close()
        server.close()
        return frames

    frames = asyncio.run(asyncio.wait_for(go(), 20))
    assert [bytes(p) for p in frames[0].payloads] == [big1, b"tail"]
    assert [bytes(p) for p in frames[1].payloads] == [b"small"]
    assert [bytes(p) for p in frames[2].payloads] == [big2]
    assert fills == [len(big1), len(big2)]  # the two big frames took the direct path


def test_a_connection_lost_inside_a_big_frame_is_a_truncated_frame():
    big = os.urandom(4 * direct_read.DIRECT_MIN)
    data = _frame([big])[: 2 * direct_read.DIRECT_MIN]

    async def go():
        server, port = await _serve_bytes(data, 100_000, close_early=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            with pytest.raises(FrameError, match="truncated frame"):
                await framing.read_frame(reader)
        finally:
            writer.close()
            server.close()

    asyncio.run(asyncio.wait_for(go(), 20))
