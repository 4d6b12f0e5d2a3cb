"""What a task can reach: get_worker() and worker_client(), on every backend."""

from __future__ import annotations

import pytest

from twofold import Client, get_worker, worker_client

from task_context_support import describe_worker, fib, keys_here
from test_client_api import TIMEOUT, backend, backend_cluster, cluster  # noqa: F401


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


def test_get_worker_describes_the_worker_running_the_task(client):
    workers = client.scheduler_info()["workers"]
    address = next(iter(workers))
    dep = client.submit(sum, [20, 22], workers=[address])
    info = client.submit(describe_worker, dep, workers=[address], pure=False).result(timeout=TIMEOUT)
    assert info["address"] == address and info["nthreads"] == workers[address]["nthreads"]
    assert info["name"] == workers[address]["name"]
    assert info["has_dep"] is True  # its input is in the worker's data
    assert client.submit(keys_here, dep.key, workers=[address], pure=False).result(timeout=TIMEOUT) is True


def test_worker_client_lets_one_thread_workers_wait_on_their_own_subtasks(client):
    # 2 workers x 1 thread and fib(6) needs 25 tasks waiting on each other: without seceding, it deadlocks
    assert client.submit(fib, 6).result(timeout=TIMEOUT) == 8


def test_outside_a_task_both_are_errors():
    with pytest.raises(ValueError, match="No worker found"):
        get_worker()
    with pytest.raises(ValueError, match="inside a running task"):
        with worker_client():
            pass
