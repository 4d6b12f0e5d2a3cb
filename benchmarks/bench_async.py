"""twofold's asynchronous Client against dask.distributed's, in one process run.

    ./dev bench-async                       # both libraries, both shapes, median of 3
    ./dev bench-async --quick               # smoke run: a tenth of the sizes, 1 run each
    ./dev bench-async --only dask --shape processes --repeat 5 --json out.json

(``./dev bench-async`` installs the ``bench`` extra -- distributed, numpy --
into .venv first if it is missing, as ``./dev bench-dask`` does.)

Why a separate script: ``bench_vs_dask.py`` measures the synchronous API,
whose calls block a thread; ``Client(asynchronous=True)`` drives the same
multi-step operations from an event loop instead (``twofold.client.ops``:
one generator, a sync shell and an async shell) and hands results to the
caller's loop, so it is timed on its own, beside dask's async client.

Each library gets a ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=...)`` and, inside ``asyncio.run``, ``client = await
Client(cluster, asynchronous=True)``.  dask's cluster is made the way dask's
documentation makes one for an async client (``await LocalCluster(...,
asynchronous=True)``: its scheduler on the caller's loop, as a sync dask
client's shares one loop thread with its scheduler); twofold's
``LocalCluster`` is synchronous (its scheduler on twofold's loop thread), so
it is made in ``asyncio.to_thread``.

Workloads (sizes of a full run; ``--quick`` divides them by 10):

* round trip: 500 sequential ``await client.submit(inc, i, pure=False)``
  (median and p90 ms per op);
* map: ``futures = client.map(noop, range(20_000))``, then ``await
  client.gather(futures)`` (tasks/s);
* as_completed: ``client.map(inc, ...)`` of 5,000 tasks, then ``async for f in
  as_completed(futures)`` (tasks/s).

Every figure is the median of ``--repeat`` runs; the libraries take turns
within each round (each on a fresh cluster), so drifting load from other
work touches both alike; wall-clock time.  Results are checked.  A workload that fails, or overruns
``--timeout`` (``asyncio.wait_for``: a hang that blocks the event loop
itself is not caught), is reported and the next one runs.  The machine is shared and has 2
cores: read the ratios of one run, not absolute figures across runs (the
load average at start and end is printed with the table).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_vs_dask import (  # noqa: E402
    LibResult, compare, describe, fmt_run, fmt_value, fresh_salt, machine_info, parse_run_options, print_header,
    print_table, progress,
)

LIBS = ("twofold", "dask")
SHAPES = {"processes": True, "threads": False}
N_WORKERS = 2


@dataclass(frozen=True)
class Sizes:
    round_trips: int = 500
    map_tasks: int = 20_000
    as_completed_tasks: int = 5_000


FULL = Sizes()
QUICK = Sizes(round_trips=50, map_tasks=2_000, as_completed_tasks=500)


# --------------------------------------------------------------------------
# the workloads: one coroutine per workload, the same for both libraries
# --------------------------------------------------------------------------


async def settle() -> None:
    """Let released keys drain out of the cluster before the next timed run."""
    gc.collect()
    await asyncio.sleep(0.3)


async def a_round_trip(client, as_completed, sizes: Sizes) -> dict:
    """Sequential awaits of one submitted task: the async client's per-call latency."""
    from _bench_tasks import inc

    n, salt = sizes.round_trips, fresh_salt()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.submit(inc, salt + i, pure=False)
        samples.append(time.perf_counter() - t0)
        if r != salt + i + 1:
            raise AssertionError(f"round trip {i}: inc({salt + i}) gave {r!r}")
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[8] if n > 1 else samples[0]
    return {"art_median_ms": statistics.median(samples) * 1e3, "art_p90_ms": p90 * 1e3}


async def a_map(client, as_completed, sizes: Sizes) -> dict:
    """Throughput of many small tasks through the async client's map and gather."""
    from _bench_tasks import noop

    n, salt = sizes.map_tasks, fresh_salt()
    t0 = time.perf_counter()
    futures = client.map(noop, range(salt, salt + n))
    results = await client.gather(futures)
    elapsed = time.perf_counter() - t0
    if len(results) != n or any(r is not None for r in results):
        raise AssertionError(f"map: got {len(results)} results, expected {n} Nones")
    del futures, results
    return {"amap_tps": n / elapsed, "amap_s": elapsed}


