"""Actors: the same tests on every backend, then simulator-only and runtime-only ones.

The common tests run against the backends and fixtures of ``test_client_api``
(read its docstring): a fresh validated ``SimCluster`` per test, and
module-scoped thread and process ``LocalCluster``\\ s of 2 workers x 1 thread;
every blocking call has a timeout and a watchdog ends a hung run.  Only
behaviour both drivers promise is asserted there.

The simulator-only tests check exact virtual times (a call is a hop to the
worker, the call's duration from the duration model, a hop back), crashes
and restarts mid-call, and that a run repeats from its seed.  The last test
kills a worker process holding an actor.

Actor classes and task functions are module-level: worker processes import
this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest

from twofold import Actor, ActorFuture, ActorLost, Client, LocalCluster, get_client
from twofold.context import current_task
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.sim import Exponential, SimCluster

from client_support import CustomError, approx, inc
from test_client_api import (  # noqa: F401 - fixtures
    TIMEOUT,
    backend,
    backend_cluster,
    client,
    cluster,
    gates,
    is_sim,
    scheduler_keys,
    workers,
)

L = 0.001  # the simulator's default latency
D = 0.001  # its default task (and actor call) duration


# --------------------------------------------------------------------------
# actor classes and task functions (module level: worker processes import them)
# --------------------------------------------------------------------------


class Counter:
    """The reference's example, plus what the tests need."""

    n = 0

    def __init__(self, start=0):
        self.n = start
        self.log = []

    def increment(self, by=1):
        self.n += by
        return self.n

    def record(self, item):
        self.log.append(item)
        return len(self.log)

    def fail(self, msg):
        raise CustomError(msg)

    def remember(self, value):
        self.note = value  # an attribute the instance did not have when it was made

    def where(self):
        return current_task().worker

    def inc_on_the_cluster(self, x):
        """A method that waits on a task (through the worker's client)."""
        return get_client().submit(inc, x, pure=False).result(timeout=TIMEOUT)

    def kill_my_process(self):
        os.kill(os.getpid(), signal.SIGKILL)

    def hold(self, seconds):
        time.sleep(seconds)
        return self.n

    def make_lock(self):
        return threading.Lock()


class ParameterServer:
    """The reference's second example."""

    def __init__(self):
        self.data = dict()

    def put(self, key, value):
        self.data[key] = value

    def get(self, key):
        return self.data[key]


def train(params, lr=0.1):
    grad = 2 * (params - 1)  # gradient of (params - 1)**2
    new_params = params - lr * grad
    return new_params


def use_counter(counter, times):
    """Increment the actor ``times`` times from inside a task; what each call returned."""
    return [counter.increment().result(timeout=TIMEOUT) for _ in range(times)]


def burst(counter, times):
    """``times`` calls in flight at once, from inside a task."""
    futures = [counter.increment() for _ in range(times)]
    return [f.result(timeout=TIMEOUT) for f in futures]


def read_n(counter):
    return counter.n


def read_first(items):
    return items[0].n


def is_handle(x):
    return isinstance(x, Actor)


def task_worker(x=None):
    return current_task().worker


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make_counter(client, *args, **kwargs):
    future = client.submit(Counter, *args, actor=True, **kwargs)
    return future, future.result(timeout=TIMEOUT)


def holder(client, future) -> str:
    [worker] = client.who_has(future)[future.key]
    return worker


# --------------------------------------------------------------------------
# the same tests on every backend
# --------------------------------------------------------------------------


def test_submit_actor_gives_a_handle(client):
    future, counter = make_counter(client)
    assert isinstance(counter, Actor)
    assert future.key.startswith("Counter-") and counter.key == future.key
    assert re.fullmatch(r"<Actor: Counter, key=Counter-[0-9a-f]+>", repr(counter))
    assert client.gather([future])[0].key == future.key  # gather gives a handle too
    assert "increment" in dir(counter)


def test_actor_keys_are_never_shared(client):
    a = client.submit(Counter, actor=True)
    b = client.submit(Counter, actors=True)  # dask's other spelling
    assert a.key != b.key
    ha, hb = a.result(timeout=TIMEOUT), b.result(timeout=TIMEOUT)
    ha.increment(5).result(timeout=TIMEOUT)
    assert (ha.n, hb.n) == (5, 0)


