"""Datasets, metadata and structured events shared between clients, on every backend.

Each test runs on a fresh validated SimCluster and on the module-scoped
threads and processes LocalClusters of ``test_client_api.py`` (its
fixtures); names are unique per test because the runtime clusters, and so
what their schedulers keep, live for the whole module.  A second client
plays the other user.
"""

from __future__ import annotations

import gc
import re

import pytest

from twofold import Client

from sharing_support import log_from_task, read_dataset, read_metadata
from test_client_api import TIMEOUT, backend, backend_cluster, cluster, eventually, is_sim, scheduler_keys  # noqa: F401


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def client2(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def name(request):
    """Unique per test and backend; plain characters (tests match it in error messages)."""
    return re.sub(r"\W", "_", request.node.name)


def inc(x):
    return x + 1


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------


def test_a_published_future_outlives_its_publisher_s_reference(client, client2, cluster, name):
    f = client.submit(inc, 41, key=f"{name}-x")
    client.publish_dataset(f, name=name)
    del f
    gc.collect()
    client.get_dataset(name)  # a round trip: the dropped future's release has reached the scheduler
    got = client2.get_dataset(name)
    assert got.key == f"{name}-x" and got.result(timeout=TIMEOUT) == 42
    assert name in client2.list_datasets()


def test_datasets_of_nested_futures_and_plain_values(client, client2, name):
    f = client.submit(inc, 1)
    g = client.scatter([1, 2, 3])
    client.publish_dataset(**{f"{name}-a": {"f": f, "more": [g, "text"]}, f"{name}-b": (1, "two")})
    a = client2.get_dataset(f"{name}-a")
    assert client2.gather(a, ) == {"f": 2, "more": [[1, 2, 3], "text"]}
    assert client2.get_dataset(f"{name}-b") == (1, "two")  # pickled, not msgpack: a tuple stays a tuple


def test_a_dataset_name_that_exists_needs_override(client, client2, name):
    client.publish_dataset(1, name=name)
    with pytest.raises(KeyError, match="already exists"):
        client2.publish_dataset(2, name=name)
    assert client.get_dataset(name) == 1  # unchanged
    client2.publish_dataset(2, name=name, override=True)
    assert client.get_dataset(name) == 2


def test_unpublish_releases_the_data_and_a_missing_dataset_is_a_key_error(client, client2, cluster, name):
    f = client.submit(inc, 1, key=f"{name}-k")
    client.publish_dataset(f, name=name)
    f.result(timeout=TIMEOUT)
    del f
    gc.collect()
    client2.unpublish_dataset(name)
    assert name not in client.list_datasets()
    with pytest.raises(KeyError, match=name):
        client2.get_dataset(name)
    assert client2.get_dataset(name, default="nothing") == "nothing"
    client.list_datasets()  # lets the client's release of its dropped future through first
    eventually(cluster, lambda: f"{name}-k" not in scheduler_keys(cluster), what="the dataset's key released")


def test_the_datasets_mapping(client, client2, name):
    client.datasets[name] = [1, 2]
    assert client2.datasets[name] == [1, 2]
    assert name in list(client2.datasets) and len(client2.datasets) >= 1
    with pytest.raises(KeyError):
        client2.datasets[name] = 3  # exists
    del client2.datasets[name]
    with pytest.raises(KeyError):
        client.datasets[name]
    with pytest.raises(KeyError):
        del client.datasets[name]


def test_a_task_reads_a_dataset(client, name):
    client.publish_dataset(client.submit(inc, 10), name=name)
    assert client.submit(read_dataset, name, pure=False).result(timeout=TIMEOUT) == 11


def test_bad_dataset_input_is_refused_and_the_client_carries_on(client, name):
    with pytest.raises(TypeError, match="dataset name"):
        client.publish_dataset(1, name=5)
    with pytest.raises(ValueError, match="nothing to publish"):
        client.publish_dataset()
    with pytest.raises(ValueError, match="keywords"):
        client.publish_dataset(1)
    with pytest.raises(TypeError, match="override"):
        client.publish_dataset(x=1, override="yes")
    client.publish_dataset(1, name=name)
    assert client.get_dataset(name) == 1


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------


def test_metadata_nested_keys(client, client2, name):
    client.set_metadata([name, "a", "b"], {"n": 1})
    client.set_metadata([name, "c"], [1, (2, 3)])
    assert client2.get_metadata([name, "a", "b"]) == {"n": 1}
    assert client2.get_metadata([name, "c"]) == [1, [2, 3]]  # msgpack: a tuple comes back a list
    assert client2.get_metadata(name) == {"a": {"b": {"n": 1}}, "c": [1, [2, 3]]}
    with pytest.raises(KeyError):
        client2.get_metadata([name, "nope"])
    assert client2.get_metadata([name, "nope"], default=None) is None


def test_metadata_from_a_task_and_bad_values(client, name):
    client.set_metadata(name, "hello")
    assert client.submit(read_metadata, name, pure=False).result(timeout=TIMEOUT) == "hello"
    with pytest.raises(TypeError, match="msgpack"):
        client.set_metadata(name, object())
    with pytest.raises(TypeError, match="str or int"):
        client.set_metadata([name, 1.5], 1)
    assert client.get_metadata(name) == "hello"


# --------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------


def test_log_and_get_events(client, client2, name):
    client.log_event(name, {"step": 1})
    client2.log_event([name, f"{name}-other"], "two")
    events = client.get_events(name)
    assert [msg for _, msg in events] == [{"step": 1}, "two"]
    assert events[0][0] <= events[1][0]  # the scheduler's times, in order
    everything = client.get_events()
    assert [m for _, m in everything[f"{name}-other"]] == ["two"]
    assert client.get_events(f"{name}-never") == ()


def test_a_subscriber_sees_every_event_logged_after_it_subscribed(client, client2, cluster, name):
    client.log_event(name, "before")
    got = []
    client2.subscribe_topic(name, got.append)
    client.log_event(name, "after-1")
    client.submit(log_from_task, name, 7, pure=False).result(timeout=TIMEOUT)
    eventually(cluster, lambda: len(got) >= 2, what="both events handled")
    assert [msg for _, msg in got] == ["after-1", {"task": 7}]
    client2.unsubscribe_topic(name)
    client.log_event(name, "after-unsubscribe")
    client2.get_events(name)  # a round trip: anything pushed before its reply has been handled
    assert len(got) == 2


def test_bad_event_input(client, name):
    with pytest.raises(TypeError, match="topic"):
        client.log_event(5, "x")
    with pytest.raises(TypeError, match="msgpack"):
        client.log_event(name, {1, 2})
    with pytest.raises(TypeError, match="callable"):
        client.subscribe_topic(name, "not a function")
    client.log_event(name, "fine")
    assert [m for _, m in client.get_events(name)] == ["fine"]


def test_on_the_simulator_event_times_are_virtual(cluster, client, name):
    if not is_sim(cluster):
        pytest.skip("virtual time is the simulator's")
    cluster.run(12.5)
    client.log_event(name, "late")
    (when, msg), = client.get_events(name)
    assert 12.5 < when < 12.6 and msg == "late"


# --------------------------------------------------------------------------
# introspection: has_what, processing, nbytes
# --------------------------------------------------------------------------


def test_has_what_and_nbytes_follow_the_data(client, cluster, name):
    futures = client.map(inc, range(4), key=[f"{name}-{i}" for i in range(4)])
    client.gather(futures)
    held = client.has_what()
    assert set(held) == set(client.scheduler_info()["workers"])
    ours = sorted(k for keys in held.values() for k in keys if k.startswith(name))
    assert ours == sorted(f.key for f in futures)
    who = client.who_has(futures)
    for key, workers in who.items():
        assert all(key in held[w] for w in workers)
    one = next(iter(held))
    assert set(client.has_what(workers=[one])) == {one}
    sizes = client.nbytes(futures, summary=False)
    assert set(sizes) == {f.key for f in futures} and all(n > 0 for n in sizes.values())
    assert client.nbytes(futures) == {name: sum(sizes.values())}  # by key prefix, as dask's summary
    assert client.nbytes([f.key for f in futures[:2]], summary=False) == {f.key: sizes[f.key] for f in futures[:2]}


def test_processing_lists_every_worker(client):
    assert all(isinstance(keys, tuple) for keys in client.processing().values())
    assert set(client.processing()) == set(client.scheduler_info()["workers"])
    with pytest.raises(TypeError, match="summary"):
        client.nbytes(summary="yes")


def test_processing_on_the_simulator_shows_the_running_task(name):
    from twofold.sim import SimCluster

    with SimCluster(n_workers=2, threads_per_worker=1, durations={"*": 5.0}, validate=True) as cluster:
        with Client(cluster, set_as_default=False) as c:
            f = c.submit(inc, 1, key=f"{name}-slow", workers=["worker-1"])
            cluster.run(1.0)
            assert c.processing() == {"worker-0": (), "worker-1": (f.key,)}
            assert c.processing(workers="worker-1") == {"worker-1": (f.key,)}
            f.result()
            assert c.processing() == {"worker-0": (), "worker-1": ()}


# --------------------------------------------------------------------------
# dashboard_address: accepted as dask's; no dashboard yet, so no link
# --------------------------------------------------------------------------


@pytest.mark.parametrize("address", [None, ":0", ":8787", "127.0.0.1:8787"])
def test_dashboard_address_is_accepted_and_the_link_is_none_until_one_is_served(cluster, address):
    with Client(cluster, set_as_default=False, dashboard_address=address) as c:
        assert c.dashboard_link is None


def test_a_bad_dashboard_address_is_a_type_error(cluster):
    with pytest.raises(TypeError, match="dashboard_address"):
        Client(cluster, set_as_default=False, dashboard_address=[8787])
