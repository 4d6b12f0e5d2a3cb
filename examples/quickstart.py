"""twofold in one page: dask's futures API on a simulated cluster, replayable from a seed.

Run with ``./dev demo``.  Everything below runs the real scheduler and worker
state machines; only time and the network are simulated.
"""

from __future__ import annotations

import time

from twofold import Client, as_completed, get_client, rejoin, secede, wait
from twofold.sim import Exponential, SimCluster


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def flaky_division(x, y):
    return x / y


def fan_out(n):
    """A task that submits tasks of its own (and leaves its thread while it waits)."""
    client = get_client()
    futures = client.map(inc, range(n))
    secede()
    total = sum(client.gather(futures))
    rejoin()
    return total


def main() -> None:
    wall = time.perf_counter()
    cluster = SimCluster(
        n_workers=4,
        threads_per_worker=2,
        seed=42,
        durations={"inc": Exponential(0.05), "add": 0.02, "*": 0.1},
        latency=0.001,
        validate=True,  # check every invariant after every simulated event
    )
    print(f"cluster: {cluster}")
    with Client(cluster) as client:
        a = client.submit(inc, 10)
        b = client.submit(add, a, 100)
        print(f"submit/result:   add(inc(10), 100) = {b.result()}   at t={cluster.now:.3f}s (virtual)")

        futures = client.map(inc, range(500))
        total = client.submit(sum, futures)
        print(f"map of 500:       sum = {total.result()}   at t={cluster.now:.3f}s")

        [big] = client.scatter([list(range(10_000))], broadcast=True)
        print(f"scatter:         {big.key[:20]}... on {len(client.who_has(big)[big.key])} workers")

        bad = client.submit(flaky_division, 1, 0)
        try:
            bad.result()
        except ZeroDivisionError as exc:
            print(f"remote error:    {type(exc).__name__}: {exc} (original traceback kept)")

        print(f"tasks in tasks:  fan_out(50) = {client.submit(fan_out, 50).result()}")

        # a worker dies in the middle of a graph: its work reruns elsewhere
        t0 = cluster.now
        cluster.crash("worker-1", at=t0 + 0.05)
        chain = client.submit(inc, 0)
        for _ in range(20):
            chain = client.submit(inc, chain)
        layer = [client.submit(add, chain, i) for i in range(40)]
        done = 0
        for _ in as_completed(layer):
            done += 1
        print(f"crash mid-graph: {done}/40 finished, chain = {chain.result()}, "
              f"workers alive: {len(cluster.alive_workers)}/4")
        wait(layer)

    tasks = cluster.records("task")
    faults = [f for f in cluster.records("fault") if f["what"] != "worker-start"]
    print(f"\ntrace: {len(tasks)} task runs, {len(cluster.records('transfer'))} transfers, "
          f"faults: {[(f['what'], f['target'], round(f['time'], 3)) for f in faults]}")
    print(f"virtual time {cluster.now:.3f}s, wall time {time.perf_counter() - wall:.2f}s")
    print(f"digest {cluster.digest()}  (same seed, same program -> same digest, in any process)")


if __name__ == "__main__":
    main()
