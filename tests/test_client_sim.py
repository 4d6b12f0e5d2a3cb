"""End to end: every Client feature on a validated SimCluster, exact in virtual time.

Every cluster here runs with ``validate=True`` (scheduler and worker invariants
are checked after every simulated event).  Times are computed from the hop
structure: a message takes ``latency`` + ``bytes / bandwidth`` (a 200-byte
control message at 1 GB/s adds 2e-7 s, so hop counts are compared with an
absolute tolerance of 1e-5 s).  A small result rides back with its completion
(``WorkerConfig.rides_inline``, as on the runtime) and costs no more hops; every
result fetch that does not ride inline costs 4 hops: client->scheduler
(who_has), scheduler->client, client->worker, worker->client.
"""

from __future__ import annotations

import gc
import traceback

import pytest

from twofold import CancelledError, Client, Future, as_completed, fire_and_forget, get_client, rejoin, secede, wait
from twofold.client.future import ALL_COMPLETED, FIRST_COMPLETED
from twofold.errors import SimulationStalled, TimeoutError as TwofoldTimeoutError
from twofold.sim import Exponential, TaskInfo, Uniform

from client_support import (
    L,
    CustomError,
    add,
    approx,
    cluster_of,
    combine,
    div,
    ident,
    inc,
    raise_custom,
    slowinc,
    spawner,
    total,
)


# --------------------------------------------------------------------------
# user functions (module level: retries/side effects count through globals)
# --------------------------------------------------------------------------


FLAKY_CALLS = {"n": 0, "fail": 0}


def flaky(x):
    FLAKY_CALLS["n"] += 1
    if FLAKY_CALLS["n"] <= FLAKY_CALLS["fail"]:
        raise RuntimeError(f"flaky failure {FLAKY_CALLS['n']}")
    return x * 10


SIDE_EFFECTS: list = []


def side_effect(x):
    SIDE_EFFECTS.append(x)
    return x


def gpu_task(x):
    return x


def task_records(cluster, key=None, prefix=None):
    out = cluster.records("task")
    if key is not None:
        out = [r for r in out if r["key"] == key]
    if prefix is not None:
        out = [r for r in out if r["key"].startswith(prefix)]
    return out


def hops(n):
    return n * L


# --------------------------------------------------------------------------
# timing: the hop structure
# --------------------------------------------------------------------------


def test_two_one_second_tasks_on_one_thread_exact_times():
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1)
        b = client.submit(inc, 2)
        assert cluster.now == 0.0  # submit does not block
        wait([a, b])
        # client->scheduler->worker, 2 s of work, worker->scheduler->client
        assert cluster.now == approx(2 + hops(4))
        recs = task_records(cluster)
        assert [r["key"] for r in recs] == [a.key, b.key]
        assert recs[0]["start"] == approx(hops(2))
        assert recs[0]["stop"] == approx(1 + hops(2))
        assert recs[1]["start"] == approx(1 + hops(2))
        assert recs[1]["stop"] == approx(2 + hops(2))
        # both results rode back with their completions: nothing to fetch
        assert client.gather([a, b]) == [2, 3]
        assert cluster.now == approx(2 + hops(4))


def test_dependency_on_same_worker_exact_time():
    cluster = cluster_of(durations=0.5)
    with Client(cluster) as client:
        a = client.submit(inc, 1)
        b = client.submit(add, a, 10)
        # a: c->s->w, 0.5, w->s ; b: s->w, 0.5, w->s->c (its result inline: no fetch)
        assert b.result() == 12
        assert cluster.now == approx(1.0 + hops(6))
        assert a.done() and a.status == "finished"


def test_two_workers_run_in_parallel():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as client:
        fs = client.map(inc, [1, 2])
        wait(fs)
        assert cluster.now == approx(1 + hops(4))
        assert sorted(r["worker"] for r in task_records(cluster)) == ["worker-0", "worker-1"]


# --------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------


def test_submit_args_and_kwargs():
    with Client(cluster_of()) as client:
        assert client.submit(combine, 1).result() == (1, 0, 0)
        assert client.submit(combine, 1, 2, z=3).result() == (1, 2, 3)
        assert client.submit(combine, 1, y=5).result() == (1, 5, 0)
        assert client.submit(lambda: "no args").result() == "no args"


def test_submit_explicit_key():
    cluster = cluster_of()
    with Client(cluster) as client:
        f = client.submit(inc, 1, key="my-key")
        assert f.key == "my-key"
        assert f.result() == 2
        assert [r["key"] for r in task_records(cluster)] == ["my-key"]


def test_submit_pure_dedup_computes_once():
    cluster = cluster_of(durations=0.1)
    with Client(cluster) as client:
        a = client.submit(slowinc, 5)
        b = client.submit(slowinc, 5)
        assert a.key == b.key and a == b
        assert a.key.startswith("slowinc-")
        c = client.submit(slowinc, 6)
        assert c.key != a.key
        assert client.gather([a, b, c]) == [6, 6, 7]
        assert len(task_records(cluster, key=a.key)) == 1
        assert len(task_records(cluster, prefix="slowinc-")) == 2


def test_submit_impure_runs_every_time():
    cluster = cluster_of(durations=0.1)
    with Client(cluster) as client:
        a = client.submit(slowinc, 5, pure=False)
        b = client.submit(slowinc, 5, pure=False)
        assert a.key != b.key
        assert client.gather([a, b]) == [6, 6]
        assert len(task_records(cluster, prefix="slowinc-")) == 2


def test_pure_key_is_the_same_across_clients_and_computed_once():
    cluster = cluster_of(durations=0.1)
    with Client(cluster) as c1, Client(cluster.scheduler_address, set_as_default=False) as c2:
        a = c1.submit(slowinc, 41)
        b = c2.submit(slowinc, 41)
        assert a.key == b.key
        assert a.result() == 42 and b.result() == 42
        assert len(task_records(cluster, key=a.key)) == 1


