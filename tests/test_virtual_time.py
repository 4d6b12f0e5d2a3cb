"""The program on the simulation's clock: time.sleep / time.time / Event.wait in tasks and the client's thread.

What the simulator promises (``twofold.sim.virtual_time``): inside a task,
``time.sleep`` suspends the task on virtual time while the rest of the
cluster goes on, and the clocks read virtual time (``time.time()`` from the
cluster's fixed ``epoch``); everywhere else the ``time`` module is the real
one, and it is restored when the last cluster closes.
"""

from __future__ import annotations

import concurrent.futures
import queue
import subprocess
import sys
import threading
import time

import pytest

from twofold import Client, as_completed
from twofold.sim import SimCluster
from twofold.sim import virtual_time as vt
from twofold.sim.cluster import DEFAULT_EPOCH


def stamped_nap(seconds):
    """Sleep ``seconds`` and say when (wall clock and monotonic) it started and ended."""
    t0, m0 = time.time(), time.monotonic()
    time.sleep(seconds)
    return t0, time.time(), time.monotonic() - m0


def perf_elapsed(seconds):
    p0 = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - p0, time.perf_counter_ns() // 1_000_000


def real_thread_time():
    """What a thread that a task starts sees: the real clock."""
    out = []
    t = threading.Thread(target=lambda: out.append(time.time()))
    t.start()
    t.join()
    return out[0]


