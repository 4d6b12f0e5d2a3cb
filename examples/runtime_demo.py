"""The same Client on real processes: a LocalCluster, a worker killed mid-graph, and the timings.

Run with ``./dev demo-runtime``.
"""

from __future__ import annotations

import os
import signal
import time

from twofold import Client, wait


def inc(x):
    return x + 1


def slow_inc(x):
    time.sleep(0.02)
    return x + 1


def where(_):
    return os.getpid()


def main() -> None:
    t0 = time.perf_counter()
    with Client(n_workers=2, threads_per_worker=1) as client:
        cluster = client.cluster
        print(f"cluster:         {cluster!r} ready in {time.perf_counter() - t0:.2f} s")

        t = time.perf_counter()
        futures = client.map(inc, range(20_000))
        total = client.submit(sum, futures)
        print(f"map 20,000:      sum = {total.result()}, {20_000 / (time.perf_counter() - t):,.0f} tasks/s")

        t = time.perf_counter()
        for i in range(200):
            client.submit(inc, i, pure=False).result()
        print(f"round trip:      {(time.perf_counter() - t) / 200 * 1000:.2f} ms per submit -> result")

        pids = set(client.gather(client.map(where, range(20), pure=False)))
        print(f"worker pids:     {sorted(pids)}")

        # a worker process dies mid-graph: its tasks run elsewhere, its results are recomputed
        chain = client.map(slow_inc, range(100), pure=False)
        victim = cluster.nannies[0]
        time.sleep(0.3)
        os.kill(victim.pid, signal.SIGKILL)
        print(f"SIGKILL:         worker pid {victim.pid} killed while 100 tasks run")
        wait(chain, timeout=60)
        print(f"after the kill:  {sum(client.gather(chain))} = {sum(range(1, 101))}, "
              f"nanny restarted it as pid {victim.pid} ({victim.restarts} restart)")
        client.wait_for_workers(2, timeout=30)
        print(f"workers:         {len(client.scheduler_info()['workers'])} registered again")
    print(f"closed:          {time.perf_counter() - t0:.2f} s in all")


if __name__ == "__main__":
    main()