@pytest.mark.parametrize("saturation", [None, float("inf")])
def test_submit_priority_orders_starts_on_one_thread(saturation):
    config = None if saturation is None else {"worker_saturation": saturation}
    cluster = cluster_of(durations=1.0, scheduler_config=config)
    with Client(cluster) as client:
        blocker = client.submit(ident, 0, key="blocker")
        fs = [client.submit(inc, i, priority=p, key=f"p{p}") for i, p in enumerate([0, 5, -3, 10, 2])]
        wait([blocker] + fs)
        order = [r["key"] for r in task_records(cluster)]
        assert order[0] == "blocker"
        if saturation is None:
            # queuing: the worker already got blocker and p0 (2 per thread); the
            # rest waited on the scheduler and went out highest priority first
            assert order == ["blocker", "p0", "p10", "p5", "p2", "p-3"]
        else:
            assert order == ["blocker", "p10", "p5", "p2", "p0", "p-3"]


def test_equal_priority_runs_in_submission_order():
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        fs = [client.submit(inc, i, key=f"k{i}") for i in range(5)]
        wait(fs)
        assert [r["key"] for r in task_records(cluster)] == [f"k{i}" for i in range(5)]


def test_submit_workers_restriction():
    cluster = cluster_of(n=3, threads=2, durations=0.1)
    with Client(cluster) as client:
        fs = [client.submit(inc, i, workers=["worker-2"], key=f"w2-{i}") for i in range(6)]
        g = client.submit(inc, 100, workers="worker-1", key="w1")
        assert client.gather(fs) == [1, 2, 3, 4, 5, 6]
        assert g.result() == 101
        assert {r["worker"] for r in task_records(cluster, prefix="w2-")} == {"worker-2"}
        assert [r["worker"] for r in task_records(cluster, key="w1")] == ["worker-1"]
        # 6 tasks of 0.1 s on 2 threads: 3 rounds
        recs = task_records(cluster, prefix="w2-")
        assert max(r["stop"] for r in recs) - min(r["start"] for r in recs) == approx(0.3)


def test_submit_workers_restriction_to_a_dead_worker_waits_then_allow_other_workers_runs_elsewhere():
    cluster = cluster_of(n=2, durations=0.1)
    cluster.crash("worker-0", at=0.0)
    with Client(cluster) as client:
        loose = client.submit(inc, 1, workers=["worker-0"], allow_other_workers=True, key="loose")
        assert loose.result() == 2
        assert [r["worker"] for r in task_records(cluster, key="loose")] == ["worker-1"]
        strict = client.submit(inc, 1, workers=["worker-0"], key="strict")
        with pytest.raises(TwofoldTimeoutError):
            strict.result(timeout=5)
        assert strict.status == "pending"
        assert task_records(cluster, key="strict") == []


@pytest.mark.parametrize("steal", [False, True])
def test_allow_other_workers_prefers_the_named_worker_but_may_be_stolen(steal):
    config = None if steal else {"steal_interval": 0}
    cluster = cluster_of(n=3, durations=1.0, scheduler_config=config)
    with Client(cluster) as client:
        fs = [client.submit(inc, i, workers=["worker-1"], allow_other_workers=True, key=f"x{i}")
              for i in range(3)]
        strict = [client.submit(inc, i, workers=["worker-1"], key=f"s{i}") for i in range(3)]
        assert client.gather(fs + strict) == [1, 2, 3] * 2
        loose_on = [r["worker"] for r in task_records(cluster, prefix="x")]
        assert {r["worker"] for r in task_records(cluster, prefix="s")} == {"worker-1"}
        if steal:
            # dask: loose restrictions are only a preference; idle workers steal them
            assert set(loose_on) - {"worker-1"}
        else:
            assert loose_on == ["worker-1"] * 3


def test_retries_succeed_after_failures():
    cluster = cluster_of(durations=0.1)
    FLAKY_CALLS.update(n=0, fail=2)
    with Client(cluster) as client:
        f = client.submit(flaky, 4, retries=2, key="flaky-ok")
        assert f.result() == 40
        recs = task_records(cluster, key="flaky-ok")
        assert [r["ok"] for r in recs] == [False, False, True]
        assert FLAKY_CALLS["n"] == 3


def test_retries_exhausted_raise_the_last_error():
    cluster = cluster_of(durations=0.1)
    FLAKY_CALLS.update(n=0, fail=3)
    with Client(cluster) as client:
        f = client.submit(flaky, 4, retries=1, key="flaky-bad")
        with pytest.raises(RuntimeError, match="flaky failure 2"):
            f.result()
        assert [r["ok"] for r in task_records(cluster, key="flaky-bad")] == [False, False]
        assert f.status == "error"


def test_resources_limit_concurrency_on_a_worker():
    cluster = cluster_of(n=1, threads=4, durations=1.0, resources={"GPU": 1})
    with Client(cluster) as client:
        gpu = [client.submit(gpu_task, i, resources={"GPU": 1}, key=f"gpu-{i}") for i in range(3)]
        cpu = [client.submit(inc, i, key=f"cpu-{i}") for i in range(3)]
        wait(gpu + cpu)
        g = sorted(task_records(cluster, prefix="gpu-"), key=lambda r: r["start"])
        assert len(g) == 3
        for before, after in zip(g, g[1:]):
            assert after["start"] >= before["stop"] - 1e-12  # never two GPU tasks at once
        assert g[-1]["stop"] - g[0]["start"] == approx(3.0)
        c = task_records(cluster, prefix="cpu-")
        # the other three threads run the CPU tasks alongside the first GPU task
        assert max(r["stop"] for r in c) == approx(1 + hops(2))


def test_resources_no_worker_has_them_is_not_run():
    cluster = cluster_of(n=2, durations=0.1)
    with Client(cluster) as client:
        f = client.submit(gpu_task, 1, resources={"GPU": 1})
        with pytest.raises(TwofoldTimeoutError):
            f.result(timeout=3)
        assert task_records(cluster) == []


# --------------------------------------------------------------------------
# map
# --------------------------------------------------------------------------


def test_map_several_iterables_and_kwargs():
    with Client(cluster_of(n=2)) as client:
        fs = client.map(add, [1, 2, 3], [10, 20, 30])
        assert client.gather(fs) == [11, 22, 33]
        assert all(f.key.startswith("add-") for f in fs)
        # zip semantics: the shortest iterable wins
        assert client.gather(client.map(add, [1, 2, 3], [10])) == [11]
        assert client.gather(client.map(combine, [1, 2], z=7)) == [(1, 0, 7), (2, 0, 7)]


