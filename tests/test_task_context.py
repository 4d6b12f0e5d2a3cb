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


def test_async_def_functions_run_and_return_their_result(client):
    from task_context_support import async_fails, async_inc, async_uses_worker

    assert client.submit(async_inc, 1).result(timeout=TIMEOUT) == 2
    assert client.gather(client.map(async_inc, range(5))) == [1, 2, 3, 4, 5]
    address, x = client.submit(async_uses_worker, 7).result(timeout=TIMEOUT)
    assert x == 7 and address in client.scheduler_info()["workers"]
    with pytest.raises(KeyError, match="from a coroutine"):
        client.submit(async_fails).result(timeout=TIMEOUT)


# --------------------------------------------------------------------------
# get_executor: a concurrent.futures.Executor
# --------------------------------------------------------------------------


def test_the_executor_s_futures_work_with_concurrent_futures(client, cluster):
    import concurrent.futures as cf

    from task_context_support import boom, square
    from test_client_api import is_sim

    with client.get_executor() as ex:
        assert isinstance(ex, cf.Executor)
        futures = [ex.submit(square, i) for i in range(5)]
        assert all(isinstance(f, cf.Future) for f in futures)
        assert [f.result(timeout=TIMEOUT) for f in futures] == [0, 1, 4, 9, 16]
        assert list(ex.map(square, range(4), timeout=TIMEOUT)) == [0, 1, 4, 9]
        bad = ex.submit(boom, 3)
        with pytest.raises(ValueError, match="boom 3"):
            bad.result(timeout=TIMEOUT)
        assert isinstance(bad.exception(timeout=TIMEOUT), ValueError)
        if not is_sim(cluster):  # (the simulator advances only inside twofold calls)
            more = [ex.submit(square, i) for i in range(10, 14)]
            done, not_done = cf.wait(more, timeout=TIMEOUT)
            assert not not_done and sorted(f.result() for f in done) == [100, 121, 144, 169]
            assert sorted(f.result() for f in cf.as_completed(more, timeout=TIMEOUT)) == [100, 121, 144, 169]
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(square, 1)


def test_executor_options_are_checked(client):
    with pytest.raises(TypeError, match="unknown options"):
        client.get_executor(bogus=1)
    ex = client.get_executor(retries=1, priority=5)
    assert ex.submit(int, "12").result(timeout=TIMEOUT) == 12
    ex.shutdown()


# --------------------------------------------------------------------------
# get: raw dask graphs
# --------------------------------------------------------------------------


def test_get_computes_a_raw_dask_graph(client):
    from operator import add, mul

    dsk = {
        "a": 1,
        "b": (add, "a", 10),
        ("x", 0): (mul, "b", 2),
        ("x", 1): (add, (mul, "a", 3), ["ignored-literal"][0:0] and 0 or 4),
        "total": (sum, [("x", 0), ("x", 1)]),
    }
    assert client.get(dsk, "total") == 22 + 7
    assert client.get(dsk, ["b", [("x", 0), ("x", 1)]]) == [11, [22, 7]]
    futures = client.get(dsk, ["total"], sync=False)
    assert futures[0].key == "total" and futures[0].result(timeout=TIMEOUT) == 29
    assert client.get({"s": (str.upper, "not-a-key")}, "s") == "NOT-A-KEY"


def test_get_refuses_bad_graphs(client):
    from twofold import InvalidGraph

    with pytest.raises(InvalidGraph, match="cycle"):
        client.get({"a": (abs, "b"), "b": (abs, "a")}, "a")
    with pytest.raises(KeyError, match="not in the graph"):
        client.get({"a": 1}, "zzz")
    with pytest.raises(TypeError, match="dask graph"):
        client.get([("a", 1)], "a")
    assert client.get({"a": (abs, -3)}, "a") == 3


# --------------------------------------------------------------------------
# run_on_scheduler
# --------------------------------------------------------------------------


def test_run_on_scheduler(client):
    from task_context_support import count_workers, scheduler_add, scheduler_async, scheduler_fails

    assert client.run_on_scheduler(count_workers) == 2
    assert client.run_on_scheduler(scheduler_add, 1, y=2) == 3
    assert client.run_on_scheduler(scheduler_async, 21) == 42
    with pytest.raises(ZeroDivisionError, match="on the scheduler"):
        client.run_on_scheduler(scheduler_fails)
    with pytest.raises(TypeError, match="callable"):
        client.run_on_scheduler("not a function")
    assert client.run_on_scheduler(scheduler_add, 2, 2) == 4  # the scheduler carries on


