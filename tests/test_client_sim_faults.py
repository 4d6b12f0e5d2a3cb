"""End to end through the Client on a validated SimCluster: faults, chaos, determinism.

Every cluster runs with ``validate=True``.  Times follow the hop structure
(``latency`` = 1 ms per message, plus 2e-7 s for a 200-byte message at 1 GB/s,
hence the 1e-5 tolerance): client->scheduler->worker, the task, then
worker->scheduler->client; a worker's death is noticed by the scheduler one
latency later; a restarted worker comes back ``restart_delay`` (0.5 s) later
and registers one latency after that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from twofold import Client, FutureLost, KilledWorker, wait
from twofold.errors import SimulationStalled, TimeoutError as TwofoldTimeoutError
from twofold.sim import Fault, workloads

from client_support import L, add, approx, cluster_of, inc, slowinc


def task_records(cluster, key=None, worker=None):
    out = cluster.records("task")
    if key is not None:
        out = [r for r in out if r["key"] == key]
    if worker is not None:
        out = [r for r in out if r["worker"] == worker]
    return out


def faults(cluster, what=None):
    out = [f for f in cluster.records("fault") if f["what"] != "worker-start"]
    if what is not None:
        out = [f for f in out if f["what"] == what]
    return out


# --------------------------------------------------------------------------
# crash
# --------------------------------------------------------------------------


def test_crash_a_worker_mid_graph_every_result_is_still_correct():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as client:
        leaves = client.map(inc, range(6), key=[f"leaf-{i}" for i in range(6)])
        pairs = [client.submit(add, leaves[i], leaves[i + 1], key=f"pair-{i}") for i in range(0, 6, 2)]
        top = client.submit(sum, pairs, key="top")
        cluster.crash("worker-0", at=2.5)
        assert top.result() == sum(range(1, 7))
        assert client.gather(leaves) == [1, 2, 3, 4, 5, 6]
        assert client.gather(pairs) == [3, 7, 11]
        assert [f["what"] for f in faults(cluster)] == ["crash"]
        # nothing finished on worker-0 after its death; its results were made again on worker-1
        assert all(r["stop"] <= 2.5 for r in task_records(cluster, worker="worker-0"))
        recomputed = {r["key"] for r in task_records(cluster, worker="worker-0")} & {
            r["key"] for r in task_records(cluster, worker="worker-1") if r["start"] >= 2.5
        }
        assert recomputed  # worker-0's in-memory results were needed again
        # every key's last run is on the survivor once the crash happened
        for f in leaves + pairs + [top]:
            last = task_records(cluster, key=f.key)[-1]
            assert last["ok"]
        assert cluster.alive_workers == ["worker-1"]
        assert list(cluster.scheduler.workers) == ["worker-1"]
        assert client.who_has(top)[top.key] == ["worker-1"]


def test_crash_while_running_reruns_the_task_elsewhere_with_exact_times():
    cluster = cluster_of(n=2, durations=1.0, scheduler_config={"steal_interval": 0})
    with Client(cluster) as client:
        f = client.submit(inc, 1, workers=["worker-0"], allow_other_workers=True, key="victim")
        cluster.crash("worker-0", at=0.5)
        assert f.result() == 2
        [rec] = task_records(cluster, key="victim")
        assert rec["worker"] == "worker-1"
        # crash at 0.5, noticed at 0.5 + L, sent to worker-1 at 0.5 + 2L
        assert rec["start"] == approx(0.5 + 2 * L)
        assert cluster.now == approx(1.5 + 4 * L)  # the result rode back inline: no fetch


def test_worker_killed_four_times_while_running_a_task_gives_killed_worker():
    cluster = cluster_of(n=1, durations={"slowinc": 3.0, "*": 0.1})
    # the task runs [~0, 3), [1.5, 4.5), [3.5, 6.5), [5.5, 8.5): each restart kills it
    for t in (1.0, 3.0, 5.0, 7.0):
        cluster.restart("worker-0", at=t)
    with Client(cluster) as client:
        f = client.submit(slowinc, 1, key="doomed")
        with pytest.raises(KilledWorker, match="doomed") as info:
            f.result()
        assert "4" in str(info.value)
        # the 4th death at t=7 is noticed at 7 + L; the error reaches the client at 7 + 2L
        assert cluster.now == approx(7 + 2 * L)
        assert f.status == "error"
        assert type(f.exception()) is KilledWorker
        assert task_records(cluster, key="doomed") == []  # it never got to finish
        assert [x["what"] for x in faults(cluster)] == ["restart"] * 4
        # the worker is back and healthy afterwards
        assert client.submit(inc, 1).result() == 2


def test_retry_after_killed_worker_runs_the_task_again():
    cluster = cluster_of(n=1, durations={"slowinc": 3.0, "*": 0.1})
    for t in (1.0, 3.0, 5.0, 7.0):
        cluster.restart("worker-0", at=t)
    with Client(cluster) as client:
        f = client.submit(slowinc, 1, key="doomed")
        g = client.submit(inc, f, key="dependent")
        with pytest.raises(KilledWorker):
            g.result()  # dependents err with the same KilledWorker
        assert type(g.exception()) is KilledWorker
        g.retry()  # retries the erred dependency as well
        assert g.result() == 3
        [rec] = task_records(cluster, key="doomed")
        assert rec["start"] == approx(7.5 + 2 * L)  # the worker is back at 7.5 and registers


def test_three_deaths_are_still_tolerated():
    cluster = cluster_of(n=1, durations={"slowinc": 3.0, "*": 0.1})
    for t in (1.0, 3.0, 5.0):
        cluster.restart("worker-0", at=t)
    with Client(cluster) as client:
        f = client.submit(slowinc, 1, key="survivor")
        assert f.result() == 2
        [rec] = task_records(cluster, key="survivor")
        assert rec["start"] == approx(5.5 + 2 * L)  # back at 5.5, registers at +L, task sent at +2L
        assert rec["stop"] == approx(8.5 + 2 * L)


def test_allowed_failures_is_configurable():
    cluster = cluster_of(n=1, durations={"slowinc": 3.0, "*": 0.1}, scheduler_config={"allowed_failures": 0})
    cluster.restart("worker-0", at=1.0)
    with Client(cluster) as client:
        f = client.submit(slowinc, 1)
        with pytest.raises(KilledWorker):
            f.result()
        assert cluster.now == approx(1 + 2 * L)


# --------------------------------------------------------------------------
# lose_data, restart
# --------------------------------------------------------------------------


def test_lose_data_then_the_result_is_recomputed():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="a")
        wait(a)
        [holder] = client.who_has(a)["a"]
        t = cluster.now
        cluster.lose_data(holder, at=t + 0.5)
        cluster.run(t + 0.75)
        assert a.status == "lost"
        assert "lost" in repr(a)
        assert not a.done()
        assert a.result() == 2
        recs = task_records(cluster, key="a")
        assert len(recs) == 2 and all(r["ok"] for r in recs)
        # the worker reports the loss (L), the scheduler sends the task again (L)
        assert recs[1]["start"] == approx(t + 0.5 + 2 * L)
        assert [x["what"] for x in faults(cluster)] == ["lose_data"]
        assert a.status == "finished"


def test_lose_data_of_a_dependency_recomputes_it_for_the_dependent():
    cluster = cluster_of(n=1, durations=1.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="dep")
        b = client.submit(slowinc, a, key="needs-dep")
        cluster.lose_data("worker-0", at=0.5)  # a is still running then: nothing to lose yet
        assert b.result() == 3
        assert len(task_records(cluster, key="dep")) == 1
        t = cluster.now
        cluster.lose_data("worker-0", at=t + 0.1)
        cluster.run(t + 0.2)
        assert a.status == b.status == "lost"
        c = client.submit(add, a, b, key="after-loss")
        assert c.result() == 5
        order = [(r["key"], r["start"]) for r in task_records(cluster) if r["start"] > t]
        # recomputed from lineage, inputs first: the loss at t+0.1 is reported (L) and
        # the scheduler sends dep again (L)
        assert [k for k, _ in order] == ["dep", "needs-dep", "after-loss"]
        assert order[0][1] == approx(t + 0.1 + 2 * L)
        assert order[1][1] == approx(t + 0.1 + 2 * L + 1 + 2 * L)
        assert client.gather([a, b]) == [2, 3]


@pytest.mark.parametrize("kind", ["crash", "restart", "lose_data"])
def test_holder_fails_while_the_client_fetches_the_result(kind):
    # no result rides inline: the client has to fetch it from its holder
    cluster = cluster_of(n=2, durations=1.0, worker_config={"inline_result_limit": -1})
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="a", workers=["worker-0"], allow_other_workers=True)
        wait(a)
        t = cluster.now
        # who_has answered at t + 2L; the fetch request reaches worker-0 at t + 3L
        getattr(cluster, kind)("worker-0", at=t + 2.5 * L)
        assert a.result() == 2
        recs = task_records(cluster, key="a")
        assert len(recs) == 2
        # recomputed once the scheduler hears of the loss (L later) and sends it out (L)
        assert recs[1]["start"] == approx(t + 2.5 * L + 2 * L)
        assert recs[1]["worker"] == ("worker-0" if kind == "lose_data" else "worker-1")


def test_lose_data_while_a_dependent_runs_recomputes_instead_of_claiming_phantom_results():
    cluster = cluster_of(n=1, durations={"slowinc": 2.0, "*": 0.1})
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="a")
        b = client.submit(slowinc, a, key="b")  # runs [0.104, 2.104) and holds a as an input
        cluster.lose_data("worker-0", at=0.5)
        cluster.run(1.0)
        host = cluster._sim.workers["worker-0"]
        # whatever the scheduler believes is in memory must really be somewhere
        phantom = [k for k, ts in cluster.scheduler.tasks.items() if ts.state == "memory" and k not in host.store]
        assert phantom == []
        assert a.status != "finished"
        assert a.result() == 2
        # a is recomputed once, when the thread is free again
        assert len(task_records(cluster, key="a")) == 2


def test_restart_brings_the_worker_back_empty():
    cluster = cluster_of(n=1, durations=1.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="a")
        assert a.result() == 2
        host = cluster._sim.workers["worker-0"]
        assert "a" in host.store
        t = cluster.now
        cluster.restart("worker-0", at=t + 1)
        cluster.run(t + 1.2)
        assert cluster.alive_workers == [] and cluster.scheduler.workers == {}
        assert a.status == "lost"
        cluster.run(t + 1.5 + 2 * L)
        assert cluster.alive_workers == ["worker-0"]
        ws = cluster.scheduler.workers["worker-0"]
        assert host.store == {}  # empty, so the scheduler recomputes a
        assert a.result() == 2
        recs = task_records(cluster, key="a")
        assert len(recs) == 2
        assert recs[1]["start"] == approx(t + 1.5 + 2 * L)
        assert ws is cluster.scheduler.workers["worker-0"]
        assert [x["what"] for x in faults(cluster)] == ["restart"]


def test_scattered_data_lost_with_its_only_worker_raises_future_lost():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as client:
        s = client.scatter(5, workers=["worker-0"])
        cluster.restart("worker-0", at=0.5)
        cluster.run(0.6)
        assert s.status == "error"
        with pytest.raises(FutureLost):
            s.result(timeout=10)
        with pytest.raises(FutureLost):
            client.submit(inc, s).result(timeout=10)
        # a broadcast copy survives the loss of one worker
        cluster.run(1.1)  # worker-0 is back (0.5 + restart_delay) and registered
        b = client.scatter(7, broadcast=True)
        assert sorted(client.who_has(b)[b.key]) == ["worker-0", "worker-1"]
        cluster.crash("worker-1", at=cluster.now + 0.1)
        cluster.run(cluster.now + 0.2)
        assert b.result() == 7


# --------------------------------------------------------------------------
# partition, slow
# --------------------------------------------------------------------------


def test_partition_from_the_scheduler_removes_the_worker_after_the_ttl():
    ttl = 5.0
    cluster = cluster_of(n=2, durations=1.0, scheduler_config={"worker_ttl": ttl})
    cluster.partition("worker-0", cluster.scheduler_address, 0.5, 12.0)
    with Client(cluster) as client:
        fs = client.map(inc, range(6))
        # last contact: worker-0's registration at t = L; removal at L + ttl
        cluster.run(L + ttl - 0.01)
        assert sorted(cluster.scheduler.workers) == ["worker-0", "worker-1"]
        cluster.run(L + ttl + 0.01)
        assert sorted(cluster.scheduler.workers) == ["worker-1"]
        assert client.gather(fs) == [1, 2, 3, 4, 5, 6]
        # all the work that counted was done (or redone) on worker-1
        for f in fs:
            assert task_records(cluster, key=f.key)[-1]["worker"] == "worker-1"
        assert cluster.now < 12.0
        # once the partition heals, the worker is told to register again and comes back
        cluster.run(14.0)
        assert sorted(cluster.scheduler.workers) == ["worker-0", "worker-1"]
        assert client.submit(inc, 100, workers=["worker-0"]).result() == 101
        whats = [x["what"] for x in faults(cluster)]
        assert whats[:3] == ["partition-start", "partition-end", "worker-closed"]


def test_partition_between_workers_delays_the_transfer_until_it_heals():
    cluster = cluster_of(n=2, durations=0.1)
    cluster.partition("worker-0", "worker-1", 0.0, 3.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, workers=["worker-0"], key="src")
        b = client.submit(inc, a, workers=["worker-1"], key="dst")
        assert b.result() == 3
        [dst] = task_records(cluster, key="dst")
        assert dst["start"] >= 3.0
        [t] = cluster.records("transfer")
        assert (t["source"], t["destination"]) == ("worker-0", "worker-1")
        assert t["stop"] >= 3.0


def test_slow_worker_stretches_its_tasks_by_the_factor():
    cluster = cluster_of(n=1, durations=1.0)
    cluster.slow("worker-0", 3.0, start=0.0, end=2.5)
    with Client(cluster) as client:
        fs = client.map(inc, range(3), key=["s0", "s1", "s2"])
        wait(fs)
        recs = task_records(cluster)
        assert [r["key"] for r in recs] == ["s0", "s1", "s2"]
        # s0 starts inside the window (x3); s1 starts at ~3.002, after it (x1)
        assert [r["stop"] - r["start"] for r in recs] == [approx(3.0), approx(1.0), approx(1.0)]
        assert cluster.now == approx(5 + 4 * L)
        assert faults(cluster, "slow")[0]["detail"] == "x3"


def test_slow_link_stretches_transfers():
    cluster = cluster_of(n=2, durations=0.1)
    cluster.slow(("worker-0", "worker-1"), 100.0, start=0.0, end=50.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, workers=["worker-0"], key="src")
        b = client.submit(inc, a, workers=["worker-1"], key="dst")
        assert b.result() == 3
        [t] = cluster.records("transfer")
        nbytes = t["nbytes"]
        expected = 100 * (L + 200 / 1e9) + 100 * (L + (200 + nbytes) / 1e9)
        assert t["stop"] - t["start"] == pytest.approx(expected, abs=1e-7)


def test_fault_plan_given_at_construction():
    plan = [Fault("restart", "worker-0", 0.5), Fault("slow", "worker-1", 0.0, end=10.0, factor=2.0)]
    cluster = cluster_of(n=2, durations=1.0, faults_plan=plan)
    with Client(cluster) as client:
        fs = client.map(inc, range(2), key=["p0", "p1"])
        assert client.gather(fs) == [1, 2]
        assert [(x["what"], x["target"], x["time"]) for x in faults(cluster)] == [
            ("slow", "worker-1", 0.0), ("restart", "worker-0", 0.5)]
        # p0 was killed on worker-0 before it could finish; every run on worker-1 took 2 x 1 s
        assert all(r["start"] >= 0.5 for r in task_records(cluster, worker="worker-0"))
        assert [r["stop"] - r["start"] for r in task_records(cluster, key="p1")] == [approx(2.0)]
        for r in task_records(cluster, worker="worker-1"):
            assert r["stop"] - r["start"] == approx(2.0)


def test_a_restarted_worker_steals_work_waiting_on_a_busy_one():
    cluster = cluster_of(n=2, durations={"long": 3.0, "*": 1.0})
    cluster.restart("worker-0", at=0.5)
    with Client(cluster) as client:
        long = client.submit(inc, 0, key="long", workers=["worker-1"], allow_other_workers=True)
        short = client.submit(inc, 1, key="short", workers=["worker-0"], allow_other_workers=True)
        assert client.gather([long, short]) == [1, 2]
        # worker-0 is back at 1.0: dask's periodic stealing hands it 'short' instead of
        # leaving it queued behind 'long' on worker-1 until t = 3
        [rec] = task_records(cluster, key="short")
        assert rec["worker"] == "worker-0"
        assert rec["stop"] < 3.0


# --------------------------------------------------------------------------
# waiting with nothing left to happen
# --------------------------------------------------------------------------


def test_run_advances_an_idle_cluster_to_the_given_time():
    cluster = cluster_of(n=1)
    cluster.run(500.0)
    assert cluster.now == 500.0


def test_result_timeout_longer_than_the_stall_grace_raises_timeout_error():
    cluster = cluster_of(n=1)
    with Client(cluster) as client:
        f = client.submit(inc, 1, workers=["nowhere"])
        with pytest.raises(TwofoldTimeoutError):
            f.result(timeout=300)
        assert cluster.now == pytest.approx(300)


def test_waiting_forever_on_work_nobody_can_run_is_a_stall():
    cluster = cluster_of(n=1)
    with Client(cluster) as client:
        f = client.submit(inc, 1, resources={"GPU": 1})
        with pytest.raises(SimulationStalled, match="no more progress"):
            f.result()


# --------------------------------------------------------------------------
# tasks that wait on tasks, when their worker dies
# --------------------------------------------------------------------------

WAITER_LOG: list = []


def waiter():
    from twofold import get_client, rejoin, secede

    c = get_client()
    fut = c.submit(slowinc, 1, key="child", workers=["worker-1"])
    secede()
    r = fut.result()
    WAITER_LOG.append("after-result")
    rejoin()
    return r


def test_task_waiting_on_a_subtask_is_rerun_when_its_worker_restarts():
    WAITER_LOG.clear()
    cluster = cluster_of(n=2, durations={"slowinc": 2.0, "*": 0.1})
    cluster.restart("worker-0", at=0.5)
    with Client(cluster) as client:
        f = client.submit(waiter, key="waiter", workers=["worker-0"], allow_other_workers=True)
        assert f.result() == 2
        # the task's client died with worker-0 (as a worker process's client does), so the
        # child it submitted was released: its first run (already executing on worker-1) is
        # wasted, and the rerun of the waiter, behind it on worker-1, submits it again
        assert [r["worker"] for r in task_records(cluster, key="waiter")] == ["worker-1"]
        runs = task_records(cluster, key="child")
        assert [r["worker"] for r in runs] == ["worker-1", "worker-1"]
        assert runs[1]["start"] >= runs[0]["stop"]


def test_user_code_of_a_task_stops_when_its_worker_dies():
    WAITER_LOG.clear()
    cluster = cluster_of(n=2, durations={"slowinc": 2.0, "*": 0.1})
    cluster.restart("worker-0", at=0.5)
    with Client(cluster) as client:
        f = client.submit(waiter, key="waiter", workers=["worker-0"], allow_other_workers=True)
        assert f.result() == 2
        # the first run died with worker-0 at t=0.5, before its subtask (2 s) was done
        assert WAITER_LOG == ["after-result"]


ZOMBIE_THEN_STALL = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from test_client_sim_faults import cluster_of, waiter, inc
    from twofold import Client
    from twofold.errors import SimulationStalled
    cluster = cluster_of(n=2, durations={"slowinc": 2.0, "*": 0.1})
    cluster.restart("worker-0", at=0.5)
    with Client(cluster) as client:
        client.submit(waiter, key="waiter", workers=["worker-0"], allow_other_workers=True).result()
        try:
            client.submit(inc, 1, resources={"GPU": 1}).result()
        except SimulationStalled:
            print("stalled")
    """
)