def test_map_key_prefix_and_key_list():
    cluster = cluster_of(n=2)
    with Client(cluster) as client:
        fs = client.map(inc, range(3), key="pre")
        assert all(f.key.startswith("pre-") for f in fs)
        assert len({f.key for f in fs}) == 3
        gs = client.map(inc, range(3), key=["a", "b", "c"])
        assert [g.key for g in gs] == ["a", "b", "c"]
        assert client.gather(fs) == client.gather(gs) == [1, 2, 3]
        assert sorted(r["key"] for r in task_records(cluster) if not r["key"].startswith("pre-")) == ["a", "b", "c"]
        with pytest.raises(ValueError):
            client.map(inc, range(3), key=["only-one"])


def test_map_pure_dedups_equal_calls():
    cluster = cluster_of(n=2)
    with Client(cluster) as client:
        fs = client.map(slowinc, [1, 1, 2])
        assert fs[0].key == fs[1].key != fs[2].key
        assert client.gather(fs) == [2, 2, 3]
        assert len(task_records(cluster, prefix="slowinc-")) == 2


def _graph_messages(cluster, keys):
    """Stimulus ids of the client messages that introduced ``keys`` (released->waiting)."""
    sids = {}
    for r in cluster.records("transition"):
        if r["key"] in keys and r["start_state"] == "released":
            sids.setdefault(r["key"], r["stimulus_id"])
    return sids


def test_map_batch_size_splits_into_several_graphs():
    cluster = cluster_of(n=2)
    with Client(cluster) as client:
        fs = client.map(inc, range(10), batch_size=3, key=[f"b{i}" for i in range(10)])
        assert client.gather(fs) == list(range(1, 11))
        sids = _graph_messages(cluster, {f.key for f in fs})
        assert len(sids) == 10
        groups = {}
        for i in range(10):
            groups.setdefault(sids[f"b{i}"], []).append(i)
        assert sorted(groups.values()) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
        # without batch_size: one message
        gs = client.map(inc, range(4), key=[f"n{i}" for i in range(4)])
        wait(gs)
        assert len(set(_graph_messages(cluster, {g.key for g in gs}).values())) == 1


# --------------------------------------------------------------------------
# gather
# --------------------------------------------------------------------------


def test_gather_nested_containers():
    with Client(cluster_of(n=2)) as client:
        a, b, c, d = client.map(inc, range(4))
        out = client.gather([a, (b, [c]), {"d": d, "plain": 7}, {a, b}, "text"])
        assert out == [1, (2, [3]), {"d": 4, "plain": 7}, {1, 2}, "text"]
        assert type(out[1]) is tuple
        assert client.gather({"x": a, "y": [b, c]}) == {"x": 1, "y": [2, 3]}
        assert client.gather(a) == 1
        assert client.gather([a, a, (a,)]) == [1, 1, (1,)]
        assert list(client.gather(iter([a, b]))) == [1, 2]


def test_gather_errors_raise_and_skip():
    with Client(cluster_of()) as client:
        good = client.submit(inc, 1)
        bad = client.submit(div, 1, 0)
        with pytest.raises(ZeroDivisionError):
            client.gather([good, bad])
        assert client.gather([good, bad], errors="skip") == [2]
        assert client.gather({"g": good, "b": bad}, errors="skip") == {"g": 2}
        assert client.gather((bad, good, bad), errors="skip") == (2,)
        with pytest.raises(ValueError):
            client.gather([good], errors="ignore")


# --------------------------------------------------------------------------
# scatter
# --------------------------------------------------------------------------


def who_has_on_workers(cluster, key):
    return sorted(ws for ws, host in cluster._sim.workers.items() if key in host.store)


def test_scatter_single_object():
    cluster = cluster_of(n=2)
    with Client(cluster) as client:
        f = client.scatter(123)
        assert isinstance(f, Future) and f.status == "finished" and f.done()
        assert f.key.startswith("int-")
        assert f.result() == 123
        assert client.submit(inc, f).result() == 124
        holders = client.who_has(f)[f.key]
        assert len(holders) == 1 and holders == who_has_on_workers(cluster, f.key)
        assert task_records(cluster, key=f.key) == []  # nothing was computed


def test_scatter_list_spreads_round_robin():
    cluster = cluster_of(n=3)
    with Client(cluster) as client:
        fs = client.scatter([10, 20, 30, 40, 50, 60])
        assert isinstance(fs, list) and len(fs) == 6
        assert client.gather(fs) == [10, 20, 30, 40, 50, 60]
        who = client.who_has(fs)
        per_worker = {}
        for f in fs:
            [w] = who[f.key]
            per_worker[w] = per_worker.get(w, 0) + 1
        assert per_worker == {"worker-0": 2, "worker-1": 2, "worker-2": 2}
        t = client.scatter((1, 2))
        assert isinstance(t, tuple) and client.gather(t) == (1, 2)


def test_scatter_dict_uses_its_keys():
    with Client(cluster_of(n=2)) as client:
        fs = client.scatter({"x": 1, "y": [2, 3]})
        assert set(fs) == {"x", "y"}
        assert fs["x"].key == "x" and fs["y"].key == "y"
        assert client.gather(fs) == {"x": 1, "y": [2, 3]}
        assert client.submit(add, fs["x"], 5).result() == 6


def test_scatter_broadcast_puts_data_on_every_worker():
    cluster = cluster_of(n=3)
    with Client(cluster) as client:
        f = client.scatter("payload", broadcast=True)
        assert sorted(client.who_has(f)[f.key]) == ["worker-0", "worker-1", "worker-2"]
        assert who_has_on_workers(cluster, f.key) == ["worker-0", "worker-1", "worker-2"]
        # tasks using it on every worker need no transfer
        fs = [client.submit(len, f, workers=[w], key=f"len-{w}") for w in cluster.workers]
        assert client.gather(fs) == [7, 7, 7]
        assert cluster.records("transfer") == []


def test_scatter_to_chosen_workers():
    cluster = cluster_of(n=3)
    with Client(cluster) as client:
        fs = client.scatter([1, 2, 3], workers=["worker-2"])
        assert {w for ws in client.who_has(fs).values() for w in ws} == {"worker-2"}
        g = client.scatter([7, 8], workers=["worker-0", "worker-1"], broadcast=True)
        for k, ws in client.who_has(g).items():
            assert sorted(ws) == ["worker-0", "worker-1"]


