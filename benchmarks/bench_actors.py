"""Actor method round trips, twofold against dask.distributed, in one run.

    ./dev python benchmarks/bench_actors.py                  # processes, 200 calls, median of 3
    ./dev python benchmarks/bench_actors.py --shape threads --calls 500 --repeat 5

Only the ``actor`` workload of ``bench_vs_dask.py`` (which runs it among the
others): on ``Client(n_workers=2, threads_per_worker=1, processes=...)``,
``counter = client.submit(Counter, actor=True).result()``, then ``--calls``
sequential ``counter.increment().result()``; the median (and p99) of each
run, the median over ``--repeat`` runs (libraries alternate, so drift on the
machine touches both alike).  dask is skipped if ``distributed`` is not
installed (``./dev bench-dask`` installs it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace

from bench_vs_dask import FULL, HERE, SHAPES, close_client, load_lib, settle, start_client, w_actor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=tuple(SHAPES), default="processes")
    parser.add_argument("--calls", type=int, default=FULL.actor_calls)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(HERE) + (os.pathsep + path if path else "")  # workers import _bench_tasks
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    sizes = replace(FULL, actor_calls=args.calls)
    clients = {}
    for lib in ("twofold", "dask"):
        try:
            Client, wait, as_completed, version = load_lib(lib)
        except ImportError as exc:
            print(f"{lib}: not available: {exc}")
            continue
        clients[lib] = (start_client(Client, SHAPES[args.shape]), wait, as_completed, version)
    runs: dict[str, list[dict]] = {lib: [] for lib in clients}
    for i in range(args.repeat):
        for lib, (client, wait, as_completed, _) in clients.items():
            metrics = w_actor(client, wait, as_completed, sizes)
            runs[lib].append(metrics)
            print(f"[{lib}/{args.shape}] run {i + 1}: median {metrics['actor_median_ms']:.3f} ms, "
                  f"p99 {metrics['actor_p99_ms']:.3f} ms", file=sys.stderr, flush=True)
            settle()
    for client, *_ in clients.values():
        close_client(client, 30.0)
    print(f"actor round trip, {args.calls} sequential calls, {args.shape}, median of {args.repeat} runs "
          f"(load average {os.getloadavg()[0]:.2f})")
    medians = {}
    for lib, metrics in runs.items():
        medians[lib] = statistics.median(m["actor_median_ms"] for m in metrics)
        p99 = statistics.median(m["actor_p99_ms"] for m in metrics)
        print(f"  {lib:8} {clients[lib][3]:>12}  median {medians[lib]:.3f} ms  p99 {p99:.3f} ms")
    if len(medians) == 2:
        print(f"  twofold/dask: {medians['twofold'] / medians['dask']:.2f} (lower is better for twofold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
