"""Scheduling policies (twofold.scheduler.policies): the interface, then each
shipped policy on small graphs whose schedule is known.

Graph runs use ``run_workload(..., at_once=True)`` (the graph arrives as one,
so ranking policies see it whole) on a simulated cluster whose scheduler
assumes the network's real bandwidth; durations are fixed per node, so
makespans are exact up to the network's control-message latency (``EPS``).
"""

from __future__ import annotations

import random
from types import MappingProxyType

import networkx as nx
import pytest

from scheduler_support import ANY, Sched, T, compute  # noqa: F401
from twofold.messages import ComputeTask, TaskFinished
from twofold.scheduler import SchedulerState
from twofold.scheduler.placement import EarliestStart, RoundRobin as LegacyRoundRobin
from twofold.scheduler.policies import (
    DLS, ETF, HEFT, MCP, POLICIES, BLevel, Default, Estimates, Given, Policy, Random, RoundRobin, SchedulerView, Single,
    TLevel, WorkStealing,
)  # fmt: skip
from twofold.scheduler.policies.levels import blevels, tlevels, topological
from twofold.scheduler.policies.random_choice import SplitMix64
from twofold.sim.workloads import random_layered, run_workload

B = 1e9  # bytes/second, the simulated network's and the scheduler's
EPS = 0.01  # control messages: a few latencies of 1e-4 s per hop


def run(g, policy, n_workers=2, threads=1, **kw):
    return run_workload(g, n_workers=n_workers, threads_per_worker=threads, latency=1e-4, bandwidth=B,
                        policy=policy, at_once=True, validate=True, scheduler_config={"bandwidth": B}, **kw)


def graph(nodes, edges=(), **attrs):
    """A DiGraph: ``nodes`` name -> duration (or (duration, nbytes))."""
    g = nx.DiGraph()
    for name, value in nodes.items():
        duration, nbytes = value if isinstance(value, tuple) else (value, 0)
        g.add_node(name, duration=duration, nbytes=nbytes, **attrs)
    g.add_edges_from(edges)
    return g


def critical_path_trap():
    """Two independent 1 s tasks submitted before a 3-task chain, on 2 x 1 thread.

    The optimum runs the chain's head first (makespan 3, its length); in
    submission order a worker runs an independent task first and the chain
    ends at 4."""
    return graph({"b1": 1.0, "b2": 1.0, "a1": 1.0, "a2": 1.0, "a3": 1.0}, [("a1", "a2"), ("a2", "a3")])


def heavy_fork():
    """``p`` (1 s) makes 2 GB (2 s over the network) for two 1 s children, 2 workers.

    Both children on p's worker end at 3; moving one costs 2 s: 4."""
    return graph({"p": (1.0, 2_000_000_000), "c1": 1.0, "c2": 1.0}, [("p", "c1"), ("p", "c2")])


def independent(n):
    return graph({f"t{i}": 1.0 for i in range(n)})


def near(value, expected):
    return expected - 1e-9 <= value <= expected + EPS


# --------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------


def test_the_default_policy_is_default_with_stealing_and_queuing():
    state = SchedulerState()
    assert isinstance(state.policy, Default)
    assert "stealing" in state.extensions and state._queuing
    assert isinstance(state.view, SchedulerView)


@pytest.mark.parametrize("policy", [None, Default(), EarliestStart()])
def test_default_and_the_legacy_earliest_start_give_the_very_same_run(policy):
    g = random_layered(6, 20, seed=3)
    expected = run_workload(g, n_workers=4, seed=0).digest
    assert run_workload(g, n_workers=4, seed=0, policy=policy).digest == expected


def test_a_legacy_policy_gets_the_machine_and_narrowed_candidates():
    seen = []

    class Old:
        def decide_worker(self, state, ts, candidates):
            seen.append((state, ts.key, [ws.address for ws in candidates]))
            return min(candidates, key=lambda ws: ws.order)

    s = Sched(Old(), worker_saturation=float("inf"))
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1", workers=("w1",)))
    s.finish("w1", "x-1", nbytes=10_000_000)
    s.submit(T("y-1", "x-1"))
    assert seen[-1] == (s.state, "y-1", ["w1"])  # narrowed to the holder of the big input
    assert "stealing" in s.state.extensions


