"""Synthetic task graphs for scheduling research, and what a run of one measured.

Graphs are ``networkx.DiGraph`` DAGs whose nodes carry ``duration``
(virtual seconds) and ``nbytes`` (result size); edges point from input to
consumer.  :func:`run_workload` submits one to a fresh :class:`SimCluster`
through the real Client and reports makespan, worker utilisation and bytes
moved between workers::

    from twofold.scheduler.placement import RoundRobin

    g = random_layered(layers=10, width=50, seed=1)
    report = run_workload(g, n_workers=8, threads_per_worker=2, seed=0, policy=RoundRobin)
    report.makespan, report.utilization, report.bytes_moved
    report.trace.plot()                     # the task stream (needs matplotlib)

Generators check their arguments (``ValueError``/``TypeError`` naming the
argument) and give every node the same ``duration`` and ``nbytes``; set the
node attributes afterwards for per-task costs (``g.nodes[n]["duration"] =
...``), which :func:`run_workload` reads node by node.  Keys are
``task-<node>``, so a graph's tasks all share the prefix ``task`` (one
duration estimate on the scheduler).
"""

from __future__ import annotations

import numbers
import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import networkx as nx

from twofold.sim.models import TaskInfo

#: wall time, bound at import: real even while a SimCluster virtualises the time module
_wall = time.perf_counter