def busy_wait(seconds):
    """Spins on the clock, as CPU-bound code with a deadline does."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def real_nap(seconds):
    vt._REAL["sleep"](seconds)


def bad_sleep(x):
    time.sleep(x)


_EVENTS: dict[str, threading.Event] = {}
_QUEUES: dict[str, "queue.Queue"] = {}


def wait_for_event(name, timeout):
    """Waits (virtually) for an event another task sets; says when it stopped waiting."""
    got = _EVENTS[name].wait(timeout)
    return got, time.monotonic()


def set_event_after(name, seconds):
    time.sleep(seconds)
    _EVENTS[name].set()
    return time.monotonic()


def consume(name, timeout):
    """Takes one item off a queue another task fills, or says it timed out and when."""
    try:
        return _QUEUES[name].get(timeout=timeout), time.monotonic()
    except queue.Empty:
        return "empty", time.monotonic()


def produce(name, seconds, item):
    time.sleep(seconds)
    _QUEUES[name].put(item)


def untimed_wait(name):
    _EVENTS[name].wait()
    return time.monotonic()


@pytest.fixture
def cluster():
    c = SimCluster(n_workers=2, threads_per_worker=1, durations=0.0, validate=True, virtual_time=True)
    yield c
    c.close()


def test_a_task_sleeps_on_virtual_time_and_overlapping_tasks_overlap(cluster):
    client = Client(cluster, set_as_default=False)
    wall = vt._REAL["perf_counter"]()
    runs = client.gather(client.map(stamped_nap, [10, 10, 10, 10], pure=False))
    assert vt._REAL["perf_counter"]() - wall < 2.0  # 20 virtual seconds, no wall time to speak of
    starts = sorted(r[0] - DEFAULT_EPOCH for r in runs)
    # two one-thread workers: two naps start together, the next two when those end
    assert starts[0] == pytest.approx(starts[1], abs=1e-6)
    assert starts[2] == pytest.approx(starts[0] + 10, abs=0.01)
    assert all(r[2] == pytest.approx(10.0, abs=1e-4) for r in runs)  # monotonic inside the task
    assert all(r[1] - r[0] == pytest.approx(10.0, abs=1e-4) for r in runs)  # time.time inside the task
    assert cluster.now == pytest.approx(20.0, abs=0.05)


def test_a_task_that_busy_waits_on_the_clock_ends_and_is_charged_for_it(cluster):
    client = Client(cluster, set_as_default=False)
    wall = vt._REAL["perf_counter"]()
    n = client.submit(busy_wait, 0.2, pure=False).result()
    assert n == pytest.approx(0.2 / vt.READ_COST, rel=0.01)  # each read costs READ_COST virtual seconds
    assert cluster.now == pytest.approx(0.2, abs=0.01)  # the spin is in the task's virtual duration
    assert vt._REAL["perf_counter"]() - wall < 10.0


def test_perf_counter_and_ns_forms_are_virtual_in_tasks(cluster):
    client = Client(cluster, set_as_default=False)
    elapsed, ms = client.submit(perf_elapsed, 2.5).result()
    assert elapsed == pytest.approx(2.5, abs=1e-4)  # (plus the reads' READ_COST)
    assert ms == pytest.approx(cluster.now * 1000, abs=50)


def test_sleep_heavy_work_takes_wall_time_independent_of_the_sleeps():
    cluster = SimCluster(n_workers=2, threads_per_worker=1, durations=0.0, virtual_time=True)  # (not validated: 10k tasks)
    client = Client(cluster, set_as_default=False)
    wall = vt._REAL["perf_counter"]()
    n = 10_000
    futures = client.map(stamped_nap, [1.0] * n, pure=False)
    client.gather(futures)
    assert cluster.now == pytest.approx(n / 2, rel=0.01)  # 2 threads, 1 virtual second each
    assert vt._REAL["perf_counter"]() - wall < 30.0  # (about 1.5 s here: the naps cost nothing)
    cluster.close()


def test_other_threads_and_a_tasks_own_thread_keep_real_time(cluster):
    client = Client(cluster, set_as_default=False)
    seen = client.submit(real_thread_time).result()
    assert seen > 1.7e9 and abs(seen - vt._REAL["time"]()) < 5.0  # a thread a task started: real clock
    out = []
    t = threading.Thread(target=lambda: out.append((time.time(), time.monotonic())))
    t.start()
    t.join()
    assert abs(out[0][0] - vt._REAL["time"]()) < 5.0 and abs(out[0][1] - vt._REAL["monotonic"]()) < 5.0


def test_the_clients_thread_reads_virtual_time_and_its_sleeps_run_the_simulation(cluster):
    client = Client(cluster, set_as_default=False)
    assert time.time() == pytest.approx(DEFAULT_EPOCH + cluster.now)
    assert time.monotonic() == cluster.now
    f = client.submit(stamped_nap, 30, pure=False)
    wall = vt._REAL["perf_counter"]()
    polls = 0
    while not f.done():  # the polling loop a user writes: each sleep moves the simulation on
        time.sleep(0.5)
        polls += 1
    assert 59 <= polls <= 62 and cluster.now == pytest.approx(30.5, abs=0.6)
    assert vt._REAL["perf_counter"]() - wall < 5.0


def test_a_done_callback_fires_at_its_instant_during_the_clients_sleep(cluster):
    client = Client(cluster, set_as_default=False)
    when = []
    f = client.submit(stamped_nap, 20, pure=False)
    f.add_done_callback(lambda fut: when.append(cluster.now))
    time.sleep(60)  # nothing but a sleep: the simulation runs meanwhile, the callback fires in it
    assert when and when[0] == pytest.approx(20.0, abs=0.05)
    assert cluster.now == pytest.approx(60.0)


def test_timeouts_of_twofold_calls_are_virtual_seconds(cluster):
    from twofold.errors import TimeoutError as TwofoldTimeoutError

    client = Client(cluster, set_as_default=False)
    f = client.submit(stamped_nap, 60, pure=False)
    wall = vt._REAL["perf_counter"]()
    with pytest.raises(TwofoldTimeoutError):
        f.result(timeout=5)
    assert cluster.now == pytest.approx(5.0, abs=0.05)
    assert f.result(timeout=100)[2] == pytest.approx(60.0)
    assert vt._REAL["perf_counter"]() - wall < 5.0


def test_a_plain_asyncio_loop_keeps_real_time_next_to_a_virtual_cluster(cluster):
    import asyncio

    async def nap():
        t0 = vt._REAL["monotonic"]()
        await asyncio.sleep(0.05)
        return vt._REAL["monotonic"]() - t0, asyncio.get_running_loop().time()

    slept, loop_time = asyncio.run(asyncio.wait_for(nap(), 10))
    assert 0.04 <= slept < 5 and abs(loop_time - vt._REAL["monotonic"]()) < 5

    async def with_client():  # an async client there: its awaits run the simulation inline
        client = await Client(cluster, asynchronous=True, set_as_default=False)
        value = await client.submit(stamped_nap, 3, pure=False)
        await client.close()
        return value

    assert asyncio.run(with_client())[2] == pytest.approx(3.0, abs=1e-3)
    assert cluster.now == pytest.approx(3.0, abs=0.05)


def test_off_by_default():
    with SimCluster(n_workers=1, durations=0.0) as c:
        _, _, slept = Client(c, set_as_default=False).submit(stamped_nap, 0.02).result()
        assert slept >= 0.015 and c.now < 0.02


def test_epoch_and_virtual_time_false():
    with SimCluster(n_workers=1, epoch=1000.0, durations=0.0, virtual_time=True) as c:
        t0, t1, _ = Client(c, set_as_default=False).submit(stamped_nap, 3).result()
        assert t0 == pytest.approx(1000.0, abs=0.01) and t1 == pytest.approx(1003.0, abs=0.01)
    with SimCluster(n_workers=1, virtual_time=False, durations=0.0) as c:
        t0, t1, slept = Client(c, set_as_default=False).submit(stamped_nap, 0.05).result()
        assert slept >= 0.04 and abs(t0 - vt._REAL["time"]()) < 60  # real time
        assert c.now < 0.05  # the nap took no virtual time


def test_bad_arguments_raise_as_time_sleep_does(cluster):
    client = Client(cluster, set_as_default=False)
    with pytest.raises(ValueError, match="non-negative"):
        client.submit(bad_sleep, -1).result()
    with pytest.raises(TypeError):
        client.submit(bad_sleep, "1").result()
    with pytest.raises(TypeError, match="virtual_time"):
        SimCluster(n_workers=1, virtual_time="yes")


def test_the_time_module_is_restored_when_the_last_cluster_closes():
    real = vt._REAL["sleep"]
    a = SimCluster(n_workers=1, durations=0.0, virtual_time=True)
    b = SimCluster(n_workers=1, durations=0.0, virtual_time=True)
    assert time.sleep is not real
    a.close()
    assert time.sleep is not real  # b still open
    b.close()
    assert time.sleep is real and time.monotonic is vt._REAL["monotonic"]
    from asyncio import base_events

    assert base_events.BaseEventLoop.time is not vt._real_loop_time  # asyncio's own clock given back
    c = SimCluster(n_workers=1, durations=0.0, virtual_time=True)
    del c  # dropped unclosed: restored too
    import gc

    gc.collect()
    assert time.sleep is real


def test_completion_order_follows_the_virtual_sleeps(cluster):
    client = Client(cluster, set_as_default=False)
    futures = client.map(stamped_nap, [5, 1, 3], pure=False)
    order = [futures.index(f) for f in as_completed(futures)]
    # two one-thread workers: the 1 s nap ends at t=1, the 3 s one then runs there and ends at
    # t=4, before the 5 s nap that started at t=0
    assert order == [1, 2, 0]


_PROGRAM = """
import queue, threading, time
from twofold import Client
from twofold.sim import SimCluster
EVENTS = {i: threading.Event() for i in range(30)}
Q = queue.Queue()
def nap(i):
    time.sleep(i % 3 + 0.5)
    if i % 2:
        EVENTS[i].wait(timeout=i % 5)  # another task sets some of them
    else:
        EVENTS[i + 1].set()
        Q.put(i)
    return time.time(), time.monotonic(), {str(i): i}
