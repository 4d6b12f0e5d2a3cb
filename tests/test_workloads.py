"""Synthetic workloads (twofold.sim.workloads) and the trace they leave.

Exact makespans are derived by hand from the network model (``latency +
bytes / bandwidth`` per message, see sim/network.py) and the message flow
of one dependency hop:

* control hop: the worker reports ``TaskFinished`` to the scheduler, the
  result riding along as it is small (``WorkerConfig.rides_inline``, as on the
  runtime: ``latency + (MESSAGE_OVERHEAD + nbytes) / bandwidth``), the scheduler sends the next
  ``Execute`` (``latency + (MESSAGE_OVERHEAD + ref) / bandwidth``, where
  ``ref`` is the task's object reference, a few bytes);
* data hop (input held by another worker): the worker asks the holder
  (``latency + MESSAGE_OVERHEAD / bandwidth``) and the holder answers with
  the data (``latency + (MESSAGE_OVERHEAD + nbytes) / bandwidth``).

A makespan is checked to lie in ``[expected, expected + slack]`` where the
slack is 3 bytes of object reference per Execute message: exact otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import networkx as nx
import pytest

from twofold import Client, wait
from twofold.scheduler.placement import EarliestStart, RoundRobin
from twofold.sim import SimCluster, Uniform
from twofold.sim.network import MESSAGE_OVERHEAD
from twofold.sim.trace import FIELDS
from twofold.sim.workloads import (
    WorkloadReport,
    chain,
    fork_join,
    graph_models,
    map_reduce,
    random_layered,
    run_workload,
    submit_graph,
    tree,
)

L, B, NB = 0.01, 1e6, 10_000  # latency (s), bandwidth (B/s), result size (B): every term is visible
CONTROL = 2 * L + (2 * MESSAGE_OVERHEAD + NB) / B  # NB rides inline with the completion
FETCH = 2 * L + (2 * MESSAGE_OVERHEAD + NB) / B
REF = 3 / B  # an Execute message's object reference: at most this much per hop


def run(g, **kw) -> WorkloadReport:
    kw.setdefault("latency", L)
    kw.setdefault("bandwidth", B)
    return run_workload(g, validate=True, **kw)


def assert_makespan(report: WorkloadReport, expected: float, executes: int) -> None:
    assert expected - 1e-9 <= report.makespan <= expected + executes * REF + 1e-9, (report.makespan, expected)


def check_attrs(g, duration, nbytes):
    assert nx.is_directed_acyclic_graph(g)
    for node, attrs in g.nodes(data=True):
        assert attrs["duration"] == duration and attrs["nbytes"] == nbytes, (node, attrs)


# -- generators: shape --------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_chain_shape(n):
    g = chain(n, duration=0.5, nbytes=7)
    assert (g.number_of_nodes(), g.number_of_edges()) == (n, n - 1)
    assert list(nx.topological_sort(g)) == list(range(n))
    assert all(g.in_degree(i) == (i > 0) and g.out_degree(i) == (i < n - 1) for i in g)
    check_attrs(g, 0.5, 7)


@pytest.mark.parametrize(
    "leaves, fan_in, nodes, depth",
    [(1, 2, 1, 1), (2, 2, 3, 2), (5, 2, 11, 4), (8, 2, 15, 4), (9, 3, 13, 3), (10, 4, 14, 3)],
)
def test_tree_shape(leaves, fan_in, nodes, depth):
    g = tree(leaves, fan_in=fan_in, duration=0.2, nbytes=3)
    assert g.number_of_nodes() == nodes
    assert g.number_of_edges() == nodes - 1  # a tree
    assert sum(1 for n in g if g.in_degree(n) == 0) == leaves
    assert [n for n in g if g.out_degree(n) == 0] == [nodes - 1]  # one root, the last node
    assert max(g.in_degree(n) for n in g) <= fan_in
    assert nx.dag_longest_path_length(g) + 1 == depth
    check_attrs(g, 0.2, 3)


@pytest.mark.parametrize("width, stages", [(1, 1), (4, 1), (3, 3)])
def test_fork_join_shape(width, stages):
    g = fork_join(width, stages=stages, duration=1, nbytes=0)
    assert g.number_of_nodes() == 1 + stages * (width + 1)
    assert g.number_of_edges() == 2 * width * stages
    assert [n for n in g if g.in_degree(n) == 0] == [0]
    assert [n for n in g if g.out_degree(n) == 0] == [stages * (width + 1)]
    assert nx.dag_longest_path_length(g) == 2 * stages
    check_attrs(g, 1, 0)


def test_random_layered_shape_and_seed():
    layers, width = 6, 5
    g = random_layered(layers, width, edge_probability=0.3, seed=4, duration=0.01, nbytes=10)
    assert g.number_of_nodes() == layers * width
    layer = {n: n // width for n in g}
    for node in g:
        preds = list(g.predecessors(node))
        if layer[node] == 0:
            assert preds == []
        else:
            assert preds, f"{node} has no input"
            assert all(layer[p] == layer[node] - 1 for p in preds)
    check_attrs(g, 0.01, 10)
    assert sorted(g.edges) == sorted(random_layered(layers, width, 0.3, seed=4).edges)
    assert sorted(g.edges) != sorted(random_layered(layers, width, 0.3, seed=5).edges)
    # the extremes: everything from the layer before, or exactly one input each
    assert random_layered(4, 3, edge_probability=1.0).number_of_edges() == 3 * 3 * 3
    g0 = random_layered(4, 3, edge_probability=0.0)
    assert g0.number_of_edges() == 3 * 3 and all(g0.in_degree(n) == 1 for n in range(3, 12))


def test_map_reduce_shape():
    g = map_reduce(5, 3, duration=0.3, nbytes=100)
    assert (g.number_of_nodes(), g.number_of_edges()) == (8, 15)
    assert all(g.in_degree(m) == 0 and g.out_degree(m) == 3 for m in range(5))
    assert all(g.in_degree(r) == 5 and g.out_degree(r) == 0 for r in range(5, 8))
    check_attrs(g, 0.3, 100)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: chain(0), "n must be an int >= 1, got 0"),
        (lambda: chain(-2), "n must be an int >= 1"),
        (lambda: chain(2.5), "n must be an int >= 1, got 2.5"),
        (lambda: chain(True), "n must be an int >= 1, got True"),
        (lambda: tree(0), "leaves must be an int >= 1"),
        (lambda: tree(4, fan_in=1), "fan_in must be an int >= 2, got 1"),
        (lambda: tree(4, fan_in=2.0), "fan_in must be an int >= 2"),
        (lambda: fork_join(0), "width must be an int >= 1"),
        (lambda: fork_join(2, stages=0), "stages must be an int >= 1"),
        (lambda: random_layered(0, 3), "layers must be an int >= 1"),
        (lambda: random_layered(3, 0), "width must be an int >= 1"),
        (lambda: random_layered(2, 2, edge_probability=1.5), r"edge_probability must be a number in \[0, 1\], got 1.5"),
        (lambda: random_layered(2, 2, edge_probability="high"), "edge_probability must be a number"),
        (lambda: map_reduce(0, 1), "maps must be an int >= 1"),
        (lambda: map_reduce(1, 0), "reduces must be an int >= 1"),
        (lambda: chain(3, duration=-1), "duration must be a finite number of seconds >= 0, got -1"),
        (lambda: chain(3, duration=float("nan")), "duration must be a finite number"),
        (lambda: tree(3, duration="1s"), "duration must be a finite number"),
        (lambda: chain(3, nbytes=-5), "nbytes must be an int >= 0, got -5"),
        (lambda: fork_join(2, nbytes=1.5), "nbytes must be an int >= 0, got 1.5"),
    ],
)
def test_generator_input_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_random_layered_seed_type():
    with pytest.raises(TypeError, match="seed must be an int"):
        random_layered(2, 2, seed="one")


def test_bad_graphs_are_refused_before_anything_runs():
    with pytest.raises(TypeError, match="a workload is a networkx.DiGraph, got list"):
        run_workload([1, 2, 3])
    with pytest.raises(TypeError, match="networkx.DiGraph, got Graph"):
        run_workload(nx.path_graph(3))
    cyclic = nx.DiGraph([(0, 1), (1, 2), (2, 0)])
    with pytest.raises(ValueError, match="the workload graph has a cycle"):
        run_workload(cyclic)
    clash = nx.DiGraph()
    clash.add_nodes_from([1, "1"])
    with pytest.raises(ValueError, match="nodes 1 and '1' would both get the key 'task-1'"):
        run_workload(clash)
    bad = chain(3)
    bad.nodes[1]["duration"] = -0.5
    with pytest.raises(ValueError, match="node 1: duration must be"):
        run_workload(bad)
    with SimCluster(n_workers=1, seed=0) as cluster, Client(cluster, set_as_default=False) as client:
        with pytest.raises(ValueError, match="cycle"):
            submit_graph(client, cyclic)


# -- run_workload: exact makespans --------------------------------------------


@pytest.mark.parametrize("n_workers, threads", [(1, 1), (2, 1), (4, 1), (3, 2)])
def test_chain_makespan_is_exact_on_any_cluster(n_workers, threads):
    # the input is always on the worker that just finished: control hops only
    r = run(chain(5, duration=1.0, nbytes=NB), n_workers=n_workers, threads_per_worker=threads)
    assert_makespan(r, 5 * 1.0 + 4 * CONTROL, executes=4)
    assert (r.bytes_moved, r.transfers, r.n_tasks) == (0, 0, 5)
    assert r.utilization == pytest.approx(5.0 / (r.makespan * n_workers * threads))


def test_chain_under_round_robin_moves_every_input():
    # RoundRobin cycles over idle workers (small inputs), so every hop also fetches the input
    r = run(chain(5, duration=1.0, nbytes=NB), n_workers=4, threads_per_worker=1, policy=RoundRobin)
    assert_makespan(r, 5 * 1.0 + 4 * (CONTROL + FETCH), executes=4)
    assert (r.bytes_moved, r.transfers) == (4 * NB, 4)
    workers = [r.placement[f"task-{i}"] for i in range(5)]
    assert all(a != b for a, b in zip(workers, workers[1:]))


@pytest.mark.parametrize("stages", [1, 3])
def test_fork_join_makespan_on_one_thread_per_branch(stages):
    # per stage: the branch on the source's worker starts at once, the other
    # three fetch the source (one data hop); the join fetches three branches
    # in parallel (one data hop)
    r = run(fork_join(4, stages=stages, duration=1.0, nbytes=NB), n_workers=4, threads_per_worker=1)
    expected = (2 * stages + 1) * 1.0 + 2 * stages * (CONTROL + FETCH)
    assert_makespan(r, expected, executes=2 * stages)
    assert r.bytes_moved == 6 * NB * stages and r.transfers == 6 * stages
    branches = [r.placement[f"task-{b}"] for b in range(1, 5)]
    assert sorted(branches) == ["worker-0", "worker-1", "worker-2", "worker-3"]


@pytest.mark.parametrize("leaves, fan_in", [(8, 2), (9, 3)])
def test_tree_makespan_with_one_worker_per_leaf(leaves, fan_in):
    # every combine runs where one of its inputs is and fetches the others in parallel
    g = tree(leaves, fan_in=fan_in, duration=1.0, nbytes=NB)
    levels = nx.dag_longest_path_length(g) + 1
    r = run(g, n_workers=leaves, threads_per_worker=1)
    assert_makespan(r, levels * 1.0 + (levels - 1) * (CONTROL + FETCH), executes=levels - 1)
    inner = g.number_of_nodes() - leaves
    assert r.bytes_moved == (g.number_of_edges() - inner) * NB  # one input of each combine is local


def test_map_reduce_makespan():
    # four maps on four workers, then each reducer fetches the three remote maps at once
    r = run(map_reduce(4, 4, duration=1.0, nbytes=NB), n_workers=4, threads_per_worker=1)
    assert_makespan(r, 2 * 1.0 + CONTROL + FETCH, executes=1)
    assert (r.bytes_moved, r.transfers) == (4 * 3 * NB, 12)


# -- run_workload: general properties -----------------------------------------

GRAPHS = {
    "chain": lambda: chain(6, duration=0.2),
    "tree": lambda: tree(10, fan_in=3, duration=0.1, nbytes=5000),
    "fork_join": lambda: fork_join(5, stages=2, duration=0.1),
    "random_layered": lambda: random_layered(5, 8, edge_probability=0.3, seed=2, duration=0.05, nbytes=20_000),
    "map_reduce": lambda: map_reduce(6, 3, duration=0.1, nbytes=2000),
}


@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_report_is_consistent_with_the_trace(kind):
    g = GRAPHS[kind]()
    r = run_workload(g, n_workers=3, threads_per_worker=2, validate=True)
    tasks = r.trace.records("task")
    transfers = r.trace.records("transfer")
    assert sorted(t["key"] for t in tasks) == sorted(f"task-{n}" for n in g)
    assert all(t["ok"] for t in tasks)
    assert r.n_tasks == g.number_of_nodes()
    assert 0 < r.utilization <= 1
    work = sum(d for _, d in g.nodes(data="duration"))
    assert r.utilization == pytest.approx(work / (r.makespan * 3 * 2))
    assert r.bytes_moved == sum(t["nbytes"] for t in transfers) and r.transfers == len(transfers)
    # no schedule beats the critical path or perfect packing
    critical = _critical_path(g)
    assert r.makespan >= critical - 1e-9
    assert r.makespan >= work / 6 - 1e-9
    assert set(r.placement) == {f"task-{n}" for n in g}


def _critical_path(g) -> float:
    """The longest path's total duration (durations are on nodes, not edges)."""
    finish: dict = {}
    for n in nx.topological_sort(g):
        finish[n] = max((finish[p] for p in g.predecessors(n)), default=0.0) + g.nodes[n]["duration"]
    return max(finish.values())


