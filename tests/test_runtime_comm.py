"""The wire layer: serialization, frames, and handshaken batched connections over loopback.

Every socket test binds 127.0.0.1 only and runs under ``asyncio.run`` with a
timeout (no pytest-asyncio), so a hang fails fast instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twofold import serialize
from twofold.errors import CommClosedError, TimeoutError as TwofoldTimeoutError
from twofold.messages import (
    ComputeTask,
    DataPut,
    FreeKeys,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
)
from twofold.runtime import framing
from twofold.runtime.comm import (
    Comm,
    HandshakeError,
    connect,
    format_address,
    is_loopback,
    listen,
    parse_address,
)
from twofold.runtime.framing import (
    BATCH,
    HANDSHAKE,
    HANDSHAKE_LIMITS,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameLimits,
    Hello,
    Verdict,
)

try:
    import numpy as np
except ImportError:  # numpy arrives with matplotlib in the test extra; the rest runs without it
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy not installed")
LOG = "twofold.runtime.comm"


def run(coro, timeout: float = 10.0):
    """Run ``coro`` on a fresh event loop, failing (not hanging) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def sample_messages(n: int = 3) -> list:
    """Real twofold messages, nested records included."""
    spec = TaskSpec(key="b", run_spec=b"\x80\x05pickled", dependencies=("a",), priority=2, resources={"GPU": 1.0})
    error = TaskError(typename="ZeroDivisionError", message="division by zero", exception=b"exc", traceback_text="tb")
    msgs = [
        UpdateGraph(now=1.0, stimulus_id="update-1", client="client-1", tasks=(spec,), wanted=("b",)),
        ComputeTask(now=2.0, stimulus_id="compute-b", worker="tcp://127.0.0.1:1", key="b", run_spec=b"f",
                    priority=(0, -2, 1), who_has={"a": ("tcp://127.0.0.1:2",)}, nbytes={"a": 28}, run_id=7),
        TaskErred(now=3.0, stimulus_id="erred-b", worker="tcp://127.0.0.1:1", key="b", error=error, run_id=7),
    ]  # fmt: skip
    msgs += [
        TaskFinished(now=4.0 + i, stimulus_id=f"finish-{i}", worker="w", key=f"k-{i}", nbytes=i, typename="int")
        for i in range(max(0, n - 3))
    ]
    return msgs


def free(i: int = 0) -> FreeKeys:
    return FreeKeys(now=float(i), stimulus_id=f"free-{i}", worker="w", keys=(f"k{i}",))


async def echo(comm: Comm) -> None:
    while True:
        msgs, payloads = await comm.recv()
        comm.send(msgs, payloads)


def feed(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def frame_bytes(msgs=(), payloads=(), kind=BATCH, header: bytes | None = None) -> bytes:
    if header is None:
        header = framing.encode_batch(list(msgs))
    parts = framing.frame_parts(kind, header, [framing.as_payload(p) for p in payloads])
    return b"".join(bytes(p) for p in parts)


def prefix(magic=b"2fld", version=PROTOCOL_VERSION, kind=BATCH, flags=0, header_len=0, lengths=()) -> bytes:
    head = framing._PREFIX.pack(magic, version, kind, flags, header_len, len(lengths))
    return head + b"".join(n.to_bytes(8, "big") for n in lengths)


# --------------------------------------------------------------------------
# serialize
# --------------------------------------------------------------------------

plain_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30) | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=5)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    | st.frozensets(st.integers() | st.text(max_size=5), max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_data)
def test_serialize_round_trips_nested_plain_data(obj):
    header, frames = serialize.dumps(obj)
    assert header["count"] == len(frames) and header["lengths"] == [len(f) for f in frames]
    back = serialize.loads(header, [bytearray(f) for f in frames])  # as frames arrive off the wire
    assert back == obj and type(back) is type(obj)


