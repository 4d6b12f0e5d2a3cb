"""Dask collections (delayed, bag, array) through the Client, on every backend.

``client.compute`` / ``client.persist`` / ``client.get`` and
``dask.compute(..., scheduler=client)``; futures of collections; a
collection computed from inside a task on a one-thread worker.  Each test
runs on a fresh validated SimCluster and on the module-scoped threads and
processes LocalClusters of ``test_client_api.py`` (its fixtures).
"""

from __future__ import annotations

from operator import add

import pytest

dask = pytest.importorskip("dask")
np = pytest.importorskip("numpy")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402

from twofold import Client, Future, get_client  # noqa: E402

from test_client_api import TIMEOUT, backend, backend_cluster, cluster, is_sim, scheduler_keys  # noqa: E402,F401


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


def inc(x):
    return x + 1


def double(x):
    return 2 * x


def bag_sum_inside(n, worker):
    """A task that computes a dask collection with its own client, on its own worker."""
    import dask.bag as db

    bag = db.from_sequence(range(n), npartitions=3).map(inc)
    return bag.fold(add).compute(scheduler=get_client(), workers=[worker])


def compute_inside_worker_client(worker):
    from twofold import worker_client

    with worker_client() as client:  # seceded already: compute(sync=True) leaves it so
        return client.compute(dask.delayed(inc)(1), workers=[worker], sync=True)


def array_sum_inside(worker):
    import dask.array as da

    client = get_client()
    return client.compute(da.ones((20, 20), chunks=(10, 10)).sum(), workers=[worker], sync=True)


# --------------------------------------------------------------------------
# compute
# --------------------------------------------------------------------------


def test_compute_a_delayed_graph_gives_a_future(client):
    x = dask.delayed(inc)(1)
    y = dask.delayed(add)(x, dask.delayed(double)(x))
    f = client.compute(y)
    assert isinstance(f, Future)
    assert f.result(timeout=TIMEOUT) == 6
    assert client.compute(y, sync=True) == 6


def test_compute_a_list_gives_a_list_of_futures_and_passes_other_values_through(client):
    x = dask.delayed(inc)(1)
    fs = client.compute([x, dask.delayed(double)(x), 7])
    assert isinstance(fs, list) and isinstance(fs[0], Future) and fs[2] == 7
    assert client.gather(fs[:2]) == [2, 4]
    assert client.compute((x, [x, x]), sync=True) == [2, [2, 2]]  # traverse: a list is one delayed


def test_bag_map_fold(client):
    bag = db.from_sequence(range(10), npartitions=3).map(inc)
    f = client.compute(bag.fold(add))
    assert f.result(timeout=TIMEOUT) == 55
    whole = client.compute(bag)  # the Future of a bag is the whole list
    assert whole.result(timeout=TIMEOUT) == list(range(1, 11))


def test_array_sum(client):
    x = da.ones((100, 100), chunks=(10, 10))
    f = client.compute(x.sum())
    assert f.result(timeout=TIMEOUT) == 10_000
    got = client.compute(x[:20, :30] + 1, sync=True)  # the Future of an array is the whole array
    assert isinstance(got, np.ndarray) and got.shape == (20, 30) and (got == 2).all()


def test_get_of_a_collection_graph_and_errors_propagate(client):
    bag = db.from_sequence(range(4), npartitions=2).map(inc)
    assert client.get(bag.__dask_graph__(), bag.__dask_keys__()) == [[1, 2], [3, 4]]
    bad = dask.delayed(inc)("text")
    with pytest.raises(TypeError):
        client.compute(bad).result(timeout=TIMEOUT)


# --------------------------------------------------------------------------
# dask's own entry points
# --------------------------------------------------------------------------


def test_dask_compute_with_the_client_as_scheduler(client):
    bag = db.from_sequence(range(10), npartitions=3).map(inc).fold(add)
    arr = da.ones((100, 100), chunks=(10, 10)).sum()
    got = dask.compute(bag, arr, {"d": dask.delayed(inc)(1)}, scheduler=client)
    assert got == (55, 10_000.0, {"d": 2})
    assert arr.compute(scheduler=client.get) == 10_000


def test_the_client_as_dask_s_configured_scheduler(client):
    x = db.from_sequence(range(10), npartitions=3).map(inc)
    with dask.config.set(scheduler=client):
        assert x.fold(add).compute() == 55
        (p,) = dask.persist(x)  # through client.persist
        assert all(isinstance(v, Future) for v in dict(p.__dask_graph__()).values())
        assert p.compute() == list(range(1, 11))


def test_the_current_client_as_dask_s_scheduler(client):
    from twofold.client.collections import get as current_client_get

    x = db.from_sequence(range(10), npartitions=3).map(inc).fold(add)
    with client.as_current(), dask.config.set(scheduler=current_client_get):
        assert x.compute() == 55
        assert dask.compute(x, dask.delayed(double)(4)) == (55, 8)


# --------------------------------------------------------------------------
# persist, normalize_collection
# --------------------------------------------------------------------------


def test_persist_then_compute_again_reuses_the_futures(client, cluster):
    x = da.ones((40, 40), chunks=(10, 10)) + 1
    p = client.persist(x)
    assert type(p) is da.Array and p.shape == x.shape and p.chunks == x.chunks
    held = dict(p.__dask_graph__())
    assert len(held) == 16 and all(isinstance(v, Future) for v in held.values())
    client.gather(list(held.values()))
    keys_before = {v.key for v in held.values()}
    assert client.compute(p.sum(), sync=True) == 3200
    assert client.compute((p * 2).sum(), sync=True) == 6400
    assert keys_before <= set(client._states)  # the same futures, still held
    if not is_sim(cluster):
        assert keys_before <= scheduler_keys(cluster)


def test_persist_delayed_and_bag_lists(client):
    d = dask.delayed(inc)(41)
    bag = db.from_sequence(range(6), npartitions=2).map(double)
    pd, pb = client.persist([d, bag])
    assert isinstance(pd, dask.delayed(inc)(0).__class__)
    assert pd.compute(scheduler=client) == 42
    assert client.compute(pb.fold(add), sync=True) == 30
    assert client.compute(pb, sync=True) == [0, 2, 4, 6, 8, 10]


def test_normalize_collection_uses_the_futures_already_in_memory(client):
    x = da.ones((20, 20), chunks=(10, 10)) + 1
    assert client.normalize_collection(x) is x  # nothing held yet
    p = client.persist(x)
    client.gather(list(dict(p.__dask_graph__()).values()))
    y = client.normalize_collection(x)
    graph = dict(y.__dask_graph__())
    futures = [k for k, v in graph.items() if isinstance(v, Future)]
    assert sorted(futures) == sorted(x.__dask_keys__()[i][j] for i in range(2) for j in range(2))
    assert len(graph) == 4 < len(dict(x.__dask_graph__()))  # the ones() tasks are not needed any more
    assert client.compute(y.sum(), sync=True) == 800


# --------------------------------------------------------------------------
# inside a task
# --------------------------------------------------------------------------


def test_compute_inside_a_task_secedes_on_a_one_thread_worker(client):
    w = sorted(client.nthreads())[0]
    assert client.nthreads()[w] == 1
    # the outer task holds w's only thread; the inner tasks need it too
    f = client.submit(bag_sum_inside, 10, w, workers=[w])
    assert f.result(timeout=TIMEOUT) == 55
    g = client.submit(array_sum_inside, w, workers=[w])
    assert g.result(timeout=TIMEOUT) == 400
    h = client.submit(compute_inside_worker_client, w, workers=[w])
    assert h.result(timeout=TIMEOUT) == 2