@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_one_worker_moves_no_bytes(kind):
    r = run_workload(GRAPHS[kind](), n_workers=1, threads_per_worker=2, validate=True)
    assert (r.bytes_moved, r.transfers) == (0, 0)
    assert r.trace.records("transfer") == []
    assert 0 < r.utilization <= 1


def test_empty_graph():
    r = run_workload(nx.DiGraph())
    assert (r.n_tasks, r.makespan, r.utilization, r.bytes_moved) == (0, 0.0, 0.0, 0)


def test_same_seed_same_run_and_the_seed_does_not_matter_for_fixed_durations():
    g = random_layered(5, 8, edge_probability=0.3, seed=2, duration=0.05, nbytes=20_000)
    a = run_workload(g, seed=0)
    b = run_workload(g, seed=0)
    same = ("makespan", "utilization", "bytes_moved", "transfers", "digest")
    assert [getattr(a, f) for f in same] == [getattr(b, f) for f in same]
    assert a.trace.records() == b.trace.records()
    # the cluster's seed only feeds random duration/size models and chaos: with
    # the graph's fixed durations, every seed gives the very same run
    others = [run_workload(g, seed=s) for s in (1, 2, 3)]
    assert {r.digest for r in others} == {a.digest}
    assert {r.makespan for r in others} == {a.makespan}


