"""The Client's whole futures API on a real LocalCluster, with worker processes and with threads.

Every test runs twice through the module-scoped ``cluster`` fixture: two
single-threaded worker processes under nannies (``processes=True``), with a
Client connected by address (TCP), and two in-process workers
(``processes=False``), with a Client given the cluster object (in-process
channel to the scheduler).  Each test gets its own Client, so closing it
releases whatever the test left behind.  Every blocking call has a
timeout: nothing here can hang.

Task functions live at module level (here or in ``runtime_support``): worker
processes import them by reference, which works because the nanny passes this
process's ``sys.path`` (with ``tests/``) to its child.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import traceback
import uuid

import pytest

from runtime_support import (
    TIMEOUT,
    add,
    append_line,
    free_port,
    getpid,
    inc,
    read_lines,
    scheduler_clients,
    scheduler_keys,
    touch,
    wait_for,
    wait_for_file,
    worker_names,
)
from twofold import (
    CancelledError,
    Client,
    LocalCluster,
    as_completed,
    fire_and_forget,
    get_client,
    rejoin,
    secede,
    wait,
)
from twofold.errors import TimeoutError as TwofoldTimeoutError


# --------------------------------------------------------------------------
# task functions
# --------------------------------------------------------------------------


class ComputeError(Exception):
    """A user exception class that only this module defines."""

    def __init__(self, message: str, code: int):
        super().__init__(message, code)
        self.code = code

    def __str__(self) -> str:
        return f"{self.args[0]} (code {self.code})"


def _innermost_helper(x):
    raise ComputeError(f"bad input {x}", 42)


def deep_raise(x):
    return _innermost_helper(x)


class UnpicklableError(Exception):
    """An exception that cannot travel: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable():
    raise UnpicklableError("cannot travel")


def make_lock():
    return threading.Lock()


def total(nested):
    """Sum every number in nested lists/tuples/dicts (futures in it arrive as values)."""
    if isinstance(nested, dict):
        return sum(total(v) for v in nested.values())
    if isinstance(nested, (list, tuple)):
        return sum(total(v) for v in nested)
    return nested


def flaky(path, failures):
    """Fail the first ``failures`` calls (counted in a file, so across processes too), then succeed."""
    append_line(path, "call")
    calls = len(read_lines(path))
    if calls <= failures:
        raise RuntimeError(f"flaky failure {calls}")
    return f"ok after {calls} calls"


def fan_out_seceding(n, gate):
    """Submit subtasks from a task, leave the thread pool while waiting, come back."""
    client = get_client()
    futures = client.map(inc, range(n), key=[f"sub-{gate}-{n}-{i}" for i in range(n)])
    secede()
    results = client.gather(futures)
    rejoin()
    return sum(results)


def submit_inside(x):
    """get_client() inside a task without seceding: submit and wait on a task that can run elsewhere."""
    client = get_client()
    return client.submit(inc, x, pure=False).result(timeout=TIMEOUT) * 10


def append_after(path, text, *_):
    """append_line, once its other arguments (dependencies) are there."""
    append_line(path, text)


def module_imported(name):
    import sys

    return name in sys.modules


def where(*_):
    """The worker this task ran on."""
    from twofold.context import current_task

    return current_task().worker


def double(arr):
    return arr * 2


def make_array(n):
    import numpy as np

    return np.arange(n, dtype="float64").reshape(-1, 4)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["processes", "threads"])
def cluster(request):
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=request.param, resources={"GPU": 1}, name="e2e"
    ) as c:
        yield c


@pytest.fixture
def client(cluster):
    # both ways of connecting: by address over TCP to the process cluster (as a remote
    # client would), and with the cluster object to the thread cluster (in-process channel)
    target = cluster.scheduler_address if cluster.processes else cluster
    with Client(target, set_as_default=False) as c:
        yield c


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------
# submit / map / gather
# --------------------------------------------------------------------------


def test_submit_map_gather_nested(client):
    x = client.submit(inc, 1)
    assert x.result(timeout=TIMEOUT) == 2
    xs = client.map(inc, range(50))
    ys = client.map(add, xs, range(50))
    assert client.gather(ys) == [2 * i + 1 for i in range(50)]
    nested = {"a": [xs[0], xs[1]], "b": (xs[2], {"c": x}), "d": 7}
    assert client.gather(nested) == {"a": [1, 2], "b": (3, {"c": 2}), "d": 7}
    # futures nested in a task's arguments arrive as their values
    assert client.submit(total, nested).result(timeout=TIMEOUT) == 1 + 2 + 3 + 2 + 7
    assert client.submit(total, {"k": xs}).result(timeout=TIMEOUT) == sum(range(1, 51))