async def a_as_completed(client, as_completed, sizes: Sizes) -> dict:
    """Completions delivered one by one to ``async for``: one await per task."""
    from _bench_tasks import inc

    n, salt = sizes.as_completed_tasks, fresh_salt()
    t0 = time.perf_counter()
    futures = client.map(inc, range(salt, salt + n))
    count = 0
    async for _ in as_completed(futures):
        count += 1
    elapsed = time.perf_counter() - t0
    if count != n:
        raise AssertionError(f"as_completed yielded {count} futures, expected {n}")
    bad = [f for f in futures if f.status != "finished"]
    if bad:
        raise AssertionError(f"as_completed: {len(bad)} futures not finished, e.g. {bad[0]!r} {bad[0].status}")
    del futures, bad
    return {"aac_tps": n / elapsed, "aac_s": elapsed}


#: (name, coroutine function, progress label of a run)
WORKLOADS: list[tuple[str, Callable, Callable[[Sizes], str]]] = [
    ("round_trip", a_round_trip, lambda s: f"{s.round_trips:,} await submit() round trips"),
    ("map", a_map, lambda s: f"map of {s.map_tasks:,} no-ops + await gather"),
    ("as_completed", a_as_completed, lambda s: f"async for over as_completed of {s.as_completed_tasks:,}"),
]

#: (workload, metric, label, unit, higher is better)
ROWS = [
    ("round_trip", "art_median_ms", lambda s: f"await submit() x{s.round_trips}, median", "ms", False),
    ("round_trip", "art_p90_ms", lambda s: f"await submit() x{s.round_trips}, p90", "ms", False),
    ("map", "amap_tps", lambda s: f"map {s.map_tasks:,} no-ops + await gather", "tasks/s", True),
    ("as_completed", "aac_tps", lambda s: f"async for as_completed, {s.as_completed_tasks:,}", "tasks/s", True),
]


# --------------------------------------------------------------------------
# one library on one cluster shape
# --------------------------------------------------------------------------


def load_lib(lib: str) -> tuple[Any, Any, Any, str]:
    """(Client, LocalCluster, as_completed, version) of a library."""
    if lib == "twofold":
        import twofold
        from twofold import Client, LocalCluster, as_completed

        return Client, LocalCluster, as_completed, twofold.__version__
    import distributed
    from distributed import Client, LocalCluster, as_completed

    return Client, LocalCluster, as_completed, distributed.__version__


async def open_cluster(lib: str, LocalCluster, processes: bool):
    """Each library's LocalCluster, made the way its async users make one (see the module docstring)."""
    kw = dict(n_workers=N_WORKERS, threads_per_worker=1, processes=processes)
    if lib == "dask":
        return await LocalCluster(asynchronous=True, dashboard_address=None, **kw)
    return await asyncio.to_thread(LocalCluster, **kw)


async def close_cluster(lib: str, cluster) -> None:
    if lib == "dask":
        await cluster.close()
    else:
        await asyncio.to_thread(cluster.close)


async def run_round(lib: str, shape: str, sizes: Sizes, run: str, timeout: float, res: LibResult) -> None:
    """Cluster, async client, warm-up, then one run of every workload, all on this loop."""
    Client, LocalCluster, as_completed, res.version = load_lib(lib)
    tag = f"[{lib}/{shape}]"
    progress(f"{tag} starting the cluster and the async client (run {run}) ...")
    cluster = await asyncio.wait_for(open_cluster(lib, LocalCluster, SHAPES[shape]), timeout)
    try:
        client = await asyncio.wait_for(Client(cluster, asynchronous=True), timeout)
        try:
            from _bench_tasks import inc, noop

            # warm up: workers import _bench_tasks and unpickle the functions once
            await asyncio.wait_for(client.gather(client.map(inc, range(-20, 0))), timeout)
            await asyncio.wait_for(client.gather(client.map(noop, range(-20, 0))), timeout)
            await settle()
            for name, fn, label in WORKLOADS:
                if name in res.failures:
                    continue
                progress(f"{tag} {label(sizes)} (run {run}) ...")
                try:
                    metrics = await asyncio.wait_for(fn(client, as_completed, sizes), timeout)
                except Exception as exc:  # noqa: BLE001 - reported, the next workload runs
                    res.failures[name] = describe(exc)
                    progress(f"{tag}   {name} FAILED: {res.failures[name]}")
                    progress("".join(traceback.format_exception(exc)[-4:]).rstrip())
                else:
                    res.add(metrics)
                    progress(f"{tag}   {fmt_run(metrics)}")
                await settle()
        finally:
            await client.close()
    finally:
        await close_cluster(lib, cluster)


