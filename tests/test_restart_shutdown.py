"""``Client.restart`` and ``Client.shutdown`` on the simulator, a threads and a processes
LocalCluster, and a cluster of CLI processes.

Every test makes its own cluster: both calls are destructive.  On the
simulator the outcomes are exact in virtual time: a restart closes every
worker (one latency after the request), each comes back empty
``restart_delay`` later, and the call returns once they have joined again.
"""

from __future__ import annotations

import os
import time

import pytest

from runtime_support import TIMEOUT, Proc, getpid, inc, wait_for, wait_for_file, worker_names
from twofold import Client, LocalCluster
from twofold.errors import CancelledError, CommClosedError
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.messages import AddWorker
from twofold.messages_coordination import CoordinationReply
from twofold.messages_ops import RestartRequest
from twofold.scheduler import SchedulerState
from twofold.sim import SimCluster

LATENCY = 0.001


def slow(x):
    return x


def sim_cluster(**kw) -> SimCluster:
    kw.setdefault("n_workers", 2)
    kw.setdefault("durations", {"slow": 10.0})
    return SimCluster(seed=kw.pop("seed", 3), latency=LATENCY, validate=True, **kw)


def faults(c: SimCluster) -> list[tuple[float, str, str]]:
    return [(round(r["time"], 6), r["what"], r["target"]) for r in c.records("fault")]


# -- the simulator -------------------------------------------------------------


def _restart_while_running(seed: int = 3) -> tuple[str, float, list]:
    with sim_cluster(seed=seed) as c, Client(c, set_as_default=False) as client:
        other = Client(c, set_as_default=False)
        theirs = other.submit(inc, 1)
        assert theirs.result() == 2
        fs = client.map(slow, range(4))
        c.run(1.0)
        state = c.scheduler
        assert sum(len(ws.processing) for ws in state.workers.values()) == 4  # running, 10 s each
        client.restart()
        back = c.now
        # closed one latency after the request, back restart_delay later (+ one latency to join, one to answer)
        closes = [f for f in faults(c) if f[1] == "worker-closed"]
        starts = [f for f in faults(c) if f[1] == "worker-start"][2:]
        assert [t for t, _, _ in closes] == [pytest.approx(1.0 + 2 * LATENCY, abs=1e-5)] * 2
        assert [t for t, _, _ in starts] == [pytest.approx(1.0 + 2 * LATENCY + 0.5, abs=1e-5)] * 2
        assert back == pytest.approx(1.0 + 4 * LATENCY + 0.5, abs=1e-5)
        assert sorted(state.workers) == ["worker-0", "worker-1"]
        assert all(not ws.has_what and not ws.processing for ws in state.workers.values())
        assert not state.tasks  # everything released and forgotten
        assert [f.status for f in fs] == ["cancelled"] * 4
        assert theirs.status == "cancelled"  # every client's futures
        with pytest.raises(CancelledError, match="scheduler-restart"):
            fs[0].result()
        with pytest.raises(CancelledError, match="scheduler-restart"):
            theirs.result()
        assert not any(r.get("ok") is False for r in c.records("task"))  # nothing failed, no KilledWorker
        # new work runs on the fresh workers
        assert client.submit(inc, 10).result() == 11
        assert other.submit(inc, 20).result() == 21
        assert client.gather(client.map(slow, range(2))) == [0, 1]
        other.close()
        return c.digest(), back, faults(c)


def test_sim_restart_while_tasks_run():
    first = _restart_while_running()
    assert _restart_while_running() == first  # same seed, same run


def test_sim_restart_is_not_a_failure():
    # more restarts than allowed_failures (3) with a task running: never KilledWorker
    with sim_cluster(n_workers=1) as c, Client(c, set_as_default=False) as client:
        for i in range(5):
            f = client.submit(slow, i, pure=False)
            c.run(c.now + 1.0)
            client.restart()
            assert f.status == "cancelled"
        assert client.submit(inc, 1).result() == 2
        assert not any(r.get("ok") is False for r in c.records("task"))


def test_sim_restart_without_waiting_and_timeout():
    with sim_cluster(restart_delay=5.0) as c, Client(c, set_as_default=False) as client:
        client.restart(wait_for_workers=False)
        assert c.now == pytest.approx(2 * LATENCY, abs=1e-5)
        assert not c.scheduler.workers
        f = client.submit(inc, 1)  # waits for the workers to come back
        assert f.result() == 2
        assert [t for t, what, _ in faults(c) if what == "worker-start"][2:] == [pytest.approx(2 * LATENCY + 5.0)] * 2
        assert c.now > 5.0 + 2 * LATENCY
        t0 = c.now
        with pytest.raises(TwofoldTimeoutError, match="0 of 2 workers came back within 1.0 s"):
            client.restart(timeout=1.0)
        assert c.now == pytest.approx(t0 + 1.0 + 2 * LATENCY, abs=1e-5)
        c.run(c.now + 5.0)
        assert len(c.scheduler.workers) == 2  # they came back anyway
        client.restart(timeout=10)
        assert client.submit(inc, 2).result() == 3