def test_a_policy_reads_one_view_built_once_and_sees_every_valid_worker():
    seen = []

    class Spy(Policy):
        narrow = False

        def decide_worker(self, view, ts, candidates):
            seen.append((view, [ws.address for ws in candidates]))
            return min(candidates, key=lambda ws: ws.order)

    s = Sched(Spy(), worker_saturation=float("inf"))
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1", workers=("w1",)))
    s.finish("w1", "x-1", nbytes=10_000_000)
    s.submit(T("y-1", "x-1"), T("z-1"))
    views = {id(view) for view, _ in seen}
    assert views == {id(s.state.view)}
    assert [c for _, c in seen] == [["w1"], ["w0", "w1"], ["w0", "w1"]]


def test_the_view_is_read_only_and_live():
    s = Sched()
    view = s.state.view
    for mapping in (view.tasks, view.workers, view.durations, view.room):
        assert isinstance(mapping, MappingProxyType)
    with pytest.raises(TypeError):
        view.tasks["x"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        view.anything = 1  # type: ignore[attr-defined]
    s.add_worker("w0")
    assert list(view.workers) == ["w0"]
    s.submit(T("a-1"))
    assert view.duration(view.tasks["a-1"]) == 0.5  # the scheduler's estimate before any run
    assert view.nbytes(view.tasks["a-1"]) == 0


def test_ranks_reorder_a_graph_among_equal_user_priority():
    class Reverse(Policy):
        queuing = False

        def decide_worker(self, view, ts, candidates):
            return next(iter(candidates))

        def prioritize(self, view, tasks):
            return {ts: float(i) for i, ts in enumerate(tasks)}  # the last submitted first

    s = Sched(Reverse())
    s.add_worker("w0")
    outs = s.submit(T("a-1"), T("b-1"), T("c-1", priority=1))
    assert [(m.key, m.priority) for m in outs] == [("c-1", (-1, 1)), ("b-1", (0, 2)), ("a-1", (0, 3))]


def test_a_stealer_of_none_runs_no_stealing_and_a_bad_one_is_refused():
    assert "stealing" not in SchedulerState(policy=Single()).extensions

    class Bad(Single):
        def stealer(self):
            return object()

    with pytest.raises(TypeError, match="stealer"):
        SchedulerState(policy=Bad())


def test_bad_policies_get_clear_errors():
    with pytest.raises(TypeError, match="pass HEFT()"):
        SchedulerState(policy=HEFT)
    with pytest.raises(TypeError, match="decide_worker"):
        SchedulerState(policy=object())

    class Empty(Policy):
        pass

    with pytest.raises(TypeError, match="Empty must define decide_worker"):
        SchedulerState(policy=Empty())

    class Odd(Single):
        queuing = "yes"

    with pytest.raises(TypeError, match="queuing"):
        SchedulerState(policy=Odd())
    with pytest.raises(TypeError, match="greedy_transfer"):
        BLevel(greedy_transfer=1)
    with pytest.raises(TypeError, match="information model"):
        SchedulerState(policy=BLevel(info=object()))
    with pytest.raises(ValueError, match="must be a number"):
        Given(durations={"a": -1})
    with pytest.raises(TypeError, match="seed"):
        Random(seed="0")


def test_every_shipped_policy_has_a_name_and_a_docstring_citing_its_source():
    import importlib

    assert set(POLICIES) == {"default", "random", "round-robin", "single", "work-stealing", "blevel", "tlevel",
                             "heft", "mcp", "etf", "dls"}
    for name, cls in POLICIES.items():
        assert cls.name == name
        module = importlib.import_module(cls.__module__)
        assert module.__doc__ and len(module.__doc__) > 100, cls


# --------------------------------------------------------------------------
# levels
# --------------------------------------------------------------------------


def test_levels_on_a_hand_computed_graph():
    # a(1) -> b(2) -> d(1); a -> c(4) -> d; e(3) alone; a's output crosses in 0.5 s
    s = Sched(worker_saturation=float("inf"))
    s.submit(T("a-1"), T("b-1", "a-1"), T("c-1", "a-1"), T("d-1", "b-1", "c-1"), T("e-1"))
    tasks = [s.state.tasks[k] for k in ("d-1", "c-1", "b-1", "a-1", "e-1")]
    view = SchedulerView(s.state, Given(durations={"a": 1, "b": 2, "c": 4, "d": 1, "e": 3},
                                        sizes={"a-1": int(0.5 * s.state.config.bandwidth)}))
    key = lambda levels: {ts.key: level for ts, level in levels.items()}  # noqa: E731
    assert [ts.key for ts in topological(tasks)] == ["a-1", "e-1", "b-1", "c-1", "d-1"]
    assert key(blevels(view, tasks)) == {"a-1": 6, "b-1": 3, "c-1": 5, "d-1": 1, "e-1": 3}
    assert key(blevels(view, tasks, comm=True)) == {"a-1": 6.5, "b-1": 3, "c-1": 5, "d-1": 1, "e-1": 3}
    assert key(tlevels(view, tasks)) == {"a-1": 0, "b-1": 1, "c-1": 1, "d-1": 5, "e-1": 0}


# --------------------------------------------------------------------------
# the policies, on graphs with known schedules
# --------------------------------------------------------------------------


def test_default_falls_into_the_critical_path_trap():
    assert near(run(critical_path_trap(), Default()).makespan, 4.0)


def test_blevel_runs_the_critical_path_first_and_reaches_the_optimum():
    report = run(critical_path_trap(), BLevel())
    assert near(report.makespan, 3.0)
    first = {t["worker"]: t["key"] for t in sorted(report.trace.records("task"), key=lambda t: -t["start"])}
    assert "task-a1" in first.values()  # a1 started at 0 on some worker


def test_tlevel_ignores_what_is_below_a_task_and_misses_the_optimum():
    # every root has t-level 0: submission order decides, and the chain starts late
    assert near(run(critical_path_trap(), TLevel()).makespan, 4.0)


def test_tlevel_puts_shallow_tasks_first():
    s = Sched(TLevel(info=Given(durations={"a": 1.0, "b": 5.0, "c": 1.0})))
    s.add_worker("w0")
    # c-1 (t-level 1) and b-1 (t-level 1) wait on a-1; d-1 (t-level 0) is a root submitted last
    s.submit(T("a-1"), T("b-1", "a-1"), T("c-1", "b-1"), T("d-1"))
    ranks = {k: s.state.tasks[k].priority for k in ("a-1", "b-1", "c-1", "d-1")}
    assert sorted(ranks, key=ranks.get) == ["a-1", "d-1", "b-1", "c-1"]


@pytest.mark.parametrize("policy", [HEFT(), BLevel(), MCP(), ETF(), DLS()])
def test_earliest_start_or_finish_keeps_heavy_data_where_it_is(policy):
    report = run(heavy_fork(), policy)
    assert near(report.makespan, 3.0)
    assert set(report.placement.values()) == {"worker-0"} and report.bytes_moved == 0


def test_round_robin_cycles_through_workers_ignoring_data():
    report = run(independent(6), RoundRobin(), n_workers=3)
    order = sorted(report.trace.records("task"), key=lambda t: (t["start"], t["worker"]))
    assert [t["worker"][-1] for t in order] == list("012012")
    assert near(report.makespan, 2.0)
    heavy = run(heavy_fork(), RoundRobin())
    assert near(heavy.makespan, 4.0) and heavy.bytes_moved == 2_000_000_000


def test_the_legacy_round_robin_still_works():
    assert near(run(independent(4), LegacyRoundRobin()).makespan, 2.0)


def test_single_runs_everything_on_the_first_worker():
    report = run(independent(4), Single(), n_workers=3)
    assert set(report.placement.values()) == {"worker-0"}
    assert near(report.makespan, 4.0)


def test_work_stealing_only_piles_up_on_one_worker_and_steals_back_to_balance():
    report = run(independent(8), WorkStealing())
    per_worker = {w: sum(1 for v in report.placement.values() if v == w) for w in ("worker-0", "worker-1")}
    assert per_worker["worker-1"] >= 3  # every task went to worker-0; stealing moved these
    assert 4.0 <= report.makespan < 5.0  # single would take 8; a perfect split 4
    alone = SchedulerState(policy=WorkStealing())
    assert "stealing" in alone.extensions and not alone._queuing


def test_random_is_seeded_by_the_policy_not_by_global_random():
    assert SplitMix64(0).next() == 0xE220A8397B1DCDAF  # the generator's published first output
    g = independent(12)
    random.seed(1)
    first = run(g, Random(seed=7), n_workers=3).placement
    random.seed(2)
    assert run(g, Random(seed=7), n_workers=3).placement == first
    assert run(g, Random(seed=8), n_workers=3).placement != first
    assert len(set(first.values())) == 3
    assert run(g, Random(rng=random.Random(5)), n_workers=3).placement  # a driver's generator works too


def test_mcp_breaks_alap_ties_by_the_descendants():
    s = Sched(MCP(info=Given(durations={"x": 1.0, "y": 1.0, "p": 1.0, "q": 0.5, "r": 0.5})))
    s.add_worker("w0")
    # y-1 -> q-1 -> r-1 and x-1 -> p-1: both b-level 2, so both ALAP 0; y is submitted first
    s.submit(T("y-1"), T("x-1"), T("q-1", "y-1"), T("r-1", "q-1"), T("p-1", "x-1"))
    prio = {k: s.state.tasks[k].priority for k in ("x-1", "y-1", "p-1", "q-1", "r-1")}
    # x's descendant p has ALAP 1; y's descendants q, r have ALAP 1 and 1.5: [0, 1] < [0, 1, 1.5]
    assert sorted(prio, key=prio.get)[:2] == ["x-1", "y-1"]


@pytest.mark.parametrize("policy", [MCP, ETF, DLS])
def test_critical_path_first_reaches_the_optimum_on_the_trap(policy):
    assert near(run(critical_path_trap(), policy()).makespan, 3.0)


# --------------------------------------------------------------------------
# with and without greedy transfer
# --------------------------------------------------------------------------


def test_without_greedy_transfer_ready_tasks_wait_for_a_free_thread():
    greedy = Sched(BLevel())
    greedy.add_worker("w0")
    outs = greedy.submit(T("a-1"), T("b-1"), T("c-1"))
    assert [m.key for m in outs if isinstance(m, ComputeTask)] == ["a-1", "b-1", "c-1"]
    lazy = Sched(BLevel(greedy_transfer=False))
    lazy.add_worker("w0")
    outs = lazy.submit(T("a-1"), T("b-1"), T("c-1"), T("d-1", "a-1"))
    assert [m.key for m in outs if isinstance(m, ComputeTask)] == ["a-1"]
    assert lazy.states() == {"a-1": "processing", "b-1": "queued", "c-1": "queued", "d-1": "waiting"}
    outs = lazy.finish("w0", "a-1")
    # the freed thread takes the best-ranked waiting task; d-1, ready now, queues behind c-1
    assert [m.key for m in outs if isinstance(m, ComputeTask)] == ["b-1"]
    assert [ts.key for ts in lazy.state.queued] == ["c-1", "d-1"]


@pytest.mark.parametrize("policy", [BLevel, HEFT, TLevel, MCP, ETF, DLS])
def test_without_greedy_transfer_a_task_cannot_wait_for_its_busy_data_holder(policy):
    # c2 is ready while p's worker runs c1: greedy, it queues there (3 s); lazily it must take
    # the free worker and move 2 GB (4 s)
    assert near(run(heavy_fork(), policy()).makespan, 3.0)
    assert near(run(heavy_fork(), policy(greedy_transfer=False)).makespan, 4.0)


def test_an_estimates_model_follows_what_the_scheduler_learns():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("a-2"))
    s(TaskFinished, worker="w0", key="a-1", nbytes=8, typename="int", start=0.0, stop=2.0)
    view = s.state.view
    assert Estimates().duration(view, view.tasks["a-2"]) == 2.0
    assert Estimates(default_nbytes=5).nbytes(view, view.tasks["a-2"]) == 5