def test_scatter_hash_names_by_content():
    with Client(cluster_of(n=2)) as client:
        dup = client.scatter([1, 1, 2])
        assert dup[0].key == dup[1].key != dup[2].key
        assert client.gather(dup) == [1, 1, 2]
        a = client.scatter([1, 2, 3])
        b = client.scatter([1, 2, 3])
        assert [f.key for f in a] == [f.key for f in b]
        c = client.scatter(5, hash=False)
        d = client.scatter(5, hash=False)
        assert c.key != d.key
        assert client.gather([c, d]) == [5, 5]


# --------------------------------------------------------------------------
# cancel and retry
# --------------------------------------------------------------------------


def test_cancel_a_long_running_task():
    cluster = cluster_of(durations={"slowinc": 100.0, "*": 1.0})
    with Client(cluster) as client:
        f = client.submit(slowinc, 1, key="long")
        dep = client.submit(inc, f, key="after-long")
        cluster.run(1.0)
        assert f.status == "pending"
        client.cancel(f)
        assert f.cancelled() and f.done() and f.status == "cancelled"
        assert cluster.now == 1.0  # cancel does not block
        with pytest.raises(CancelledError):
            f.result()
        # a dependent of a cancelled future is cancelled too (dask)
        with pytest.raises(CancelledError):
            dep.result(timeout=10)
        assert cluster.now < 20
        cluster.run(cluster.now + 1)
        # the scheduler forgot both
        assert "long" not in cluster.scheduler.tasks and "after-long" not in cluster.scheduler.tasks
        # like a dask worker thread, the running call is not interrupted: the next
        # task gets the single thread when it ends; its result is thrown away
        g = client.submit(inc, 5, key="next")
        assert g.result() == 6
        [long_rec] = task_records(cluster, key="long")
        [next_rec] = task_records(cluster, key="next")
        assert next_rec["start"] == approx(long_rec["stop"])
        assert task_records(cluster, key="after-long") == []
        assert not any("long" in host.store for host in cluster._sim.workers.values())
        assert cluster.scheduler.tasks.keys() == {"next"}


def test_future_cancel_method_and_exception_after_cancel():
    with Client(cluster_of(durations=10.0)) as client:
        f = client.submit(slowinc, 1)
        f.cancel()
        assert f.cancelled()
        assert f.exception() is None  # dask: only erred futures have an exception
        assert f.traceback() is None
        with pytest.raises(CancelledError):
            client.gather([f])


def test_cancel_by_one_client_leaves_another_clients_future_unless_forced():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as c1, Client(cluster.scheduler_address, set_as_default=False) as c2:
        a = c1.submit(slowinc, 1, key="shared")
        b = Future("shared", c2)
        b.cancel()
        assert b.cancelled() and a.status == "pending"
        assert a.result() == 2
        d = c1.submit(slowinc, 2, key="shared-forced")
        e = Future("shared-forced", c2)
        c2.cancel([e], force=True)
        with pytest.raises(CancelledError):
            d.result(timeout=5)
        assert d.cancelled()
        # closing c2 while it holds a key c1 also holds leaves c1's future alone
        k = c1.submit(inc, 1000, key="k")
        Future("k", c2)
        wait([k])
        c2.close()
        cluster.run(cluster.now + 1)
        assert k.result() == 1001 and "k" in cluster.scheduler.tasks


def test_submitting_on_a_future_cancelled_meanwhile_gives_cancelled_error():
    cluster = cluster_of(durations={"slowinc": 2.0, "*": 0.1})
    with Client(cluster) as client:
        a = client.submit(slowinc, 1, key="a")
        b = client.submit(inc, a, key="b")
        cluster.run(0.5)
        a.cancel()  # the scheduler cancels b as well; the client hears of it a hop later
        assert b.status == "pending"
        c = client.submit(inc, b, key="c")
        with pytest.raises(CancelledError):
            b.result()
        with pytest.raises(CancelledError):
            c.result()


def test_resubmitting_a_cancelled_key_computes_it_afresh():
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        f = client.submit(slowinc, 3, key="again")
        f.cancel()
        g = client.submit(slowinc, 3, key="again")
        assert f.cancelled() and g.status == "pending"
        assert g.result() == 4
        assert f.cancelled()  # the old future stays cancelled
        # cancelling a finished future drops it too
        h = client.submit(inc, 10)
        assert h.result() == 11
        h.cancel()
        assert h.status == "cancelled"
        with pytest.raises(CancelledError):
            h.result()
        cluster.run(cluster.now + 1)
        assert h.key not in cluster.scheduler.tasks


def test_retry_an_erred_future():
    cluster = cluster_of(durations=0.1)
    FLAKY_CALLS.update(n=0, fail=1)
    with Client(cluster) as client:
        f = client.submit(flaky, 2, key="flaky-retry")
        with pytest.raises(RuntimeError):
            f.result()
        f.retry()
        assert f.result() == 20
        assert [r["ok"] for r in task_records(cluster, key="flaky-retry")] == [False, True]
        FLAKY_CALLS.update(n=0, fail=1)
        g = client.submit(flaky, 3, key="flaky-retry-2")
        h = client.submit(inc, g, key="after-flaky")
        with pytest.raises(RuntimeError):
            h.result()
        client.retry([h])  # retries the erred dependency too
        assert h.result() == 31
        assert [r["ok"] for r in task_records(cluster, key="flaky-retry-2")] == [False, True]


def test_retrying_a_dependency_reruns_its_erred_dependents():
    cluster = cluster_of(durations=0.1)
    FLAKY_CALLS.update(n=0, fail=1)
    with Client(cluster) as client:
        g = client.submit(flaky, 3, key="flaky-dep")
        h = client.submit(inc, g, key="flaky-dependent")
        with pytest.raises(RuntimeError):
            h.result()
        g.retry()
        assert g.result() == 30
        assert h.result(timeout=5) == 31


# --------------------------------------------------------------------------
# futures as arguments
# --------------------------------------------------------------------------


def test_futures_nested_in_args_and_kwargs():
    with Client(cluster_of(n=2)) as client:
        a, b, c, d = client.map(inc, range(4))
        f = client.submit(total, [[a, b], (c,)], extra={"d": d, "k": 100})
        assert f.result() == 1 + 2 + 3 + 4 + 100
        g = client.submit(combine, a, y={"inner": [b]}, z=(c, d))
        assert g.result() == (1, {"inner": [2]}, (3, 4))


