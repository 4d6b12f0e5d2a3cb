"""The wire layer alone: twofold messages and payloads over loopback TCP (twofold.runtime.comm).

Workloads (each the median of ``--repeat`` runs), against an echo/sink peer
that is either in the same event loop ("1 proc": both ends share one core)
or in a second process ("2 procs": the realistic case):

* round trip, 1 message: send one ``TaskFinished``, wait for it to come back
  (latency; no batching possible);
* round trip, batches: send ``--batch`` messages in one loop iteration, wait
  for all of them to come back (messages/s, and microseconds per message);
* one way: stream ``--messages`` messages, ``--batch`` per loop iteration,
  then wait for the peer's count (messages/s);
* 100 MB payload: one bytes payload one way, until the peer acknowledges
  (MB/s); and a 100 MB numpy array through ``twofold.serialize`` (dumps,
  send, recv, loads on the peer).

PERFORMANCE.md's floor on this machine: batched msgpack over loopback
~5 us per message round trip (~200k messages/s); one unbatched asyncio round
trip 0.1-0.35 ms.

    ./dev python benchmarks/bench_comm.py
    ./dev python benchmarks/bench_comm.py --procs 2 --repeat 5 --messages 500000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from twofold import serialize
from twofold.messages import DataPut, TaskFinished, TimerFired, dumps, loads
from twofold.runtime.comm import Comm, connect, listen

ECHO, SINK, DONE = "echo", "sink", "done"


def task_message(i: int, stimulus: str = ECHO) -> TaskFinished:
    return TaskFinished(
        now=1.5, stimulus_id=stimulus, worker="tcp://127.0.0.1:40123", key=f"inc-{i:032x}",
        nbytes=28, typename="int", start=1.25, stop=1.5, run_id=i,
    )  # fmt: skip


async def peer(comm: Comm) -> None:
    """Echo frames of ``echo`` messages; count ``sink`` messages and payload bytes, report on ``done``."""
    count = nbytes = 0
    while True:
        msgs, payloads = await comm.recv()
        if payloads:
            nbytes += sum(len(p) for p in payloads)
            if msgs and isinstance(msgs[0], DataPut) and "header" in msgs[0].nbytes:
                # a serialized object: rebuild it, as a worker would
                header = {"serializer": "pickle", "count": len(payloads), "lengths": [len(p) for p in payloads]}
                serialize.loads(header, payloads)
            comm.send(DataPut(now=0.0, stimulus_id="ack", nbytes={"bytes": nbytes}))
            nbytes = 0
            continue
        if msgs[0].stimulus_id == ECHO:
            comm.send(msgs)
            continue
        for msg in msgs:
            if msg.stimulus_id == SINK:
                count += 1
            elif msg.stimulus_id == DONE:
                comm.send(DataPut(now=0.0, stimulus_id="count", nbytes={"count": count}))
                count = 0


async def round_trip_single(comm: Comm, n: int) -> float:
    """Median seconds per one-message round trip."""
    times = []
    msg = task_message(0)
    for _ in range(n):
        t0 = time.perf_counter()
        comm.send(msg)
        await comm.recv()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def round_trip_batched(comm: Comm, batch: int, rounds: int) -> float:
    """Messages per second, ``batch`` messages out and back per round."""
    msgs = [task_message(i) for i in range(batch)]
    t0 = time.perf_counter()
    for _ in range(rounds):
        for msg in msgs:
            comm.send(msg)
        got = 0
        while got < batch:
            got += len((await comm.recv())[0])
    return batch * rounds / (time.perf_counter() - t0)


async def one_way(comm: Comm, total: int, batch: int) -> float:
    """Messages per second streamed to the peer (until it has counted them all)."""
    msgs = [task_message(i, SINK) for i in range(batch)]
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        for msg in msgs:
            comm.send(msg)
        sent += batch
        await comm.drain()  # flushes this batch; waits only if the socket is backed up
    comm.send(TimerFired(now=0.0, stimulus_id=DONE, token=""))
    msgs_back, _ = await comm.recv()
    assert msgs_back[0].nbytes["count"] == sent, msgs_back
    return sent / (time.perf_counter() - t0)


async def payload_one_way(comm: Comm, payload, serialized: bool) -> float:
    """MB/s for one payload to the peer, until acknowledged (serialized: dumps here, loads there)."""
    t0 = time.perf_counter()
    if serialized:
        header, frames = serialize.dumps(payload)
        comm.send(DataPut(now=0.0, stimulus_id="data", nbytes={"header": header["count"]}), frames)
        size = serialize.frames_nbytes(frames)
    else:
        comm.send(DataPut(now=0.0, stimulus_id="data", nbytes={}), [payload])
        size = len(payload)
    await comm.drain()
    msgs, _ = await comm.recv()
    assert msgs[0].nbytes["bytes"] == size
    return size / 2**20 / (time.perf_counter() - t0)


def codec_alone(batch: int, repeat: int) -> float:
    """Seconds per message for ``messages.dumps`` + ``loads`` of a batch: the floor under every hop."""
    msgs = [task_message(i) for i in range(batch)]
    best = float("inf")
    for _ in range(max(3, repeat)):
        t0 = time.perf_counter()
        for _ in range(10):
            loads(dumps(msgs))
        best = min(best, (time.perf_counter() - t0) / 10 / batch)
    return best


async def run(address: str, args) -> dict:
    comm = await connect(address, name="bench")
    results: dict[str, list] = {}

    def add(name, value):
        results.setdefault(name, []).append(value)

    big = bytes(100 * 2**20)
    try:
        import numpy

        array = numpy.ones(100 * 2**20 // 8)
    except ImportError:
        array = None
    for _ in range(args.repeat):
        add("rt1", await round_trip_single(comm, args.single))
        add("rtb", await round_trip_batched(comm, args.batch, max(1, args.messages // args.batch // 10)))
        add("oneway", await one_way(comm, args.messages, args.batch))
        add("bytes", await payload_one_way(comm, big, serialized=False))
        if array is not None:
            add("numpy", await payload_one_way(comm, array, serialized=True))
    await comm.close()
    return {k: statistics.median(v) for k, v in results.items()}


async def in_process(args) -> dict:
    listener = await listen("127.0.0.1", 0, peer, name="bench-peer")
    try:
        return await run(listener.address, args)
    finally:
        await listener.close()


async def serve_forever() -> None:
    listener = await listen("127.0.0.1", 0, peer, name="bench-peer")
    print(listener.address, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await listener.close()


def two_processes(args) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        return asyncio.run(run(address, args))
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, choices=(0, 1, 2), default=0, help="1 or 2 processes (default: both)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000, help="messages in the one-way stream")
    parser.add_argument("--batch", type=int, default=1000, help="messages sent per loop iteration")
    parser.add_argument("--single", type=int, default=1000, help="one-message round trips per run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_forever())
        return
    columns = {}
    if args.procs in (0, 1):
        columns["1 proc"] = asyncio.run(in_process(args))
    if args.procs in (0, 2):
        columns["2 procs"] = two_processes(args)
    codec = codec_alone(args.batch, args.repeat)
    size = len(dumps(task_message(0)))
    print(f"twofold.runtime.comm over loopback TCP; TaskFinished of {size} bytes packed; "
          f"batches of {args.batch}; medians of {args.repeat}")  # fmt: skip
    rows = [
        ("round trip, 1 message (us)", "rt1", lambda v: f"{v * 1e6:,.0f}"),
        ("round trip, batched (msgs/s)", "rtb", lambda v: f"{v:,.0f}"),
        ("  = us per message round trip", "rtb", lambda v: f"{1e6 / v:.1f}"),
        ("one way, batched (msgs/s)", "oneway", lambda v: f"{v:,.0f}"),
        ("  = us per message", "oneway", lambda v: f"{1e6 / v:.1f}"),
        ("100 MB bytes payload (MB/s)", "bytes", lambda v: f"{v:,.0f}"),
        ("100 MB numpy, serialized (MB/s)", "numpy", lambda v: f"{v:,.0f}"),
    ]
    names = list(columns)
    print(f"{'':34}" + "".join(f"{n:>12}" for n in names))
    for label, key, fmt in rows:
        cells = [fmt(columns[n][key]) if key in columns[n] else "-" for n in names]
        print(f"{label:34}" + "".join(f"{c:>12}" for c in cells))
    print(f"{'codec alone: dumps+loads (us/msg)':34}{codec * 1e6:>12.1f}   "
          "(a batched round trip pays it twice; the rest is the wire layer)")  # fmt: skip


if __name__ == "__main__":
    main()
