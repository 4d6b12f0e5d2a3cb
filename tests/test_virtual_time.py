"""The program on the simulation's clock: time.sleep / time.time / Event.wait in tasks and the client's thread.

What the simulator promises (``twofold.sim.virtual_time``): inside a task,
``time.sleep`` suspends the task on virtual time while the rest of the
cluster goes on, and the clocks read virtual time (``time.time()`` from the
cluster's fixed ``epoch``); everywhere else the ``time`` module is the real
one, and it is restored when the last cluster closes.
"""

from __future__ import annotations

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
import time
from twofold import Client
from twofold.sim import SimCluster
def nap(i):
    time.sleep(i % 3 + 0.5)
    return time.time(), time.monotonic(), {str(i): i}
c = SimCluster(n_workers=3, threads_per_worker=2, seed=7, virtual_time=True)
client = Client(c)
out = client.gather(client.map(nap, range(30)))
print(repr([round(t, 9) for t, m, d in out]), c.now, c.digest())
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