def test_pure_keys_and_lambdas(client):
    a = client.submit(inc, 41)
    b = client.submit(inc, 41)
    assert a.key == b.key  # pure by default: same call, same key
    c = client.submit(inc, 41, pure=False)
    assert c.key != a.key
    offset = 100
    fn = lambda v: v + offset  # noqa: E731 - pickled by value
    assert client.gather(client.map(fn, [a, c])) == [142, 142]


def test_workers_run_in_the_expected_processes(client, cluster):
    pids = set(client.gather(client.map(getpid, range(20), pure=False)))
    if cluster.processes:
        assert os.getpid() not in pids
        assert pids <= {n.pid for n in cluster.nannies}
        # functions defined in this module were pickled by reference: the worker imported it
        # (the nanny hands this process's sys.path, with tests/, to the worker in PYTHONPATH)
        assert client.submit(module_imported, __name__, pure=False).result(timeout=TIMEOUT)
    else:
        assert pids == {os.getpid()}


# --------------------------------------------------------------------------
# scatter
# --------------------------------------------------------------------------


def test_scatter(client, cluster):
    a, b = cluster.workers
    futures = client.scatter([1, 2, 3])
    assert client.gather(futures) == [1, 2, 3]
    assert client.submit(sum, futures).result(timeout=TIMEOUT) == 6
    named = client.scatter({f"s-{_uid()}": "payload"})
    [(name, fut)] = named.items()
    assert fut.key == name and fut.result(timeout=TIMEOUT) == "payload"

    [on_b] = client.scatter([f"only-b-{_uid()}"], workers=[b])
    assert client.who_has([on_b])[on_b.key] == [b]

    [everywhere] = client.scatter([f"broadcast-{_uid()}"], broadcast=True)
    assert sorted(client.who_has([everywhere])[everywhere.key]) == sorted([a, b])
    # each worker can use its own copy
    users = [client.submit(len, everywhere, workers=[w], pure=False) for w in (a, b)]
    assert client.gather(users) == [len(everywhere.result(timeout=TIMEOUT))] * 2


def test_numpy_scatter_and_gather(client):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal((500, 400)),  # 1.6 MB float64, out of band
        np.asfortranarray(rng.integers(0, 1000, (300, 200)).astype("int32")),
        np.arange(100_000, dtype="int64")[::3],  # not contiguous
        np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "i4"), ("b", "f8")]),
    ]
    futures = client.scatter(arrays, hash=False)
    back = client.gather(futures)
    for original, got in zip(arrays, back):
        assert type(got) is np.ndarray
        assert got.dtype == original.dtype and got.shape == original.shape
        np.testing.assert_array_equal(got, original)
    doubled = client.gather(client.map(double, futures[:3]))
    for original, got in zip(arrays, doubled):
        np.testing.assert_array_equal(got, original * 2)
    # a large array made on a worker comes back intact
    big = client.submit(make_array, 1_000_000).result(timeout=TIMEOUT)
    np.testing.assert_array_equal(big, np.arange(1_000_000, dtype="float64").reshape(-1, 4))
    assert big.flags.writeable


# --------------------------------------------------------------------------
# cancel / retry
# --------------------------------------------------------------------------


def test_cancel(client, cluster):
    # a task that cannot run anywhere (no worker has the resource), and one that depends on it
    stuck = client.submit(inc, 1, resources={"TPU": 1}, key=f"stuck-{_uid()}")
    after = client.submit(inc, stuck, key=f"after-{_uid()}")
    wait_for(lambda: {stuck.key, after.key} <= scheduler_keys(cluster), what="keys at the scheduler")
    assert not stuck.done()
    client.cancel([stuck])
    assert stuck.cancelled()
    with pytest.raises(CancelledError):
        stuck.result(timeout=TIMEOUT)
    with pytest.raises(CancelledError):
        after.result(timeout=TIMEOUT)  # its input was cancelled
    wait_for(lambda: not {stuck.key, after.key} & scheduler_keys(cluster), what="cancelled keys forgotten")
    # the cluster is fine afterwards
    assert client.submit(inc, 5, pure=False).result(timeout=TIMEOUT) == 6