def test_client_get_sends_its_graph_as_one_so_a_policy_ranks_it_whole():
    from twofold import Client
    from twofold.sim import SimCluster

    graphs = []

    class Counting(BLevel):
        def prioritize(self, view, tasks):
            graphs.append(len(tasks))
            return super().prioritize(view, tasks)

    inc = lambda x: x + 1  # noqa: E731
    with SimCluster(n_workers=2, policy=Counting()) as cluster, Client(cluster) as client:
        dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "d": (inc, "c")}
        assert client.get(dsk, "d") == 4
        assert client.submit(inc, 10).result() == 11
    assert graphs == [4, 1]


@pytest.mark.parametrize("policy, u, taken", [(BLevel, 50.0, "u-1"), (ETF, 50.0, "v-1"), (DLS, 50.0, "u-1"),
                                               (BLevel, 5.0, "u-1"), (DLS, 5.0, "v-1")])
def test_without_greedy_transfer_a_freed_worker_takes_the_pair_its_policy_picks(policy, u, taken):
    # x-1 (1 GB) is on w0, y-1 (1 GB) on w1: 10 s to move either.  r0/r1 (100 s) occupy both
    # workers; u-1 (50 s, needs y-1) and v-1 (1 s, needs x-1) wait on the scheduler.  When w0
    # frees: by priority (b-level) u-1 goes first; ETF takes v-1, which starts there at once;
    # DLS weighs u-1's level 50 minus its 10 s transfer against v-1's 1 minus 0: u-1 (at 5 s: v-1).
    durations = {"r0": 100.0, "r1": 100.0, "u": u, "v": 1.0, "x": 1.0, "y": 1.0}
    s = Sched(policy(info=Given(durations=durations), greedy_transfer=False))
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1", workers=("w0",)), T("y-1", workers=("w1",)))
    s.finish("w0", "x-1", nbytes=1_000_000_000)
    s.finish("w1", "y-1", nbytes=1_000_000_000)
    outs = s.submit(T("r0-1"), T("r1-1"), T("u-1", "y-1"), T("v-1", "x-1"))
    assert [(m.key, m.worker) for m in outs if isinstance(m, ComputeTask)] == [("r0-1", "w0"), ("r1-1", "w1")]
    assert {ts.key for ts in s.state.queued} == {"u-1", "v-1"}
    outs = s.finish("w0", "r0-1")
    assert [(m.key, m.worker) for m in outs if isinstance(m, ComputeTask)] == [(taken, "w0")]