def test_random_durations_follow_the_seed():
    g = map_reduce(8, 4)
    runs = {s: run_workload(g, seed=s, durations=Uniform(0.05, 0.15)) for s in (0, 1, 2)}
    again = run_workload(g, seed=0, durations=Uniform(0.05, 0.15))
    assert again.digest == runs[0].digest and again.makespan == runs[0].makespan
    assert len({r.makespan for r in runs.values()}) == 3


def test_digest_does_not_depend_on_the_hash_seed():
    code = (
        "from twofold.sim.workloads import random_layered, run_workload\n"
        "g = random_layered(4, 6, edge_probability=0.4, seed=3, nbytes=5000)\n"
        "r = run_workload(g, n_workers=3)\n"
        "print(r.digest, repr(r.makespan), r.bytes_moved)\n"
    )
    outs = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout)
    assert len(outs) == 1


def test_policy_class_gets_a_fresh_instance_per_run():
    g = chain(6, nbytes=100)
    first = run_workload(g, n_workers=4, policy=RoundRobin)
    second = run_workload(g, n_workers=4, policy=RoundRobin)
    assert first.digest == second.digest
    # one instance carried across runs remembers its turn: the second run differs
    shared = RoundRobin()
    a = run_workload(g, n_workers=4, policy=shared)
    b = run_workload(g, n_workers=4, policy=shared)
    assert a.digest == first.digest and b.placement != a.placement