def test_cancel_running_task(client, cluster, tmp_path):
    gate = str(tmp_path / "gate")
    running = client.submit(wait_for_file, gate, key=f"running-{_uid()}")
    wait_for(lambda: running.key in scheduler_keys(cluster))
    running.cancel()
    with pytest.raises(CancelledError):
        running.result(timeout=TIMEOUT)
    touch(gate)  # let the thread finish; its result is dropped
    wait_for(lambda: running.key not in scheduler_keys(cluster), what="cancelled key forgotten")
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


def test_retry(client, tmp_path):
    counter = str(tmp_path / "calls")
    f = client.submit(flaky, counter, 1)
    with pytest.raises(RuntimeError, match="flaky failure 1"):
        f.result(timeout=TIMEOUT)
    dependent = client.submit(inc, f)  # errs too
    with pytest.raises(RuntimeError, match="flaky failure 1"):
        dependent.result(timeout=TIMEOUT)
    f.retry()
    assert f.result(timeout=TIMEOUT) == "ok after 2 calls"
    # retries= reruns it without asking
    counter2 = str(tmp_path / "calls2")
    g = client.submit(flaky, counter2, 2, retries=2)
    assert g.result(timeout=TIMEOUT) == "ok after 3 calls"
    h = client.submit(flaky, str(tmp_path / "calls3"), 5, retries=1)
    with pytest.raises(RuntimeError, match="flaky failure 2"):
        h.result(timeout=TIMEOUT)


# --------------------------------------------------------------------------
# waiting
# --------------------------------------------------------------------------


def test_as_completed(client, cluster, tmp_path):
    a, b = cluster.workers
    gate = str(tmp_path / "gate")
    slow = client.submit(wait_for_file, gate, "slow", workers=[a], key=f"slow-{_uid()}")
    fast = client.map(inc, range(3), workers=[b], key=[f"fast-{_uid()}" for _ in range(3)])
    seen = []
    for future, result in as_completed([slow, *fast], with_results=True):
        seen.append(result)
        if len(seen) == 3:
            assert sorted(seen) == [1, 2, 3] and not slow.done()
            touch(gate)
    assert seen[3] == "slow"
    # plain as_completed yields futures; add() while iterating
    ac = as_completed(client.map(inc, range(5), pure=False))
    extra = False
    got = []
    for future in ac:
        got.append(future.result(timeout=TIMEOUT))
        if not extra:
            ac.add(client.submit(inc, 100, pure=False))
            extra = True
    assert sorted(got) == [1, 2, 3, 4, 5, 101]


def test_wait_first_completed(client, cluster, tmp_path):
    a, b = cluster.workers
    gate = str(tmp_path / "gate")
    slow = client.submit(wait_for_file, gate, workers=[a], key=f"slow-{_uid()}")
    fast = client.submit(inc, 1, workers=[b], key=f"fast-{_uid()}")
    done, not_done = wait([slow, fast], timeout=TIMEOUT, return_when="FIRST_COMPLETED")
    assert done == {fast} and not_done == {slow}
    with pytest.raises(TwofoldTimeoutError):
        wait([slow], timeout=0.2)
    touch(gate)
    done, not_done = wait([slow, fast], timeout=TIMEOUT)
    assert done == {slow, fast} and not not_done


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_errors_keep_type_message_and_traceback_text(client):
    f = client.submit(deep_raise, 3)
    with pytest.raises(ComputeError) as info:
        f.result(timeout=TIMEOUT)
    exc = info.value
    assert str(exc) == "bad input 3 (code 42)" and exc.code == 42
    assert f.status == "error"
    assert isinstance(f.exception(timeout=TIMEOUT), ComputeError)
    text = "".join(traceback.format_exception(exc))
    # the worker's traceback: the functions the error went through, and the failing line
    assert "deep_raise" in text and "_innermost_helper" in text
    assert 'raise ComputeError(f"bad input {x}", 42)' in text
    # dependents err with the same exception; gather raises it too
    g = client.submit(inc, f)
    with pytest.raises(ComputeError, match="bad input 3"):
        g.result(timeout=TIMEOUT)
    with pytest.raises(ComputeError):
        client.gather([client.submit(inc, 1), f])
    assert client.gather([f, client.submit(inc, 1)], errors="skip") == [2]
    # builtin exceptions keep their type too
    z = client.submit(lambda: 1 / 0, pure=False)
    with pytest.raises(ZeroDivisionError):
        z.result(timeout=TIMEOUT)