@pytest.mark.parametrize("obj", [b"\x00raw bytes", bytearray(b"mutable"), memoryview(b"a view")], ids=type)
def test_top_level_bytes_like_is_its_own_frame_with_type_kept(obj):
    header, frames = serialize.dumps(obj)
    assert header["serializer"] == "raw" and header["count"] == 1
    assert frames[0] is obj  # not copied, not pickled
    back = serialize.loads(header, [bytearray(frames[0])])
    assert type(back) is type(obj) and bytes(back) == bytes(obj)


@needs_numpy
def test_numpy_buffer_goes_out_of_band_without_a_copy():
    arr = np.arange(250_000, dtype="f8").reshape(500, 500)
    header, frames = serialize.dumps(arr)
    assert header["count"] == 2
    assert header["lengths"][1] == arr.nbytes and header["lengths"][0] < 1000  # stream holds no data
    assert np.shares_memory(np.frombuffer(frames[1], dtype="f8"), arr)  # the frame is the array's memory
    back = serialize.loads(header, [frames[0], bytearray(frames[1])])
    assert back.flags.writeable and np.array_equal(back, arr) and back.shape == (500, 500)
    # Fortran order goes out of band too; a non-contiguous view and small arrays stay in band
    fortran = np.asfortranarray(arr)
    h, f = serialize.dumps(fortran)
    assert h["count"] == 2 and np.array_equal(serialize.loads(h, f), fortran)
    strided = arr[::2, ::3]
    h, f = serialize.dumps(strided)
    assert np.array_equal(serialize.loads(h, f), strided)
    h, f = serialize.dumps(np.arange(10))
    assert h["count"] == 1
    # nested in a container
    h, f = serialize.dumps({"a": arr, "b": [arr[0]]})
    assert h["count"] == 2 and np.array_equal(serialize.loads(h, f)["a"], arr)


def test_functions_and_closures_round_trip():
    offset = 41

    def add(x):
        return x + offset

    header, frames = serialize.dumps((add, lambda y: y * 2))
    f, g = serialize.loads(header, frames)
    assert f(1) == 42 and g(4) == 8
    header, frames = serialize.dumps(len)  # importable: plain pickle by reference
    assert serialize.loads(header, frames) is len


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("this object refuses to be pickled")


def test_an_object_that_cannot_be_pickled_gives_a_clear_error():
    with pytest.raises(serialize.SerializationError, match="type 'dict': RuntimeError: this object refuses to be pickled"):
        serialize.dumps({"x": [Unpicklable()]})
    with pytest.raises(serialize.SerializationError, match="'lock'"):
        serialize.dumps(threading.Lock())
    with pytest.raises(TypeError):  # SerializationError is a TypeError too
        serialize.dumps(threading.Lock())


def test_loads_refuses_frames_that_do_not_match_the_header():
    header, frames = serialize.dumps([1, 2, 3])
    with pytest.raises(serialize.DeserializationError, match="announces 1 frames, got 2"):
        serialize.loads(header, frames + [b"extra"])
    with pytest.raises(serialize.DeserializationError, match="do not match"):
        serialize.loads(header, [frames[0] + b"x"])
    with pytest.raises(serialize.DeserializationError, match="cannot deserialize"):
        serialize.loads({**header, "lengths": [3]}, [b"bad"])
    with pytest.raises(serialize.DeserializationError, match="malformed"):
        serialize.loads({"count": 1}, frames)
    with pytest.raises(serialize.DeserializationError, match="unknown serializer"):
        serialize.loads({**header, "serializer": "json"}, frames)