def test_round_robin_moves_more_data_than_earliest_start_on_map_reduce():
    # four maps on eight single-threaded workers: EarliestStart puts every
    # reducer on a worker holding one map (3 fetches each); RoundRobin also
    # uses the idle workers that hold none (4 fetches for those reducers)
    g = map_reduce(4, 4, duration=0.1, nbytes=NB)
    es = run_workload(g, n_workers=8, threads_per_worker=1, policy=EarliestStart, validate=True)
    rr = run_workload(g, n_workers=8, threads_per_worker=1, policy=RoundRobin, validate=True)
    reducers = [f"task-{r}" for r in range(4, 8)]
    maps_at = {es.placement[f"task-{m}"] for m in range(4)}
    assert all(es.placement[k] in maps_at for k in reducers)
    assert any(rr.placement[k] not in {rr.placement[f"task-{m}"] for m in range(4)} for k in reducers)
    assert [rr.placement[k] for k in reducers] != [es.placement[k] for k in reducers]
    assert es.bytes_moved == 4 * 3 * NB
    assert rr.bytes_moved == 4 * 4 * NB
    assert es.bytes_moved < rr.bytes_moved


# -- the trace: plain records, export, task-stream plot -----------------------

PLAIN = (str, float, int, bool, tuple)


class Tally:
    """An actor: its calls are the trace's "actor" records."""

    def __init__(self):
        self.n = 0

    def add(self, x):
        self.n += x
        return self.n


