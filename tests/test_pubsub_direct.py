"""Pub/Sub's direct path: a Pub in a task sends straight to the Subs in tasks on workers.

Part 1 runs every test on the three clusters of ``test_client_api.py``
(whose ``backend_cluster``/``backend``/``cluster`` fixtures it uses): a
fresh validated ``SimCluster``, a module-scoped ``LocalCluster(processes=False)``
and a module-scoped ``LocalCluster(processes=True)``, 2 workers x 1 thread
each.  The scheduler's ``PubSub`` statistics (``published``: items it was
sent, ``forwarded``: (item, subscriber) pairs it forwarded) show which path
carried the messages; the runtime clusters live for the whole module, so
tests compare before and after.

Part 2 is simulator-only, with exact outcomes: round trips counted in
virtual time, faults at given times, and the switch-over from the scheduler
to the direct path under seeded random network delays.

Part 3 kills a worker process holding a subscriber (its own processes
LocalCluster).

The guarantees under test (``twofold.scheduler.coordination.pubsub`` has
the rules): a Sub whose constructor returned before a ``put`` gets that
message exactly once; one Pub's messages reach one Sub in order, also
across the moment the Pub learns of a Sub it reached through the scheduler
until then; a subscriber on a dead worker gets nothing and holds nobody up;
``pub.subscribers`` is a dict keyed by worker address.  Task functions live
in ``pubsub_support.py`` (worker processes import them by name).
"""

from __future__ import annotations

import faulthandler

import pytest

from twofold import Client, Event, LocalCluster, Pub, Sub
from twofold.scheduler.coordination.pubsub import PubSubStatistics

from client_support import cluster_of
from pubsub_support import (
    publish,
    publish_big,
    publish_once_touched,
    publish_timed,
    publish_watching,
    subscribe_and_collect,
    subscribe_and_die,
    subscribe_and_hold,
    subscribe_and_measure,
    subscribe_then_close,
    subscribe_then_touch,
    subscribe_until,
    subscribers_seen,
    subscribers_until,
)
from test_client_api import (  # noqa: F401 - backend_cluster, backend, cluster: fixtures
    TIMEOUT,
    WATCHDOG,
    backend,
    backend_cluster,
    cluster,
    is_sim,
    on_loop,
)

#: the simulator's default latency (virtual seconds per hop)
L = 0.001


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def topic(request):
    return f"direct:{request.node.name}"


@pytest.fixture
def client(cluster):
    c = Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()


def stats(cluster) -> PubSubStatistics:
    if is_sim(cluster):
        return cluster.scheduler.extensions["pubsub"].statistics()
    return on_loop(cluster, lambda: cluster.scheduler.state.extensions["pubsub"].statistics())


def two_workers(cluster) -> tuple[str, str]:
    w1, w2 = sorted(cluster.workers)[:2]
    return w1, w2


def start_subscriber(client, fn, *args, worker, flag):
    """Submit a subscribing task on ``worker``; return its future once it set the Event ``flag``."""
    f = client.submit(fn, *args, workers=[worker], pure=False)
    assert Event(flag, client=client).wait(timeout=TIMEOUT), f"{fn.__name__} did not subscribe"
    return f


# --------------------------------------------------------------------------
# Part 1: every cluster
# --------------------------------------------------------------------------


def test_worker_to_worker_goes_direct(client, cluster, topic):
    w1, w2 = two_workers(cluster)
    n = 200
    sub = start_subscriber(client, subscribe_and_collect, topic, n, f"{topic}:subscribed", worker=w2,
                           flag=f"{topic}:subscribed")  # fmt: skip
    before = stats(cluster)
    assert client.submit(publish, topic, n, workers=[w1], pure=False).result(timeout=TIMEOUT) == n
    assert sub.result(timeout=TIMEOUT) == list(range(n))
    after = stats(cluster)
    assert after.published == before.published  # not one item through the scheduler
    assert after.forwarded == before.forwarded


def test_values_bigger_than_a_post_arrive_whole_and_in_order(client, cluster, topic):
    w1, w2 = two_workers(cluster)
    n, size = 12, 700_000  # two values are over a TopicPost's POST_BYTES: one post each
    flag = f"{topic}:subscribed"
    sub = start_subscriber(client, subscribe_and_measure, topic, n, flag, worker=w2, flag=flag)
    assert client.submit(publish_big, topic, n, size, workers=[w1], pure=False).result(timeout=TIMEOUT) == n
    assert sub.result(timeout=TIMEOUT) == [(str(i % 10), size) for i in range(n)]