def test_exception_that_cannot_be_pickled(client):
    f = client.submit(raise_unpicklable)
    with pytest.raises(Exception, match="cannot travel") as info:
        f.result(timeout=TIMEOUT)
    # its class could not travel, but its name and the worker's traceback did
    text = "".join(traceback.format_exception(info.value))
    assert "UnpicklableError" in text and "raise_unpicklable" in text


def test_result_that_cannot_be_pickled(client, cluster, request):
    f = client.submit(make_lock)
    start = time.monotonic()
    try:
        value = f.result(timeout=3)
    except TwofoldTimeoutError:
        raise AssertionError(f"result() of an unpicklable result timed out after {time.monotonic() - start:.1f} s")
    except Exception as exc:  # processes: the lock cannot come back; the error must say so
        assert "pickle" in str(exc) or "serializ" in str(exc), exc
    else:  # threads: the object itself, shared in-process
        assert not cluster.processes and type(value) is type(threading.Lock())
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


def test_future_traceback_object(client):
    f = client.submit(deep_raise, 4)
    assert isinstance(f.exception(timeout=TIMEOUT), ComputeError)
    tb = f.traceback(timeout=TIMEOUT)
    assert tb is not None, "Future.traceback() gave None for an erred task"
    frames = "".join(traceback.format_tb(tb))
    assert "_innermost_helper" in frames


# --------------------------------------------------------------------------
# tasks that use the client
# --------------------------------------------------------------------------


def test_get_client_secede_rejoin_inside_tasks(client):
    # two single-threaded workers, each busy with a task that waits on 10 subtasks:
    # only seceding frees the threads the subtasks need
    gate = _uid()
    outer = client.map(fan_out_seceding, [10, 20], [gate, gate])
    assert client.gather(outer) == [sum(range(1, 11)), sum(range(1, 21))]
    assert client.submit(submit_inside, 4, pure=False).result(timeout=TIMEOUT) == 50


# --------------------------------------------------------------------------
# placement: resources, workers=
# --------------------------------------------------------------------------


def test_resources(client, cluster):
    gpu = client.map(inc, range(6), resources={"GPU": 1}, pure=False)
    assert client.gather(gpu) == list(range(1, 7))
    too_much = client.submit(inc, 1, resources={"GPU": 2}, pure=False)
    unknown = client.submit(inc, 1, resources={"TPU": 1}, pure=False)
    with pytest.raises(TwofoldTimeoutError):
        wait([too_much, unknown], timeout=0.5, return_when="FIRST_COMPLETED")
    assert not too_much.done() and not unknown.done()
    client.cancel([too_much, unknown])


def test_workers_and_allow_other_workers(client, cluster):
    a, b = cluster.workers
    names = worker_names(cluster)
    on_b = client.map(where, range(5), workers=[b], pure=False)
    assert set(client.gather(on_b)) == {b}
    assert client.who_has(on_b[:1])[on_b[0].key] == [b]
    by_name = client.submit(where, workers=names[a], pure=False)
    assert by_name.result(timeout=TIMEOUT) == a
    # a worker that does not exist: waits, unless other workers are allowed
    nowhere = "tcp://127.0.0.1:1"
    strict = client.submit(where, 1, workers=[nowhere], pure=False)
    loose = client.submit(where, 2, workers=[nowhere], allow_other_workers=True, pure=False)
    assert loose.result(timeout=TIMEOUT) in (a, b)
    assert not strict.done()
    strict.cancel()


# --------------------------------------------------------------------------
# lifetimes: fire_and_forget, release on garbage collection
# --------------------------------------------------------------------------


