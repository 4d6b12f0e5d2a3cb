"""The Client on a real LocalCluster (threads in this process): the basics end to end."""

from __future__ import annotations

import pytest

from twofold import Client, LocalCluster, get_client, wait


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def boom(x):
    raise ValueError(f"boom {x}")


def fan_out(n):
    client = get_client()
    return sum(client.gather(client.map(inc, range(n))))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


def test_submit_map_gather(client):
    assert client.submit(inc, 1).result(timeout=10) == 2
    futures = client.map(inc, range(200))
    assert client.gather(futures) == list(range(1, 201))
    total = client.submit(sum, futures)
    assert total.result(timeout=10) == sum(range(1, 201))


def test_dependencies_across_workers(client, cluster):
    a, b = cluster.workers
    x = client.submit(inc, 1, workers=[a])
    y = client.submit(inc, 10, workers=[b])
    z = client.submit(add, x, y, workers=[a])
    assert z.result(timeout=10) == 13
    assert b in client.who_has([y])[y.key]  # and now on a too: z needed it there


def test_errors_keep_type_and_message(client):
    f = client.submit(boom, 3)
    with pytest.raises(ValueError, match="boom 3"):
        f.result(timeout=10)
    assert isinstance(f.exception(), ValueError)
    assert f.status == "error"


def test_scatter_and_gather_large(client):
    data = bytes(range(256)) * 40_000  # 10 MB, out of band
    [fut] = client.scatter([data])
    assert client.submit(len, fut).result(timeout=10) == len(data)
    assert client.gather(fut) == data


def test_tasks_submit_tasks(client):
    assert client.submit(fan_out, 20).result(timeout=20) == sum(range(1, 21))


def test_wait_and_cancel(client):
    futures = client.map(inc, range(50), key=[f"w-{i}" for i in range(50)])
    done, not_done = wait(futures, timeout=10)
    assert len(done) == 50 and not not_done