def test_a_sub_on_the_publishers_own_worker(client, cluster, topic):
    w1, _ = two_workers(cluster)
    n = 50
    flag = f"{topic}:subscribed"
    sub = client.submit(subscribe_and_collect, topic, n, flag, True, workers=[w1], pure=False)  # (it secedes)
    assert Event(flag, client=client).wait(timeout=TIMEOUT)
    before = stats(cluster)
    assert client.submit(publish, topic, n, workers=[w1], pure=False).result(timeout=TIMEOUT) == n
    assert sub.result(timeout=TIMEOUT) == list(range(n))
    assert stats(cluster).published == before.published


def test_client_subscribers_through_the_scheduler_workers_direct(client, cluster, topic):
    w1, w2 = two_workers(cluster)
    n = 100
    on_client = Sub(topic, client=client)
    far = start_subscriber(client, subscribe_and_collect, topic, n, f"{topic}:far", worker=w2, flag=f"{topic}:far")
    before = stats(cluster)
    assert client.submit(publish, topic, n, workers=[w1], pure=False).result(timeout=TIMEOUT) == n
    assert far.result(timeout=TIMEOUT) == list(range(n))
    assert [on_client.get(timeout=TIMEOUT) for _ in range(n)] == list(range(n))
    after = stats(cluster)
    assert after.published - before.published == n  # sent once each, for the client's Sub ...
    assert after.forwarded - before.forwarded == n  # ... and forwarded to it alone


def test_a_pub_on_a_client_goes_through_the_scheduler(client, cluster, topic):
    _, w2 = two_workers(cluster)
    n = 20
    far = start_subscriber(client, subscribe_and_collect, topic, n, f"{topic}:far", worker=w2, flag=f"{topic}:far")
    before = stats(cluster)
    pub = Pub(topic, client=client)
    for i in range(n):
        pub.put(i)
    assert far.result(timeout=TIMEOUT) == list(range(n))
    after = stats(cluster)
    assert (after.published - before.published, after.forwarded - before.forwarded) == (n, n)


def test_pub_subscribers_is_keyed_by_worker_address(client, cluster, topic):
    w1, w2 = two_workers(cluster)
    release = f"{topic}:release"
    held = [client.submit(subscribe_and_hold, topic, f"{topic}:s{i}", release, True, workers=[w], pure=False)
            for i, w in enumerate((w1, w2))]  # fmt: skip (they secede: the workers stay free)
    try:
        for i in range(2):
            assert Event(f"{topic}:s{i}", client=client).wait(timeout=TIMEOUT)
        Sub(topic, client=client)  # a client's subscriber is not a worker's: not listed
        expected = {w1: {}, w2: {}}
        assert Pub(topic, client=client).subscribers == expected  # the scheduler's view
        # from a task: the workers its Pub sends to directly
        assert client.submit(subscribers_seen, topic, workers=[w1], pure=False).result(timeout=TIMEOUT) == expected
    finally:
        Event(release, client=client).set()
    assert [f.result(timeout=TIMEOUT) for f in held] == [[], []]


def test_a_closed_sub_leaves_the_publishers_view(client, cluster, topic):
    w1, w2 = two_workers(cluster)
    closed = f"{topic}:closed"
    f = client.submit(subscribe_then_close, topic, f"{topic}:subscribed", closed, workers=[w2], pure=False)
    assert f.result(timeout=TIMEOUT) is True
    assert client.submit(subscribers_until, topic, 0, workers=[w1], pure=False).result(timeout=TIMEOUT) == {}
    assert Pub(topic, client=client).subscribers == {}


@pytest.mark.parametrize("with_client_sub", [True, False], ids=["with-client-sub", "workers-only"])
def test_subscribed_before_a_put_gets_it_exactly_once_in_order(client, cluster, topic, with_client_sub):
    """The subscriber joins while the publisher streams: it gets a contiguous run up to the last
    message, starting no later than the first put made after its constructor returned.  With a
    Sub on the client the publisher also sends to the scheduler, which forwards to the new worker
    Sub until the publisher knows it: the switch-over must not reorder."""
    w1, w2 = two_workers(cluster)
    n = 300
    flag = f"{topic}:subscribed"
    on_client = Sub(topic, client=client) if with_client_sub else None
    pub = client.submit(publish_watching, topic, n, flag, 0.001, workers=[w1], pure=False)
    sub = client.submit(subscribe_until, topic, n - 1, flag, 0.05, workers=[w2], pure=False)
    first = pub.result(timeout=TIMEOUT)
    got = sub.result(timeout=TIMEOUT)
    assert first is not None, "the publisher finished before the subscriber subscribed"
    assert got == list(range(got[0], n)), got  # in order, no gap, no duplicate
    assert got[0] <= first
    if on_client is not None:
        assert [on_client.get(timeout=TIMEOUT) for _ in range(n)] == list(range(n))