def test_dependency_moves_between_workers():
    cluster = cluster_of(n=2, durations=0.1)
    with Client(cluster) as client:
        a = client.submit(inc, 1, workers=["worker-0"], key="on0")
        b = client.submit(inc, a, workers=["worker-1"], key="on1")
        assert b.result() == 3
        [t] = cluster.records("transfer")
        assert (t["source"], t["destination"], t["keys"]) == ("worker-0", "worker-1", ("on0",))


# --------------------------------------------------------------------------
# Future API
# --------------------------------------------------------------------------


def test_future_api_on_success():
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        f = client.submit(inc, 1, key="api-ok")
        assert f.key == "api-ok"
        assert f.status == "pending" and not f.done() and not f.cancelled()
        assert repr(f) == "<Future: pending, key: api-ok>"
        seen = []
        f.add_done_callback(lambda fut: seen.append((fut.key, fut.status, cluster.now)))
        assert f.result() == 2
        assert seen == [("api-ok", "finished", approx(1 + hops(4)))]
        assert f.done() and f.status == "finished" and not f.cancelled()
        assert f.exception() is None and f.traceback() is None
        assert f.type == "int"
        assert repr(f) == "<Future: finished, type: int, key: api-ok>"
        late = []
        f.add_done_callback(late.append)  # already done: called at once
        assert late == [f]
        with pytest.raises(TypeError):
            f.add_done_callback(3)


def test_future_result_timeout_is_virtual():
    cluster = cluster_of(durations=10.0)
    with Client(cluster) as client:
        f = client.submit(inc, 1)
        with pytest.raises(TwofoldTimeoutError):
            f.result(timeout=2.5)
        assert cluster.now == pytest.approx(2.5)
        with pytest.raises(TimeoutError):  # also a builtin TimeoutError
            f.result(timeout=1)
        assert cluster.now == pytest.approx(3.5)
        assert f.result() == 2


def test_remote_exception_type_message_and_traceback():
    with Client(cluster_of(durations=0.1)) as client:
        f = client.submit(raise_custom, "custom message")
        with pytest.raises(CustomError, match="custom message") as info:
            f.result()
        tb_text = "".join(traceback.format_tb(info.value.__traceback__))
        assert "raise_custom" in tb_text
        exc = f.exception()
        assert type(exc) is CustomError and str(exc) == "custom message"
        tb = f.traceback()
        assert tb is not None
        assert "raise_custom" in "".join(traceback.format_tb(tb))
        assert f.status == "error" and f.done()
        assert repr(f) == f"<Future: error, key: {f.key}>"
        # dependents err with the same exception
        g = client.submit(inc, f)
        with pytest.raises(CustomError, match="custom message"):
            g.result()
        assert type(g.exception()) is CustomError
        z = client.submit(div, 1, 0)
        with pytest.raises(ZeroDivisionError, match="division by zero") as info:
            z.result()
        assert "div" in "".join(traceback.format_tb(info.value.__traceback__))


def test_done_callback_on_error_and_cancel():
    with Client(cluster_of(durations=1.0)) as client:
        seen = []
        e = client.submit(div, 1, 0)
        e.add_done_callback(lambda f: seen.append(("e", f.status)))
        c = client.submit(slowinc, 1)
        c.add_done_callback(lambda f: seen.append(("c", f.status)))
        c.cancel()
        wait([e])
        assert seen == [("c", "cancelled"), ("e", "error")]


def test_future_from_key_on_a_second_client():
    cluster = cluster_of(n=2, durations=0.1)
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="shared")
        a.result()
        c2 = Client(client.scheduler.address, set_as_default=False)
        assert c2.scheduler.address == cluster.scheduler_address
        assert c2.id != client.id
        f = Future("shared", c2)
        assert f.result() == 2
        assert c2.submit(add, f, 1).result() == 3
        assert len(task_records(cluster, key="shared")) == 1
        # the futures of different clients cannot be mixed
        with pytest.raises(ValueError):
            client.submit(inc, f)
        c2.close()
        assert c2.status == "closed"
        assert a.result() == 2  # client 1's reference is untouched


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------


def _durations_by_key(table, default=0.0):
    def duration(info: TaskInfo) -> float:
        return table.get(info.key, default)

    return duration


def test_wait_all_and_first_completed():
    cluster = cluster_of(n=3, durations=_durations_by_key({"w1": 1.0, "w2": 2.0, "w3": 3.0}))
    with Client(cluster) as client:
        fs = [client.submit(inc, i, key=f"w{i}") for i in (1, 2, 3)]
        done, not_done = wait(fs, return_when=FIRST_COMPLETED)
        assert {f.key for f in done} == {"w1"} and {f.key for f in not_done} == {"w2", "w3"}
        assert cluster.now == approx(1 + hops(4))
        res = wait(fs, return_when=ALL_COMPLETED)
        assert res.done == set(fs) and res.not_done == set()
        assert cluster.now == approx(3 + hops(4))
        # already done: returns at once
        wait(fs, return_when="FIRST_COMPLETED")
        assert cluster.now == approx(3 + hops(4))
        assert wait(fs[0]).done == {fs[0]}


def test_wait_timeout_advances_virtual_time_exactly():
    cluster = cluster_of(durations=10.0)
    with Client(cluster) as client:
        fs = client.map(inc, range(2))
        t0 = cluster.now
        with pytest.raises(TwofoldTimeoutError):
            wait(fs, timeout=1.5)
        assert cluster.now == pytest.approx(t0 + 1.5, abs=1e-12)
        t1 = cluster.now
        with pytest.raises(TwofoldTimeoutError):
            wait(fs, timeout=0.25, return_when=FIRST_COMPLETED)
        assert cluster.now == pytest.approx(t1 + 0.25, abs=1e-12)
        done, _ = wait(fs, timeout=100)
        assert done == set(fs)
        assert cluster.now == approx(20 + hops(4))


def test_wait_counts_errors_and_cancellations_as_done():
    with Client(cluster_of(durations=0.1)) as client:
        e = client.submit(div, 1, 0)
        c = client.submit(slowinc, 1, pure=False)
        c.cancel()
        done, not_done = wait([e, c])
        assert done == {e, c} and not not_done


# --------------------------------------------------------------------------
# as_completed
# --------------------------------------------------------------------------


