"""twofold against dask.distributed: the same workloads, in one process run.

    ./dev bench-dask                        # both libraries, both cluster shapes, median of 3
    ./dev bench-dask --quick                # smoke run: small sizes, 1 run each
    ./dev bench-dask --only dask --shape processes --repeat 5 --json out.json

(``./dev bench-dask`` installs the ``bench`` extra -- distributed, numpy --
into .venv first if it is missing.)

Cluster shapes, the same for both libraries:

* ``processes``: ``Client(n_workers=2, threads_per_worker=1, processes=True)``
* ``threads``:   ``Client(n_workers=2, threads_per_worker=1, processes=False)``

Workloads (sizes of a full run; ``--quick`` divides them), each written once
as a function of ``(client, wait, as_completed)`` so both libraries run the
identical code:

* map: ``client.map(noop, ...)`` of 20,000 tasks, then ``client.gather`` (tasks/s);
* round trip: 500 sequential ``client.submit(inc, i).result()`` (median and p99 ms);
* actor: 200 sequential ``counter.increment().result()`` on an actor
  (``client.submit(Counter, actor=True)``), straight to its worker (median ms);
* primitives: 500 sequential round trips on one named coordination primitive
  (``Lock``/``Queue``/``Event``/``Variable`` of the library under test, a fresh
  name per run), each from the client's process and from inside one task
  (``client.submit(primitive_loop, ...)``, which times its own iterations and
  returns them), median and p99 ms of one iteration:
  ``with lock: pass``; ``q.put(i); q.get()``; ``e.set(); e.wait()``;
  ``v.set(i); v.get()`` (``_bench_tasks.primitive_loop``, 5 untimed first);
* tree: binary-tree reduction over 4,096 leaves built from futures
  (``submit(inc, i)`` leaves, then ``submit(add, a, b)`` pairwise up to the root;
  8,191 tasks; tasks/s from the first submit to the root's result);
* as_completed: ``client.map`` of 5,000 tasks, iterated with ``as_completed`` (tasks/s);
* scatter/gather: a 100 MB numpy array scattered (until ``wait`` says it is
  there) then gathered back (MB/s each);
* transfer: a 50 MB numpy array made by a task pinned on worker A, then
  consumed by a task pinned on worker B (``workers=[...]``); seconds from
  submitting the consumer to its (small) result;
* start-up: ``Client(...)`` until both workers are ready (``client.wait_for_workers(2)``
  where the client has it), and ``client.close()`` (seconds).

Every figure is the median of ``--repeat`` runs (repeats are the outer loop,
so slow drift on the machine touches every workload alike); wall-clock time
(``time.perf_counter``), since the work is spread over several processes.
Task arguments differ in every run (a fresh "salt"), so the default
``pure=True`` keys never collide with a previous run's.  Results are checked.

A library that cannot start a cluster is reported as ``<lib>: not available:
<error>`` and the other still runs; a workload that fails or hangs (``--timeout``
per run) is reported and the next one runs.

The machine these run on has 2 cores and is shared with other work:
absolute figures drift from run to run, so read the ratios of one run
(the load average at start and end is printed with the table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
LIBS = ("twofold", "dask")
SHAPES = {"processes": True, "threads": False}
N_WORKERS = 2


# --------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    map_tasks: int = 20_000
    round_trips: int = 500
    actor_calls: int = 200
    primitive_ops: int = 500
    tree_leaves: int = 4_096
    as_completed_tasks: int = 5_000
    scatter_mb: int = 100
    transfer_mb: int = 50


FULL = Sizes()
QUICK = Sizes(map_tasks=2_000, round_trips=50, actor_calls=50, primitive_ops=50, tree_leaves=256, as_completed_tasks=500, scatter_mb=10, transfer_mb=5)
MB = 1_000_000


# --------------------------------------------------------------------------
# the workloads: one code path for both libraries
# --------------------------------------------------------------------------

_salt = 0


def fresh_salt() -> int:
    """A number no earlier run used: keeps pure=True keys distinct between runs."""
    global _salt
    _salt += 10_000_000
    return _salt


def settle() -> None:
    """Let released keys drain out of the cluster before the next timed run."""
    gc.collect()
    time.sleep(0.3)


def w_map(client, wait, as_completed, sizes: Sizes) -> dict:
    from _bench_tasks import noop

    n, salt = sizes.map_tasks, fresh_salt()
    t0 = time.perf_counter()
    futures = client.map(noop, range(salt, salt + n))
    results = client.gather(futures)
    elapsed = time.perf_counter() - t0
    if len(results) != n or any(r is not None for r in results):
        raise AssertionError(f"map: got {len(results)} results, expected {n} Nones")
    del futures, results
    return {"map_tps": n / elapsed, "map_s": elapsed}


def w_round_trip(client, wait, as_completed, sizes: Sizes) -> dict:
    from _bench_tasks import inc

    n, salt = sizes.round_trips, fresh_salt()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        r = client.submit(inc, salt + i).result()
        samples.append(time.perf_counter() - t0)
        if r != salt + i + 1:
            raise AssertionError(f"round trip {i}: inc({salt + i}) gave {r!r}")
    samples.sort()
    p99 = statistics.quantiles(samples, n=100, method="inclusive")[98] if n > 1 else samples[0]
    return {"rt_median_ms": statistics.median(samples) * 1e3, "rt_p99_ms": p99 * 1e3,
            "rt_total_s": sum(samples)}


def w_actor(client, wait, as_completed, sizes: Sizes) -> dict:
    """Sequential method calls on one actor: each goes to its worker and back (not via the scheduler)."""
    from _bench_tasks import Counter

    n = sizes.actor_calls
    future = client.submit(Counter, actor=True)
    counter = future.result()
    counter.increment().result()  # warm: the connection to the actor's worker is open
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        r = counter.increment().result()
        samples.append(time.perf_counter() - t0)
        if r != i + 2:
            raise AssertionError(f"actor call {i}: increment() gave {r!r}, expected {i + 2}")
    samples.sort()
    p99 = statistics.quantiles(samples, n=100, method="inclusive")[98] if n > 1 else samples[0]
    del counter, future
    return {"actor_median_ms": statistics.median(samples) * 1e3, "actor_p99_ms": p99 * 1e3}


def median_p99(samples: list[float]) -> tuple[float, float]:
    """(median, 99th percentile) of a list of seconds, in ms."""
    samples = sorted(samples)
    p99 = statistics.quantiles(samples, n=100, method="inclusive")[98] if len(samples) > 1 else samples[0]
    return statistics.median(samples) * 1e3, p99 * 1e3


def library_of(client) -> str:
    """"twofold" or "dask": whose Client this is (the primitives workloads use that library's classes)."""
    return "twofold" if type(client).__module__.split(".")[0] == "twofold" else "dask"


#: the coordination primitives workloads: (op, what one iteration does)
PRIMITIVE_OPS = {
    "lock": "Lock acquire+release",
    "queue": "Queue put+get",
    "event": "Event set+wait",
    "variable": "Variable set+get",
}
PLACES = ("client", "task")


def primitive_workload(op: str, place: str) -> Callable:
    """The workload: ``sizes.primitive_ops`` round trips of ``op`` from the client's
    process (``place="client"``) or inside one task (``"task"``)."""

    def workload(client, wait, as_completed, sizes: Sizes) -> dict:
        from _bench_tasks import primitive_loop

        lib, n = library_of(client), sizes.primitive_ops
        name = f"bench-{op}-{place}-{fresh_salt()}"
        if place == "client":
            samples = primitive_loop(lib, op, name, n)
        else:
            future = client.submit(primitive_loop, lib, op, name, n, pure=False)
            samples = future.result()
            del future
        if len(samples) != n:
            raise AssertionError(f"{op} from the {place}: {len(samples)} timings, expected {n}")
        median, p99 = median_p99(samples)
        return {f"{op}_{place}_median_ms": median, f"{op}_{place}_p99_ms": p99}

    workload.__name__ = f"w_{op}_{place}"
    return workload


def w_tree(client, wait, as_completed, sizes: Sizes) -> dict:
    from _bench_tasks import add, inc

    n, salt = sizes.tree_leaves, fresh_salt()
    t0 = time.perf_counter()
    level = [client.submit(inc, salt + i) for i in range(n)]
    tasks = n
    while len(level) > 1:
        nxt = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        tasks += len(nxt)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    total = level[0].result()
    elapsed = time.perf_counter() - t0
    expected = n * salt + n * (n + 1) // 2
    if total != expected:
        raise AssertionError(f"tree: root is {total!r}, expected {expected}")
    del level, nxt
    return {"tree_tps": tasks / elapsed, "tree_s": elapsed, "tree_tasks": tasks}


def w_as_completed(client, wait, as_completed, sizes: Sizes) -> dict:
    from _bench_tasks import inc

    n, salt = sizes.as_completed_tasks, fresh_salt()
    t0 = time.perf_counter()
    futures = client.map(inc, range(salt, salt + n))
    count = 0
    for f in as_completed(futures):
        count += 1
    elapsed = time.perf_counter() - t0
    if count != n:
        raise AssertionError(f"as_completed yielded {count} futures, expected {n}")
    bad = [f for f in futures if f.status != "finished"]
    if bad:
        raise AssertionError(f"as_completed: {len(bad)} futures not finished, e.g. {bad[0]!r} {bad[0].status}")
    del futures, bad
    return {"ac_tps": n / elapsed, "ac_s": elapsed}


def w_scatter_gather(client, wait, as_completed, sizes: Sizes) -> dict:
    import numpy as np

    nbytes = sizes.scatter_mb * MB
    salt = fresh_salt()
    data = np.ones(nbytes, dtype=np.uint8)
    data[:8] = np.frombuffer(salt.to_bytes(8, "little"), dtype=np.uint8)  # fresh content: fresh hash key
    t0 = time.perf_counter()
    future = client.scatter(data)
    wait([future])
    t1 = time.perf_counter()
    back = client.gather(future)
    t2 = time.perf_counter()
    if back.nbytes != nbytes or not np.array_equal(back[:16], data[:16]) or back[-1] != 1:
        raise AssertionError("scatter/gather: the array came back different")
    del future, back, data
    return {"scatter_MBps": nbytes / MB / (t1 - t0), "gather_MBps": nbytes / MB / (t2 - t1),
            "scatter_s": t1 - t0, "gather_s": t2 - t1}


def worker_addresses(client) -> list[str]:
    """Every worker's address, the same way for both libraries: broadcast a
    scattered object and ask who holds it."""
    f = client.scatter(fresh_salt(), broadcast=True, hash=False)
    f.result()
    who = client.who_has([f])
    addrs = sorted(who[f.key])
    del f
    return addrs


def w_transfer(client, wait, as_completed, sizes: Sizes) -> dict:
    from _bench_tasks import make_array, nbytes_of

    addrs = worker_addresses(client)
    if len(addrs) < 2:
        raise RuntimeError(f"need 2 workers to move data between, found {addrs}")
    a, b = addrs[0], addrs[1]
    nbytes = sizes.transfer_mb * MB
    src = client.submit(make_array, nbytes, fresh_salt(), workers=[a])
    wait([src])
    holders = list(client.who_has([src])[src.key])
    if holders != [a]:
        raise AssertionError(f"transfer: source pinned on {a} is held by {holders}")
    t0 = time.perf_counter()
    dst = client.submit(nbytes_of, src, workers=[b])
    n = dst.result()
    elapsed = time.perf_counter() - t0
    if n != nbytes:
        raise AssertionError(f"transfer: consumer saw {n} bytes, expected {nbytes}")
    where = list(client.who_has([dst])[dst.key])
    if where != [b]:
        raise AssertionError(f"transfer: consumer pinned on {b} ran on {where}")
    del src, dst
    return {"transfer_s": elapsed, "transfer_MBps": nbytes / MB / elapsed}


#: (name, function, progress label of a run)
WORKLOADS: list[tuple[str, Callable, Callable[[Sizes], str]]] = [
    ("map", w_map, lambda s: f"map of {s.map_tasks:,} no-ops + gather"),
    ("round_trip", w_round_trip, lambda s: f"{s.round_trips:,} submit->result round trips"),
    ("actor", w_actor, lambda s: f"{s.actor_calls:,} actor method round trips"),
    *((f"{op}_{place}", primitive_workload(op, place),
       lambda s, what=what, place=place: f"{s.primitive_ops:,} x {what} from the {place}")
      for place in PLACES for op, what in PRIMITIVE_OPS.items()),
    ("tree", w_tree, lambda s: f"tree reduction over {s.tree_leaves:,} leaves"),
    ("as_completed", w_as_completed, lambda s: f"as_completed over {s.as_completed_tasks:,} tasks"),
    ("scatter_gather", w_scatter_gather, lambda s: f"scatter + gather {s.scatter_mb} MB"),
    ("transfer", w_transfer, lambda s: f"{s.transfer_mb} MB worker->worker"),
]


# --------------------------------------------------------------------------
# the rows of the table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    label: Callable[[Sizes], str]
    unit: str
    higher_is_better: bool


ROWS = [
    Row("map", "map_tps", lambda s: f"map {s.map_tasks:,} no-ops + gather", "tasks/s", True),
    Row("round_trip", "rt_median_ms", lambda s: f"submit->result x{s.round_trips}, median", "ms", False),
    Row("round_trip", "rt_p99_ms", lambda s: f"submit->result x{s.round_trips}, p99", "ms", False),
    Row("actor", "actor_median_ms", lambda s: f"actor call->result x{s.actor_calls}, median", "ms", False),
    Row("actor", "actor_p99_ms", lambda s: f"actor call->result x{s.actor_calls}, p99", "ms", False),
    *(Row(f"{op}_{place}", f"{op}_{place}_{stat}_ms",
          lambda s, what=what, place=place, stat=stat: f"{what} x{s.primitive_ops} ({place}), {stat}", "ms", False)
      for place in PLACES for op, what in PRIMITIVE_OPS.items() for stat in ("median", "p99")),
    Row("tree", "tree_tps", lambda s: f"tree reduction, {s.tree_leaves:,} leaves", "tasks/s", True),
    Row("as_completed", "ac_tps", lambda s: f"as_completed, {s.as_completed_tasks:,} tasks", "tasks/s", True),
    Row("scatter_gather", "scatter_MBps", lambda s: f"scatter {s.scatter_mb} MB", "MB/s", True),
    Row("scatter_gather", "gather_MBps", lambda s: f"gather {s.scatter_mb} MB", "MB/s", True),
    Row("transfer", "transfer_s", lambda s: f"{s.transfer_mb} MB worker->worker", "s", False),
    Row("startup", "startup_s", lambda s: "Client() until 2 workers ready", "s", False),
    Row("startup", "close_s", lambda s: "client.close()", "s", False),
]


# --------------------------------------------------------------------------
# running one library on one cluster shape
# --------------------------------------------------------------------------


class WorkloadTimeout(Exception):
    pass


def call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """Run ``fn`` in a daemon thread (the same for both libraries) so that a
    hang is reported after ``timeout`` seconds instead of stopping the run."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="bench-workload", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise WorkloadTimeout(f"no result after {timeout:g} s (left running in a daemon thread)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def load_lib(lib: str) -> tuple[Any, Any, Any, str]:
    """(Client, wait, as_completed, version) of a library."""
    if lib == "twofold":
        import twofold
        from twofold import Client, as_completed, wait

        return Client, wait, as_completed, twofold.__version__
    import distributed
    from distributed import Client, as_completed, wait

    return Client, wait, as_completed, distributed.__version__


def start_client(Client, processes: bool):
    client = Client(n_workers=N_WORKERS, threads_per_worker=1, processes=processes)
    # twofold's Client() returns once the workers are ready; dask's needs this
    wait_for_workers = getattr(client, "wait_for_workers", None)
    if callable(wait_for_workers):
        wait_for_workers(N_WORKERS)
    return client


def close_client(client, timeout: float | None) -> None:
    try:
        call_with_timeout(client.close, timeout)
    except Exception as exc:  # noqa: BLE001
        progress(f"    closing failed: {describe(exc)}")


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ") + (" ..." if len(text) > 1 else "")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_run(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if key.endswith(("_tps", "_MBps")):
            parts.append(f"{key}={value:,.0f}")
        elif key.endswith("_ms"):
            parts.append(f"{key}={value:.2f}")
        elif key.endswith("_s"):
            parts.append(f"{key}={value:.3f}")
    return " ".join(parts)


@dataclass
class LibResult:
    lib: str
    shape: str
    version: str = ""
    available: bool = True
    error: str | None = None
    runs: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.runs.setdefault(k, []).append(float(v))

    def median(self, metric: str) -> float | None:
        values = self.runs.get(metric)
        return statistics.median(values) if values else None


def run_lib(lib: str, shape: str, sizes: Sizes, repeat: int, timeout: float, state: dict) -> LibResult:
    res = LibResult(lib, shape)
    tag = f"[{lib}/{shape}]"
    try:
        Client, wait, as_completed, res.version = load_lib(lib)
    except Exception as exc:  # noqa: BLE001
        res.available, res.error = False, describe(exc)
        print(f"{lib}: not available: {res.error}", flush=True)
        return res
    processes = SHAPES[shape]

    # start-up and close, each repeat on a fresh cluster
    for i in range(repeat):
        progress(f"{tag} start-up/close (run {i + 1}/{repeat}) ...")
        t0 = time.perf_counter()
        try:
            client = call_with_timeout(lambda: start_client(Client, processes), timeout)
        except Exception as exc:  # noqa: BLE001
            if i == 0:
                res.available, res.error = False, describe(exc)
                print(f"{lib}: not available: {res.error}", flush=True)
                if not isinstance(exc, WorkloadTimeout):
                    progress("".join(traceback.format_exception(exc)[-3:]).rstrip())
                else:
                    state["hung"] = True
                return res
            res.failures["startup"] = describe(exc)
            progress(f"{tag} start-up FAILED: {res.failures['startup']}")
            break
        t1 = time.perf_counter()
        try:
            call_with_timeout(client.close, timeout)
            t2 = time.perf_counter()
            res.add({"startup_s": t1 - t0, "close_s": t2 - t1})
            progress(f"{tag}   start-up {t1 - t0:.3f} s, close {t2 - t1:.3f} s")
        except Exception as exc:  # noqa: BLE001
            res.add({"startup_s": t1 - t0})
            res.failures["startup"] = f"close: {describe(exc)}"
            progress(f"{tag} close FAILED: {res.failures['startup']}")
            state["hung"] = state.get("hung") or isinstance(exc, WorkloadTimeout)
        settle()

    # the workloads, on one cluster
    progress(f"{tag} starting the cluster for the workloads ...")
    try:
        client = call_with_timeout(lambda: start_client(Client, processes), timeout)
        # warm up: workers import _bench_tasks and unpickle the functions once
        from _bench_tasks import inc, noop

        call_with_timeout(lambda: client.gather(client.map(inc, range(-20, 0))), timeout)
        call_with_timeout(lambda: client.gather(client.map(noop, range(-20, 0))), timeout)
    except Exception as exc:  # noqa: BLE001
        msg = describe(exc)
        for name, _, _ in WORKLOADS:
            res.failures[name] = f"cluster did not start: {msg}"
        progress(f"{tag} cluster for the workloads FAILED: {msg}")
        state["hung"] = state.get("hung") or isinstance(exc, WorkloadTimeout)
        return res
    settle()
    stuck = False
    for i in range(repeat):
        for name, fn, label in WORKLOADS:
            if name in res.failures:
                continue
            progress(f"{tag} {label(sizes)} (run {i + 1}/{repeat}) ...")
            try:
                metrics = call_with_timeout(lambda: fn(client, wait, as_completed, sizes), timeout)
            except WorkloadTimeout as exc:
                res.failures[name] = describe(exc)
                progress(f"{tag}   {name} FAILED: {res.failures[name]}; skipping the rest of {lib}/{shape}")
                stuck = state["hung"] = True
                break
            except Exception as exc:  # noqa: BLE001
                res.failures[name] = describe(exc)
                progress(f"{tag}   {name} FAILED: {res.failures[name]}")
                progress("".join(traceback.format_exception(exc)[-4:]).rstrip())
                settle()
                continue
            res.add(metrics)
            progress(f"{tag}   {fmt_run(metrics)}")
            settle()
        if stuck:
            for name, _, _ in WORKLOADS:
                res.failures.setdefault(name, "skipped: an earlier workload hung")
            break
    progress(f"{tag} closing ...")
    close_client(client, timeout)
    settle()
    return res


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("tasks/s", "MB/s"):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:.3f}"


def row_cell(res: LibResult | None, row: Row) -> str:
    if res is None:
        return "(not run)"
    if not res.available:
        return "n/a"
    value = res.median(row.metric)
    if value is None:
        return "FAILED" if row.workload in res.failures else "-"
    return fmt_value(value, row.unit)


def compare(tf: float | None, dk: float | None, higher_is_better: bool) -> tuple[float | None, str]:
    """(twofold/dask, verdict)"""
    if tf is None or dk is None or dk == 0 or tf == 0:
        return None, ""
    ratio = tf / dk
    better = ratio if higher_is_better else 1 / ratio
    if 0.95 <= better <= 1.05:
        return ratio, "about even"
    return ratio, f"twofold {better:.2f}x better" if better > 1 else f"dask {1 / better:.2f}x better"


def print_table(shape: str, results: dict[str, LibResult], sizes: Sizes, repeat: int) -> list[dict]:
    tf, dk = results.get("twofold"), results.get("dask")
    print()
    print(f"== {shape}: Client(n_workers={N_WORKERS}, threads_per_worker=1, processes={SHAPES[shape]}), "
          f"median of {repeat} ==")
    for lib, res in results.items():
        if not res.available:
            print(f"{lib}: not available: {res.error}")
    headers = ("workload", "unit", "better", "twofold", "dask", "twofold/dask", "verdict")
    lines, out = [], []
    for row in ROWS:
        tfv = tf.median(row.metric) if tf and tf.available else None
        dkv = dk.median(row.metric) if dk and dk.available else None
        ratio, verdict = compare(tfv, dkv, row.higher_is_better)
        lines.append((row.label(sizes), row.unit, "higher" if row.higher_is_better else "lower",
                      row_cell(tf, row), row_cell(dk, row), f"{ratio:.2f}" if ratio is not None else "-", verdict))
        out.append({"shape": shape, "workload": row.workload, "metric": row.metric, "label": row.label(sizes),
                    "unit": row.unit, "higher_is_better": row.higher_is_better, "twofold": tfv, "dask": dkv,
                    "twofold_over_dask": ratio, "verdict": verdict or None})
    print_table(headers, lines)
    for lib, res in results.items():
        for name, msg in res.failures.items():
            print(f"  {lib} {name}: {msg}")
    if not SHAPES[shape]:
        print("  (threads: both libraries may hand objects over in-process without copying or serializing\n"
              "   them, so gather and worker->worker figures here need not measure any data movement)")
    sys.stdout.flush()
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def machine_info() -> dict:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        info["git"] = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    return info


@dataclass(frozen=True)
class RunOptions:
    """The command line shared by the benchmarks against dask (this one and ``bench_async.py``)."""

    args: argparse.Namespace
    repeat: int
    timeout: float
    sizes: Any
    libs: list[str]
    shapes: list[str]


def parse_run_options(argv: list[str] | None, description: str | None, quick: Any, full: Any,
                      shapes: Any = None) -> RunOptions:  # fmt: skip
    """Parse ``--only/--shape/--repeat/--quick/--timeout/--json``; set ``PYTHONPATH`` so that
    worker processes (both libraries) import ``_bench_tasks`` by name."""
    shapes = SHAPES if shapes is None else shapes
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=LIBS, help="run one library only")
    parser.add_argument("--shape", choices=(*shapes, "both"), default="both", help="cluster shape(s) (default both)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure, median reported (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tenth of the sizes")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds before one run of a workload counts as hung (default 600; 120 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be >= 1")
    timeout = args.timeout if args.timeout is not None else (120.0 if args.quick else 600.0)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(HERE) + (os.pathsep + path if path else "")
    return RunOptions(args, repeat, timeout, quick if args.quick else full, [args.only] if args.only else list(LIBS),
                      list(shapes) if args.shape == "both" else [args.shape])  # fmt: skip


def print_table(headers: tuple, lines: list, right: frozenset = frozenset({3, 4, 5})) -> None:
    """The comparison table: columns as wide as their widest cell, the numbers right-aligned."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(fmt(headers))
    print(fmt(["-" * w for w in widths]))
    for line in lines:
        print(fmt(line))


def print_header(title: str, meta: dict) -> None:
    """What a results table needs said first: versions, git, the machine's load during the run."""
    print()
    print(title)
    print(f"versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items()) or '-'}; python {meta['python']}; "
          f"git {meta.get('git', '?')}")
    print(f"machine: {meta['cpus']} CPUs, shared with other work; load average "
          f"{meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end; "
          f"{meta['wall_s']:.0f} s in all. Compare within one run.")


def main(argv: list[str] | None = None) -> int:
    opts = parse_run_options(argv, __doc__, QUICK, FULL)
    args, repeat, timeout, sizes, libs, shapes = opts.args, opts.repeat, opts.timeout, opts.sizes, opts.libs, opts.shapes
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    # dask logs warnings (unresponsive event loop, GC time) on a loaded machine; keep errors
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")

    meta = machine_info()
    meta.update(repeat=repeat, quick=args.quick, sizes=sizes.__dict__, timeout=timeout,
                loadavg_start=list(os.getloadavg()))
    progress(f"bench_vs_dask: {', '.join(libs)} on {', '.join(shapes)}; median of {repeat}; "
             f"{meta['cpus']} CPUs, load average {meta['loadavg_start'][0]:.2f} at start")
    state: dict[str, Any] = {}
    all_results: dict[str, dict[str, LibResult]] = {}
    started = time.perf_counter()
    for shape in shapes:
        all_results[shape] = {}
        for lib in libs:
            all_results[shape][lib] = run_lib(lib, shape, sizes, repeat, timeout, state)
    meta["loadavg_end"] = list(os.getloadavg())
    meta["wall_s"] = time.perf_counter() - started
    meta["versions"] = {lib: res.version for shape in all_results.values() for lib, res in shape.items() if res.version}

    print_header(f"twofold vs dask.distributed, {N_WORKERS} workers x 1 thread; wall-clock medians of {repeat} run(s)"
                 f"{' (--quick sizes)' if args.quick else ''}", meta)
    rows = []
    for shape, results in all_results.items():
        rows += print_table(shape, results, sizes, repeat)

    if args.json:
        doc = {
            "meta": meta,
            "rows": rows,
            "results": {
                shape: {
                    lib: {"version": r.version, "available": r.available, "error": r.error,
                          "medians": {k: statistics.median(v) for k, v in r.runs.items()},
                          "runs": r.runs, "failures": r.failures}
                    for lib, r in results.items()
                }
                for shape, results in all_results.items()
            },
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    sys.stdout.flush()
    sys.stderr.flush()
    if state.get("hung"):
        # a hung client may hold non-daemon threads or child processes: do not wait for them
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