def test_nbytes_of():
    class WithNbytes:
        nbytes = 123

    class BadNbytes:
        nbytes = "many"

    assert serialize.nbytes_of(b"12345") == 5
    assert serialize.nbytes_of(bytearray(7)) == 7
    assert serialize.nbytes_of(memoryview(b"abc")) == 3
    assert serialize.nbytes_of(WithNbytes()) == 123
    assert serialize.nbytes_of(BadNbytes()) == sum(serialize.dumps(BadNbytes())[0]["lengths"])
    data = list(range(1000))
    assert serialize.nbytes_of(data) == len(serialize.dumps(data)[1][0])
    header, frames = serialize.dumps(data)
    assert serialize.nbytes_of(data, frames) == header["lengths"][0]
    assert serialize.nbytes_of(threading.Lock()) > 0  # not picklable: sys.getsizeof
    if np is not None:
        assert serialize.nbytes_of(np.zeros(1000)) == 8000


# --------------------------------------------------------------------------
# framing (in memory)
# --------------------------------------------------------------------------


def test_a_frame_round_trips_through_a_stream_reader():
    msgs = sample_messages(6)
    payloads = [b"first", bytearray(b"second"), memoryview(b"third"), b""]
    async def go():
        reader = feed(frame_bytes(msgs, payloads) * 2)  # (a StreamReader wants a running loop)
        frames = [await framing.read_frame(reader), await framing.read_frame(reader), await framing.read_frame(reader)]
        return frames

    first, second, end = run(go())
    assert end is None  # clean end between frames
    for frame in (first, second):
        assert framing.decode_batch(frame.header) == tuple(msgs)
        assert [bytes(p) for p in frame.payloads] == [b"first", b"second", b"third", b""]
        assert all(type(p) is bytearray for p in frame.payloads)


TIGHT = FrameLimits(max_header_bytes=1000, max_frames=4, max_frame_bytes=10_000, max_total_bytes=20_000)