def test_as_completed_yields_in_completion_order():
    table = {"a": 3.0, "b": 1.0, "c": 2.0}
    cluster = cluster_of(n=3, durations=_durations_by_key(table))
    with Client(cluster) as client:
        fs = client.map(inc, [1, 2, 3], key=["a", "b", "c"])
        seq = as_completed(fs)
        assert seq.count() == 3 and not seq.is_empty()
        keys = []
        times = []
        for f in seq:
            keys.append(f.key)
            times.append(cluster.now)
        assert keys == ["b", "c", "a"]
        assert times == [approx(1 + hops(4)), approx(2 + hops(4)), approx(3 + hops(4))]
        assert seq.is_empty() and seq.count() == 0


def test_as_completed_with_results_and_errors():
    cluster = cluster_of(n=2, durations=_durations_by_key({"good": 1.0, "bad": 2.0}))
    with Client(cluster) as client:
        good = client.submit(inc, 1, key="good")
        bad = client.submit(div, 1, 0, key="bad")
        out = list(as_completed([good, bad], with_results=True, raise_errors=False))
        assert out[0] == (good, 2)
        assert out[1][0] is bad and isinstance(out[1][1], ZeroDivisionError)
        seq = as_completed([good, bad], with_results=True)
        items = []
        with pytest.raises(ZeroDivisionError):
            for item in seq:
                items.append(item)
        assert items == [(good, 2)]


def test_as_completed_add_update_and_batches():
    table = {f"t{i}": float(i) for i in range(1, 7)}
    cluster = cluster_of(n=6, durations=_durations_by_key(table))
    with Client(cluster) as client:
        seq = as_completed()
        assert seq.is_empty() and len(seq) == 0
        f1 = client.submit(inc, 1, key="t1")
        seq.add(f1)
        seq.update([client.submit(inc, 3, key="t3")])
        assert seq.count() == 2
        got = []
        for f in seq:
            got.append(f.key)
            if f.key == "t1":
                seq.add(client.submit(inc, 2, key="t2"))  # added while iterating: t = 1 + 2
        assert got == ["t1", "t3", "t2"]
        # batches: everything done since the last batch
        fs = client.map(inc, [4, 5, 6], key=["t4", "t5", "t6"])
        wait(fs[:2])  # t4 and t5 done
        batches = [sorted(f.key for f in b) for b in as_completed(fs).batches()]
        assert batches == [["t4", "t5"], ["t6"]]
        rb = list(as_completed(fs, with_results=True).batches())
        assert [sorted(v for _, v in b) for b in rb] == [[5, 6, 7]]
        with pytest.raises(TypeError):
            seq.add("not a future")


def test_as_completed_with_a_cancelled_future():
    with Client(cluster_of(durations=1.0)) as client:
        f = client.submit(slowinc, 99)
        f.cancel()
        [(g, exc)] = list(as_completed([f], with_results=True, raise_errors=False))
        assert g is f and isinstance(exc, CancelledError)
        with pytest.raises(CancelledError):
            list(as_completed([f], with_results=True))
        assert list(as_completed([f])) == [f]


def test_as_completed_same_future_twice_is_yielded_twice():
    with Client(cluster_of()) as client:
        f = client.submit(inc, 1)
        seq = as_completed([f, f])
        assert seq.count() == 2
        assert list(seq) == [f, f]


# --------------------------------------------------------------------------
# fire_and_forget, references, close
# --------------------------------------------------------------------------


def test_fire_and_forget_runs_after_the_future_is_dropped():
    SIDE_EFFECTS.clear()
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        blocker = client.submit(slowinc, 0)  # keeps the only thread busy until t ~ 1
        f = client.submit(side_effect, "fired", pure=False)
        key = f.key
        fire_and_forget(f)
        del f
        gc.collect()
        blocker.result()  # the release of f rides with this call's messages
        cluster.run(cluster.now + 5)
        assert SIDE_EFFECTS == ["fired"]
        assert len(task_records(cluster, key=key)) == 1
        assert key not in cluster.scheduler.tasks  # nobody wants the result: forgotten
        fire_and_forget([client.submit(side_effect, "nested", pure=False)])
        cluster.run(cluster.now + 5)
        assert SIDE_EFFECTS == ["fired", "nested"]


def test_dropped_future_without_fire_and_forget_is_not_run():
    SIDE_EFFECTS.clear()
    cluster = cluster_of(durations=1.0)
    with Client(cluster) as client:
        blocker = client.submit(slowinc, 0)
        f = client.submit(side_effect, "dropped", pure=False)
        key = f.key
        del f
        gc.collect()
        blocker.result()
        cluster.run(cluster.now + 5)
        assert SIDE_EFFECTS == []
        assert key not in cluster.scheduler.tasks


def test_garbage_collected_futures_release_their_keys():
    cluster = cluster_of(n=2, durations=0.1)
    with Client(cluster) as client:
        fs = client.map(inc, range(10))
        s = client.scatter([1, 2, 3])
        total_f = client.submit(sum, fs)
        assert total_f.result() == 55
        assert len(cluster.scheduler.tasks) == 14
        del fs, s, total_f
        gc.collect()
        probe = client.submit(inc, 0, key="probe")  # the batched releases ride with this
        assert probe.result() == 1
        cluster.run(cluster.now + 1)
        assert set(cluster.scheduler.tasks) == {"probe"}
        assert [set(host.store) for host in cluster._sim.workers.values() if host.store] == [{"probe"}]
        del probe
        gc.collect()
        client.submit(inc, 1).result()
        assert "probe" not in cluster.scheduler.tasks


def test_dropped_futures_are_released_without_another_client_call():
    """dask sends release-keys from Future.__del__ (batched): no further client call needed."""
    cluster = cluster_of(n=1, durations=0.1)
    with Client(cluster) as client:
        f = client.submit(inc, 1)
        f.result()
        del f
        gc.collect()
        cluster.run(cluster.now + 5)
        assert cluster.scheduler.tasks == {}


def test_client_context_manager_and_close():
    cluster = cluster_of(durations=10.0)
    with Client(cluster) as client:
        assert client.status == "running"
        done = client.submit(inc, 1)
        done.result()
        pending = client.submit(slowinc, 1)
        assert "Client" in repr(client) and client.id in repr(client)
    assert client.status == "closed"
    assert pending.cancelled()
    with pytest.raises(CancelledError):
        pending.result()
    with pytest.raises(RuntimeError):
        client.submit(inc, 2)
    client.close()  # twice is harmless
    cluster.run(cluster.now + 1)
    assert cluster.scheduler.tasks == {}
    # a new client on the same cluster works
    with Client(cluster) as again:
        assert again.submit(inc, 5).result() == 6


