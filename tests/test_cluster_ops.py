"""replicate, rebalance and retire_workers on every backend; exact outcomes on the simulator.

The shared-cluster tests run on a fresh validated SimCluster and on the
module-scoped threads and processes LocalClusters of ``test_client_api.py``
(its fixtures); they leave both workers running.  A test that retires a
worker builds its own cluster (``own_cluster``), so later tests keep theirs.
"""

from __future__ import annotations

import time

import pytest

from twofold import Client, wait
from twofold.errors import CancelledError
from twofold.runtime import LocalCluster
from twofold.sim import SimCluster

from test_client_api import TIMEOUT, backend, backend_cluster, cluster, eventually, is_sim  # noqa: F401


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def own_cluster(backend):
    """Three workers of the test's own (a retired worker must not be a shared cluster's)."""
    if backend == "sim":
        c = SimCluster(n_workers=3, threads_per_worker=1, seed=0, validate=True)
    else:
        c = LocalCluster(n_workers=3, threads_per_worker=1, processes=(backend == "processes"))
    try:
        yield c
    finally:
        c.close()


def blob(i, size=10_000):
    return bytes([i % 256]) * size


def holders(client, futures):
    return {k: sorted(v) for k, v in client.who_has(futures).items()}


def stored_bytes(client):
    return {a: w["nbytes"] for a, w in client.scheduler_info()["workers"].items()}


# --------------------------------------------------------------------------
# replicate
# --------------------------------------------------------------------------


def test_replicate_returns_once_every_worker_holds_a_copy(client, cluster):
    f = client.submit(blob, 1, key="rep-all")
    client.replicate(f)
    # no waiting: the copies are in place when replicate returns
    assert holders(client, [f]) == {f.key: sorted(cluster.workers)}
    assert client.gather(f) == blob(1)
    client.replicate([f], n=1)
    assert len(holders(client, [f])[f.key]) == 1
    assert client.gather(f) == blob(1)


def test_replicate_n_copies_within_a_pool(client, cluster):
    a, b = sorted(cluster.workers)
    fs = client.scatter([blob(i) for i in range(3)], workers=[a])
    client.replicate(fs, n=2)
    assert all(h == sorted([a, b]) for h in holders(client, fs).values())
    client.replicate(fs, n=1, workers=[b])  # already one copy in that pool: nothing to drop or add
    assert all(h == sorted([a, b]) for h in holders(client, fs).values())
    client.replicate(fs, n=5, workers=[a])  # n beyond the pool: one copy on each of its workers
    assert client.gather(fs) == [blob(i) for i in range(3)]


def test_replicate_refuses_cancelled_futures_unknown_workers_and_bad_n(client, cluster):
    f = client.submit(blob, 2, key="rep-bad")
    wait(f)
    before = holders(client, [f])
    with pytest.raises(ValueError, match="unknown worker"):
        client.replicate(f, workers=["tcp://nowhere:1"])
    with pytest.raises(ValueError, match="n= must be >= 1"):
        client.replicate(f, n=0)
    with pytest.raises(TypeError):
        client.replicate(f, n="two")
    assert holders(client, [f]) == before
    g = client.submit(blob, 3, key="rep-cancelled")
    wait(g)
    g.cancel()
    with pytest.raises(CancelledError):
        client.replicate(g)
    assert holders(client, [f]) == before


# --------------------------------------------------------------------------
# rebalance
# --------------------------------------------------------------------------


def test_rebalance_evens_the_bytes_and_keeps_every_key(client, cluster):
    a, b = sorted(cluster.workers)
    fs = client.scatter([blob(i) for i in range(8)], workers=[a])
    assert all(h == [a] for h in holders(client, fs).values())
    client.rebalance(fs)
    where = holders(client, fs)
    assert all(len(h) == 1 for h in where.values())  # moved, not copied: the sender dropped its copy
    counts = {w: sum(1 for h in where.values() if h == [w]) for w in (a, b)}
    assert counts == {a: 4, b: 4}
    assert client.gather(fs) == [blob(i) for i in range(8)]
    client.rebalance(fs)  # already even: nothing moves
    assert holders(client, fs) == where


def test_rebalance_of_an_unknown_worker_is_a_value_error(client):
    with pytest.raises(ValueError, match="unknown worker"):
        client.rebalance(workers=["tcp://nowhere:1"])


# --------------------------------------------------------------------------
# retire_workers
# --------------------------------------------------------------------------


def test_retire_workers_moves_the_only_copies_then_stops_the_workers(own_cluster, backend):
    c = own_cluster
    with Client(c, set_as_default=False) as client:
        client.wait_for_workers(3, timeout=TIMEOUT)
        w0, w1, w2 = c.workers
        fs = client.scatter([blob(i) for i in range(6)], workers=[w0])
        g = client.submit(blob, 7, workers=[w1], key="retire-g")
        wait(g)
        retired = client.retire_workers([w0, w1])
        assert sorted(retired) == sorted([w0, w1])
        assert retired[w0]["stored"] == 6 and retired[w0]["name"] is not None
        assert set(client.scheduler_info()["workers"]) == {w2}
        assert all(h == [w2] for h in holders(client, fs + [g]).values())
        assert client.gather(fs) == [blob(i) for i in range(6)] and g.result() == blob(7)
        # the retired workers stay down: no nanny restart, no simulated restart
        if is_sim(c):
            c.run(c.now + 30)
            assert c.alive_workers == [w2]
        else:
            eventually(c, lambda: len(c.workers) == 1, what="retired workers' connections closing")
            time.sleep(1.5)
            assert c.workers == [w2]
            if backend == "processes":
                assert all(n.restarts == 0 for n in c.nannies)
        assert client.submit(blob, 9).result(timeout=TIMEOUT) == blob(9)


