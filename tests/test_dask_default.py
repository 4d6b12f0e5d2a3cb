"""A default twofold Client is dask's scheduler: bare ``.compute()`` / ``.persist()``.

Each test runs on a fresh SimCluster and on the module-scoped threads and
processes LocalClusters of ``test_client_api.py`` (its fixtures), with
clients made ``set_as_default=True`` (the default) inside the test.  A
function's ``where()`` tells on which worker it ran (None: not in a task,
so dask's local scheduler ran it).
"""

from __future__ import annotations

import faulthandler
import pickle
import subprocess
import sys
from operator import add

import pytest

dask = pytest.importorskip("dask")
np = pytest.importorskip("numpy")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402

from twofold import Client, Future, get_worker  # noqa: E402
from twofold.client.dask_default import SCHEDULER  # noqa: E402

from test_client_api import TIMEOUT, WATCHDOG, backend, backend_cluster, cluster  # noqa: E402,F401


@pytest.fixture(autouse=True)
def clean_dask_config():
    """Every test starts and ends with no scheduler in dask's config (nothing leaks)."""
    assert dask.config.get("scheduler", None) is None
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert dask.config.get("scheduler", None) is None
    assert "scheduler" not in dask.config.config


def where(*_):
    """The address of the worker running this call, None outside a task."""
    try:
        return get_worker().address
    except ValueError:
        return None


def on_worker_block(block):
    get_worker()  # ValueError when dask's local scheduler runs it
    return block


def bare_compute_inside(worker):
    """A task computing collections with no scheduler= (dask's config decides), on its own worker."""
    import dask
    import dask.bag as db

    places = db.from_sequence(range(6), npartitions=3).map(where).compute(workers=[worker])
    total = dask.delayed(add)(dask.delayed(len)(places), 1).compute(workers=[worker])
    return places, total


# --------------------------------------------------------------------------
# a bare compute / persist runs on the default client's cluster
# --------------------------------------------------------------------------


def test_bare_compute_of_delayed_bag_and_array_runs_on_the_cluster(cluster):
    with Client(cluster) as client:
        workers = set(client.nthreads())
        assert dask.config.get("scheduler") is SCHEDULER
        assert dask.delayed(where)().compute() in workers
        bag = db.from_sequence(range(10), npartitions=3)
        assert set(bag.map(where).compute()) <= workers
        assert bag.map(lambda x: x + 1).fold(add).compute() == 55
        x = da.ones((40, 40), chunks=(10, 10))
        checked = x.map_blocks(on_worker_block, meta=np.ones((0, 0)))
        assert checked.sum().compute() == 1600
        got, n = dask.compute(x[:10, :20] + 1, dask.delayed(where)())
        assert (got == 2).all() and got.shape == (10, 20) and n in workers


def test_bare_persist_gives_collections_of_the_client_s_futures(cluster):
    with Client(cluster) as client:
        bag = db.from_sequence(range(6), npartitions=2).map(lambda x: 2 * x)
        p = bag.persist()
        held = dict(p.__dask_graph__())
        assert len(held) == 2 and all(isinstance(v, Future) and v.client is client for v in held.values())
        assert p.compute() == [0, 2, 4, 6, 8, 10]
        (q,) = dask.persist(da.ones((20, 20), chunks=(10, 10)) + 1)
        assert all(isinstance(v, Future) for v in dict(q.__dask_graph__()).values())
        assert q.sum().compute() == 800


# --------------------------------------------------------------------------
# restoring, and the user's own choice
# --------------------------------------------------------------------------


def test_close_gives_dask_back_its_local_scheduler(cluster):
    client = Client(cluster)
    assert dask.delayed(where)().compute() in set(client.nthreads())
    client.close()
    assert dask.config.get("scheduler", None) is None
    assert dask.delayed(where)().compute() is None  # dask's own threads
    assert db.from_sequence([1, 2], npartitions=1).map(where).compute() == [None, None]


def test_a_scheduler_the_user_set_wins_before_and_after_the_client(cluster):
    with dask.config.set(scheduler="sync"):
        with Client(cluster):
            assert dask.config.get("scheduler") == "sync"
            assert dask.delayed(where)().compute() is None
        assert dask.config.get("scheduler") == "sync"
    with Client(cluster) as client:
        with dask.config.set(scheduler="threads"):
            assert dask.delayed(where)().compute() is None
        assert dask.delayed(where)().compute() in set(client.nthreads())
        assert dask.delayed(where)().compute(scheduler="sync") is None
    global_choice = dask.config.set(scheduler="threads")  # not a with block: it stays
    try:
        client = Client(cluster)
        dask.config.set(scheduler="sync")  # set while the client is open: the close keeps it
        client.close()
        assert dask.config.get("scheduler") == "sync"
    finally:
        global_choice.__exit__(None, None, None)


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest-closes-first", "oldest-closes-first"])
def test_two_default_clients_closed_in_either_order(cluster, newest_first):
    def persisted_by():
        (f,) = dict(dask.delayed(where)().persist().__dask_graph__()).values()
        return f.client

    old = Client(cluster)
    new = Client(cluster)
    try:
        assert persisted_by() is new  # the newest open default client serves
        first, second = (new, old) if newest_first else (old, new)
        first.close()
        assert dask.config.get("scheduler") is SCHEDULER
        assert persisted_by() is second
        assert dask.delayed(where)().compute() in set(second.nthreads())
        second.close()
        assert dask.delayed(where)().compute() is None
    finally:
        old.close()
        new.close()


# --------------------------------------------------------------------------
# inside a task
# --------------------------------------------------------------------------


def test_a_bare_compute_inside_a_task_secedes_on_a_one_thread_worker(cluster):
    with Client(cluster) as client:
        w = sorted(client.nthreads())[0]
        assert client.nthreads()[w] == 1
        # the outer task holds w's only thread; the inner tasks need it too
        places, total = client.submit(bare_compute_inside, w, workers=[w]).result(timeout=TIMEOUT)
        assert places == [w] * 6 and total == 7


def test_a_worker_process_makes_its_tasks_client_dask_s_scheduler(backend, cluster):
    if backend != "processes":
        pytest.skip("in-process workers share this process's dask config (set by a default client)")
    with Client(cluster, set_as_default=False) as client:
        assert dask.config.get("scheduler", None) is None  # not here: only in the worker processes
        w = sorted(client.nthreads())[0]
        places, total = client.submit(bare_compute_inside, w, workers=[w]).result(timeout=TIMEOUT)
        assert places == [w] * 6 and total == 7


# --------------------------------------------------------------------------
# without dask imported
# --------------------------------------------------------------------------


def test_dask_imported_after_the_client_is_made_still_uses_it():
    script = """
import sys
from twofold import Client
from twofold.sim import SimCluster
cluster = SimCluster(n_workers=1, seed=0)
client = Client(cluster)
assert "dask" not in sys.modules  # a Client never imports dask
import dask
from twofold import get_worker
from twofold.client.dask_default import SCHEDULER
assert dask.config.get("scheduler") is SCHEDULER
assert dask.delayed(lambda: get_worker().address)().compute() in client.nthreads()
assert not any(type(f).__name__ == "_AfterDaskConfig" for f in sys.meta_path)
client.close()
assert dask.config.get("scheduler", None) is None
c2 = Client(cluster)  # dask imported now: set at once
assert dask.config.get("scheduler") is SCHEDULER
c2.close()
cluster.close()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_scheduler_pickles_by_name():
    assert pickle.loads(pickle.dumps(SCHEDULER)) is SCHEDULER