def test_a_pick_of_a_task_not_waiting_is_refused():
    class Wrong(BLevel):
        def pick(self, view, ws, waiting):
            return view.tasks["a-1"]

    s = Sched(Wrong(greedy_transfer=False))
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1"))
    with pytest.raises(ValueError, match="not waiting on the queue"):
        s.finish("w0", "a-1")


def test_without_greedy_transfer_a_withheld_task_whose_input_is_lost_waits_for_it_again():
    from twofold.messages import RemoveWorker

    s = Sched(BLevel(greedy_transfer=False))
    s.add_worker("w0")
    s.submit(T("x-1"))
    s.finish("w0", "x-1")
    s.add_worker("w1")
    s.submit(T("busy-1", workers=("w0",)), T("busy-2", workers=("w1",)))  # no thread free anywhere
    s.submit(T("y-1", "x-1"))
    assert s.states()["y-1"] == "queued"
    s(RemoveWorker, worker="w0")  # x-1's only copy goes with it
    assert s.states()["y-1"] == "waiting" and s.states()["x-1"] == "queued"  # recomputed when a thread frees
    outs = s.finish("w1", "busy-2")
    assert [m.key for m in outs if isinstance(m, ComputeTask)] == ["x-1"]
    outs = s.finish("w1", "x-1")
    assert [m.key for m in outs if isinstance(m, ComputeTask)] == ["y-1"]


def _every_policy():
    from twofold.scheduler.policies import ListScheduler

    for name, cls in POLICIES.items():
        yield pytest.param(cls, {}, id=name)
        if issubclass(cls, ListScheduler):
            yield pytest.param(cls, {"greedy_transfer": False}, id=f"{name}-lazy")


@pytest.mark.parametrize("cls, options", list(_every_policy()))
def test_every_policy_keeps_the_invariants_through_crashes_restarts_partitions_and_lost_data(cls, options):
    g = random_layered(5, 8, seed=1)
    for seed in (0, 1):
        report = run_workload(g, n_workers=3, seed=seed, validate=True, at_once=True, policy=cls(**options),
                              chaos={"crash": 0.5, "restart": 0.5, "partition": 0.2, "lose_data": 0.3, "horizon": 2})
        assert report.n_tasks == 40 and report.makespan > 0