# --------------------------------------------------------------------------
# run: a function on the workers, outside the task system
# --------------------------------------------------------------------------


def test_run_on_every_worker_and_on_some(client):
    from task_context_support import async_plus, fails_on, plus, worker_address

    workers = list(client.scheduler_info()["workers"])
    assert client.run(worker_address) == {w: w for w in workers}
    assert client.run(plus, 1, y=2, workers=[workers[1]]) == {workers[1]: 3}
    assert client.run(async_plus, 1) == {w: 101 for w in workers}
    with pytest.raises(OSError, match="fails on"):
        client.run(fails_on, workers[0])
    returned = client.run(fails_on, workers[0], on_error="return")
    assert isinstance(returned[workers[0]], OSError) and returned[workers[1]] == "fine"
    assert client.run(fails_on, workers[0], on_error="ignore") == {workers[1]: "fine"}
    assert client.run(plus, 1, wait=False) is None
    assert client.run(plus, 5) == {w: 5 for w in workers}  # the workers carry on


def test_run_refuses_bad_input(client):
    from task_context_support import plus

    with pytest.raises(ValueError, match="unknown workers"):
        client.run(plus, 1, workers=["tcp://10.255.255.1:1"])
    with pytest.raises(TypeError, match="callable"):
        client.run(42)
    with pytest.raises(ValueError, match="on_error"):
        client.run(plus, 1, on_error="explode")
    with pytest.raises(NotImplementedError, match="nanny"):
        client.run(plus, 1, nanny=True)


# --------------------------------------------------------------------------
# versions and logs
# --------------------------------------------------------------------------


def test_get_versions_reports_client_scheduler_and_workers(client):
    versions = client.get_versions(check=True)
    assert set(versions) == {"client", "scheduler", "workers"}
    assert set(versions["workers"]) == set(client.scheduler_info()["workers"])
    for where in (versions["client"], versions["scheduler"], *versions["workers"].values()):
        assert where["packages"]["twofold"] == versions["client"]["packages"]["twofold"]
        assert where["packages"]["python"].count(".") == 2 and where["host"]["OS"]
    assert "pytest" in client.get_versions(packages=["pytest"])["client"]["packages"]
    with pytest.raises(TypeError, match="packages"):
        client.get_versions(packages=[1])


def test_a_version_mismatch_is_found():
    from twofold.client.remote import _mismatches

    same = {"packages": {"python": "3.11.7", "twofold": "1", "msgpack": "1", "cloudpickle": "3"}}
    other = {"packages": {**same["packages"], "msgpack": "2"}}
    found = _mismatches({"client": same, "scheduler": same, "workers": {"w0": other}})
    assert found == {"msgpack": {"client": "1", "scheduler": "1", "w0": "2"}}


def test_logs_are_lists_of_level_and_message(client, cluster):
    from test_client_api import is_sim

    sched = client.get_scheduler_logs()
    assert isinstance(sched, list) and all(isinstance(level, str) and isinstance(msg, str) for level, msg in sched)
    logs = client.get_worker_logs(n=5)
    assert set(logs) == set(client.scheduler_info()["workers"])
    assert all(len(lines) <= 5 for lines in logs.values())
    if is_sim(cluster):
        assert any("worker-start worker-0" in msg for _, msg in client.get_worker_logs()["worker-0"])
    with pytest.raises(TypeError, match="n="):
        client.get_scheduler_logs(n=-1)


def test_runtime_logs_hold_the_scheduler_s_records(client, cluster):
    from test_client_api import is_sim

    if is_sim(cluster):
        pytest.skip("the simulator's logs are its fault records")
    client.run_on_scheduler(_log_warning_on_scheduler)
    assert ("WARNING", "a line for get_scheduler_logs") in client.get_scheduler_logs(n=50)


def _log_warning_on_scheduler():
    import logging

    logging.getLogger("twofold.runtime.scheduler.user").warning("a line for get_scheduler_logs")


# --------------------------------------------------------------------------
# the task stream
# --------------------------------------------------------------------------


