"""The simulated cluster below the Client: virtual time, network, faults, determinism."""

import operator
import os
import subprocess
import sys
import textwrap

import pytest

from twofold.client.spec import Dep
from twofold.errors import SimulationStalled
from twofold.messages import UpdateGraph, TaskSpec, WhoHasRequest
from twofold.sim import SimCluster


def submit(backend, specs, wanted):
    backend.send([UpdateGraph(backend.now(), "s", backend.client_id(), tuple(specs), tuple(wanted))])


def connect(cluster):
    backend = cluster._connect(None)
    inbox = []
    backend.set_receiver(inbox.append)
    return backend, inbox


def test_two_one_second_tasks_on_one_thread_take_two_seconds():
    cluster = SimCluster(n_workers=1, threads_per_worker=1, durations=1.0, latency=0.001, validate=True)
    b, inbox = connect(cluster)
    spec = b.dump_task(operator.add, (1, 2), {})
    submit(b, [TaskSpec("a-1", spec), TaskSpec("a-2", spec)], ["a-1", "a-2"])
    b.wait_until(lambda: len(inbox) == 2)
    tasks = cluster.records("task")
    assert [t["key"] for t in tasks] == ["a-1", "a-2"]
    # AddWorker and UpdateGraph each cross one 1 ms link before the first start
    assert tasks[0]["start"] == pytest.approx(0.002, abs=1e-5)
    assert tasks[1]["stop"] - tasks[0]["start"] == pytest.approx(2.0)
    # client -> scheduler -> worker (2 ms), two tasks back to back (2 s), worker -> scheduler -> client (2 ms)
    assert cluster.now == pytest.approx(2.004, abs=1e-5)


def test_dependencies_flow_and_data_is_fetched_from_workers():
    cluster = SimCluster(n_workers=2, threads_per_worker=1, durations=0.5, validate=True)
    b, inbox = connect(cluster)
    add = b.dump_task(operator.add, (1, 2), {})
    mul = b.dump_task(operator.mul, (Dep("add-1"), 10), {})
    submit(b, [TaskSpec("add-1", add), TaskSpec("mul-1", mul, ("add-1",))], ["mul-1"])
    b.wait_until(lambda: inbox and inbox[-1].op == "KeyInMemory")
    b.send([WhoHasRequest(b.now(), "w", b.client_id(), "r", ("mul-1",))])
    b.wait_until(lambda: inbox[-1].op == "WhoHasReply")
    data, missing = b.fetch(inbox[-1].who_has)
    assert data == {"mul-1": 30} and missing == {}


def test_user_exception_keeps_its_traceback():
    def boom(x):
        raise ValueError(f"bad {x}")

    cluster = SimCluster(n_workers=1, validate=True)
    b, inbox = connect(cluster)
    submit(b, [TaskSpec("boom-1", b.dump_task(boom, (7,), {}))], ["boom-1"])
    b.wait_until(lambda: bool(inbox))
    [msg] = inbox
    exc = b.load_error(msg.error)
    assert type(exc) is ValueError and str(exc) == "bad 7"
    assert exc.__traceback__ is not None
    assert "boom" in msg.error.traceback_text


def test_waiting_for_the_impossible_is_a_stall_not_a_hang():
    cluster = SimCluster(n_workers=1)
    b, inbox = connect(cluster)
    spec = b.dump_task(operator.add, (1, 2), {})
    submit(b, [TaskSpec("x-1", spec, workers=("nowhere",))], ["x-1"])
    with pytest.raises(SimulationStalled, match="no more progress"):
        b.wait_until(lambda: bool(inbox))


def test_crash_mid_task_reruns_elsewhere():
    cluster = SimCluster(n_workers=2, threads_per_worker=1, durations=1.0, validate=True)
    b, inbox = connect(cluster)
    spec = b.dump_task(operator.add, (1, 2), {})
    submit(b, [TaskSpec("x-1", spec), TaskSpec("x-2", spec)], ["x-1", "x-2"])
    cluster.crash("worker-0", at=0.5)
    b.wait_until(lambda: len(inbox) == 2)
    tasks = cluster.records("task")
    assert all(t["worker"] == "worker-1" for t in tasks)
    assert {m.key for m in inbox} == {"x-1", "x-2"}
    assert [f["what"] for f in cluster.records("fault") if f["what"] != "worker-start"] == ["crash"]


def test_timeout_returns_false_at_the_deadline():
    cluster = SimCluster(n_workers=1, durations=10.0)
    b, inbox = connect(cluster)
    submit(b, [TaskSpec("x-1", b.dump_task(operator.add, (1, 2), {}))], ["x-1"])
    assert b.wait_until(lambda: bool(inbox), timeout=1.0) is False
    assert cluster.now == pytest.approx(1.0)