# --------------------------------------------------------------------------
# Part 2: simulator only, exact outcomes
# --------------------------------------------------------------------------


def sim_program(seed=0, n=100, **kw):
    """One worker task publishing ``n`` messages to a Sub in a task on the other worker."""
    cluster = cluster_of(n=2, seed=seed, name="pubsub-direct", **kw)
    try:
        with Client(cluster, set_as_default=False) as client:
            w1, w2 = two_workers(cluster)
            sub = start_subscriber(client, subscribe_and_collect, "t", n, "ready", worker=w2, flag="ready")
            start = cluster.now
            client.submit(publish, "t", n, workers=[w1], pure=False).result(timeout=TIMEOUT)
            got = sub.result(timeout=TIMEOUT)
            return {"got": got, "stats": stats(cluster), "took": cluster.now - start, "digest": cluster.digest()}
    finally:
        cluster.close()


def test_sim_direct_path_exact():
    out = sim_program()
    assert out["got"] == list(range(100))
    assert out["stats"] == PubSubStatistics("pubsub", topics=1, subscribers=1, published=0, publishers=1,
                                            forwarded=0, waiting=0)  # fmt: skip
    assert out == sim_program()  # to the byte, from the seed


def test_sim_subscribing_waits_for_the_publishers():
    """No publisher: a subscription is one round trip; with one, two (the publisher acknowledges)."""
    cluster = cluster_of(n=2, seed=0)
    try:
        with Client(cluster, set_as_default=False) as client:
            t0 = cluster.now
            Sub("t", client=client)
            alone = cluster.now - t0
            w1, _ = two_workers(cluster)
            # a publisher on w1: it registers when made, and stays registered with w1's task client
            client.submit(publish, "t", 0, workers=[w1], pure=False).result(timeout=TIMEOUT)
            assert stats(cluster).publishers == 1
            t0 = cluster.now
            Sub("t", client=client)
            with_publisher = cluster.now - t0
    finally:
        cluster.close()
    assert alone == pytest.approx(2 * L, abs=1e-4)
    assert with_publisher == pytest.approx(4 * L, abs=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_sim_switch_over_keeps_order_under_random_delays(seed):
    """Seeded random delays on every link (links stay FIFO): the scheduler's forwarding of what a
    Pub sent before it knew the new Sub races the Pub's direct posts after; the Sub holds those back."""
    cluster = cluster_of(n=2, seed=seed)
    cluster._sim.network.delay_probability = 0.5
    cluster._sim.network.max_delay = 0.004
    try:
        with Client(cluster, set_as_default=False) as client:
            w1, w2 = two_workers(cluster)
            n = 200
            on_client = Sub("t", client=client)
            pub = client.submit(publish_watching, "t", n, "flag", 0.0005, workers=[w1], pure=False)
            sub = client.submit(subscribe_until, "t", n - 1, "flag", 0.02 + 0.005 * seed, workers=[w2], pure=False)
            first = pub.result(timeout=TIMEOUT)
            got = sub.result(timeout=TIMEOUT)
            assert first is not None
            assert got == list(range(got[0], n)), got
            assert got[0] <= first
            assert [on_client.get(timeout=TIMEOUT) for _ in range(n)] == list(range(n))
            s = stats(cluster)
            # before the Pub knew the worker Sub, the scheduler forwarded to it too; after, only to the client
            assert s.published == n and n <= s.forwarded < n + len(got)
    finally:
        cluster.close()


def test_sim_a_dead_subscribers_worker_gets_nothing_and_stalls_nobody():
    cluster = cluster_of(n=2, seed=0)
    try:
        with Client(cluster, set_as_default=False) as client:
            w1, w2 = two_workers(cluster)
            n, every = 100, 0.01
            on_client = Sub("t", client=client)
            # pinned to w2, so it does not run again elsewhere once w2 is gone
            start_subscriber(client, subscribe_and_hold, "t", "ready", "never", worker=w2, flag="ready")
            cluster.crash(w2, at=cluster.now + 0.3)  # mid-stream
            pub = client.submit(publish_timed, "t", n, "ready", every, workers=[w1], pure=False)
            took = pub.result(timeout=TIMEOUT)
            # each put returned at once: the loop took its pauses (an Event wait: every + a round trip), no more
            assert took == pytest.approx(n * (every + 2 * L), abs=1e-3)
            assert [on_client.get(timeout=TIMEOUT) for _ in range(n)] == list(range(n))
            # the scheduler dropped the dead worker's Sub and told the publisher
            s = stats(cluster)
            assert (s.subscribers, s.publishers, s.waiting) == (1, 1, 0)
            assert client.submit(subscribers_seen, "t", workers=[w1], pure=False).result(timeout=TIMEOUT) == {}
    finally:
        cluster.close()


def test_sim_a_publisher_that_died_does_not_hold_up_a_subscription():
    cluster = cluster_of(n=2, seed=0)
    try:
        with Client(cluster, set_as_default=False) as client:
            w1, w2 = two_workers(cluster)
            client.submit(publish, "t", 0, workers=[w1], pure=False).result(timeout=TIMEOUT)  # registers w1's client
            assert stats(cluster).publishers == 1
            cluster.crash(w1, at=cluster.now)
            cluster.run(cluster.now + 0.1)
            assert stats(cluster).publishers == 0
            t0 = cluster.now
            Sub("t", client=client)
            assert cluster.now - t0 == pytest.approx(2 * L, abs=1e-4)  # nobody to wait for
            # a publisher whose worker dies while a subscription waits for its acknowledgement
            client.submit(publish, "t", 0, workers=[w2], pure=False).result(timeout=TIMEOUT)
            assert stats(cluster).publishers == 1
            t0 = cluster.now
            cluster.crash(w2, at=t0 + 0.5 * L)  # before the scheduler's TopicPeers reaches its client
            Sub("t", client=client)
            # the subscribe arrives at L, the scheduler notices the crash at 1.5 L and answers
            assert cluster.now - t0 == pytest.approx(2.5 * L, abs=1e-4)
            s = stats(cluster)
            assert (s.publishers, s.waiting, s.subscribers) == (0, 0, 2)
    finally:
        cluster.close()


# --------------------------------------------------------------------------
# Part 3: a worker process that dies with a subscriber
# --------------------------------------------------------------------------


def test_processes_a_subscribers_worker_killed_stalls_nobody(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster, set_as_default=False) as client:  # fmt: skip
        w1, w2 = two_workers(cluster)
        n, every = 400, 0.002
        on_client = Sub("t", client=client)
        marker = str(tmp_path / "died")
        doomed = client.submit(subscribe_and_die, "t", "ready", marker, workers=[w2], allow_other_workers=True,
                               pure=False)  # fmt: skip
        assert Event("ready", client=client).wait(timeout=TIMEOUT)
        took = client.submit(publish_timed, "t", n, "ready", every, workers=[w1], pure=False).result(timeout=TIMEOUT)
        assert took < n * every + 5.0, took  # the puts never waited for the dead worker
        assert [on_client.get(timeout=TIMEOUT) for _ in range(n)] == list(range(n))
        assert doomed.result(timeout=TIMEOUT) == "again"


def _signal_round(client, cluster, topic, path, n=5):
    w1, w2 = two_workers(cluster)
    pub = client.submit(publish_once_touched, topic, n, path, workers=[w1], pure=False)
    sub = client.submit(subscribe_then_touch, topic, n, path, 5.0, workers=[w2], pure=False)
    assert pub.result(timeout=TIMEOUT) == n
    return sub.result(timeout=TIMEOUT)


def test_a_put_caused_outside_the_scheduler_still_reaches_the_new_sub(client, cluster, topic, tmp_path):
    """The Sub's constructor returns, then a signal that bypasses the scheduler (a file) makes an
    already registered publisher put: the put must reach the Sub (its constructor returned only
    once every publisher took it in)."""
    for i in range(5):
        assert _signal_round(client, cluster, f"{topic}:{i}", str(tmp_path / f"go-{i}")) == list(range(5))


@pytest.mark.parametrize("seed", range(4))
def test_sim_a_put_caused_outside_the_scheduler_under_random_delays(seed, tmp_path):
    cluster = cluster_of(n=2, seed=seed)
    cluster._sim.network.delay_probability = 0.5
    cluster._sim.network.max_delay = 0.004
    try:
        with Client(cluster, set_as_default=False) as client:
            for i in range(5):
                got = _signal_round(client, cluster, f"t{i}", str(tmp_path / f"go-{i}"))
                assert got == list(range(5))
    finally:
        cluster.close()