def test_get_task_stream_records_finished_runs(client):
    from task_context_support import boom, square

    from twofold import get_task_stream

    with get_task_stream(client=client) as ts:
        client.gather(client.map(square, range(6), pure=False))
        bad = client.submit(boom, 1, pure=False)
        with pytest.raises(ValueError):
            bad.result(timeout=TIMEOUT)
    squares = [r for r in ts.data if r["key"].startswith("square-")]
    assert len(squares) == 6 and all(r["status"] == "OK" and r["type"] == "int" for r in squares)
    workers = set(client.scheduler_info()["workers"])
    for r in ts.data:
        (ss,) = r["startstops"]
        assert ss["action"] == "compute" and ss["start"] <= ss["stop"] and r["worker"] in workers
    assert [r["status"] for r in ts.data if r["key"] == bad.key] == ["error"]
    assert len(client.get_task_stream(count=3)) == 3
    assert client.get_task_stream(start="1000s", count=0) == []
    with pytest.raises(NotImplementedError, match="plot"):
        client.get_task_stream(plot=True)


# --------------------------------------------------------------------------
# call_stack
# --------------------------------------------------------------------------


def test_call_stack_shows_where_a_running_task_is(client, cluster, tmp_path):
    from task_context_support import sleepy_marker

    from twofold import Event
    from test_client_api import eventually, is_sim

    path = str(tmp_path / "go")
    f = client.submit(sleepy_marker, path, pure=False)
    try:
        def inside() -> dict:  # (the task counts as running from before its function is even loaded)
            found = {w: s for w, s in client.call_stack([f]).items() if s}
            return found if any("sleepy_marker" in line for s in found.values() for line in s[f.key]) else {}

        stacks = eventually(cluster, inside, what="the task's function is on its stack")
        ((worker, by_key),) = stacks.items()
        assert set(by_key) == {f.key}
        assert set(client.call_stack()) == set(client.scheduler_info()["workers"])
    finally:
        if is_sim(cluster):
            Event(path, client=client).set()
        else:
            open(path, "w").close()
    assert f.result(timeout=TIMEOUT) == "done"
    assert all(not s for s in client.call_stack(keys=[f.key]).values())


def test_dump_cluster_state_writes_scheduler_and_workers(client, tmp_path):
    import gzip

    import msgpack

    from task_context_support import async_plus

    f = client.submit(sum, [1, 2], pure=False)
    f.result(timeout=TIMEOUT)
    path = client.dump_cluster_state(str(tmp_path / "dump"))
    assert path.endswith(".msgpack.gz")
    with gzip.open(path) as fh:
        state = msgpack.unpackb(fh.read(), raw=False, strict_map_key=False)
    assert state["scheduler"]["tasks"][f.key]["state"] == "memory"
    assert set(state["workers"]) == set(client.scheduler_info()["workers"])
    holder = state["scheduler"]["tasks"][f.key]["who_has"][0]
    assert f.key in state["workers"][holder]["data"]
    assert "locks" in state["scheduler"]["statistics"] and state["versions"]["client"]["packages"]["twofold"]
    with pytest.raises(ValueError, match="format"):
        client.dump_cluster_state(str(tmp_path / "x"), format="xml")
    with pytest.warns(DeprecationWarning):
        assert set(client.run_coroutine(async_plus, 1).values()) == {101}


# --------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------


def _names(node):
    yield node["description"]["name"]
    for child in node["children"].values():
        yield from _names(child)


def test_profile_shows_the_functions_tasks_spent_time_in(client, cluster):
    from task_context_support import busy_loop

    client.profile()  # starts the workers' samplers (off until asked for: see twofold.runtime.profiler)
    f = client.submit(busy_loop, 0.3, pure=False)
    f.result(timeout=TIMEOUT)
    tree = client.profile()
    assert tree["identifier"] == "root" and tree["count"] > 0
    assert "busy_loop" in set(_names(tree))  # (the simulator's tree: by task prefix, from its trace)
    per_worker = client.profile(merge_workers=False)
    assert set(per_worker) == set(client.scheduler_info()["workers"])
    assert sum(t["count"] for t in per_worker.values()) == tree["count"]
    assert client.profile(key="no-such-prefix")["count"] == 0
    with pytest.raises(NotImplementedError, match="plot"):
        client.profile(plot=True)
    with pytest.raises(TypeError, match="task prefix"):
        client.profile(key=3)
