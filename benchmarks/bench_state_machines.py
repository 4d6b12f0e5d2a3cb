"""Throughput of the two state machines alone, wired by hand (no I/O, no driver).

N independent tasks go submit -> ComputeTask -> Execute -> ExecuteSuccess ->
TaskFinished -> KeyInMemory -> ReleaseKeys -> FreeKeys -> DeleteData, on one
scheduler and W workers, submitted in batches like a client's ``map`` would.
Every event goes through ``handle``; the routing loop is as thin as it can
be.  Prints events handled per second (and tasks per second) for each size,
so the cost per task can be checked to stay flat as N grows.  Time is the
process's CPU time (single-threaded, no I/O), which other load on a noisy
machine disturbs less than wall time.

    ./dev bench                 # 10k and 100k tasks
    ./dev bench --sizes 10000 100000 1000000 --workers 4 --threads 2
    ./dev bench --profile       # cProfile of one 100k run, top 25 functions
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from twofold.config import SchedulerConfig
from twofold.messages import (
    AddWorker,
    ComputeTask,
    DeleteData,
    Execute,
    ExecuteSuccess,
    FreeKeys,
    KeyInMemory,
    ReleaseKeys,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
)
from twofold.scheduler import SchedulerState
from twofold.worker import WorkerState


def run(n_tasks: int, n_workers: int, nthreads: int, batch: int) -> tuple[float, int]:
    """Push ``n_tasks`` through; return (seconds, events handled)."""
    sched = SchedulerState(SchedulerConfig(steal_interval=0))
    workers = {f"w{i}": WorkerState(f"w{i}", nthreads) for i in range(n_workers)}
    events = 0
    for addr in workers:
        sched.handle(AddWorker(0.0, "add", addr, nthreads))
    now = 0.0
    pending_sched: list = []  # events for the scheduler
    start = time.process_time()
    for lo in range(0, n_tasks, batch):
        hi = min(lo + batch, n_tasks)
        keys = tuple(f"noop-{i}" for i in range(lo, hi))
        specs = tuple(TaskSpec(k, b"fn") for k in keys)
        pending_sched.append(UpdateGraph(now, "submit", "client", specs, keys))
        while pending_sched:
            ev = pending_sched.pop()
            outs = sched.handle(ev)
            events += 1
            released = []
            for out in outs:
                cls = type(out)
                if cls is ComputeTask or cls is FreeKeys:
                    ws = workers[out.worker]
                    wouts = ws.handle(out)
                    events += 1
                    while wouts:
                        nxt = []
                        for w in wouts:
                            wcls = type(w)
                            if wcls is Execute:
                                now += 1e-6
                                nxt.extend(ws.handle(ExecuteSuccess(now, "ex", w.key, 8, "NoneType", now, now)))
                                events += 1
                            elif wcls is TaskFinished:
                                pending_sched.append(w)
                        wouts = nxt
                elif cls is KeyInMemory:
                    released.append(out.key)
            if released:
                pending_sched.append(ReleaseKeys(now, "release", "client", tuple(released)))
    elapsed = time.process_time() - start
    assert not sched.tasks, f"{len(sched.tasks)} tasks left on the scheduler"
    assert all(not ws.tasks for ws in workers.values()), "tasks left on workers"
    return elapsed, events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000, help="tasks per UpdateGraph")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run, 100_000, args.workers, args.threads, args.batch)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    print(f"{args.workers} workers x {args.threads} threads, batches of {args.batch}, median of {args.repeat}")
    print(f"{'tasks':>10} {'seconds':>9} {'events':>10} {'events/s':>11} {'tasks/s':>10} {'us/task':>8}")
    for n in args.sizes:
        times = []
        for i in range(args.repeat):
            print(f"  run {i + 1}/{args.repeat} of {n:,} tasks ...", end="\r", file=sys.stderr, flush=True)
            elapsed, events = run(n, args.workers, args.threads, args.batch)
            times.append(elapsed)
        t = statistics.median(times)
        print(f"{n:>10,} {t:>9.3f} {events:>10,} {events / t:>11,.0f} {n / t:>10,.0f} {t / n * 1e6:>8.1f}")


if __name__ == "__main__":
    main()