def run_shape(libs: list[str], shape: str, sizes: Sizes, repeat: int, timeout: float) -> dict[str, LibResult]:
    """``repeat`` rounds, the libraries taking turns within each (one ``asyncio.run`` and
    a fresh cluster per library per round), so that load from other work on the
    machine touches both alike; a library that cannot start is reported, not fatal."""
    results = {lib: LibResult(lib, shape) for lib in libs}
    for i in range(repeat):
        for lib, res in results.items():
            if not res.available:
                continue
            try:
                asyncio.run(run_round(lib, shape, sizes, f"{i + 1}/{repeat}", timeout, res))
            except Exception as exc:  # noqa: BLE001
                if not res.runs:
                    res.available, res.error = False, describe(exc)
                    print(f"{lib}: not available: {res.error}", flush=True)
                else:
                    res.failures.setdefault("round", describe(exc))
                progress("".join(traceback.format_exception(exc)[-3:]).rstrip())
            gc.collect()
    return results


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def cell(res: LibResult | None, workload: str, metric: str, unit: str) -> str:
    if res is None:
        return "(not run)"
    if not res.available:
        return "n/a"
    value = res.median(metric)
    if value is None:
        return "FAILED" if workload in res.failures else "-"
    return fmt_value(value, unit)


def print_table(shape: str, results: dict[str, LibResult], sizes: Sizes, repeat: int) -> list[dict]:
    tf, dk = results.get("twofold"), results.get("dask")
    print()
    print(f"== {shape}: LocalCluster(n_workers={N_WORKERS}, threads_per_worker=1, processes={SHAPES[shape]}), "
          f"await Client(cluster, asynchronous=True), median of {repeat} ==")
    headers = ("workload", "unit", "better", "twofold", "dask", "twofold/dask", "verdict")
    lines, out = [], []
    for workload, metric, label, unit, higher in ROWS:
        tfv = tf.median(metric) if tf and tf.available else None
        dkv = dk.median(metric) if dk and dk.available else None
        ratio, verdict = compare(tfv, dkv, higher)
        lines.append((label(sizes), unit, "higher" if higher else "lower", cell(tf, workload, metric, unit),
                      cell(dk, workload, metric, unit), f"{ratio:.2f}" if ratio is not None else "-", verdict))
        out.append({"shape": shape, "workload": workload, "metric": metric, "label": label(sizes), "unit": unit,
                    "higher_is_better": higher, "twofold": tfv, "dask": dkv, "twofold_over_dask": ratio,
                    "verdict": verdict or None})
    print_table(headers, lines)
    for lib, res in results.items():
        if not res.available:
            print(f"  {lib}: not available: {res.error}")
        for name, msg in res.failures.items():
            print(f"  {lib} {name}: {msg}")
    sys.stdout.flush()
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    opts = parse_run_options(argv, __doc__, QUICK, FULL, SHAPES)
    args, repeat, timeout, sizes, libs, shapes = opts.args, opts.repeat, opts.timeout, opts.sizes, opts.libs, opts.shapes
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

    meta = machine_info()
    meta.update(repeat=repeat, quick=args.quick, sizes=sizes.__dict__, timeout=timeout,
                loadavg_start=list(os.getloadavg()))
    progress(f"bench_async: {', '.join(libs)} on {', '.join(shapes)}; median of {repeat}; "
             f"{meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at start")
    started = time.perf_counter()
    all_results = {shape: run_shape(libs, shape, sizes, repeat, timeout) for shape in shapes}
    meta["loadavg_end"] = list(os.getloadavg())
    meta["wall_s"] = time.perf_counter() - started
    meta["versions"] = {lib: r.version for shape in all_results.values() for lib, r in shape.items() if r.version}

    print_header(f"async clients: twofold vs dask.distributed, {N_WORKERS} workers x 1 thread; wall-clock medians of "
                 f"{repeat} run(s){' (--quick sizes)' if args.quick else ''}", meta)
    rows = []
    for shape, results in all_results.items():
        rows += print_table(shape, results, sizes, repeat)
    if args.json:
        doc = {"meta": meta, "rows": rows,
               "results": {shape: {lib: {"version": r.version, "available": r.available, "error": r.error,
                                         "medians": {k: statistics.median(v) for k, v in r.runs.items()},
                                         "runs": r.runs, "failures": r.failures}
                                   for lib, r in results.items()}
                           for shape, results in all_results.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