def test_get_client_outside_a_task_is_the_default_client():
    cluster = cluster_of()
    with Client(cluster) as client:
        assert get_client() is client
        assert Client.current() is client
        assert get_client(cluster.scheduler_address) is client
        assert client.cluster is cluster


def test_connecting_to_an_unknown_address_fails_clearly():
    with pytest.raises(ValueError, match="no simulated cluster"):
        Client("sim://no-such-cluster", set_as_default=False)
    import socket

    from twofold.errors import CommClosedError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CommClosedError, match="cannot connect"):
        Client(f"tcp://127.0.0.1:{port}", set_as_default=False)


# --------------------------------------------------------------------------
# scheduler_info, nthreads, wait_for_workers: in virtual time
# --------------------------------------------------------------------------


def test_scheduler_info_last_seen_is_the_schedulers_virtual_clock():
    # heartbeats leave each worker every virtual second and take one hop
    cluster = cluster_of(n=2, memory_limit=2**30, resources={"GPU": 1}, name="info-clock")
    with Client(cluster) as client:
        cluster.run(2.5)
        info = client.scheduler_info()
        assert cluster.now == approx(2.5 + hops(2))  # one round trip
        worker = {"nthreads": 1, "memory_limit": 2**30, "resources": {"GPU": 1}, "active": 0, "stored": 0,
                  "nbytes": 0, "last_seen": approx(2 + hops(1))}
        assert info == {"type": "Scheduler", "id": "Scheduler-sim://info-clock", "address": "sim://info-clock",
                        "workers": {w: {"name": w, **worker} for w in ("worker-0", "worker-1")}}


def test_scheduler_info_follows_tasks_and_data():
    cluster = cluster_of(n=2, durations=1.0)
    with Client(cluster) as client:
        a = client.submit(inc, 1, key="a", workers=["worker-0"])
        b = client.submit(inc, 2, key="b", workers=["worker-1"])
        info = client.scheduler_info()["workers"]  # the graph arrived first: both are processing
        assert [(w["active"], w["stored"]) for w in info.values()] == [(1, 0), (1, 0)]
        wait([a, b])
        info = client.scheduler_info()["workers"]
        assert [(w["active"], w["stored"]) for w in info.values()] == [(0, 1), (0, 1)]
        assert all(w["nbytes"] > 0 for w in info.values())
        del a
        gc.collect()
        client._flush()  # the release goes out now
        info = client.scheduler_info()["workers"]
        assert (info["worker-0"]["stored"], info["worker-0"]["nbytes"]) == (0, 0)
        assert info["worker-1"]["stored"] == 1


def test_wait_for_workers_ends_when_a_restarted_worker_joins():
    cluster = cluster_of(n=2, restart_delay=0.5)
    cluster.crash("worker-1", at=1.0)
    cluster.restart("worker-1", at=5.0)  # already down at 5: it only comes back, 0.5 s later
    with Client(cluster) as client:
        cluster.run(2.0)
        assert client.nthreads() == {"worker-0": 1}
        with pytest.raises(TwofoldTimeoutError, match="fewer than 2 worker"):
            client.wait_for_workers(2, timeout=1.0)
        assert cluster.now == approx(3.0 + hops(2))
        client.wait_for_workers(2, timeout=10)
        # no polling: the scheduler answers as the AddWorker arrives (one hop), the answer takes one more
        assert cluster.now == approx(5.5 + hops(2))
        assert client.nthreads() == {"worker-0": 1, "worker-1": 1}


def test_wait_for_workers_timeout_is_virtual_and_exact():
    cluster = cluster_of(n=1)
    with Client(cluster) as client:
        t0 = cluster.now
        with pytest.raises(TwofoldTimeoutError, match=r"sim://.* fewer than 2 worker\(s\) after 3 s"):
            client.wait_for_workers(2, timeout=3.0)
        assert cluster.now == pytest.approx(t0 + 3.0, abs=1e-12)
        assert client.submit(inc, 1).result() == 2


def test_waiting_forever_for_a_worker_that_never_comes_is_a_stall():
    cluster = cluster_of(n=1)
    with Client(cluster) as client:
        with pytest.raises(SimulationStalled, match="no more progress"):
            client.wait_for_workers(2)


# --------------------------------------------------------------------------
# tasks that submit tasks
# --------------------------------------------------------------------------


def test_get_client_in_a_task_with_secede_and_rejoin():
    # one worker, one thread: without secede the children could never run
    cluster = cluster_of(n=1, threads=1, durations=0.5)
    with Client(cluster) as client:
        f = client.submit(spawner, 4, key="parent")
        assert f.result() == 1 + 2 + 3 + 4
        recs = task_records(cluster)
        children = [r for r in recs if r["key"].startswith("child-")]
        assert len(children) == 4
        [parent] = task_records(cluster, key="parent")
        # children: sent by the worker's client (2 hops after the parent starts), 4 x 0.5 s;
        # their completions reach the worker's client (2 hops) with their results inline, the
        # parent rejoins at once and is charged its own 0.5 s when it returns
        assert parent["start"] == approx(hops(2))
        assert min(r["start"] for r in children) == approx(hops(4))
        assert parent["stop"] == approx(hops(4) + 2.0 + hops(2) + 0.5)
        assert cluster.now == approx(parent["stop"] + hops(2))
        # the children ran one after the other on the single thread while the parent was seceded
        assert all(parent["start"] <= r["start"] and r["stop"] <= parent["stop"] for r in children)
        ordered = sorted(children, key=lambda r: r["start"])
        for x, y in zip(ordered, ordered[1:]):
            assert y["start"] >= x["stop"] - 1e-12


def nested_spawner(depth):
    if depth == 0:
        return 1
    c = get_client()
    fut = c.submit(nested_spawner, depth - 1, key=f"depth-{depth - 1}")
    secede()
    r = fut.result()
    rejoin()
    return r + 1


def test_tasks_submitting_tasks_recursively():
    with Client(cluster_of(n=1, threads=1, durations=0.1)) as client:
        assert client.submit(nested_spawner, 3, key="depth-3").result() == 4


# --------------------------------------------------------------------------
# duration and size models, network links
# --------------------------------------------------------------------------