def test_retiring_every_worker_that_holds_data_is_refused(client, cluster):
    f = client.submit(blob, 4, key="retire-all")
    wait(f)
    with pytest.raises(ValueError, match="no other worker"):
        client.retire_workers(list(cluster.workers))
    assert len(client.scheduler_info()["workers"]) == 2
    assert client.gather(f) == blob(4)
    with pytest.raises(ValueError, match="unknown worker"):
        client.retire_workers(["tcp://nowhere:1"])


def test_retire_without_close_or_remove_only_moves_data(own_cluster):
    c = own_cluster
    with Client(c, set_as_default=False) as client:
        client.wait_for_workers(3, timeout=TIMEOUT)
        w0 = c.workers[0]
        fs = client.scatter([blob(i) for i in range(3)], workers=[w0])
        retired = client.retire_workers([w0], close_workers=False, remove=False)
        assert list(retired) == [w0]
        assert len(client.scheduler_info()["workers"]) == 3
        assert all(w0 in h and len(h) == 2 for h in holders(client, fs).values())


# --------------------------------------------------------------------------
# the simulator: exact, seeded outcomes while another worker crashes
# --------------------------------------------------------------------------


def _replicate_during_a_crash(seed):
    c = SimCluster(n_workers=4, threads_per_worker=1, seed=seed, validate=True)
    try:
        with Client(c, set_as_default=False) as client:
            w0, w1, w2, w3 = c.workers
            fs = client.scatter([blob(i, 200_000) for i in range(4)], workers=[w0])
            c.crash(w3, at=c.now + 0.0005)  # while the copies are in flight
            client.replicate(fs)
            t = c.now
            where = holders(client, fs)
            assert client.gather(fs) == [blob(i, 200_000) for i in range(4)]
            return where, t, c.alive_workers, c.digest()
    finally:
        c.close()


def test_sim_replicate_while_another_worker_crashes_is_exact():
    where, t, alive, digest = _replicate_during_a_crash(7)
    assert alive == ["worker-0", "worker-1", "worker-2"]
    assert all(h == alive for h in where.values())  # every live worker has a copy; the dead one is not replaced
    assert t > 0
    assert _replicate_during_a_crash(7) == (where, t, alive, digest)


def _retire_during_a_crash(seed):
    c = SimCluster(n_workers=4, threads_per_worker=1, seed=seed, validate=True)
    try:
        with Client(c, set_as_default=False) as client:
            w0, w1, w2, w3 = c.workers
            fs = client.scatter([blob(i, 300_000) for i in range(6)], workers=[w0])
            ctx = {}
            # the least loaded other workers are the targets; one of them dies mid-move
            c.crash(w1, at=c.now + 0.0005)
            retired = client.retire_workers([w0])
            ctx["where"] = holders(client, fs)
            ctx["values"] = client.gather(fs) == [blob(i, 300_000) for i in range(6)]
            c.run(c.now + 10)
            return sorted(retired), ctx, c.alive_workers, round(c.now, 9), c.digest()
    finally:
        c.close()


def test_sim_retire_while_another_worker_crashes_loses_nothing_and_is_exact():
    retired, ctx, alive, now, digest = _retire_during_a_crash(3)
    assert retired == ["worker-0"]
    assert alive == ["worker-2", "worker-3"]
    assert ctx["values"] is True
    assert all(h and set(h) <= {"worker-2", "worker-3"} for h in ctx["where"].values())
    assert _retire_during_a_crash(3) == (retired, ctx, alive, now, digest)


def test_sim_replicate_of_a_key_lost_meanwhile_returns():
    """A copy whose source dies with the only data: given up, replicate still returns."""
    c = SimCluster(n_workers=2, threads_per_worker=1, seed=1, validate=True)
    try:
        with Client(c, set_as_default=False) as client:
            w0, w1 = c.workers
            f = client.submit(blob, 5, 5_000_000, workers=[w0], allow_other_workers=True, key="lost-one")
            wait(f)
            c.crash(w0, at=c.now + 0.0001)
            client.replicate(f)
            assert f.result(timeout=TIMEOUT) == blob(5, 5_000_000)  # recomputed on the survivor
    finally:
        c.close()


def test_sim_retire_workers_without_names_retires_the_idle_ones_but_one():
    c = SimCluster(n_workers=3, threads_per_worker=1, seed=2, validate=True)
    try:
        with Client(c, set_as_default=False) as client:
            w0, w1, w2 = c.workers
            big = client.scatter(blob(1, 50_000), workers=[w1])
            small = client.scatter(blob(2, 10), workers=[w2])
            retired = client.retire_workers()
            # fewest bytes first, the one holding the most is kept
            assert sorted(retired) == [w0, w2]
            assert holders(client, [big, small]) == {big.key: [w1], small.key: [w1]}
            c.run(c.now + 10)
            assert c.alive_workers == [w1]
            assert client.gather([big, small]) == [blob(1, 50_000), blob(2, 10)]
    finally:
        c.close()
