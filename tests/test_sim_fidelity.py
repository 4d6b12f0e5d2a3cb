"""The simulator does what the runtime does (issue 12, "simulator fidelity").

* Small results ride back with their completion by one rule
  (``WorkerConfig.rides_inline``) that both drivers follow: a simulated
  ``result()`` of a small value costs exactly the hops a real one does.
* ``SimCluster(serialize=True)``: arguments, results, scattered data and actor
  calls make the pickle round trip, failing the way the runtime fails.
* The network's arithmetic is one method (``Network.arrival``; ``noticed`` for a
  broken connection), overrides included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from twofold import Client, wait
from twofold.config import WorkerConfig
from twofold.errors import TwofoldError
from twofold.serialize import SerializationError
from twofold.sim import SimCluster

L = 0.01  # latency; bandwidth is infinite below, so every hop is exactly L
D = 0.5  # every task's duration


def small():
    return 42


def large():
    return bytes(100_000)  # over the 64 KiB inline limit


def ident(x):
    return x


def make_lock():
    return threading.Lock()


def make_generator():
    return (i for i in range(3))


def typename(x):
    return type(x).__name__


def numbers(n):
    return list(range(n))


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable():
    raise Unpicklable("no way back")


class Box:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)
        return len(self.items)


def exact(x):
    return pytest.approx(x, abs=1e-12)


def cluster(**kw):
    kw.setdefault("validate", True)
    return SimCluster(n_workers=1, threads_per_worker=1, latency=L, bandwidth=float("inf"), durations=D, **kw)


# --------------------------------------------------------------------------
# the inline rule
# --------------------------------------------------------------------------


def test_the_rule_is_the_worker_configs():
    config = WorkerConfig()
    assert config.inline_result_limit == 64 * 1024
    assert config.rides_inline(64 * 1024) and not config.rides_inline(64 * 1024 + 1)
    assert not WorkerConfig(inline_result_limit=-1).rides_inline(0)


def test_the_runtime_worker_asks_the_same_rule():
    from twofold.runtime.execution import describe_result

    assert describe_result(42, WorkerConfig().rides_inline)[2] is not None
    assert describe_result(42, WorkerConfig(inline_result_limit=1).rides_inline)[2] is None
    assert describe_result(bytes(100_000), WorkerConfig().rides_inline)[2] is None


@pytest.mark.parametrize("serialize", [False, True])
def test_a_small_result_costs_two_round_trips_fewer_than_a_large_one(serialize):
    # submit: client->scheduler->worker (2L), D of work, worker->scheduler->client (2L);
    # a large result is then fetched: who_has (client<->scheduler, 2L) and the data
    # (client<->worker, 2L); a small one came with the completion
    with cluster(serialize=serialize) as c, Client(c) as client:
        assert client.submit(small).result() == 42
        assert c.now == exact(4 * L + D)
        t = c.now
        assert client.submit(large).result() == bytes(100_000)
        assert c.now - t == exact(8 * L + D)


def test_the_configured_limit_decides_in_the_simulator():
    with cluster(worker_config={"inline_result_limit": -1}) as c, Client(c) as client:
        assert client.submit(small).result() == 42
        assert c.now == exact(8 * L + D)  # nothing rides inline: fetched like a large result


def test_gather_of_small_results_fetches_nothing_and_is_correct():
    with cluster() as c, Client(c) as client:
        fs = client.map(ident, range(5))
        wait(fs)
        t = c.now
        assert client.gather(fs) == list(range(5))
        assert c.now == t  # every value came with its completion
        big = client.submit(large)
        assert client.gather([big, *fs]) == [bytes(100_000), *range(5)]


def test_an_inline_result_pays_its_bytes_on_the_completion_hops():
    # 1 MB/s: the completion carries the result on both hops (worker->scheduler->client)
    with SimCluster(n_workers=1, latency=L, bandwidth=1e6, durations=D, validate=True) as c, Client(c) as client:
        f = client.submit(numbers, 10)
        assert f.result() == list(range(10))
        nbytes = c.scheduler.tasks[f.key].nbytes
        spec = len(c.scheduler.tasks[f.key].run_spec)
        # (the client's graph message is sized as a control message; the ComputeTask carries the spec)
        assert c.now == exact(4 * L + D + (4 * 200 + 2 * nbytes + spec) / 1e6)


# --------------------------------------------------------------------------
# serialize=True
# --------------------------------------------------------------------------


def test_serialize_must_be_a_bool():
    with pytest.raises(TypeError, match="serialize= must be True or False"):
        SimCluster(serialize="yes")


def test_unpicklable_arguments_fail_at_submit_and_map_as_on_the_runtime():
    from twofold.runtime.execution import RunSpecEncoder

    lock = threading.Lock()
    with pytest.raises(SerializationError) as runtime:
        RunSpecEncoder().encode(ident, (lock,), {})  # what the runtime's client does
    with cluster(serialize=True) as c, Client(c) as client:
        with pytest.raises(SerializationError) as sim:
            client.submit(ident, lock)
        assert str(sim.value) == str(runtime.value)
        with pytest.raises(SerializationError, match="cannot pickle '_thread.lock'"):
            client.map(ident, [1, lock])
        sock = socket.socket()
        try:
            with pytest.raises(SerializationError, match="socket"):
                client.submit(lambda: sock.fileno())
        finally:
            sock.close()
        assert client.submit(lambda x: x + 1, 1).result() == 2  # a lambda itself is fine (cloudpickle)


def test_unpicklable_arguments_fail_the_same_way_on_a_local_cluster():
    from twofold.runtime import LocalCluster

    lock = threading.Lock()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as lc, Client(lc) as rc:
        with pytest.raises(SerializationError) as runtime:
            rc.submit(ident, lock)
    with cluster(serialize=True) as c, Client(c) as client:
        with pytest.raises(SerializationError) as sim:
            client.submit(ident, lock)
    assert (type(sim.value), str(sim.value)) == (type(runtime.value), str(runtime.value))


def test_without_serialize_the_simulator_passes_objects_by_reference():
    lock = threading.Lock()
    with cluster() as c, Client(c) as client:
        assert client.submit(ident, lock).result() is lock


@pytest.mark.parametrize("make, what", [(make_lock, "lock"), (make_generator, "generator")])
def test_an_unpicklable_result_stays_on_its_worker_and_cannot_be_fetched(make, what):
    with cluster(serialize=True) as c, Client(c) as client:
        f = client.submit(make)
        wait(f)
        assert f.status == "finished"  # it ran; only sending it fails, as on the runtime
        message = (f"the result of {f.key!r} cannot be sent from its worker: SerializationError: "
                   f"cannot serialize an object of type {what!r}")
        with pytest.raises(SerializationError) as info:
            f.result()
        assert str(info.value).startswith(message)
        with pytest.raises(SerializationError):
            client.gather([f])
        # a task on the same worker can still use it (no crossing)
        assert client.submit(typename, f).result() == type(make()).__name__


def test_results_are_copies_sized_from_their_bytes():
    from twofold import serialize

    with cluster(serialize=True) as c, Client(c) as client:
        f = client.submit(numbers, 1000)
        value = f.result()
        assert value == list(range(1000))
        host = c._sim.workers["worker-0"]
        assert value is not host.store[f.key]
        assert c.scheduler.tasks[f.key].nbytes == serialize.frames_nbytes(serialize.dumps(value)[1])
        g = client.submit(large)
        assert g.result() == bytes(100_000)
        assert c.scheduler.tasks[g.key].nbytes == 100_000


def test_scatter_ships_a_copy_and_refuses_what_cannot_be_pickled():
    with cluster(serialize=True) as c, Client(c) as client:
        data = [1, 2, 3]
        [f] = client.scatter([data])
        data.append(4)  # the worker has its own copy
        assert f.result() == [1, 2, 3]
        with pytest.raises(SerializationError, match="cannot serialize an object of type 'lock'"):
            client.scatter(threading.Lock())


def test_an_unpicklable_exception_comes_back_by_name_and_message():
    with cluster(serialize=True) as c, Client(c) as client:
        f = client.submit(raise_unpicklable)
        with pytest.raises(TwofoldError, match="no way back"):
            f.result()
    with cluster() as c, Client(c) as client:
        with pytest.raises(Unpicklable):  # by reference, the object itself
            client.submit(raise_unpicklable).result()


def test_actor_calls_pickle_their_arguments_and_replies():
    with cluster(serialize=True) as c, Client(c) as client:
        box = client.submit(Box, actor=True).result()
        items = [1]
        assert box.put(items).result() == 1
        items.append(2)
        assert c._sim.workers["worker-0"].actors.instances[box.key].items == [[1]]
        with pytest.raises(SerializationError):
            box.put(threading.Lock())


_DIGEST = """
import sys
from twofold import Client
from twofold.sim import SimCluster
sys.path.insert(0, {here!r})
from test_sim_fidelity import numbers, large
with SimCluster(n_workers=3, seed=7, serialize=True, chaos={{"delay": 0.3}}) as c, Client(c) as client:
    fs = client.map(numbers, range(30)) + [client.submit(large)]
    client.gather(fs)
    print(c.digest(), c.now)