def test_fire_and_forget(client, cluster, tmp_path):
    gate = str(tmp_path / "gate")
    marker = str(tmp_path / "ran")
    waiting = client.submit(wait_for_file, gate, key=f"gated-{_uid()}")
    then = client.submit(append_after, marker, "done", waiting, key=f"faf-{_uid()}")
    keys = {waiting.key, then.key}
    fire_and_forget(then)
    del waiting, then
    gc.collect()
    wait_for(lambda: keys <= scheduler_keys(cluster), what="keys at the scheduler")
    touch(gate)
    wait_for(lambda: read_lines(marker) == ["done"], what="the fire-and-forget task to run")
    wait_for(lambda: not keys & scheduler_keys(cluster), what="fire-and-forget keys forgotten after running")


def test_futures_released_when_garbage_collected(client, cluster):
    f = client.submit(inc, 1, key=f"collected-{_uid()}")
    g = client.submit(inc, f, key=f"dependent-{_uid()}")
    key_f, key_g = f.key, g.key
    assert g.result(timeout=TIMEOUT) == 3
    assert {key_f, key_g} <= scheduler_keys(cluster)
    del g
    gc.collect()
    wait_for(lambda: key_g not in scheduler_keys(cluster), timeout=5, what="the dropped key to be released")
    assert key_f in scheduler_keys(cluster)  # still held by f
    del f
    gc.collect()
    wait_for(lambda: key_f not in scheduler_keys(cluster), timeout=5, what="the dropped key to be released")


def test_closing_a_client_releases_its_keys(cluster):
    c = Client(cluster, set_as_default=False)
    futures = c.map(inc, range(10), key=[f"closing-{_uid()}" for _ in range(10)])
    c.gather(futures)
    keys = {f.key for f in futures}
    assert keys <= scheduler_keys(cluster)
    assert c.id in scheduler_clients(cluster)
    c.close()
    wait_for(lambda: not keys & scheduler_keys(cluster), timeout=5, what="a closed client's keys released")
    wait_for(lambda: c.id not in scheduler_clients(cluster), timeout=5, what="the closed client to leave")


# --------------------------------------------------------------------------
# connecting: by address, scheduler files, Client() with no address
# --------------------------------------------------------------------------


def test_client_by_address(cluster):
    with Client(cluster.scheduler_address, set_as_default=False) as c:
        assert c.scheduler.address == cluster.scheduler_address
        assert c.submit(inc, 10, pure=False).result(timeout=TIMEOUT) == 11
    host_port = cluster.scheduler_address.removeprefix("tcp://")
    with Client(host_port, set_as_default=False) as c:  # dask accepts host:port
        assert c.submit(inc, 11, pure=False).result(timeout=TIMEOUT) == 12


def test_client_to_nowhere_fails_clearly(tmp_path):
    from twofold.errors import CommClosedError

    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(CommClosedError, match="cannot connect to " + address):
        Client(address, set_as_default=False, timeout=2)
    missing = str(tmp_path / "nowhere.json")
    with pytest.raises(OSError, match="nowhere.json"):
        Client(scheduler_file=missing, set_as_default=False, timeout=2)


def test_client_from_scheduler_file(cluster, tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
    with Client(scheduler_file=str(path), set_as_default=False) as c:
        assert c.scheduler.address == cluster.scheduler_address
        assert c.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


def test_write_scheduler_file(client, cluster, tmp_path):
    path = tmp_path / "scheduler.json"
    client.write_scheduler_file(str(path))
    assert json.loads(path.read_text())["address"] == cluster.scheduler_address
    with Client(scheduler_file=str(path), set_as_default=False) as c:
        assert c.submit(inc, 2, pure=False).result(timeout=TIMEOUT) == 3


def test_client_without_address_starts_and_closes_its_own_cluster():
    c = Client(n_workers=1, processes=False, set_as_default=False)
    try:
        cluster = c.cluster
        assert isinstance(cluster, LocalCluster)
        assert cluster.status == "running" and len(cluster.workers) == 1
        assert c.scheduler.address == cluster.scheduler_address
        assert c.submit(inc, 1).result(timeout=TIMEOUT) == 2
        assert c.gather(c.map(inc, range(10))) == list(range(1, 11))
    finally:
        c.close()
    assert c.status == "closed"
    assert cluster.status == "closed"
    with pytest.raises(Exception):
        Client(cluster.scheduler_address, set_as_default=False, timeout=2)


def test_client_without_address_rejects_unknown_options():
    with pytest.raises(TypeError):
        Client(n_wrokers=1, processes=False, set_as_default=False)