def drain():
    got = []
    while True:
        try:
            got.append(Q.get(timeout=2))
        except queue.Empty:
            return got, time.monotonic()
c = SimCluster(n_workers=3, threads_per_worker=2, seed=7, virtual_time=True,
               chaos={"crash": 0.02, "delay": 0.1})
client = Client(c)
fired = []
futures = client.map(nap, range(30))
for f in futures:
    f.add_done_callback(lambda f: fired.append((f.key, round(c.now, 9))))
drained = client.submit(drain, pure=False)
while not all(f.done() for f in futures):  # a polling loop
    time.sleep(0.25)
done = threading.Event()
drained.add_done_callback(lambda f: done.set())
done.wait(timeout=600)
out = client.gather(futures)
print(repr([round(t, 9) for t, m, d in out]), drained.result(), fired, c.now, c.digest())
"""


def test_same_program_same_seed_same_run_in_fresh_processes_under_any_hash_seed():
    outs = set()
    for hashseed in ("0", "1", "12345"):
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        outs.add(done.stdout)
    assert len(outs) == 1


def test_a_real_clusters_client_keeps_real_seconds_next_to_a_virtual_cluster(cluster):
    from twofold import LocalCluster
    from twofold.errors import TimeoutError as TwofoldTimeoutError

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as real:
        client = Client(real, set_as_default=False)
        try:
            assert client.submit(sum, [1, 2]).result(timeout=30) == 3
            f = client.submit(real_nap, 5)
            t0 = vt._REAL["monotonic"]()
            with pytest.raises(TwofoldTimeoutError):
                f.result(timeout=0.2)  # real seconds: neither at once nor after the task
            assert 0.15 <= vt._REAL["monotonic"]() - t0 < 4
            client.cancel(f)
        finally:
            client.close()
    assert cluster.now == 0.0  # nothing of that moved the simulation


def test_an_event_wait_in_a_task_is_virtual_and_another_task_sets_it(cluster):
    client = Client(cluster, set_as_default=False)
    _EVENTS["e1"] = threading.Event()
    waiter = client.submit(wait_for_event, "e1", 100, pure=False)
    setter = client.submit(set_event_after, "e1", 7, pure=False)
    wall = vt._REAL["perf_counter"]()
    got, woke = waiter.result(timeout=200)
    assert got is True and woke == pytest.approx(setter.result(), abs=1e-3)
    assert woke == pytest.approx(7.0, abs=0.05)
    assert vt._REAL["perf_counter"]() - wall < 2.0  # no real second was waited


def test_an_event_wait_in_a_task_times_out_on_virtual_time(cluster):
    client = Client(cluster, set_as_default=False)
    _EVENTS["e2"] = threading.Event()
    f = client.submit(wait_for_event, "e2", 40, pure=False)
    got, woke = f.result(timeout=100)
    assert got is False and woke == pytest.approx(40.0, abs=0.05)


def test_an_untimed_event_wait_in_a_task_suspends_it_until_set(cluster):
    client = Client(cluster, set_as_default=False)
    _EVENTS["e3"] = threading.Event()
    waiter = client.submit(untimed_wait, "e3", pure=False)
    client.submit(set_event_after, "e3", 3, pure=False)
    assert waiter.result(timeout=100) == pytest.approx(3.0, abs=0.05)


def test_a_queue_between_tasks_is_virtual_both_when_fed_and_when_it_times_out(cluster):
    client = Client(cluster, set_as_default=False)
    _QUEUES["q1"] = queue.Queue()
    fed = client.submit(consume, "q1", 30, pure=False)
    client.submit(produce, "q1", 12, "item", pure=False)
    assert fed.result(timeout=100) == ("item", pytest.approx(12.0, abs=0.05))
    starved = client.submit(consume, "q1", 5, pure=False)
    item, when = starved.result(timeout=100)
    assert item == "empty" and when == pytest.approx(cluster.now, abs=0.05)
    assert when == pytest.approx(17.0, abs=0.1)


def test_the_clients_thread_waits_on_an_event_a_done_callback_sets(cluster):
    """The issue's case: callback sets an Event, the client waits on it with a timeout."""
    client = Client(cluster, set_as_default=False)
    done = threading.Event()
    f = client.submit(stamped_nap, 25, pure=False)
    f.add_done_callback(lambda fut: done.set())
    wall = vt._REAL["perf_counter"]()
    assert done.wait(timeout=60) is True
    assert cluster.now == pytest.approx(25.0, abs=0.05)
    assert done.wait(timeout=1)  # set: no time passes
    assert vt._REAL["perf_counter"]() - wall < 2.0