def test_durations_constant():
    cluster = cluster_of(durations=0.25)
    with Client(cluster) as client:
        wait(client.map(inc, range(3)))
        assert [r["stop"] - r["start"] for r in task_records(cluster)] == [approx(0.25)] * 3


def test_durations_mapping_by_function_name_with_fallback():
    cluster = cluster_of(durations={"inc": 2.0, "add": 0.5, "*": 0.125, "combine": lambda info: 0.75,
                                    "slowinc": Uniform(3.0, 4.0)})
    with Client(cluster) as client:
        a = client.submit(inc, 1)
        b = client.submit(add, 1, 2)
        c = client.submit(ident, 3)
        e = client.submit(combine, 3)
        g = client.submit(slowinc, 3)
        wait([a, b, c, e, g])
        d = {r["key"]: r["stop"] - r["start"] for r in task_records(cluster)}
        assert d[a.key] == approx(2.0) and d[b.key] == approx(0.5) and d[c.key] == approx(0.125)
        assert d[e.key] == approx(0.75)
        assert 3.0 <= d[g.key] <= 4.0


def test_durations_mapping_by_key_prefix():
    cluster = cluster_of(durations={"load": 3.0})
    with Client(cluster) as client:
        fs = client.map(inc, range(2), key="load")
        g = client.submit(ident, 1)
        wait(fs + [g])
        d = {r["key"]: r["stop"] - r["start"] for r in task_records(cluster)}
        assert [d[f.key] for f in fs] == [approx(3.0)] * 2
        assert d[g.key] == approx(0.001)  # the default duration


def test_durations_callable():
    def model(info: TaskInfo) -> float:
        assert info.worker == "worker-0" and info.function in ("inc", "add")
        return 1.0 if info.function == "inc" else 0.5

    cluster = cluster_of(durations=model)
    with Client(cluster) as client:
        a = client.submit(inc, 1)
        b = client.submit(add, a, 1)
        assert b.result() == 3
        assert cluster.now == approx(1.5 + hops(6))


@pytest.mark.parametrize("dist", [Uniform(0.5, 1.5), Exponential(1.0)])
def test_durations_distributions_are_seeded(dist):
    def run(seed):
        cluster = cluster_of(n=2, durations=dist, seed=seed)
        with Client(cluster) as client:
            wait(client.map(inc, range(20)))
        return sorted(round(r["stop"] - r["start"], 12) for r in task_records(cluster))

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    assert len(set(first)) == 20
    if isinstance(dist, Uniform):
        assert all(0.5 <= d <= 1.5 for d in first + other)
    else:
        assert all(d >= 0 for d in first)


def test_sizes_model_makes_transfers_take_size_over_bandwidth():
    nbytes = 1_000_000
    bandwidth = 1e6  # 1 MB/s: a 1 MB result takes one second to move
    cluster = cluster_of(n=2, durations=0.1, sizes={"produce": nbytes}, bandwidth=bandwidth)

    def produce():
        return "tiny"

    with Client(cluster) as client:
        a = client.submit(produce, workers=["worker-0"], key="produce-1")
        b = client.submit(len, a, workers=["worker-1"], key="consume")
        assert b.result() == 4
        [t] = cluster.records("transfer")
        assert t["nbytes"] == nbytes and t["keys"] == ("produce-1",)
        # request (200 B) one way, data (200 B + 1 MB) back
        expected = 2 * L + (200 + 200 + nbytes) / bandwidth
        assert t["stop"] - t["start"] == pytest.approx(expected, abs=1e-9)
        assert client.who_has(a)[a.key] and a._state.nbytes == nbytes


def test_result_size_defaults_to_pickled_length():
    cluster = cluster_of(n=2, durations=0.1, bandwidth=1e4)
    with Client(cluster) as client:
        a = client.submit(lambda: b"x" * 10_000, workers=["worker-0"], key="blob")
        b = client.submit(len, a, workers=["worker-1"], key="blob-len")
        assert b.result() == 10_000
        [t] = cluster.records("transfer")
        assert 10_000 < t["nbytes"] < 10_100
        assert t["stop"] - t["start"] == pytest.approx(2 * L + (400 + t["nbytes"]) / 1e4, abs=1e-9)


def test_network_links_override_latency():
    links = {("worker-0", "worker-1"): (0.5, 1e9)}
    cluster = cluster_of(n=2, durations=0.1, links=links)
    with Client(cluster) as client:
        a = client.submit(inc, 1, workers=["worker-0"], key="src")
        b = client.submit(inc, a, workers=["worker-1"], key="dst")
        assert b.result() == 3
        [t] = cluster.records("transfer")
        assert t["stop"] - t["start"] == approx(1.0)  # 0.5 s each way
        [src] = task_records(cluster, key="src")
        [dst] = task_records(cluster, key="dst")
        # src finished -> worker->scheduler, scheduler->worker-1 (2 hops) ... then fetch
        assert dst["start"] == approx(t["stop"])
        assert t["start"] >= src["stop"]


def test_network_links_override_bandwidth_of_a_worker_pair():
    cluster = cluster_of(n=2, durations=0.1, sizes={"produce": 1_000_000},
                         links={("worker-0", "worker-1"): (0.002, 1e6)})

    def produce():
        return 1

    with Client(cluster) as client:
        a = client.submit(produce, workers=["worker-0"], key="produce-1")
        b = client.submit(inc, a, workers=["worker-1"], key="consumer")
        assert b.result() == 2
        [t] = cluster.records("transfer")
        assert t["stop"] - t["start"] == pytest.approx(2 * 0.002 + (400 + 1_000_000) / 1e6, abs=1e-9)


def test_network_links_override_client_and_scheduler_hops():
    cluster = cluster_of(durations=1.0, name="links-hops",
                         links={("client-0", "sim://links-hops"): (0.1, 1e9),
                                ("worker-0", "sim://links-hops"): (0.01, 1e9)})
    with Client(cluster) as client:
        assert client.id == "client-0"
        f = client.submit(inc, 1)
        wait(f)
        # client->scheduler 0.1, scheduler->worker 0.01, 1 s, and back the same way
        assert cluster.now == approx(0.1 + 0.01 + 1 + 0.01 + 0.1)
        assert f.result() == 2
        # the small result rode back with the completion: no who_has, no fetch
        assert cluster.now == approx(1.22)