def test_stall_detection_still_works_after_a_worker_died_under_a_waiting_task():
    try:
        out = subprocess.run([sys.executable, "-c", ZOMBIE_THEN_STALL, os.path.dirname(__file__)],
                             capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("waiting on a task no worker can run hung instead of raising SimulationStalled")
    assert out.stdout.strip() == "stalled", out.stderr


# --------------------------------------------------------------------------
# chaos
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_chaos_crashes_mid_graph_still_give_every_correct_result(seed):
    g = workloads.random_layered(layers=10, width=20, seed=3)
    for node in g.nodes:
        g.nodes[node]["nbytes"] = 1000 + node  # every result is distinguishable
    cluster = cluster_of(n=4, threads=2, seed=seed, durations=workloads.graph_models(g),
                         chaos={"crash": 0.5, "horizon": 3.0})
    with Client(cluster) as client:
        futures = workloads.submit_graph(client, g)
        assert len(futures) == 200
        results = client.gather(futures)
        assert {n: r.nbytes for n, r in results.items()} == {n: 1000 + n for n in g.nodes}
        tasks = cluster.records("task")
        crashes = faults(cluster, "crash")
        last_stop = max(t["stop"] for t in tasks)
        # the crashes really hit the graph while it ran, and work was redone
        assert any(c["time"] < last_stop for c in crashes)
        assert len(tasks) > 200
        assert {t["key"] for t in tasks} == {f"task-{n}" for n in g.nodes}


# --------------------------------------------------------------------------
# determinism across processes
# --------------------------------------------------------------------------

PROGRAM = textwrap.dedent(
    """
    import json, sys
    from twofold import Client, as_completed, wait
    from twofold.sim import SimCluster, Exponential

    def inc(x):
        return x + 1

    def add(x, y):
        return x + y

    def label(items):
        return sorted({str(i) for i in items})

    seed = int(sys.argv[1])
    cluster = SimCluster(n_workers=4, threads_per_worker=2, seed=seed, validate=True,
                         durations=Exponential(0.2),
                         chaos={"restart": 0.1, "delay": 0.2, "horizon": 30})
    with Client(cluster) as client:
        xs = client.map(inc, range(40))
        ys = [client.submit(add, xs[i], xs[i + 1]) for i in range(39)]
        zs = client.map(inc, range(10), pure=False)
        s = client.submit(set, ["a", "b", "c"], pure=False)  # (scattered data would not survive chaos)
        t = client.submit(label, s)
        total = client.submit(sum, ys)
        done = [f.key for f in as_completed(zs)]
        wait(ys + [t, total])
        # everything is computed: the digest now covers the whole run
        digest, now = cluster.digest(), cluster.now
        results = {"ys": client.gather(ys), "total": total.result(), "label": t.result(),
                   "zs": client.gather(zs), "n_done": len(done)}
        print(json.dumps({"digest": digest, "now": now, "results": results,
                          "faults": len(cluster.records("fault")), "digest_end": cluster.digest()}))
    """
)


def _run_program(seed, hashseed, program=PROGRAM):
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run([sys.executable, "-c", program, str(seed)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_same_seed_same_digest_in_fresh_processes_under_any_hash_seed():
    runs = [_run_program(7, h) for h in ("0", "1", "random")]
    assert len({r["digest"] for r in runs}) == 1
    assert len({r["digest_end"] for r in runs}) == 1
    assert len({r["now"] for r in runs}) == 1
    assert len({json.dumps(r["results"], sort_keys=True) for r in runs}) == 1
    assert runs[0]["faults"] > 4  # chaos really restarted workers (besides the 4 starts)
    other = _run_program(8, "0")
    assert other["digest"] != runs[0]["digest"]
    assert other["results"] == runs[0]["results"]  # results do not depend on the seed
    r = runs[0]["results"]
    assert r["ys"] == [2 * i + 3 for i in range(39)]
    assert r["total"] == sum(2 * i + 3 for i in range(39))
    assert r["label"] == ["a", "b", "c"]
    assert r["zs"] == list(range(1, 11)) and r["n_done"] == 10


GATHER_THEN_COMPUTE = textwrap.dedent(
    """
    import json, sys
    from twofold import Client
    from twofold.sim import SimCluster, Exponential

    def inc(x):
        return x + 1

    cluster = SimCluster(n_workers=4, threads_per_worker=1, seed=int(sys.argv[1]), validate=True,
                         durations=Exponential(0.2), chaos={"delay": 0.5})
    with Client(cluster) as client:
        client.gather(client.map(inc, range(40)))  # fetches from several workers at once
        client.gather(client.map(inc, range(100, 120)))
        print(json.dumps({"digest": cluster.digest(), "now": cluster.now}))
    """
)


def test_gathering_from_several_workers_is_hash_seed_independent():
    a = _run_program(1, "0", GATHER_THEN_COMPUTE)
    b = _run_program(1, "1", GATHER_THEN_COMPUTE)
    assert a == b


def test_same_seed_same_digest_in_process():
    def run(seed):
        cluster = cluster_of(n=3, threads=2, seed=seed, durations=0.1,
                             chaos={"restart": 0.1, "delay": 0.2, "horizon": 30})
        with Client(cluster) as client:
            fs = client.map(inc, range(30), pure=False)
            total = client.submit(sum, fs).result()
            return cluster.digest(), total

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert a[1] == c[1] == sum(range(1, 31))
    assert a[0] != c[0]