SCRIPT = textwrap.dedent(
    """
    import operator
    from twofold.client.spec import Dep
    from twofold.messages import UpdateGraph, TaskSpec
    from twofold.sim import SimCluster, Exponential
    c = SimCluster(n_workers=3, threads_per_worker=2, seed=7, durations=Exponential(0.3),
                   chaos={"restart": 0.05, "delay": 0.2, "horizon": 20})
    b = c._connect(None)
    inbox = []
    b.set_receiver(inbox.append)
    specs = [TaskSpec(f"leaf-{i}", b.dump_task(operator.add, (i, {"a", "b", "c"}.__len__()), {})) for i in range(30)]
    specs += [TaskSpec(f"sum-{i}", b.dump_task(operator.add, (Dep(f"leaf-{i}"), Dep(f"leaf-{i+1}")), {}),
                       (f"leaf-{i}", f"leaf-{i+1}")) for i in range(29)]
    b.send([UpdateGraph(0.0, "s", b.client_id(), tuple(specs), tuple(f"sum-{i}" for i in range(29)))])
    b.wait_until(lambda: len(inbox) >= 29)
    print(c.digest())
    """
)


def test_same_seed_same_digest_across_processes_and_hash_seeds():
    digests = set()
    for hashseed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


def test_different_seed_different_digest():
    a = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-c", SCRIPT.replace("seed=7", "seed=8")],
                       capture_output=True, text=True, check=True).stdout
    assert a != b


def test_registry_entries_live_exactly_as_long_as_their_references():
    """Functions, arguments and errors leave the object registry once nothing can look them up."""
    import gc

    from twofold import Client, wait

    def fail(x):
        raise ValueError(x)

    with SimCluster(n_workers=2, seed=0) as cluster, Client(cluster, set_as_default=False) as client:
        # each worker keeps one reference for the None results that ride inline
        none_refs = {bytes(host.none_ref) for host in cluster._sim.workers.values()}

        def user_objects() -> dict:
            return {k: v for k, v in cluster._sim.objects.items() if k not in none_refs}

        fs = client.map(operator.neg, range(10))
        assert client.gather(fs) == [-i for i in range(10)]
        # the specs are still wanted (the scheduler may have to recompute them);
        # the results rode inline to the futures, which hold them
        assert len(user_objects()) == 20
        bad = client.submit(fail, 1)
        wait([bad])
        del fs
        cluster.run(cluster.now + 1)
        gc.collect()
        assert len(user_objects()) == 2  # the failed task's spec, and its exception
        assert isinstance(bad.exception(), ValueError)
        del bad
        cluster.run(cluster.now + 1)
        gc.collect()
        assert not user_objects()


# --------------------------------------------------------------------------
# The collector's thresholds while clusters are open (sim/gcpolicy.py)
# --------------------------------------------------------------------------


@pytest.fixture
def fresh_gc_policy(monkeypatch):
    """No simulation holds the relaxed thresholds; the process's own are put back after."""
    import gc

    from twofold.sim import gcpolicy

    before = gc.get_threshold()
    monkeypatch.setattr(gcpolicy, "_holders", 0)
    monkeypatch.setattr(gcpolicy, "_saved", None)
    gc.set_threshold(700, 10, 10)
    yield gcpolicy
    gc.set_threshold(*before)


def test_an_open_cluster_relaxes_the_collector_and_close_restores_it(fresh_gc_policy):
    import gc

    a = SimCluster(n_workers=1)
    assert gc.get_threshold() == fresh_gc_policy.RUN_GC_THRESHOLDS
    b = SimCluster(n_workers=1)
    a.close()
    assert gc.get_threshold() == fresh_gc_policy.RUN_GC_THRESHOLDS  # b is still open
    b.close()
    assert gc.get_threshold() == (700, 10, 10)
    b.close()  # closing twice gives back nothing more
    assert fresh_gc_policy._holders == 0


def test_a_cluster_dropped_without_close_gives_the_thresholds_back(fresh_gc_policy):
    import gc

    cluster = SimCluster(n_workers=1)
    assert gc.get_threshold() == fresh_gc_policy.RUN_GC_THRESHOLDS
    del cluster
    gc.collect()
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_set_by_the_user_meanwhile_or_a_collector_off_are_left_alone(fresh_gc_policy):
    import gc

    cluster = SimCluster(n_workers=1)
    gc.set_threshold(1234, 5, 5)  # the user's own choice while the cluster is open
    cluster.close()
    assert gc.get_threshold() == (1234, 5, 5)
    gc.set_threshold(0)
    cluster = SimCluster(n_workers=1)
    assert gc.get_threshold()[0] == 0
    cluster.close()
    assert gc.get_threshold()[0] == 0