class Payload:
    """A stand-in result with a modelled size (``nbytes`` is what the network carries)."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"Payload({self.nbytes})"


def synthetic_task(*inputs: Any, nbytes: int = 0) -> Payload:
    """What every node of a synthetic graph runs: nothing, producing ``nbytes``."""
    return Payload(nbytes)


def _annotate(g: nx.DiGraph, duration: float, nbytes: int) -> nx.DiGraph:
    _check_duration(duration)
    _check_nbytes(nbytes)
    for node in g.nodes:
        g.nodes[node].setdefault("duration", duration)
        g.nodes[node].setdefault("nbytes", nbytes)
    return g


def chain(n: int, duration: float = 0.1, nbytes: int = 1000) -> nx.DiGraph:
    """``n`` tasks, each consuming the previous one."""
    _positive(n=n)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from((i, i + 1) for i in range(n - 1))
    return _annotate(g, duration, nbytes)


def tree(leaves: int, fan_in: int = 2, duration: float = 0.1, nbytes: int = 1000) -> nx.DiGraph:
    """A reduction: ``leaves`` inputs combined ``fan_in`` at a time down to one root."""
    _positive(leaves=leaves)
    if not _is_int(fan_in) or fan_in < 2:
        raise ValueError(f"fan_in must be an int >= 2, got {fan_in!r}")
    g = nx.DiGraph()
    level = list(range(leaves))
    g.add_nodes_from(level)
    counter = leaves
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), fan_in):
            node = counter
            counter += 1
            g.add_node(node)
            g.add_edges_from((child, node) for child in level[i : i + fan_in])
            nxt.append(node)
        level = nxt
    return _annotate(g, duration, nbytes)


def fork_join(width: int, stages: int = 1, duration: float = 0.1, nbytes: int = 1000) -> nx.DiGraph:
    """``stages`` rounds of: one task fans out to ``width`` tasks, which join into one."""
    _positive(width=width, stages=stages)
    g = nx.DiGraph()
    node = 0
    g.add_node(node)
    for _ in range(stages):
        source = node
        branch = list(range(node + 1, node + 1 + width))
        join = node + 1 + width
        g.add_edges_from((source, b) for b in branch)
        g.add_edges_from((b, join) for b in branch)
        node = join
    return _annotate(g, duration, nbytes)


def random_layered(layers: int, width: int, edge_probability: float = 0.2, seed: int = 0,
                   duration: float = 0.1, nbytes: int = 1000) -> nx.DiGraph:
    """``layers`` layers of ``width`` tasks; each task takes each task of the
    layer before as input with ``edge_probability`` (at least one input)."""
    _positive(layers=layers, width=width)
    if not _is_real(edge_probability) or not 0 <= edge_probability <= 1:
        raise ValueError(f"edge_probability must be a number in [0, 1], got {edge_probability!r}")
    if not _is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    g = nx.DiGraph()
    previous: list[int] = []
    node = 0
    for _ in range(layers):
        current = list(range(node, node + width))
        node += width
        g.add_nodes_from(current)
        for task in current:
            if previous:
                inputs = [p for p in previous if rng.random() < edge_probability] or [rng.choice(previous)]
                g.add_edges_from((p, task) for p in inputs)
        previous = current
    return _annotate(g, duration, nbytes)


def map_reduce(maps: int, reduces: int, duration: float = 0.1, nbytes: int = 1000) -> nx.DiGraph:
    """``maps`` independent tasks, each read by all ``reduces`` tasks (a shuffle)."""
    _positive(maps=maps, reduces=reduces)
    g = nx.DiGraph()
    mappers = list(range(maps))
    reducers = list(range(maps, maps + reduces))
    g.add_nodes_from(mappers + reducers)
    g.add_edges_from((m, r) for m in mappers for r in reducers)
    return _annotate(g, duration, nbytes)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_duration(duration: Any) -> None:
    if not _is_real(duration) or not 0 <= duration < float("inf"):
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration!r}")


def _check_nbytes(nbytes: Any) -> None:
    if not _is_int(nbytes) or nbytes < 0:
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")


def submit_graph(client: Any, g: nx.DiGraph, prefix: str = "task", at_once: bool = False) -> dict:
    """Submit every node (inputs first) as ``synthetic_task``; return node -> Future.

    Keys are ``f"{prefix}-{node}"``; the durations are looked up by the
    cluster through :func:`graph_models`.  ``at_once``: one graph (one
    ``client.get``), so a policy ranking a graph when it arrives (b-level,
    HEFT, ...) sees all of it; otherwise one ``submit`` per node.
    """
    _check_graph(g, prefix)
    if not isinstance(at_once, bool):
        raise TypeError(f"at_once must be True or False, got {at_once!r}")
    if at_once:
        dsk = {}
        for node in nx.topological_sort(g):
            inputs = [f"{prefix}-{p}" for p in sorted(g.predecessors(node), key=str)]
            dsk[f"{prefix}-{node}"] = (partial(synthetic_task, nbytes=int(g.nodes[node].get("nbytes", 0))), *inputs)
        keys = list(dsk)
        by_key = dict(zip(keys, client.get(dsk, keys, sync=False)))
        return {node: by_key[f"{prefix}-{node}"] for node in g.nodes}
    futures: dict = {}
    for node in nx.topological_sort(g):
        inputs = [futures[p] for p in sorted(g.predecessors(node), key=str)]
        futures[node] = client.submit(synthetic_task, *inputs, key=f"{prefix}-{node}",
                                      nbytes=int(g.nodes[node].get("nbytes", 0)))
    return futures


def _check_graph(g: Any, prefix: str) -> None:
    if not isinstance(g, nx.DiGraph):
        raise TypeError(f"a workload is a networkx.DiGraph, got {type(g).__name__}")
    if not nx.is_directed_acyclic_graph(g):
        raise ValueError(f"the workload graph has a cycle, e.g. {nx.find_cycle(g)}")
    seen: dict[str, Any] = {}
    for node, attrs in g.nodes(data=True):
        key = f"{prefix}-{node}"
        if key in seen:
            raise ValueError(f"nodes {seen[key]!r} and {node!r} would both get the key {key!r}; rename one")
        seen[key] = node
        try:
            _check_duration(attrs.get("duration", 0.0))
            _check_nbytes(attrs.get("nbytes", 0))
        except ValueError as exc:
            raise ValueError(f"node {node!r}: {exc}") from None


def graph_models(g: nx.DiGraph, prefix: str = "task"):
    """The ``durations`` model for a :class:`SimCluster` running ``submit_graph(g)``."""
    table = {f"{prefix}-{node}": float(g.nodes[node].get("duration", 0.0)) for node in g.nodes}

    def duration(info: TaskInfo) -> float:
        return table.get(info.key, 0.0)

    return duration


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    """What one run of a workload measured (all times are virtual seconds).

    ``makespan``: from the first task's start to the last task's stop.
    ``utilization``: busy thread-seconds over ``makespan`` x all threads.
    ``bytes_moved``/``transfers``: result data fetched between workers
    (the ``transfer`` records; control messages are not counted).
    ``trace``: the run's :class:`~twofold.sim.trace.Trace`, for
    ``report.trace.plot()`` and ``report.trace.records()``; ``digest`` is
    its digest, computed when asked (hashing a 10,000-task trace costs as
    much as a tenth of running it).
    """

    n_tasks: int
    makespan: float
    utilization: float
    bytes_moved: int
    transfers: int
    wall_seconds: float
    trace: Any = field(default=None, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """Hex digest of the run's trace (``SimCluster.digest()``)."""
        return self.trace.digest() if self.trace is not None else ""

    @property
    def tasks_per_wall_second(self) -> float:
        return self.n_tasks / self.wall_seconds if self.wall_seconds else float("inf")

    @property
    def placement(self) -> dict[str, str]:
        """Task key -> the worker that (last) ran it."""
        if self.trace is None:
            return {}
        return {t["key"]: t["worker"] for t in self.trace.records("task")}