"""


def test_serialized_inline_runs_are_deterministic_under_any_hash_seed():
    here = os.path.dirname(os.path.abspath(__file__))
    out = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        run = subprocess.run([sys.executable, "-c", _DIGEST.format(here=here)], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        out.add(run.stdout)
    assert len(out) == 1


# --------------------------------------------------------------------------
# the network's arithmetic, in one place
# --------------------------------------------------------------------------


def test_arrival_keeps_link_order_and_counts_bytes():
    with SimCluster(n_workers=0, latency=0.01, bandwidth=1000.0) as c:
        net = c._sim.network
        first = net.arrival("a", "b", 1000)  # 0.01 + 1 s
        second = net.arrival("a", "b", 0)  # would arrive at 0.01: waits behind the first
        other = net.arrival("b", "a", 0)  # another link: free
        assert (first, second, other) == (exact(1.01), exact(1.01), exact(0.01))
        assert net.bytes_moved == 1000


def test_a_crash_is_noticed_after_the_links_own_latency():
    links = {("worker-0", "sim://fid-links"): (0.05, 1e9)}
    with SimCluster(n_workers=2, threads_per_worker=1, durations=1.0, links=links, name="fid-links",
                    scheduler_config={"steal_interval": 0}) as c, Client(c) as client:
        c.run(0.1)  # worker-0's registration crosses its slow link first
        f = client.submit(ident, 1, workers=["worker-0"], allow_other_workers=True, key="victim")
        c.crash("worker-0", at=0.5)
        assert f.result() == 1
        [rec] = [r for r in c.records("task") if r["key"] == "victim"]
        # noticed 0.05 after the crash (worker-0's link), sent to worker-1 one default latency later
        assert rec["worker"] == "worker-1"
        assert rec["start"] == pytest.approx(0.5 + 0.05 + 0.001, abs=1e-6)