BAD_FRAMES = {
    "bad magic": (b"GET / HTTP/1.1\r\n\r\n", "bad magic b'GET '"),
    "wrong version": (prefix(version=PROTOCOL_VERSION + 1), f"wrong protocol version {PROTOCOL_VERSION + 1}"),
    "unknown kind": (prefix(kind=7), "expected a batch frame, got kind 7"),
    "flags set": (prefix(flags=1), "unknown frame flags"),
    "oversized header": (prefix(header_len=1001), "header of 1001 bytes is over the 1000-byte limit"),
    "too many frames": (prefix(lengths=(1,) * 5), "5 payload frames is over the limit of 4"),
    "oversized frame": (prefix(lengths=(10, 10_001)), "payload frame 1 of 10001 bytes is over the 10000-byte limit"),
    "total over limit": (prefix(header_len=1000, lengths=(10_000, 9_001)), "frame of 20001 bytes is over"),
    "truncated prefix": (prefix()[:9], "truncated frame: the connection ended after 9 of 16 prefix bytes"),
    "truncated lengths": (prefix(lengths=(1, 2))[:20], "after 4 of 16 bytes of the frame lengths"),
    "truncated header": (prefix(header_len=50) + b"\x90" * 10, "after 10 of 50 bytes of the header"),
    "truncated payload": (prefix(header_len=1, lengths=(100,)) + b"\x90" + b"x" * 60, "after 60 of 100 bytes of payload frame 0"),
    "undecodable header": (prefix(header_len=1) + b"\xc1", "undecodable batch header"),
    "header not a list": (prefix(header_len=1) + b"\x05", "batch header is a int"),
    "element not a message": (frame_bytes(header=b"\x91\x05"), "batch element 0 is a int, not a twofold message"),
    "unknown op": (frame_bytes(header=framing.msgpack.packb([["Nope", 1]])), "unknown message op 'Nope'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_every_frame_error_has_a_reason(case):
    data, reason = BAD_FRAMES[case]

    async def go():
        frame = await framing.read_frame(feed(data), TIGHT)
        framing.decode_batch(frame.header)

    with pytest.raises(FrameError) as info:
        run(go())
    assert reason in info.value.reason and str(info.value) == info.value.reason


def test_the_reader_stops_at_the_prefix_when_it_refuses():
    # a refused prefix is followed by bytes that are never read (nothing is allocated for them)
    async def go():
        reader = feed(prefix(lengths=(10**12,)) + b"rest", eof=False)
        with pytest.raises(FrameError, match="over the"):
            await framing.read_frame(reader)
        return bytes(reader._buffer)

    assert run(go()) == b"rest"  # prefix and length table read, nothing after them


def test_outgoing_frames_are_checked_against_the_limits():
    with pytest.raises(FrameError, match="header of 1001 bytes"):
        framing.frame_parts(BATCH, b"x" * 1001, [], TIGHT)
    with pytest.raises(FrameError, match="payload frame of 10001 bytes"):
        framing.frame_parts(BATCH, b"\x90", [b"x" * 10_001], TIGHT)
    with pytest.raises(FrameError, match="5 payload frames"):
        framing.frame_parts(BATCH, b"\x90", [b"x"] * 5, TIGHT)
    with pytest.raises(ValueError, match="C-contiguous"):
        framing.as_payload(memoryview(b"abcdef")[::2])
    with pytest.raises(ValueError, match="non-negative"):
        FrameLimits(max_frames=-1)


class RecordingWriter:
    """Stands in for a StreamWriter: records what the framing layer hands over."""

    def __init__(self):
        self.calls = []

    def write(self, data):
        self.calls.append(("write", data))

    def writelines(self, parts):
        self.calls.append(("writelines", list(parts)))


def test_large_payloads_are_handed_to_the_transport_as_they_are():
    big = bytearray(5 * 2**20)
    parts = framing.frame_parts(BATCH, framing.encode_batch([free()]), [b"small", big])
    writer = RecordingWriter()
    framing.write_frame(writer, parts)
    handed = [p for _, data in writer.calls for p in (data if isinstance(data, list) else [data])]
    assert any(p is big for p in handed), "the big payload was copied or joined"
    assert sum(len(p) for p in handed) == sum(len(p) for p in parts)
    if sys.version_info < (3, 12):  # small parts joined into one write before the big one
        assert [len(d) for _, d in writer.calls][1] == len(big) and len(writer.calls) == 2


def test_handshake_records_are_validated():
    hello = Hello(PROTOCOL_VERSION, "worker", "w-1", b"n" * NONCE_BYTES, True, b"p" * 32)
    assert framing.decode_handshake(framing.encode_handshake(hello), Hello) == hello
    verdict = Verdict(False, "wrong shared secret")
    assert framing.decode_handshake(framing.encode_handshake(verdict), Verdict) == verdict
    bad = [
        (framing.encode_handshake(verdict), Hello, "expected a Hello record, got 'Verdict'"),
        (framing.encode_handshake(Hello(1, "w", "", b"short")), Hello, "nonce must be 32 bytes"),
        (framing.encode_handshake(Hello(1, "w", "x" * 300, b"n" * 32)), Hello, "longer than 256"),
        (framing.encode_handshake(Hello(1, "w", "", b"n" * 32, proof=b"p")), Hello, "proof must be empty or 32"),
        (framing.msgpack.packb({"op": "Verdict", "ok": 1, "reason": "", "proof": b""}), Verdict, "ok must be bool"),
        (framing.msgpack.packb({"op": "Verdict", "ok": True}), Verdict, "has fields"),
        (b"\xc1", Verdict, "undecodable Verdict"),
    ]
    for data, cls, reason in bad:
        with pytest.raises(FrameError, match=reason):
            framing.decode_handshake(data, cls)


# --------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------


def test_addresses():
    assert parse_address("tcp://127.0.0.1:8786") == ("tcp", "127.0.0.1", 8786)
    assert parse_address("tls://[::1]:9000") == ("tls", "::1", 9000)
    assert parse_address("localhost:1") == ("tcp", "localhost", 1)
    assert format_address("::1", 9000) == "tcp://[::1]:9000"
    assert format_address("127.0.0.1", 1, "tls") == "tls://127.0.0.1:1"
    for bad in ("tcp://127.0.0.1", "udp://h:1", "tcp://:80", "tcp://h:99999", "tcp://h:x"):
        with pytest.raises(ValueError):
            parse_address(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.org")


def test_listening_off_loopback_needs_a_secret_or_tls():
    async def go():
        with pytest.raises(ValueError, match="not loopback, requires a shared secret or TLS"):
            await listen("0.0.0.0", 0, echo)  # refused before anything is bound
        with pytest.raises(ValueError, match="empty shared secret"):
            await listen("127.0.0.1", 0, echo, secret="")
        with pytest.raises(TypeError, match="needs a handler"):
            await listen("127.0.0.1", 0)

    run(go())


# --------------------------------------------------------------------------
# Comm over loopback
# --------------------------------------------------------------------------


def test_batches_of_messages_and_payloads_round_trip_including_50_mb():
    big = bytes(range(256)) * (50 * 2**20 // 256)

    async def go():
        async with await listen("127.0.0.1", 0, echo, name="echo") as listener:
            comm = await connect(listener.address, kind="worker", name="w-1", expect_kind="scheduler")
            assert comm.peer.kind == "scheduler" and comm.peer.name == "echo"
            msgs = sample_messages(20)
            comm.send(msgs[:10], [b"a", bytearray(b"bc")])
            comm.send(msgs[10:], [memoryview(b"def")])
            back, payloads = await comm.recv()
            assert back == tuple(msgs)
            assert [bytes(p) for p in payloads] == [b"a", b"bc", b"def"]  # concatenated in send order
            comm.send(DataPut(now=0.0, stimulus_id="put", nbytes={"x": len(big)}), [big])
            await comm.drain()
            back, payloads = await comm.recv()
            assert back[0].nbytes == {"x": len(big)}
            assert len(payloads) == 1 and payloads[0] == big
            stats = comm.stats()
            assert stats.frames_sent == stats.frames_received == 2
            assert stats.payload_bytes_sent == stats.payload_bytes_received == len(big) + 6
            await comm.close()

    run(go(), timeout=30)


@needs_numpy
def test_a_numpy_array_arrives_out_of_band_and_writable():
    arr = np.random.default_rng(0).standard_normal((1000, 500))

    async def go():
        async with await listen("127.0.0.1", 0, echo) as listener:
            comm = await connect(listener.address)
            header, frames = serialize.dumps(arr)
            comm.send(DataPut(now=0.0, stimulus_id="put", nbytes={"x": serialize.nbytes_of(arr)}), frames)
            msgs, payloads = await comm.recv()
            await comm.close()
            return header, msgs, payloads

    header, msgs, payloads = run(go())
    assert msgs[0].nbytes == {"x": arr.nbytes}
    # the frames that crossed the wire: a small pickle stream, then the array's bytes as they are
    assert header["count"] == len(payloads) == 2
    assert [len(p) for p in payloads] == header["lengths"]
    assert len(payloads[0]) < 1000 and len(payloads[1]) == arr.nbytes
    assert bytes(payloads[1][:64]) == arr.tobytes()[:64]
    back = serialize.loads(header, payloads)
    assert np.array_equal(back, arr) and back.flags.writeable
    assert np.shares_memory(back, np.frombuffer(payloads[1], dtype="u1"))  # no copy after the socket


def test_a_hundred_sends_in_one_loop_iteration_leave_in_one_frame():
    async def go():
        got: list = []
        done = asyncio.Event()

        async def count(comm):
            n = 0
            while n < 100:
                msgs, _ = await comm.recv()
                n += len(msgs)
                got.extend(msgs)
            got.append(comm.stats())
            done.set()
            await comm.recv()

        async with await listen("127.0.0.1", 0, count) as listener:
            comm = await connect(listener.address)
            for i in range(100):
                comm.send(free(i))
            assert comm.stats().frames_sent == 0  # nothing written until the loop is free
            await done.wait()
            assert comm.stats().frames_sent == 1
            await comm.close()
        stats = got.pop()
        assert [m.stimulus_id for m in got] == [f"free-{i}" for i in range(100)]
        assert stats.frames_received == 1 and stats.messages_received == 100

    run(go())


def test_an_idle_send_leaves_without_waiting_and_big_batches_are_split():
    async def go():
        async with await listen("127.0.0.1", 0, echo) as listener:
            comm = await connect(listener.address, max_batch_messages=10)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            comm.send(free())
            await comm.recv()
            assert loop.time() - t0 < 1.0  # no batching window (generous bound for a loaded machine)
            for i in range(25):
                comm.send(free(i))
            assert comm.stats().frames_sent == 1 + 2  # two full batches went at once
            n = 0
            while n < 25:
                n += len((await comm.recv())[0])
            assert comm.stats().frames_sent == 4
            await comm.close()

    run(go())


def test_send_refuses_bad_input_at_once():
    async def go():
        async with await listen("127.0.0.1", 0, echo, limits=TIGHT) as listener:
            comm = await connect(listener.address, limits=TIGHT)
            with pytest.raises(TypeError, match="takes twofold messages, got a dict"):
                comm.send([{"op": "FreeKeys"}])
            with pytest.raises(FrameError, match="payload frame of 10001 bytes"):
                comm.send(free(), [b"x" * 10_001])
            with pytest.raises(ValueError, match="C-contiguous"):
                comm.send(free(), [memoryview(b"abcd")[::2]])
            comm.send(free(1))  # nothing of the refused sends was queued
            msgs, payloads = await comm.recv()
            assert msgs == (free(1),) and payloads == []
            await comm.close("done")
            assert comm.closed and comm.close_reason == "done"
            with pytest.raises(CommClosedError, match="is closed: done"):
                comm.send(free())
            with pytest.raises(CommClosedError):
                await comm.recv()

    run(go())


def test_a_message_that_cannot_be_encoded_closes_only_its_connection(caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def go():
        async with await listen("127.0.0.1", 0, echo) as listener:
            good = await connect(listener.address)
            bad = await connect(listener.address)
            bad.send(FreeKeys(now=0.0, stimulus_id="oops", worker="w", keys=(object(),)))
            with pytest.raises(CommClosedError, match="cannot encode FreeKeys"):
                await bad.recv()
            good.send(free(2))
            assert (await good.recv())[0] == (free(2),)
            await good.close()

    run(go())
    assert any(r.levelno == logging.ERROR and "cannot encode FreeKeys (stimulus 'oops')" in r.getMessage() for r in caplog.records)


SESSION_BAD_FRAMES = ["bad magic", "wrong version", "oversized header", "oversized frame", "truncated payload", "element not a message"]


@pytest.mark.parametrize("case", SESSION_BAD_FRAMES)
def test_a_bad_frame_closes_that_connection_and_the_listener_keeps_serving(case, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    data, reason = BAD_FRAMES[case]

    async def go():
        outcomes: dict = {}

        async def handler(comm):
            try:
                await echo(comm)
            except CommClosedError as exc:
                outcomes[comm.peer.name] = str(exc)
                raise

        async with await listen("127.0.0.1", 0, handler, limits=TIGHT) as listener:
            good = await connect(listener.address, name="good")
            bad = await connect(listener.address, name="bad")
            good.send(free(1))
            assert (await good.recv())[0] == (free(1),)
            bad._writer.write(data)  # straight onto the socket, past the framing checks
            if case.startswith("truncated"):
                bad._writer.write_eof()
            with pytest.raises(CommClosedError):
                await bad.recv()  # the listener dropped it
            for i in range(3):  # the other connection, and new ones, carry on
                good.send(free(i))
                assert (await good.recv())[0] == (free(i),)
            other = await connect(listener.address, name="later")
            other.send(free(9))
            assert (await other.recv())[0] == (free(9),)
            assert listener.stats().open == 2
            await good.close()
            await other.close()
            return outcomes

    outcomes = run(go())
    assert reason in outcomes["bad"] and "bad frame" in outcomes["bad"]
    assert set(outcomes) <= {"bad", "good", "later"}
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and "bad frame" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0].getMessage() and "'bad'" in logged[0].getMessage()


def test_a_failing_handler_closes_only_its_connection(caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def handler(comm):
        msgs, _ = await comm.recv()
        if msgs[0].stimulus_id == "free-666":
            raise RuntimeError("handler bug")
        await echo(comm)

    async def go():
        async with await listen("127.0.0.1", 0, handler) as listener:
            good = await connect(listener.address)
            doomed = await connect(listener.address)
            good.send(free(0))
            doomed.send(free(666))
            with pytest.raises(CommClosedError):
                await doomed.recv()
            good.send(free(1))
            assert (await good.recv())[0] == (free(1),)
            await good.close()

    run(go())
    assert any("handler for connection" in r.getMessage() and r.exc_info for r in caplog.records)


def test_closing_the_listener_closes_its_connections():
    async def go():
        listener = await listen("127.0.0.1", 0, echo, handshake_timeout=30)
        comms = [await connect(listener.address) for _ in range(3)]
        reader, writer, _ = await raw_peer(listener.address)  # mid-handshake: says nothing
        assert listener.stats().open == 3
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await listener.close()
        assert loop.time() - t0 < 2.0  # nobody waited out the handshake timeout
        assert listener.stats().open == 0
        assert await reader.read() == b""
        writer.close()
        for comm in comms:
            with pytest.raises(CommClosedError):
                await comm.recv()
        with pytest.raises(CommClosedError, match="cannot connect"):
            await connect(listener.address)

    run(go())


# --------------------------------------------------------------------------
# handshake
# --------------------------------------------------------------------------


class Recorder:
    """A handler that notes who got through."""

    def __init__(self):
        self.peers: list = []

    async def __call__(self, comm):
        self.peers.append((comm.peer.kind, comm.peer.name, comm.peer.secret))
        await echo(comm)


def test_handshake_with_a_shared_secret():
    async def go():
        recorder = Recorder()
        async with await listen("127.0.0.1", 0, recorder, secret="s3cret", kind="scheduler", name="s") as listener:
            comm = await connect(listener.address, secret=b"s3cret", kind="worker", name="w-1")
            assert comm.peer.kind == "scheduler" and comm.peer.secret
            comm.send(free(1))
            assert (await comm.recv())[0] == (free(1),)
            await comm.close()
            assert recorder.peers == [("worker", "w-1", True)]
            assert listener.stats().accepted == 1 and listener.stats().refused == 0

    run(go())


@pytest.mark.parametrize(
    "client_secret, server_secret, refused_by, reason",
    [
        ("wrong", "s3cret", "server", "wrong shared secret"),
        (None, "s3cret", "server", "a shared secret is required"),
        ("s3cret", None, "client", "does not use one"),
    ],
)
def test_a_peer_that_fails_the_handshake_is_dropped(client_secret, server_secret, refused_by, reason, caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def go():
        recorder = Recorder()
        async with await listen("127.0.0.1", 0, recorder, secret=server_secret) as listener:
            with pytest.raises(HandshakeError, match=reason):
                await connect(listener.address, secret=client_secret)
            good = await connect(listener.address, secret=server_secret)  # the listener is unharmed
            good.send(free())
            await good.recv()
            await good.close()
            assert len(recorder.peers) == 1  # the refused peer never reached the handler
            return listener.stats()

    stats = run(go())
    assert stats.refused == 1 and stats.accepted == 1
    refusals = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(refusals) == 1
    if refused_by == "server":
        assert reason in refusals[0]


async def raw_peer(address: str):
    """A bare connection that has read the listener's Hello (and nothing else)."""
    _, host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    frame = await framing.read_frame(reader, HANDSHAKE_LIMITS, HANDSHAKE)
    return reader, writer, framing.decode_handshake(frame.header, Hello)


def hello_frame(hello: Hello) -> bytes:
    return frame_bytes(kind=HANDSHAKE, header=framing.encode_handshake(hello))


@pytest.mark.parametrize(
    "case, reason",
    [
        ("garbage", "bad magic"),
        ("batch before hello", "expected a handshake frame, got kind 'batch'"),
        ("hello without proof", "a shared secret is required"),
        ("proof from another connection", "wrong shared secret"),
        ("other protocol", "protocol 99 is not supported"),
        ("oversized hello", "over the 4096-byte limit"),
        ("silence", "no handshake within"),
    ],
)
def test_raw_peers_that_fail_the_handshake_are_dropped_before_any_batch_is_read(case, reason, caplog):
    caplog.set_level(logging.INFO, logger=LOG)

    async def go():
        recorder = Recorder()
        async with await listen("127.0.0.1", 0, recorder, secret="k", handshake_timeout=0.3) as listener:
            reader, writer, server_hello = await raw_peer(listener.address)
            assert server_hello.secret and len(server_hello.nonce) == NONCE_BYTES
            nonce = b"c" * NONCE_BYTES
            stale = framing.handshake_proof(b"k", "client", b"s" * NONCE_BYTES, nonce)  # not this server nonce
            data = {
                "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                "batch before hello": frame_bytes([free()]),
                "hello without proof": hello_frame(Hello(PROTOCOL_VERSION, "client", "", nonce)),
                "proof from another connection": hello_frame(Hello(PROTOCOL_VERSION, "client", "", nonce, True, stale)),
                "other protocol": hello_frame(Hello(99, "client", "", nonce)),
                "oversized hello": prefix(kind=HANDSHAKE, header_len=10_000),
                "silence": b"",
            }[case]
            if case != "silence":
                writer.write(data + frame_bytes([free()]))  # a batch after it must never be read
            frame = await framing.read_frame(reader, HANDSHAKE_LIMITS, HANDSHAKE)
            verdict = framing.decode_handshake(frame.header, Verdict)
            assert await reader.read() == b""  # then the listener hangs up
            writer.close()
            assert recorder.peers == []
            return verdict, listener.stats()

    verdict, stats = run(go())
    assert not verdict.ok and reason in verdict.reason
    assert stats.refused == 1 and stats.accepted == 0
    logged = [r for r in caplog.records if r.levelno == logging.WARNING and "refused connection" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0].getMessage()


def test_connect_errors_are_clear():
    async def go():
        async with await listen("127.0.0.1", 0, echo, kind="worker") as listener:
            with pytest.raises(HandshakeError, match="expected a scheduler at .* found a worker"):
                await connect(listener.address, expect_kind="scheduler")
            address = listener.address
        with pytest.raises(CommClosedError, match=f"cannot connect to {address}"):
            await connect(address)
        with pytest.raises(ValueError, match="pass ssl="):
            await connect("tls://127.0.0.1:1")

        # a listener that accepts but never says hello: the connect times out
        async def mute(reader, writer):
            try:
                await reader.read()
            finally:
                writer.close()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TwofoldTimeoutError, match="within 0.2 s"):
            await connect(f"tcp://127.0.0.1:{port}", timeout=0.2)
        server.close()

    run(go())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not available")
def test_tls_with_a_secret(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))

    async def go():
        async with await listen("127.0.0.1", 0, echo, ssl=server_ctx, secret="k") as listener:
            assert listener.address.startswith("tls://127.0.0.1:")
            comm = await connect(listener.address, ssl=client_ctx, secret="k")
            comm.send(sample_messages(4), [b"x" * 100_000])
            msgs, payloads = await comm.recv()
            assert msgs == tuple(sample_messages(4)) and payloads == [b"x" * 100_000]
            await comm.close()

    run(go())