def run_workload(g: nx.DiGraph, n_workers: int = 4, threads_per_worker: int = 2, seed: int = 0,
                 **cluster_options: Any) -> WorkloadReport:
    """Run ``g`` on a fresh simulated cluster and measure it.

    ``cluster_options`` go to :class:`~twofold.sim.cluster.SimCluster`
    (``latency``, ``bandwidth``, ``validate``, ``durations`` to override the
    graph's, ...); ``at_once=True`` submits the graph as one (see
    :func:`submit_graph`).  ``policy`` may be a placement policy *class*, which is
    instantiated for this run: policies can keep state (``RoundRobin``
    does), so reusing one instance across runs makes them depend on each other.
    """
    from twofold.client import Client, wait
    from twofold.sim.cluster import SimCluster

    _check_graph(g, "task")
    at_once = cluster_options.pop("at_once", False)
    policy = cluster_options.get("policy")
    if isinstance(policy, type):
        cluster_options["policy"] = policy()
    cluster_options.setdefault("durations", graph_models(g))
    started = _wall()
    cluster = SimCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, seed=seed, **cluster_options)
    try:
        with Client(cluster, set_as_default=False) as client:
            futures = submit_graph(client, g, at_once=at_once)
            sinks = [futures[n] for n in g.nodes if g.out_degree(n) == 0]
            wait(sinks)
        wall = _wall() - started
        tasks = cluster.records("task")
        transfers = cluster.records("transfer")
        if tasks:
            first = min(t["start"] for t in tasks)
            last = max(t["stop"] for t in tasks)
            makespan = last - first
            busy = sum(t["stop"] - t["start"] for t in tasks)
            capacity = makespan * n_workers * threads_per_worker
            utilization = busy / capacity if capacity > 0 else 1.0
        else:
            makespan, utilization = 0.0, 0.0
        trace = cluster.trace
        end = cluster.now
        trace.clock_now = lambda: end  # so the report's trace holds no reference to the simulation
        return WorkloadReport(
            n_tasks=g.number_of_nodes(),
            makespan=makespan,
            utilization=utilization,
            bytes_moved=sum(t["nbytes"] for t in transfers),
            transfers=len(transfers),
            wall_seconds=wall,
            trace=trace,
        )
    finally:
        cluster.close()
