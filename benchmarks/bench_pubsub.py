"""Pub/Sub throughput: a task publishes small messages to a Sub in a task on another worker.

    ./dev python benchmarks/bench_pubsub.py                     # processes, 10,000 messages, median of 5
    ./dev python benchmarks/bench_pubsub.py --shape threads --messages 20000 --repeat 3

On ``LocalCluster(n_workers=2, threads_per_worker=1, processes=...)``: a
task on one worker subscribes and sets an Event; a task on the other makes a
``Pub`` and puts ``0 .. n - 1``; the subscriber checks each arrives, in order.
Reported per run: messages/second from the first ``put`` to the last
``get`` (the clock is the machine's monotonic one, shared by its
processes), and the publisher's own put rate; then the median over
``--repeat`` runs.  Only the Pub/Sub API of ``twofold`` is used, so the same
script measures any version of it (the direct worker-to-worker path, or an
older tree that sends everything through the scheduler: put it first on
``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import statistics
import time


def bench_subscriber(topic, n, ready):
    from twofold import Event, Sub

    sub = Sub(topic)
    Event(ready).set()
    ok = True
    for i in range(n):
        ok = (sub.get(timeout=120) == i) and ok
    return time.monotonic(), ok


def bench_publisher(topic, n, ready):
    from twofold import Event, Pub

    assert Event(ready).wait(timeout=120)
    pub = Pub(topic)
    t0 = time.monotonic()
    for i in range(n):
        pub.put(i)
    return t0, time.monotonic()


def one_run(client, workers: list[str], n: int, run: int) -> tuple[float, float]:
    from twofold import Event

    topic, ready = f"bench-topic-{run}", f"bench-ready-{run}"
    sub = client.submit(bench_subscriber, topic, n, ready, workers=[workers[1]], pure=False)
    assert Event(ready, client=client).wait(timeout=60)
    pub = client.submit(bench_publisher, topic, n, ready, workers=[workers[0]], pure=False)
    (start, puts_done), (last, ok) = pub.result(timeout=300), sub.result(timeout=300)
    if not ok:
        raise AssertionError("messages arrived out of order or changed")
    return n / (last - start), n / (puts_done - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("processes", "threads"), default="processes")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import twofold
    from twofold import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=args.shape == "processes")
    try:
        with Client(cluster, set_as_default=False) as client:
            workers = sorted(cluster.workers)
            one_run(client, workers, min(1000, args.messages), -1)  # warm up: imports, connections
            rates, puts = [], []
            for run in range(args.repeat):
                rate, put_rate = one_run(client, workers, args.messages, run)
                rates.append(rate)
                puts.append(put_rate)
                print(f"run {run}: {rate:12,.0f} messages/s end to end   {put_rate:12,.0f} puts/s")
    finally:
        cluster.close()
    print(f"twofold from {twofold.__file__}")
    print(f"{args.shape}, {args.messages:,} messages, median of {args.repeat}: "
          f"{statistics.median(rates):,.0f} messages/s end to end, {statistics.median(puts):,.0f} puts/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
