"""Simulated tasks per wall-clock second, through the real Client.

    ./dev python benchmarks/bench_sim.py                 # 10k and 100k no-ops on 100 workers, 10k-task DAG
    ./dev python benchmarks/bench_sim.py --sizes 10000 100000 1000000
    ./dev python benchmarks/bench_sim.py --profile       # cProfile of a 20k no-op run

No-op tasks: ``client.map(noop, range(n))`` then ``wait``; the DAG: a random
layered graph (``twofold.sim.workloads``).  Invariant checks are off (they
are O(state) per event).  Both process CPU time (which load from other
processes on a noisy machine disturbs less) and wall-clock time are shown;
each run starts from a collected heap.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time


def noop(x):
    return None


def _clean_heap() -> None:
    """Collect the previous run's garbage before timing the next: a finished
    simulation is a web of cycles (hundreds of thousands of objects) that
    would otherwise be traversed, and charged, during the next run."""
    gc.collect()


def run_noops(n: int, workers: int, threads: int, seed: int = 0) -> tuple[float, float, float]:
    """(process CPU seconds, wall seconds, virtual seconds) of ``n`` no-op tasks."""
    from twofold import Client, wait
    from twofold.sim import SimCluster

    _clean_heap()
    start = time.process_time()
    wall = time.perf_counter()
    cluster = SimCluster(n_workers=workers, threads_per_worker=threads, seed=seed, trace_transitions=False)
    with Client(cluster, set_as_default=False) as client:
        futures = client.map(noop, range(n))
        wait(futures)
        del futures
    elapsed = time.process_time() - start
    wall = time.perf_counter() - wall
    virtual = cluster.now
    cluster.close()
    return elapsed, wall, virtual


def run_dag(n: int, workers: int, threads: int, seed: int = 0) -> tuple[float, float, float]:
    """(process CPU seconds, wall seconds, makespan) of a random layered DAG of ``n`` tasks."""
    from twofold.sim.workloads import random_layered, run_workload

    layers = 20
    width = n // layers
    # about three inputs per task whatever the size, so cost per task stays comparable
    g = random_layered(layers=layers, width=width, edge_probability=min(1.0, 3 / width), seed=seed,
                       duration=0.01, nbytes=1000)
    _clean_heap()
    start = time.process_time()
    wall = time.perf_counter()
    report = run_workload(g, n_workers=workers, threads_per_worker=threads, seed=seed, trace_transitions=False)
    return time.process_time() - start, time.perf_counter() - wall, report.makespan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dag", type=int, default=10_000, help="tasks in the random DAG (0: skip)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    import twofold.sim.workloads  # noqa: F401 - imported before timing: the first size would pay for it
    from twofold import Client  # noqa: F401

    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run_noops, 20_000, args.workers, args.threads)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    print(f"no-op tasks on {args.workers} simulated workers x {args.threads} thread(s), median of {args.repeat}")
    header = f"{'tasks':>10} {'cpu s':>8} {'tasks/s':>10} {'us/task':>8} {'wall s':>8} {'tasks/s':>10} {'virtual s':>10}"
    print(header)

    def row(n: int, cpu: float, wall: float, virtual: float) -> str:
        return f"{n:>10,} {cpu:>8.2f} {n / cpu:>10,.0f} {cpu / n * 1e6:>8.1f} {wall:>8.2f} {n / wall:>10,.0f} {virtual:>10.3f}"

    for n in args.sizes:
        runs = []
        for i in range(args.repeat):
            print(f"  running {n:,} tasks ({i + 1}/{args.repeat}) ...", end="\r", file=sys.stderr, flush=True)
            runs.append(run_noops(n, args.workers, args.threads))
        print(row(n, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]))
    if args.dag:
        print(f"random layered DAG, {args.dag:,} tasks, 20 layers, ~3 inputs per task, on {args.workers} workers"
              " (last column: makespan)")
        print(row(args.dag, *run_dag(args.dag, args.workers, args.threads)))


if __name__ == "__main__":
    main()