def test_the_clients_timed_waits_that_nothing_ends_time_out_on_virtual_time(cluster):
    Client(cluster, set_as_default=False)
    t0 = cluster.now
    assert threading.Event().wait(timeout=30) is False
    assert cluster.now == pytest.approx(t0 + 30)
    with pytest.raises(queue.Empty):
        queue.Queue().get(timeout=10)
    assert cluster.now == pytest.approx(t0 + 40)
    pending = concurrent.futures.Future()
    with pytest.raises(concurrent.futures.TimeoutError):
        pending.result(timeout=5)
    assert cluster.now == pytest.approx(t0 + 45)
    sem = threading.Semaphore(0)
    assert sem.acquire(timeout=2) is False
    assert cluster.now == pytest.approx(t0 + 47)


def test_other_threads_and_real_time_blocks_keep_real_waits(cluster):
    from twofold.context import real_time

    Client(cluster, set_as_default=False)
    t0 = cluster.now
    ev = threading.Event()
    threading.Timer(0.05, ev.set).start()  # a real thread sets it
    with real_time():
        assert ev.wait(timeout=10) is True
    assert cluster.now == t0  # the simulation did not move
    seen = []
    other = threading.Thread(target=lambda: seen.append(threading.Event().wait(0.01)))
    other.start()
    other.join()  # untimed: real (Thread.start/join wait on events real threads set)
    assert seen == [False] and cluster.now == t0


def test_the_wait_patch_goes_when_the_last_cluster_closes():
    c = SimCluster(n_workers=1, virtual_time=True)
    assert threading.Condition.wait is vt.condition_wait
    c.close()
    assert threading.Condition.wait is vt._real_cond_wait
    assert queue.time is vt._REAL["monotonic"]


def pooled_square(x):
    """A task that hands work to a thread pool of its own (real threads) and waits for it."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        timed = pool.submit(pow, x, 2).result(timeout=30)
        untimed = pool.submit(pow, x, 3).result()
    return timed, untimed


def never_set(name):
    _EVENTS[name].wait()


def test_a_task_waiting_on_its_own_thread_pool_gets_the_result(cluster):
    client = Client(cluster, set_as_default=False)
    assert client.submit(pooled_square, 7).result(timeout=100) == (49, 343)
    assert cluster.now < 30  # the pool's result came, not the virtual timeout


def test_a_task_waiting_forever_stalls_the_run_instead_of_hanging(cluster):
    from twofold.errors import SimulationStalled

    client = Client(cluster, set_as_default=False)
    _EVENTS["never"] = threading.Event()
    wall = vt._REAL["perf_counter"]()
    with pytest.raises(SimulationStalled):
        client.submit(never_set, "never").result()
    assert vt._REAL["perf_counter"]() - wall < 20.0