def faulty_run():
    """A small workload with a crash, a slow worker, a partition and an actor: every record kind."""
    g = map_reduce(6, 3, duration=0.1, nbytes=NB)
    cluster = SimCluster(n_workers=3, threads_per_worker=1, seed=0, validate=True, durations=graph_models(g))
    cluster.slow("worker-0", 2.0, start=0.0, end=0.15)
    cluster.partition("worker-1", "worker-2", start=0.05, end=0.06)
    cluster.crash("worker-2", at=0.25)
    with Client(cluster, set_as_default=False) as client:
        futures = submit_graph(client, g)
        wait([futures[n] for n in g if g.out_degree(n) == 0])
        assert all(f.status == "finished" for f in futures.values())
        tally = client.submit(Tally, actor=True).result()
        assert tally.add(2).result() == 2
    return cluster, g


def test_records_are_plain_values_of_every_kind():
    cluster, _ = faulty_run()
    rows = cluster.records()
    kinds = {row["kind"] for row in rows}
    assert kinds == set(FIELDS)
    for row in rows:
        assert type(row) is dict
        assert list(row) == ["kind", "time", *FIELDS[row["kind"]]]
        assert isinstance(row["time"], float)
        for name, value in row.items():
            assert isinstance(value, PLAIN), (row, name)
            if isinstance(value, tuple):
                assert all(isinstance(v, str) for v in value), row
    faults = [r["what"] for r in cluster.records("fault")]
    assert {"worker-start", "slow", "partition-start", "partition-end", "crash"} <= set(faults)
    for kind in FIELDS:
        assert cluster.records(kind) == [r for r in rows if r["kind"] == kind]
    # export: JSON and CSV need nothing beyond the standard library
    assert json.loads(json.dumps(rows)) == [
        {k: list(v) if isinstance(v, tuple) else v for k, v in r.items()} for r in rows
    ]
    for kind in FIELDS:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["kind", "time", *FIELDS[kind]])
        writer.writeheader()
        writer.writerows(cluster.records(kind))
        assert len(buf.getvalue().splitlines()) == 1 + len(cluster.records(kind))
    cluster.close()


