"""The asynchronous Client (``Client(cluster, asynchronous=True)``), on every backend.

dask.distributed's contract: ``submit``/``map`` still return Futures at once;
everything that talks to the cluster returns an awaitable (``await future``,
``await client.gather(...)``, ``await wait(...)``, ``async for`` over
``as_completed``, the coordination primitives, actor calls).

Each common test runs three times, with the backends and fixtures of
``test_client_api.py`` (read its docstring: ``sim`` is a fresh validated
``SimCluster`` per test, ``threads``/``processes`` are module-scoped
``LocalCluster``\\ s of 2 workers x 1 thread; ``gated`` tasks wait for a
file on the runtime and take ``GATED_SIM_SECONDS`` virtual seconds on the
simulator).  A test's body is a coroutine ``main()``; :func:`run` runs it
with ``twofold.sim.run`` on the simulator (an event loop whose clock is
the simulation's, so timeouts and sleeps are virtual there) and with
``asyncio.run`` on the runtime (the user's own loop).  No pytest-asyncio.

Every await expected to succeed is bounded (:func:`w`: ``asyncio.wait_for``
with ``TIMEOUT``), the whole coroutine is bounded too, and a watchdog dumps
every thread's stack and exits if a test still hangs after ``WATCHDOG`` s.

The last sections are the simulator's virtual-time loop (sim only) and an
async client next to a sync one (runtime only).

The module is skipped while ``Client`` is not awaitable (the asynchronous
client not landed yet), so that main stays green.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import re
import time

import pytest

from twofold import CancelledError, Client, Future

if not hasattr(Client, "__await__"):
    pytest.skip("the asynchronous Client has not landed yet (Client is not awaitable)", allow_module_level=True)

import twofold.sim  # noqa: E402
from twofold import Event, Lock, Queue, Semaphore, Variable, as_completed, wait  # noqa: E402
from twofold.client.future import FIRST_COMPLETED  # noqa: E402
from twofold.errors import TimeoutError as TwofoldTimeoutError  # noqa: E402
from twofold.sim import SimCluster  # noqa: E402

from async_support import Counter, blob, submit_from_a_coroutine  # noqa: E402
from client_support import CustomError, add, div, inc, raise_custom  # noqa: E402
from task_context_support import count_workers, worker_address  # noqa: E402
from test_client_api import (  # noqa: E402,F401 - backend_cluster, backend, cluster, gates: fixtures
    GATED_SIM_SECONDS,
    RESOURCES,
    TIMEOUT,
    WATCHDOG,
    backend,
    backend_cluster,
    cluster,
    flaky,
    gated,
    gates,
    is_sim,
    lines,
    log_call,
    scheduler_keys,
    task_states,
)

#: the timeout of an await expected to time out (seconds; virtual on the simulator)
SHORT = 0.2
#: the bound of a whole test coroutine
OVERALL = 60.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run(backend: str, coro_fn, *args):
    """Run ``coro_fn(*args)``: on the simulation's clock on ``sim``, on a fresh asyncio loop otherwise."""

    async def bounded():
        return await asyncio.wait_for(coro_fn(*args), OVERALL)

    if backend == "sim":
        return twofold.sim.run(bounded())
    return asyncio.run(bounded())


def w(aw, timeout: float = TIMEOUT):
    """An await expected to succeed, bounded."""
    return asyncio.wait_for(aw, timeout)


def aclient(cluster, **kw) -> Client:
    return Client(cluster, asynchronous=True, set_as_default=False, **kw)