def test_method_calls_give_actor_futures(client):
    _, counter = make_counter(client)
    f = counter.increment()
    assert isinstance(f, ActorFuture) and repr(f) == "<ActorFuture>"
    assert f.result(timeout=TIMEOUT) == 1
    assert f.done() and f.exception(timeout=TIMEOUT) is None
    assert f.result(timeout=TIMEOUT) == 1  # again: the same answer
    assert counter.increment(5).result(timeout=TIMEOUT) == 6
    assert counter.increment(by=4).result(timeout=TIMEOUT) == 10


def test_attribute_reads_block_and_return_the_value(client):
    _, counter = make_counter(client, 7)
    assert counter.n == 7
    counter.increment().result(timeout=TIMEOUT)
    assert counter.n == 8
    assert counter.log == []
    counter.remember({"a": [1, 2]}).result(timeout=TIMEOUT)
    assert counter.note == {"a": [1, 2]}  # an attribute made after the actor was


def test_constructor_arguments_and_futures_as_arguments(client):
    start = client.submit(inc, 41)
    future = client.submit(Counter, start, actor=True)
    counter = future.result(timeout=TIMEOUT)
    assert counter.n == 42


def test_many_concurrent_calls_run_one_at_a_time_in_arrival_order(client):
    _, counter = make_counter(client)
    n = 200
    futures = [counter.increment() for _ in range(n)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == list(range(1, n + 1))
    records = [counter.record(i) for i in range(50)]  # fire and forget, then read back
    assert records[-1].result(timeout=TIMEOUT) == 50
    assert counter.log == list(range(50))


def test_concurrent_calls_from_several_tasks_each_see_their_own_order(client, workers):
    _, counter = make_counter(client)
    tasks = [client.submit(burst, counter, 25, workers=[workers[i % 2]], pure=False) for i in range(4)]
    seen = [t.result(timeout=TIMEOUT) for t in tasks]
    for results in seen:
        assert results == sorted(results)  # one caller's calls run in its order
    assert sorted(r for results in seen for r in results) == list(range(1, 101))  # none lost, none twice
    assert counter.n == 100


def test_a_method_that_raises_fails_its_future_and_the_actor_lives_on(client):
    _, counter = make_counter(client)
    f = counter.fail("boom")
    with pytest.raises(CustomError, match="boom") as info:
        f.result(timeout=TIMEOUT)
    assert "fail" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert isinstance(f.exception(timeout=TIMEOUT), CustomError) and f.done()
    assert counter.increment().result(timeout=TIMEOUT) == 1


def test_missing_attributes_raise_attribute_error_naming_class_and_name(client):
    _, counter = make_counter(client)
    with pytest.raises(AttributeError, match=r"'Counter'.*'nonexistent'"):
        counter.nonexistent(1)
    with pytest.raises(AttributeError, match=r"'Counter'.*'missing'"):
        counter.missing
    assert getattr(counter, "_private", None) is None  # underscore names: no round trip
    assert getattr(counter, "nbytes", None) is None
    assert not hasattr(counter, "__array__")
    assert counter.increment().result(timeout=TIMEOUT) == 1  # still serving


def test_handles_pass_into_tasks(client, workers):
    future, counter = make_counter(client)
    w = holder(client, future)
    other = next(x for x in workers if x != w)
    assert client.submit(use_counter, counter, 3, workers=[w], pure=False).result(timeout=TIMEOUT) == [1, 2, 3]
    assert client.submit(use_counter, counter, 2, workers=[other], pure=False).result(timeout=TIMEOUT) == [4, 5]
    assert client.submit(read_first, [counter], pure=False).result(timeout=TIMEOUT) == 5  # nested in a list
    assert counter.n == 5


def test_actor_futures_as_dependencies_become_handles(client, workers):
    future, counter = make_counter(client)
    w = holder(client, future)
    other = next(x for x in workers if x != w)
    assert client.submit(is_handle, future).result(timeout=TIMEOUT) is True
    here = client.submit(use_counter, future, 2, workers=[w], pure=False)
    assert here.result(timeout=TIMEOUT) == [1, 2]
    there = client.submit(use_counter, future, 2, workers=[other], pure=False)  # looks the actor up
    assert there.result(timeout=TIMEOUT) == [3, 4]
    assert client.submit(read_n, future, workers=[other], pure=False).result(timeout=TIMEOUT) == 4


def test_map_with_actor_true(client):
    futures = client.map(Counter, [0, 10, 20], actor=True)
    assert len({f.key for f in futures}) == 3
    counters = client.gather(futures)
    assert all(isinstance(c, Actor) for c in counters)
    assert [c.increment().result(timeout=TIMEOUT) for c in counters] == [1, 11, 21]
    assert [c.n for c in counters] == [1, 11, 21]


def test_methods_run_on_the_actors_worker_and_can_use_the_cluster(client):
    future, counter = make_counter(client)
    assert counter.where().result(timeout=TIMEOUT) == holder(client, future)
    assert counter.inc_on_the_cluster(41).result(timeout=TIMEOUT) == 42


def test_a_released_actor_is_gone(client, cluster):
    future, counter = make_counter(client)
    stale = Actor("Counter", counter.key, holder(client, future), ("increment",))
    key = future.key
    del future, counter
    deadline = time.monotonic() + TIMEOUT
    while key in scheduler_keys(cluster) and time.monotonic() < deadline:
        if is_sim(cluster):
            cluster.run(cluster.now + 0.1)
        else:
            time.sleep(0.01)
    if is_sim(cluster):
        cluster.run(cluster.now + 0.1)  # the worker hears of it
    else:
        time.sleep(0.2)
    with client.as_current():
        with pytest.raises(ActorLost, match=r"Counter.*does not hold it"):
            stale.increment().result(timeout=TIMEOUT)


def test_the_counter_example_runs_unchanged(client):
    future = client.submit(Counter, actor=True)
    counter = future.result()
    assert repr(counter).startswith("<Actor: Counter, key=Counter-")
    future = counter.increment()
    assert repr(future) == "<ActorFuture>"
    assert future.result() == 1
    assert counter.n == 1


def test_the_parameter_server_example_runs_unchanged(client):
    np = pytest.importorskip("numpy")
    ps_future = client.submit(ParameterServer, actor=True)
    ps = ps_future.result()
    rng = np.random.default_rng(0)
    ps.put("parameters", rng.random(1000))
    means = []
    for k in range(20):
        params = ps.get("parameters").result()
        new_params = train(params)
        ps.put("parameters", new_params)
        means.append(new_params.mean())
    start = 1 - (1 - ps.get("parameters").result()) / 0.8**20  # undo 20 steps of (p - 1) * 0.8
    assert np.allclose(means, [1 - (1 - start.mean()) * 0.8 ** (k + 1) for k in range(20)])
    assert means[-1] > 0.99


def test_actor_future_timeout(client, cluster):
    if is_sim(cluster):
        pytest.skip("a method cannot sleep in real time on the simulator (see test_sim_call_timeout)")
    _, counter = make_counter(client)
    f = counter.hold(1.0)
    with pytest.raises(TwofoldTimeoutError, match="Counter.hold"):
        f.result(timeout=0.05)
    assert not f.done()
    assert f.result(timeout=TIMEOUT) == 0


def test_await_an_actor_future(client, cluster):
    if is_sim(cluster):
        pytest.skip("the simulator has no event loop to await on")
    _, counter = make_counter(client)

    async def main():
        return await counter.increment(), await counter.increment(2)

    assert asyncio.run(main()) == (1, 3)


def test_calls_from_several_threads(client, cluster):
    if is_sim(cluster):
        pytest.skip("a simulated cluster is driven from one thread")
    _, counter = make_counter(client)
    seen: list[list[int]] = [[] for _ in range(4)]

    def calls(i):
        for _ in range(50):
            seen[i].append(counter.increment().result(timeout=TIMEOUT))

    threads = [threading.Thread(target=calls, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert all(results == sorted(results) and len(results) == 50 for results in seen)
    assert sorted(r for results in seen for r in results) == list(range(1, 201))


def test_a_result_that_cannot_be_pickled_is_a_clear_error(client, backend):
    if backend != "processes":
        pytest.skip("only a worker process must pickle a result (threads and the simulator hand it over)")
    _, counter = make_counter(client)
    with pytest.raises(TypeError, match=r"make_lock\(\) on actor 'Counter-[0-9a-f]+' cannot be sent"):
        counter.make_lock().result(timeout=TIMEOUT)
    with pytest.raises(TypeError):
        counter.increment(threading.Lock())  # arguments are pickled at the call, in the caller's thread
    assert counter.increment().result(timeout=TIMEOUT) == 1


# --------------------------------------------------------------------------
# simulator only: exact virtual times, crashes, determinism
# --------------------------------------------------------------------------


def sim_cluster(**kw):
    kw.setdefault("validate", True)
    return SimCluster(n_workers=2, threads_per_worker=1, seed=0, **kw)


def test_sim_a_call_is_a_hop_there_its_duration_and_a_hop_back():
    with sim_cluster(durations={"Counter.increment": 0.25}) as cluster:
        client = Client(cluster, set_as_default=False)
        _, counter = make_counter(client)
        t0 = cluster.now
        assert t0 == approx(4 * L + D)  # submit, compute, KeyInMemory (the handle rides inline)
        assert counter.increment().result() == 1
        assert cluster.now == approx(t0 + 2 * L + 0.25)
        t1 = cluster.now
        assert counter.n == 1  # a read takes the default duration
        assert cluster.now == approx(t1 + 2 * L + D)
        t2 = cluster.now
        futures = [counter.increment() for _ in range(4)]  # one after the other on the worker
        assert [f.result() for f in futures] == [2, 3, 4, 5]
        assert cluster.now == approx(t2 + 2 * L + 4 * 0.25)
        calls = cluster.records("actor")
        assert [c["method"] for c in calls] == ["increment", "n"] + ["increment"] * 4
        assert [c["stop"] - c["start"] for c in calls] == [approx(0.25), approx(D)] + [approx(0.25)] * 4
        client.close()


def test_sim_two_actors_on_one_worker_interleave():
    with sim_cluster(durations={"Counter.hold": 1.0}) as cluster:
        client = Client(cluster, set_as_default=False)
        w = cluster.workers[0]
        _, a = make_counter(client, workers=[w])
        _, b = make_counter(client, 100, workers=[w])
        t0 = cluster.now
        fa, fb = a.hold(0), b.hold(0)
        assert (fa.result(), fb.result()) == (0, 100)
        assert cluster.now == approx(t0 + 2 * L + 1.0)  # in parallel, not one after the other
        client.close()


def test_sim_call_timeout():
    with sim_cluster(durations={"Counter.hold": 10.0}) as cluster:
        client = Client(cluster, set_as_default=False)
        _, counter = make_counter(client)
        f = counter.hold(0)
        t0 = cluster.now
        with pytest.raises(TwofoldTimeoutError, match="Counter.hold"):
            f.result(timeout=1.0)
        assert cluster.now == approx(t0 + 1.0) and not f.done()
        assert f.result() == 0
        client.close()


def test_sim_worker_crash_mid_call_fails_the_call_in_flight_and_later_ones():
    with sim_cluster(durations={"Counter.hold": 2.0}) as cluster:
        client = Client(cluster, set_as_default=False)
        future, counter = make_counter(client)
        w = holder(client, future)
        t0 = cluster.now
        in_flight = counter.hold(0)
        queued = counter.increment()
        cluster.crash(w, at=t0 + 1.0)
        with pytest.raises(ActorLost, match=rf"'Counter'.*on worker {w}.*died \(crash\)") as info:
            in_flight.result(timeout=TIMEOUT)
        assert "Counter.hold" in str(info.value)
        assert cluster.now == approx(t0 + 1.0 + L)  # the connection breaks: one latency
        with pytest.raises(ActorLost, match="died"):
            queued.result(timeout=TIMEOUT)
        t1 = cluster.now
        later = counter.increment()
        with pytest.raises(ActorLost, match=rf"on worker {w}.*gone or unreachable"):
            later.result(timeout=TIMEOUT)
        assert cluster.now == approx(t1 + cluster._sim.network.connect_timeout)  # connecting times out
        with pytest.raises(ActorLost):
            counter.n
        client.close()


def test_sim_call_to_a_restarted_worker_fails():
    with sim_cluster() as cluster:
        client = Client(cluster, set_as_default=False)
        future, counter = make_counter(client)
        w = holder(client, future)
        assert counter.increment().result() == 1
        cluster.restart(w, at=cluster.now + 0.1)
        cluster.run(cluster.now + 1.0)  # back up, empty
        assert w in cluster.alive_workers
        with pytest.raises(ActorLost, match=rf"on worker {w}.*does not hold it"):
            counter.increment().result(timeout=TIMEOUT)
        client.close()


def test_sim_crash_while_a_task_waits_on_an_actor():
    with sim_cluster(durations={"Counter.hold": 5.0}) as cluster:
        client = Client(cluster, set_as_default=False)
        future, counter = make_counter(client)
        w = holder(client, future)
        other = next(x for x in cluster.workers if x != w)
        waiter = client.submit(use_counter, counter, 1, workers=[other], pure=False)
        counter.hold(0)  # the task's call queues behind this one
        cluster.crash(w, at=cluster.now + 1.0)
        with pytest.raises(ActorLost, match="died"):
            waiter.result(timeout=TIMEOUT)
        client.close()


def _scenario(seed):
    with SimCluster(n_workers=3, threads_per_worker=1, seed=seed, validate=True,
                    durations={"Counter.hold": Exponential(0.5)}) as cluster:  # fmt: skip
        client = Client(cluster, set_as_default=False)
        futures = client.map(Counter, [0, 10], actor=True)
        counters = client.gather(futures)
        tasks = [client.submit(burst, counters[i % 2], 5, pure=False) for i in range(4)]
        calls = [c.hold(0) for c in counters] + [c.increment() for c in counters]
        results = client.gather(tasks) + [f.result() for f in calls]
        cluster.crash(holder(client, futures[0]), at=cluster.now + 0.1)
        cluster.run(cluster.now + 0.2)
        lost = []
        for c in counters:
            try:
                lost.append(c.increment().result(timeout=TIMEOUT))
            except ActorLost as exc:
                lost.append(type(exc).__name__)
        client.close()
        return cluster.digest(), cluster.now, results, lost, len(cluster.records("actor"))


def test_sim_same_seed_same_digest():
    first = _scenario(3)
    assert first[4] > 20  # the actor calls are in the trace
    assert first[3][0] == "ActorLost"  # the first actor's worker crashed
    assert _scenario(3) == first
    assert _scenario(4)[0] != first[0]  # the calls' durations are drawn from the seed


def test_sim_same_digest_in_fresh_processes_under_any_hash_seed():
    here = os.path.dirname(os.path.abspath(__file__))
    program = "import json, test_actors; print(json.dumps(test_actors._scenario(3)))"
    runs = []
    for hashseed in ("0", "1"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=os.pathsep.join([here, *sys.path]))
        out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == json.loads(json.dumps(_scenario(3)))


# --------------------------------------------------------------------------
# runtime only: a worker process dies
# --------------------------------------------------------------------------


@pytest.mark.twofold_runtime_only("the actor SIGKILLs its worker process, which on the simulator is the test run's")
def test_runtime_worker_process_dies_mid_call():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        with Client(cluster, set_as_default=False) as client:
            future, counter = make_counter(client)
            assert counter.increment().result(timeout=TIMEOUT) == 1
            in_flight = counter.kill_my_process()
            queued = counter.increment()
            with pytest.raises(ActorLost, match=r"'Counter'.*on worker tcp://"):
                in_flight.result(timeout=TIMEOUT)
            with pytest.raises(ActorLost):
                queued.result(timeout=TIMEOUT)
            with pytest.raises(ActorLost):
                counter.increment().result(timeout=TIMEOUT)  # restarted or not: the instance is gone