def test_task_records_match_the_tasks_run():
    g = fork_join(3, stages=2, duration=0.25, nbytes=500)
    with SimCluster(n_workers=2, threads_per_worker=2, seed=1, durations=graph_models(g)) as cluster:
        with Client(cluster, set_as_default=False) as client:
            futures = submit_graph(client, g)
            wait(list(futures.values()))
        tasks = cluster.records("task")
        assert sorted(t["key"] for t in tasks) == sorted(f.key for f in futures.values())
        for t in tasks:
            assert t["stop"] - t["start"] == pytest.approx(0.25)
            assert t["worker"] in cluster.workers and 0 <= t["slot"] < 2 and t["ok"] is True
            assert t["time"] == t["stop"]
        for x in cluster.records("transfer"):
            assert x["source"] != x["destination"] and x["start"] < x["stop"]
            assert x["nbytes"] == 500 * len(x["keys"])


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def n_bars(ax) -> int:
    return sum(len(c.get_paths()) for c in ax.collections)


def test_plot_draws_one_bar_per_task(plt):
    from matplotlib.axes import Axes

    g = random_layered(4, 6, seed=1, duration=0.1)
    with SimCluster(n_workers=3, threads_per_worker=2, seed=0, durations=graph_models(g)) as cluster:
        with Client(cluster, set_as_default=False) as client:
            futures = submit_graph(client, g)
            wait(list(futures.values()))
        ax = cluster.plot(title="layers")
        assert isinstance(ax, Axes)
        assert n_bars(ax) == len(cluster.records("task")) == g.number_of_nodes()
        assert ax.get_title() == "layers" and ax.get_xlabel() == "virtual time (s)"
        lanes = [t.get_text() for t in ax.get_yticklabels()]
        assert lanes == [f"worker-{w}/{s}" for w in range(3) for s in range(2)]
        # every bar sits on its task's lane, from start to stop
        spans = sorted(
            (round(float(p.vertices[:, 0].min()), 9),
             round(float(p.vertices[:, 0].max() - p.vertices[:, 0].min()), 9),
             round(float(p.vertices[:, 1].min() + p.vertices[:, 1].max()) / 2, 6))
            for c in ax.collections for p in c.get_paths()
        )
        expected = sorted(
            (round(t["start"], 9), round(t["stop"] - t["start"], 9), float(lanes.index(f"{t['worker']}/{t['slot']}")))
            for t in cluster.records("task")
        )
        assert spans == expected
        # an Axes can be passed in
        _, given = plt.subplots()
        assert cluster.plot(ax=given) is given and n_bars(given) == g.number_of_nodes()


def test_plot_marks_faults_and_failed_tasks(plt):
    cluster, g = faulty_run()
    ax = cluster.plot()
    assert n_bars(ax) == len(cluster.records("task")) >= g.number_of_nodes()
    fault_times = {r["time"] for r in cluster.records("fault") if r["what"] != "worker-start"}
    assert {line.get_xdata()[0] for line in ax.lines} == fault_times
    cluster.close()

    def boom(x):
        raise ValueError("no")

    with SimCluster(n_workers=1, seed=0, durations=0.1) as cluster:
        with Client(cluster, set_as_default=False) as client:
            wait([client.submit(boom, 1, key="boom-1"), client.submit(abs, -1, key="abs-1")])
        ax = cluster.plot()
        assert n_bars(ax) == 2
        assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["abs", "boom", "failed"]


def test_workload_report_trace_plots(plt):
    g = tree(6, duration=0.1)
    r = run_workload(g, n_workers=2)
    ax = r.trace.plot()
    assert n_bars(ax) == g.number_of_nodes() == 12


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with SimCluster(n_workers=1, seed=0) as cluster:
        with pytest.raises(ImportError, match=r"pip install 'twofold\[plot\]'"):
            cluster.plot()