def test_restart_machine_refuses_a_second_restart():
    state = SchedulerState()
    state.handle(AddWorker(0.0, "w", "tcp://w:1", 1, None, None, "w"))
    outs = state.handle(RestartRequest(1.0, "r1", "a", "r1", "restart", None, True))
    assert not [o for o in outs if isinstance(o, CoordinationReply)]  # waits for the worker
    outs = state.handle(RestartRequest(1.5, "r2", "b", "r2", "restart", None, True))
    [reply] = [o for o in outs if isinstance(o, CoordinationReply)]
    assert not reply.ok and reply.error_type == "RuntimeError" and "still waiting" in reply.error
    outs = state.handle(AddWorker(2.0, "w2", "tcp://w:2", 1, None, None, "w"))
    [reply] = [o for o in outs if isinstance(o, CoordinationReply)]
    assert reply.ok and reply.client == "a"
    state.validate()


def test_sim_shutdown():
    c = sim_cluster()
    client = Client(c, set_as_default=False)
    other = Client(c, set_as_default=False)
    f = other.submit(slow, 1)
    client.shutdown()
    assert client.status == "closed"
    with pytest.raises(Exception):
        f.result()
    with pytest.raises(RuntimeError):
        Client(c, set_as_default=False)
    other.close()


# -- LocalCluster ----------------------------------------------------------------


@pytest.fixture(params=["threads", "processes"])
def local(request):
    processes = request.param == "processes"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, timeout=TIMEOUT) as cluster:
        yield cluster


def test_local_restart(local, tmp_path):
    with Client(local, set_as_default=False, timeout=TIMEOUT) as client, \
         Client(local, set_as_default=False, timeout=TIMEOUT) as other:  # fmt: skip
        before = set(local.workers)
        pids = set(client.run(getpid).values())
        gate = str(tmp_path / "gate")  # never opened: the tasks run until the restart
        done = other.submit(inc, 1)
        assert done.result() == 2
        running = client.map(wait_for_file, [gate] * 2, list(range(2)), [5.0] * 2, pure=False)
        wait_for(lambda: sum(len(v) for v in client.processing().values()) == 2, what="both tasks to run")
        start = time.monotonic()
        client.restart(timeout=TIMEOUT)
        assert time.monotonic() - start < TIMEOUT
        assert len(local.workers) == 2
        assert set(local.workers) != before
        assert sorted(worker_names(local).values()) == ["local-0", "local-1"]
        if local.processes:
            assert not set(client.run(getpid).values()) & pids  # new processes
        assert [f.status for f in running] == ["cancelled"] * 2
        with pytest.raises(CancelledError, match="scheduler-restart"):
            done.result()
        assert client.submit(inc, 5).result() == 6
        assert other.submit(inc, 6).result() == 7
        assert all(not keys for keys in client.has_what().values()) or client.has_what()  # only the new results


def test_local_shutdown(local, tmp_path):
    client = Client(local, set_as_default=False, timeout=TIMEOUT)
    other = Client(local, set_as_default=False, timeout=TIMEOUT)
    f = other.submit(wait_for_file, str(tmp_path / "never"), 0, 5.0, pure=False)
    client.shutdown()
    assert client.status == "closed" and local.status == "closed"
    with pytest.raises((CommClosedError, CancelledError)):
        f.result(timeout=TIMEOUT)
    other.close()


def test_remote_shutdown_stops_the_cli_processes(tmp_path):
    sched = Proc(["scheduler", "--port", "0", "--scheduler-file", str(tmp_path / "s.json")], tmp_path / "s.log")
    try:
        from twofold.runtime.cli import read_scheduler_file

        address = read_scheduler_file(str(tmp_path / "s.json"), timeout=TIMEOUT)
        worker = Proc(["worker", address, "--nworkers", "2", "--nthreads", "1"], tmp_path / "w.log")
        try:
            client = Client(address, set_as_default=False, timeout=TIMEOUT)
            other = Client(address, set_as_default=False, timeout=TIMEOUT)
            client.wait_for_workers(2, timeout=TIMEOUT)
            f = other.submit(wait_for_file, str(tmp_path / "never"), 0, 5.0, pure=False)
            client.shutdown()
            assert client.status == "closed"
            with pytest.raises((CommClosedError, CancelledError)):
                f.result(timeout=TIMEOUT)
            other.close()
            assert sched.wait(TIMEOUT) == 0, sched.log()
            assert worker.wait(TIMEOUT) == 0, worker.log()
        finally:
            worker.kill()
    finally:
        sched.kill()


def test_processes_restart_again_and_again():
    # more quick restarts than a nanny tolerates crashes (MAX_FAST_DEATHS): each is asked for, none is a crash
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, timeout=TIMEOUT) as cluster, \
         Client(cluster, set_as_default=False, timeout=TIMEOUT) as client:  # fmt: skip
        from twofold.runtime.nanny import MAX_FAST_DEATHS

        for i in range(MAX_FAST_DEATHS + 1):
            client.restart(timeout=TIMEOUT)
            assert client.submit(inc, i).result() == i + 1
        assert cluster.nannies[0].restarts == MAX_FAST_DEATHS + 1