async def until(predicate, what: str, timeout: float = 10.0):
    """Until ``predicate()`` holds, sleeping on the running loop (virtual time on the simulator)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    value = predicate()
    assert value, f"timed out after {timeout} s waiting for {what}"
    return value


@pytest.fixture(autouse=True)
def guard(request, gates):
    """Watchdog; afterwards open every gate and let the runtime cluster drain before the next test."""
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    cluster = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    try:
        yield
    finally:
        gates.open_all()
        if cluster is not None and not is_sim(cluster):
            deadline = time.monotonic() + 10
            while scheduler_keys(cluster) and time.monotonic() < deadline:
                time.sleep(0.01)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def workers(cluster):
    return sorted(cluster.workers)


@pytest.fixture
def name(request):
    """Unique per test and backend (the runtime clusters' schedulers live for the whole module)."""
    return re.sub(r"\W", "_", request.node.name)


# --------------------------------------------------------------------------
# making and closing the client
# --------------------------------------------------------------------------


def test_await_client_then_close(backend, cluster):
    async def main():
        client = await w(aclient(cluster))
        assert isinstance(client, Client)
        assert client.asynchronous is True
        assert client.status == "running"
        f = client.submit(inc, 1)
        assert isinstance(f, Future)  # not a coroutine: submit returns at once, as dask's
        assert await w(f) == 2
        await w(client.close())
        assert client.status == "closed"
        with pytest.raises(RuntimeError):
            client.submit(inc, 2)

    run(backend, main)


def test_async_with_client_cancels_pending_futures_on_exit(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            assert client.asynchronous is True and client.status == "running"
            done = client.submit(inc, 1, key="acm-done")
            assert await w(done) == 2
            pending = client.submit(gated, gates.new(), 1, key="acm-pending")
        assert client.status == "closed"
        assert pending.cancelled()
        with pytest.raises(CancelledError):
            await w(pending)
        gates.open_all()  # (the cancelled call still holds its worker thread until it returns)
        async with aclient(cluster) as again:  # a new async client on the same cluster works
            assert await w(again.submit(inc, 5)) == 6

    run(backend, main)


def test_a_sync_client_is_not_asynchronous(backend, cluster):
    with Client(cluster, set_as_default=False) as c:
        assert c.asynchronous is False
        assert c.submit(inc, 1).result(timeout=TIMEOUT) == 2


# --------------------------------------------------------------------------
# submit, map, Future
# --------------------------------------------------------------------------


def test_submit_and_map_return_futures_and_results_are_awaited(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            f = client.submit(add, 1, 2, key="a-add")
            assert isinstance(f, Future) and f.key == "a-add"
            fs = client.map(inc, range(4))
            assert isinstance(fs, list) and all(isinstance(x, Future) for x in fs)
            assert await w(f) == 3
            assert await w(f.result()) == 3
            assert await w(f.result(timeout=TIMEOUT)) == 3
            assert f.status == "finished" and f.done()
            assert [await w(x) for x in fs] == [1, 2, 3, 4]
            chain = client.submit(inc, f)
            for _ in range(3):
                chain = client.submit(inc, chain)
            assert await w(chain) == 7

    run(backend, main)


def test_result_timeout_raises_and_the_future_stays_pending(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            f = client.submit(gated, gate, 1, key="a-timeout")
            with pytest.raises(TimeoutError):  # builtin TimeoutError: asyncio.TimeoutError on 3.11
                await w(f.result(timeout=SHORT))
            with pytest.raises(TimeoutError):
                await w(f.exception(timeout=SHORT))
            assert f.status == "pending" and not f.done()
            gates.open(gate)
            assert await w(f.result(timeout=TIMEOUT)) == 1
            assert f.status == "finished"

    run(backend, main)


def test_remote_errors_are_raised_by_await_and_returned_by_exception(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            f = client.submit(raise_custom, "async custom message")
            with pytest.raises(CustomError, match="async custom message"):
                await w(f)
            with pytest.raises(CustomError, match="async custom message"):
                await w(f.result())
            exc = await w(f.exception())
            assert type(exc) is CustomError and str(exc) == "async custom message"
            assert f.status == "error"
            g = client.submit(inc, f)  # dependents err with the same exception
            with pytest.raises(CustomError, match="async custom message"):
                await w(g)
            ok = client.submit(inc, 1)
            assert await w(ok.exception()) is None
            with pytest.raises(ZeroDivisionError, match="division by zero"):
                await w(client.submit(div, 1, 0))

    run(backend, main)


# --------------------------------------------------------------------------
# gather, scatter
# --------------------------------------------------------------------------


def test_gather_nested_containers_and_errors(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            a, b, c = client.map(inc, range(3))
            out = await w(client.gather([a, (b, [c]), {"d": a, "plain": 7}, "text"]))
            assert out == [1, (2, [3]), {"d": 1, "plain": 7}, "text"]
            assert type(out[1]) is tuple
            assert await w(client.gather({"x": a, "y": [b, c]})) == {"x": 1, "y": [2, 3]}
            assert await w(client.gather(a)) == 1
            bad = client.submit(div, 1, 0)
            with pytest.raises(ZeroDivisionError):
                await w(client.gather([a, bad]))
            assert await w(client.gather([a, bad], errors="skip")) == [1]
            assert await w(client.gather({"g": a, "b": bad}, errors="skip")) == {"g": 1}

    run(backend, main)


def test_scatter_single_list_dict_and_broadcast(backend, cluster, workers):
    async def main():
        async with aclient(cluster) as client:
            one = await w(client.scatter(123))
            assert isinstance(one, Future) and one.status == "finished"
            assert one.key.startswith("int-")
            assert await w(one) == 123
            assert await w(client.submit(inc, one)) == 124
            fs = await w(client.scatter([10, 20, 30, 40]))
            assert isinstance(fs, list) and len(fs) == 4
            assert await w(client.gather(fs)) == [10, 20, 30, 40]
            who = await w(client.who_has(fs))
            assert sorted(w_ for f in fs for w_ in who[f.key]) == sorted(workers * 2)  # round robin
            d = await w(client.scatter({"a-sx": 1, "a-sy": [2, 3]}))
            assert d["a-sx"].key == "a-sx" and await w(client.gather(d)) == {"a-sx": 1, "a-sy": [2, 3]}
            b = await w(client.scatter("payload", broadcast=True))
            assert sorted((await w(client.who_has(b)))[b.key]) == workers
            fs2 = [client.submit(len, b, workers=[x], key=f"a-len-{i}") for i, x in enumerate(workers)]
            assert await w(client.gather(fs2)) == [7, 7]

    run(backend, main)


# --------------------------------------------------------------------------
# cancel, retry
# --------------------------------------------------------------------------


def test_cancel_a_running_task_and_its_dependent(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            f = client.submit(gated, gate, 1, key="a-long")
            dep = client.submit(inc, f, key="a-after-long")
            await until(lambda: task_states(cluster, ["a-long"])["a-long"] == "processing", "a-long runs")
            await w(client.cancel(f))
            assert f.cancelled() and f.status == "cancelled"
            with pytest.raises(CancelledError):
                await w(f)
            with pytest.raises(CancelledError):
                await w(dep)
            assert dep.cancelled()
            await until(lambda: not {"a-long", "a-after-long"} & scheduler_keys(cluster), "both forgotten")
            gates.open(gate)
            assert await w(client.submit(inc, 5, key="a-next")) == 6

    run(backend, main)


def test_retry_an_erred_future_and_its_erred_dependency(backend, cluster, tmp_path):
    async def main():
        async with aclient(cluster) as client:
            calls = str(tmp_path / "calls")
            f = client.submit(flaky, calls, 1, 2, key="a-flaky")
            with pytest.raises(RuntimeError, match="flaky failure 1"):
                await w(f)
            await w(client.retry([f]))
            assert await w(f) == 20
            assert len(lines(calls)) == 2
            calls2 = str(tmp_path / "calls2")
            g = client.submit(flaky, calls2, 1, 3, key="a-flaky-2")
            h = client.submit(inc, g, key="a-after-flaky")
            with pytest.raises(RuntimeError):
                await w(h)
            await w(client.retry(h))
            assert await w(h) == 31

    run(backend, main)


# --------------------------------------------------------------------------
# information about the cluster
# --------------------------------------------------------------------------


def test_who_has_has_what_and_nthreads(backend, cluster, workers):
    async def main():
        async with aclient(cluster) as client:
            w0, w1 = workers
            a = client.submit(inc, 1, workers=[w0], key="a-wh-0")
            b = client.submit(inc, 2, workers=[w1], key="a-wh-1")
            assert await w(client.gather([a, b])) == [2, 3]
            assert await w(client.who_has([a, b])) == {"a-wh-0": [w0], "a-wh-1": [w1]}
            assert set(await w(client.who_has())) == {"a-wh-0", "a-wh-1"}
            has = await w(client.has_what())
            assert "a-wh-0" in has[w0] and "a-wh-1" in has[w1] and "a-wh-0" not in has[w1]
            assert await w(client.nthreads()) == {x: 1 for x in workers}

    run(backend, main)


def test_scheduler_info_and_wait_for_workers(backend, cluster, workers):
    async def main():
        async with aclient(cluster) as client:
            info = await w(client.scheduler_info())
            assert info["type"] == "Scheduler" and info["address"] == cluster.scheduler_address
            assert sorted(info["workers"]) == workers
            assert all(x["resources"] == RESOURCES for x in info["workers"].values())
            await w(client.wait_for_workers(2))
            with pytest.raises(TwofoldTimeoutError, match=r"fewer than 3 worker\(s\)"):
                await w(client.wait_for_workers(3, timeout=SHORT))
            assert await w(client.submit(inc, 1)) == 2  # still usable

    run(backend, main)


def test_run_and_run_on_scheduler(backend, cluster, workers):
    async def main():
        async with aclient(cluster) as client:
            assert await w(client.run(worker_address)) == {x: x for x in workers}
            assert await w(client.run(worker_address, workers=[workers[1]])) == {workers[1]: workers[1]}
            assert await w(client.run_on_scheduler(count_workers)) == 2

    run(backend, main)


def test_datasets_and_metadata(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            f = client.submit(inc, 41, key=f"{name}-x")
            assert await w(client.publish_dataset(**{name: f})) is None
            got = await w(client.get_dataset(name))
            assert isinstance(got, Future) and got.key == f.key and await w(got) == 42
            assert name in await w(client.list_datasets())
            await w(client.set_metadata([name, "a"], {"n": 1}))
            assert await w(client.get_metadata([name, "a"])) == {"n": 1}
            assert await w(client.get_metadata([name])) == {"a": {"n": 1}}
            await w(client.unpublish_dataset(name))
            assert name not in await w(client.list_datasets())

    run(backend, main)


def test_replicate_and_rebalance(backend, cluster, workers):
    async def main():
        async with aclient(cluster) as client:
            a, b = workers
            f = client.submit(blob, 1, key="a-rep")
            await w(client.replicate(f))
            assert sorted((await w(client.who_has(f)))["a-rep"]) == workers
            fs = await w(client.scatter([blob(i) for i in range(8)], workers=[a]))
            assert all(h == [a] for h in (await w(client.who_has(fs))).values())
            await w(client.rebalance(fs))
            where = await w(client.who_has(fs))
            assert all(len(h) == 1 for h in where.values())
            assert sorted(sum(1 for h in where.values() if h == [x]) for x in workers) == [4, 4]
            assert await w(client.gather(fs)) == [blob(i) for i in range(8)]

    run(backend, main)


# --------------------------------------------------------------------------
# wait, as_completed
# --------------------------------------------------------------------------


def test_wait_is_awaitable_for_an_async_clients_futures(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            slow = client.submit(gated, gate, 1, key="a-wait-slow")
            fast = client.submit(inc, 1, key="a-wait-fast")
            done, not_done = await w(wait([slow, fast], return_when=FIRST_COMPLETED))
            assert done == {fast} and not_done == {slow}
            with pytest.raises(TimeoutError):
                await w(wait([slow, fast], timeout=SHORT))
            gates.open(gate)
            res = await w(wait([slow, fast]))
            assert res.done == {slow, fast} and res.not_done == set()
            assert (await w(wait(fast))).done == {fast}

    run(backend, main)


def test_async_for_over_as_completed_in_completion_order(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            a = client.submit(gated, gate, 1, key="a-ac-a")
            b = client.submit(inc, 2, key="a-ac-b")
            seen = []

            async def consume():
                async for f in as_completed([a, b]):
                    seen.append(f)
                    if f is b:
                        gates.open(gate)

            await w(consume())
            assert seen == [b, a]

    run(backend, main)


def test_as_completed_with_results_async(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            fs = client.map(inc, range(3), key=["a-r0", "a-r1", "a-r2"])

            async def collect(seq):
                return [item async for item in seq]

            pairs = await w(collect(as_completed(fs, with_results=True)))
            assert sorted((f.key, v) for f, v in pairs) == [("a-r0", 1), ("a-r1", 2), ("a-r2", 3)]
            bad = client.submit(div, 1, 0, key="a-bad")
            with pytest.raises(ZeroDivisionError):
                await w(collect(as_completed([bad], with_results=True)))
            mixed = await w(collect(as_completed([fs[0], bad], with_results=True, raise_errors=False)))
            out = dict(mixed)
            assert out[fs[0]] == 1 and isinstance(out[bad], ZeroDivisionError)

    run(backend, main)


def test_async_for_over_as_completed_batches(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            fs = client.map(inc, range(4), key=[f"a-b{i}" for i in range(4)])
            await w(wait(fs))

            async def collect():
                return [sorted(f.key for f in batch) async for batch in as_completed(fs).batches()]

            batches = await w(collect())
            assert sorted(k for batch in batches for k in batch) == ["a-b0", "a-b1", "a-b2", "a-b3"]
            assert len(batches) == 1  # all done before iterating: one batch

    run(backend, main)


# --------------------------------------------------------------------------
# coordination primitives and actors
# --------------------------------------------------------------------------


def test_lock_acquire_release_and_async_with(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            lock = Lock(name, client=client)
            other = Lock(name, client=client)
            assert await w(lock.acquire()) is True
            assert await w(other.acquire(blocking=False)) is False
            assert await w(other.acquire(timeout=SHORT)) is False
            await w(lock.release())
            assert await w(other.acquire(timeout=TIMEOUT)) is True
            await w(other.release())
            async with Lock(name, client=client) as held:
                assert isinstance(held, Lock)
                assert await w(lock.acquire(blocking=False)) is False
            assert await w(lock.acquire(timeout=TIMEOUT)) is True
            await w(lock.release())

    run(backend, main)


def test_event_set_wait_and_clear(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            ev = Event(name, client=client)
            assert await w(ev.wait(timeout=SHORT)) is False
            waiter = asyncio.ensure_future(Event(name, client=client).wait(timeout=TIMEOUT))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await w(ev.set())
            assert await w(waiter) is True
            assert await w(ev.wait()) is True
            assert await w(ev.is_set()) is True
            await w(ev.clear())
            assert await w(ev.wait(timeout=SHORT)) is False

    run(backend, main)


def test_semaphore_leases(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            sem = Semaphore(max_leases=2, name=name, client=client)
            assert await w(sem.acquire()) is True
            assert await w(sem.acquire(timeout=TIMEOUT)) is True
            assert await w(sem.acquire(timeout=SHORT)) is False
            assert await w(sem.release()) is True
            assert await w(sem.acquire(timeout=TIMEOUT)) is True
            assert await w(sem.release()) is True
            assert await w(sem.release()) is True

    run(backend, main)


def test_queue_and_variable(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            q = Queue(f"{name}-q", client=client)
            await w(q.put(1))
            await w(q.put("two"))
            assert await w(q.get()) == 1
            assert await w(q.get(timeout=TIMEOUT)) == "two"
            with pytest.raises(TimeoutError):
                await w(q.get(timeout=SHORT))
            getter = asyncio.ensure_future(q.get(timeout=TIMEOUT))
            await asyncio.sleep(0.05)
            await w(q.put(3))
            assert await w(getter) == 3
            v = Variable(f"{name}-v", client=client)
            await w(v.set({"x": 1}))
            assert await w(v.get()) == {"x": 1}
            f = client.submit(inc, 9)
            await w(v.set(f))
            got = await w(Variable(f"{name}-v", client=client).get(timeout=TIMEOUT))
            assert isinstance(got, Future) and got.key == f.key and await w(got) == 10
            await w(v.delete())  # the variable held the future's data (for every client) until now
            with pytest.raises(TwofoldTimeoutError):
                await w(v.get(timeout=0.05))

    run(backend, main)


def test_an_actor_made_and_called_with_await(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            counter = await w(client.submit(Counter, actor=True))
            assert await w(counter.increment()) == 1
            assert await w(counter.increment(2)) == 3
            assert await w(counter.n) == 3
            futs = [counter.increment() for _ in range(3)]  # sent off without waiting
            assert sorted([await w(f) for f in futs]) == [4, 5, 6]
            assert await w(counter.n) == 6

    run(backend, main)


# --------------------------------------------------------------------------
# cancelled awaits
# --------------------------------------------------------------------------


def test_wait_for_on_a_long_task_times_out_and_the_future_stays_usable(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            f = client.submit(gated, gate, 7, key="a-long-wait")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(f, SHORT)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(f.result(), SHORT)
            assert f.status == "pending" and not f.cancelled()
            assert task_states(cluster, ["a-long-wait"])["a-long-wait"] in ("waiting", "queued", "processing")
            gates.open(gate)
            assert await w(f) == 7
            assert await w(client.submit(inc, f)) == 8

    run(backend, main)


def test_a_cancelled_gather_leaks_no_keys(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            fs = [client.submit(gated, gate, i, key=f"a-cg-{i}") for i in range(2)]
            task = asyncio.ensure_future(client.gather(fs))
            await asyncio.sleep(SHORT)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gates.open(gate)
            assert [await w(f) for f in fs] == [0, 1]  # the futures themselves are untouched
            keys = {f.key for f in fs}
            del fs, task
            gc.collect()
            probe = client.submit(inc, 0, key="a-cg-probe")  # (releases ride with the next message)
            assert await w(probe) == 1
            await until(lambda: not keys & scheduler_keys(cluster), "the dropped keys released")
            assert set(await w(client.who_has())) == {"a-cg-probe"}

    run(backend, main)


def test_a_cancelled_lock_acquire_does_not_leave_the_lock_held(backend, cluster, name):
    async def main():
        async with aclient(cluster) as client:
            holder = Lock(name, client=client)
            assert await w(holder.acquire()) is True
            waiter = Lock(name, client=client)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.acquire(), SHORT)
            await w(holder.release())
            # (dask 2026.8 leaves such a lock held by the abandoned waiter: twofold must not)
            third = Lock(name, client=client)
            assert await w(third.acquire(timeout=5.0)) is True
            await w(third.release())

    run(backend, main)


# --------------------------------------------------------------------------
# the user's loop, coroutine tasks
# --------------------------------------------------------------------------


def test_the_loop_keeps_running_while_a_result_is_awaited(backend, cluster, gates):
    async def main():
        async with aclient(cluster) as client:
            gate = gates.new()
            f = client.submit(gated, gate, 3, key="a-ticking")
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.05)
                    ticks += 1
                    if ticks == 10:
                        gates.open(gate)  # (no-op on the simulator: the task takes virtual time)

            t = asyncio.ensure_future(ticker())
            try:
                assert await w(f) == 3
            finally:
                t.cancel()
            assert ticks >= 10  # the other coroutine ran meanwhile: the await did not block the loop
            both = await w(asyncio.gather(client.gather(client.map(inc, [1, 2])), client.submit(add, 1, 1)))
            assert both == [[2, 3], 2]

    run(backend, main)


def test_a_coroutine_task_awaits_its_own_client(backend, cluster):
    async def main():
        async with aclient(cluster) as client:
            assert await w(client.submit(submit_from_a_coroutine, 1)) == (2, [3, 4])

    run(backend, main)


def test_a_coroutine_task_from_a_sync_client(backend, cluster):
    with Client(cluster, set_as_default=False) as c:
        assert c.submit(submit_from_a_coroutine, 10).result(timeout=TIMEOUT) == (11, [12, 13])


# --------------------------------------------------------------------------
# the simulator's virtual-time loop (sim only)
# --------------------------------------------------------------------------


@pytest.fixture
def sim_cluster():
    """A fresh validated SimCluster as the ``sim`` backend's (for the sim-only tests)."""
    c = SimCluster(n_workers=2, threads_per_worker=1, seed=0, validate=True, resources=RESOURCES,
                   durations={"gated": GATED_SIM_SECONDS})
    try:
        yield c
    finally:
        c.close()


def test_sim_run_sleeps_in_virtual_time(sim_cluster):
    cluster = sim_cluster

    async def main():
        async with aclient(cluster) as client:
            assert await w(client.submit(inc, 1)) == 2
            t0, wall = cluster.now, time.monotonic()
            await asyncio.sleep(5)
            assert cluster.now == pytest.approx(t0 + 5, abs=1e-6)
            assert asyncio.get_running_loop().time() == pytest.approx(cluster.now, abs=1e-6)
            assert time.monotonic() - wall < 0.5
            return await w(client.submit(inc, 2))

    assert run("sim", main) == 3


def test_sim_run_a_gated_task_takes_virtual_seconds(sim_cluster, gates):
    cluster = sim_cluster

    async def main():
        async with aclient(cluster) as client:
            t0, wall = cluster.now, time.monotonic()
            assert await w(client.submit(gated, gates.new(), 1)) == 1
            assert cluster.now - t0 >= GATED_SIM_SECONDS
            assert cluster.now - t0 < GATED_SIM_SECONDS + 1
            assert time.monotonic() - wall < 0.5
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.submit(gated, gates.new(), 2), 1.0)  # 1 virtual s
            return cluster.now - t0

    elapsed = run("sim", main)
    assert GATED_SIM_SECONDS + 1.0 <= elapsed < GATED_SIM_SECONDS + 2.0


def _seeded_program(seed):
    cluster = SimCluster(n_workers=2, threads_per_worker=1, seed=seed, validate=True)

    async def main():
        async with aclient(cluster) as client:
            fs = client.map(inc, range(10))
            total = client.submit(sum, fs)
            await asyncio.sleep(1.5)
            lock = Lock("det", client=client)
            async with lock:
                await asyncio.sleep(0.25)
            s = await w(client.scatter([1, 2, 3]))
            return await w(total), await w(client.gather(s)), cluster.now

    try:
        out = twofold.sim.run(main())
        return out, cluster.digest()
    finally:
        cluster.close()


def test_sim_run_is_deterministic():
    (out1, d1), (out2, d2) = _seeded_program(3), _seeded_program(3)
    assert out1[:2] == (55, [1, 2, 3]) and out1[2] >= 1.75
    assert out1 == out2 and d1 == d2


@pytest.mark.twofold_runtime_only("it checks that a plain asyncio loop keeps real time; the switch puts every loop on virtual time")
def test_plain_asyncio_run_on_a_sim_cluster(sim_cluster):
    cluster = sim_cluster

    async def main():
        async with aclient(cluster) as client:
            assert await w(client.submit(inc, 1)) == 2
            assert await w(client.gather(client.map(inc, range(3)))) == [1, 2, 3]
            wall = time.monotonic()
            await asyncio.sleep(0.2)  # a real sleep on a real loop
            assert time.monotonic() - wall >= 0.19
            return await w(client.submit(add, 20, 22))

    assert asyncio.run(asyncio.wait_for(main(), OVERALL)) == 42


# --------------------------------------------------------------------------
# an async client next to a sync one (runtime only)
# --------------------------------------------------------------------------


def test_async_and_sync_clients_on_one_runtime_cluster(backend, cluster, tmp_path):
    if backend == "sim" or isinstance(cluster, SimCluster):  # (SimCluster: under --twofold-simulate)
        pytest.skip("a sync and an async client in one program: the runtime's clusters")
    log = str(tmp_path / "log")
    with Client(cluster, set_as_default=False) as sync_client:

        async def main():
            async with aclient(cluster) as client:
                assert client.id != sync_client.id
                a = client.submit(log_call, log, 41)
                b = sync_client.submit(log_call, log, 41)
                assert a.key == b.key  # the same pure call: one computation
                assert await w(a) == 41
                assert await w(asyncio.to_thread(b.result, TIMEOUT)) == 41
                c = sync_client.submit(inc, 1, key="mixed-sync")
                assert await w(Future("mixed-sync", client)) == 2
                return c

        c = asyncio.run(main())
        assert c.result(timeout=TIMEOUT) == 2  # the sync client is untouched by the async one's close
        assert lines(log) == ["41"]
        assert sync_client.submit(inc, 5).result(timeout=TIMEOUT) == 6
