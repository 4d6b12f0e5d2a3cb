"""Coordination primitives (Queue, Variable, Lock, Event, Semaphore, Pub/Sub).

Part 1 runs every test three times, in the manner of ``test_client_api.py``
(whose ``backend_cluster``/``backend``/``cluster`` fixtures it uses): on a
fresh validated ``SimCluster`` (2 workers x 1 thread, seed 0), on a
module-scoped ``LocalCluster(processes=False)`` and on a module-scoped
``LocalCluster(processes=True)`` (2 workers x 1 thread each).  Each test
gets a fresh ``Client(cluster, set_as_default=False)``, so the test passes
``client=client`` to every primitive it makes; inside tasks the primitives
find the task's client themselves.  Only behaviour both drivers promise is
asserted there.

Part 2 is simulator-only, with exact outcomes from a seeded run: faults
under a lock, a queue and a semaphore, stalls, virtual-time timeouts and
the determinism of a program using every primitive (in this process, and
in two child processes under different ``PYTHONHASHSEED``).  The
never-ending waits that must end in ``SimulationStalled`` run in a child
process with an alarm, so one that hangs instead fails its test in 15 s
rather than stopping the session.

Primitive names are unique per test (the ``names`` fixture), because the
runtime clusters (and so the primitives' state on their schedulers) live
for the whole module.  Every blocking call has a timeout (virtual on the
simulator); tasks that wait on an Event wait on one the test's teardown
sets (``names.release``), so no worker thread stays blocked for the next
test; and a watchdog dumps every thread's stack and exits if a test still
hangs after ``WATCHDOG`` seconds.  Stateful tasks are submitted with
``pure=False``: two equal calls must both run.

Task functions live in ``coordination_support.py`` (worker processes
import them by name).
"""

from __future__ import annotations

import builtins
import datetime
import faulthandler
import gc
import json
import os
import subprocess
import sys
import time

import pytest

import twofold
from twofold import Client, Event, Lock, Pub, Queue, Semaphore, Sub, TimeoutError, Variable, wait

from client_support import cluster_of, inc
from coordination_support import (
    BLOCKED,
    RAISES,
    access_limited,
    all_primitives_program,
    blocked_call,
    event_is_set,
    event_set,
    event_set_later,
    event_wait_with,
    lock_acquire,
    lock_hold_forever,
    lock_hold_until,
    lock_try,
    locked_increment,
    publish,
    queue_consume_one_then_block,
    queue_get,
    queue_get_later,
    queue_get_with,
    queue_put,
    queue_put_a_future,
    queue_put_range,
    queue_put_with,
    queue_started_then_get_forever,
    semaphore_acquire,
    semaphore_hold_forever,
    subscribe_and_get,
    use_lock,
    variable_get,
    variable_get_future_result,
    variable_get_with,
    variable_set,
    variable_set_later,
    wait_for_event,
)
from test_client_api import (  # noqa: F401 - backend_cluster, backend, cluster: fixtures
    TIMEOUT,
    WATCHDOG,
    backend,
    backend_cluster,
    cluster,
    eventually,
    is_sim,
    let_time_pass,
    scheduler_keys,
)

#: the timeout of a blocking call expected to time out (seconds; virtual on the simulator)
SHORT = 0.1


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Names:
    """Primitive names unique to one test; ``release`` ones are Events its teardown sets."""

    def __init__(self, test: str):
        self.test = test
        self.to_release: list[str] = []

    def __call__(self, what: str) -> str:
        return f"{self.test}:{what}"

    def release(self, what: str) -> str:
        name = self(what)
        self.to_release.append(name)
        return name


@pytest.fixture
def names(request):
    return Names(request.node.name)


@pytest.fixture
def client(cluster, names):
    c = Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        if not is_sim(cluster):
            # unblock the tasks still waiting on this test's events, then let them drain
            for name in names.to_release:
                try:
                    Event(name, client=c).set()
                except Exception:  # the test's own failure is what matters
                    pass
        c.close()
        if not is_sim(cluster):
            deadline = time.monotonic() + 10
            while scheduler_keys(cluster) and time.monotonic() < deadline:
                time.sleep(0.01)


@pytest.fixture
def client2(cluster):
    """A second client of the same cluster (what another program would be, to the primitives)."""
    c = Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()


def still_works(client):
    """After a bad-input error: the cluster carries on."""
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


# ==========================================================================
# Part 1: every backend
# ==========================================================================


def test_the_names_are_exported():
    for name in ("Queue", "Variable", "Lock", "Event", "Semaphore", "Pub", "Sub", "TimeoutError"):
        assert name in twofold.__all__, name
        assert getattr(twofold, name) is globals()[name]
    assert twofold.TimeoutError is twofold.errors.TimeoutError
    assert issubclass(twofold.TimeoutError, builtins.TimeoutError)


# --------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------


def test_queue_put_get_in_order_and_qsize(client, names):
    q = Queue(names("q"), client=client)
    assert q.qsize() == 0
    values = [1, "two", [3, 3], {"four": 4, "nested": {"x": [1]}}, (5, 6), None, 7.5, True, b"bytes"]
    for v in values:
        q.put(v, timeout=TIMEOUT)
    assert q.qsize() == len(values)
    got = [q.get(timeout=TIMEOUT) for _ in values]
    # through msgpack: a tuple comes back as a list, a dict stays a dict
    assert got == [1, "two", [3, 3], {"four": 4, "nested": {"x": [1]}}, [5, 6], None, 7.5, True, b"bytes"]
    assert type(got[4]) is list and type(got[3]) is dict
    assert q.qsize() == 0


def test_queue_get_batch(client, names):
    q = Queue(names("q"), client=client)
    assert q.get(batch=True, timeout=TIMEOUT) == []  # nothing there: an empty list, at once
    for i in range(5):
        q.put(i)
    assert q.get(batch=2, timeout=TIMEOUT) == [0, 1]
    assert q.qsize() == 3
    assert q.get(batch=True, timeout=TIMEOUT) == [2, 3, 4]
    assert q.qsize() == 0
    # batch=n waits for n items: a task puts them
    f = client.submit(queue_put_range, names("q"), 3, pure=False)
    assert q.get(batch=3, timeout=TIMEOUT) == [0, 1, 2]
    assert f.result(timeout=TIMEOUT) == 3
    assert q.qsize() == 0


def test_queue_get_on_an_empty_queue_times_out(client, names):
    q = Queue(names("q"), client=client)
    with pytest.raises(TimeoutError):
        q.get(timeout=SHORT)
    with pytest.raises(TimeoutError):
        q.get(batch=2, timeout=SHORT)
    q.put("after")
    assert q.get(timeout=TIMEOUT) == "after"  # the queue carries on
    assert q.qsize() == 0


def test_queue_timeout_is_also_the_builtin_timeout_error(client, names):
    q = Queue(names("q"), client=client)
    with pytest.raises(builtins.TimeoutError) as info:
        q.get(timeout=SHORT)
    assert type(info.value) is twofold.errors.TimeoutError


def test_queue_between_two_clients(client, client2, names):
    a = Queue(names("q"), client=client)
    b = Queue(names("q"), client=client2)
    for i in range(3):
        b.put(i, timeout=TIMEOUT)
    assert a.qsize() == 3
    assert [a.get(timeout=TIMEOUT) for _ in range(3)] == [0, 1, 2]
    a.put("back")
    assert b.get(timeout=TIMEOUT) == "back"
    assert a.qsize() == b.qsize() == 0


def test_queue_by_name_in_tasks(client, names):
    q = Queue(names("q"), client=client)
    assert client.submit(queue_put, names("q"), {"from": "task"}, pure=False).result(timeout=TIMEOUT)
    assert q.get(timeout=TIMEOUT) == {"from": "task"}
    q.put([1, 2])
    assert client.submit(queue_get, names("q"), pure=False).result(timeout=TIMEOUT) == [1, 2]
    for i in range(3):
        q.put(i)
    assert client.submit(queue_get, names("q"), 3, pure=False).result(timeout=TIMEOUT) == [0, 1, 2]
    assert q.qsize() == 0


def test_queue_object_passed_into_tasks(client, names):
    q = Queue(names("q"), client=client)
    assert client.submit(queue_put_with, q, "hello", pure=False).result(timeout=TIMEOUT) == 1
    assert q.qsize() == 1
    assert client.submit(queue_get_with, q, pure=False).result(timeout=TIMEOUT) == "hello"
    assert q.qsize() == 0


def test_queue_a_task_waits_for_an_item(client, cluster, names):
    q = Queue(names("q"), client=client)
    f = client.submit(queue_get, names("q"), pure=False)
    let_time_pass(cluster, 0.2)
    assert not f.done()
    q.put("late")
    assert f.result(timeout=TIMEOUT) == "late"


def test_queue_of_futures_keeps_the_data_until_taken(client, client2, cluster, names):
    q = Queue(names("q"), client=client)
    f = client.submit(inc, 41, key=names("x"))
    assert f.result(timeout=TIMEOUT) == 42
    key = f.key
    q.put(f, timeout=TIMEOUT)
    del f
    gc.collect()
    let_time_pass(cluster, 0.3)  # the release reaches the scheduler
    assert key in scheduler_keys(cluster)  # the queue holds it
    g = Queue(names("q"), client=client2).get(timeout=TIMEOUT)
    assert isinstance(g, twofold.Future)
    assert g.key == key
    assert g.result(timeout=TIMEOUT) == 42
    assert client2.submit(inc, g).result(timeout=TIMEOUT) == 43
    # once taken, the getter's future is the only holder
    del g
    gc.collect()
    eventually(cluster, lambda: key not in scheduler_keys(cluster), what="the taken future is released")


def test_queue_a_task_hands_over_a_future(client, names):
    q = Queue(names("q"), client=client)
    key = client.submit(queue_put_a_future, names("q"), 9, pure=False).result(timeout=TIMEOUT)
    g = q.get(timeout=TIMEOUT)
    assert isinstance(g, twofold.Future) and g.key == key
    assert g.result(timeout=TIMEOUT) == 10


@pytest.mark.parametrize("value", [object(), {1, 2}, lambda: 1], ids=["object", "set", "lambda"])
def test_queue_put_of_a_non_msgpack_value_is_a_type_error(client, names, value):
    q = Queue(names("q"), client=client)
    q.put("before")
    with pytest.raises(TypeError):
        q.put(value)
    assert q.qsize() == 1  # nothing was added
    q.put("after")
    assert q.get(batch=True, timeout=TIMEOUT) == ["before", "after"]
    still_works(client)


@pytest.mark.parametrize(
    "maxsize, error",
    [(-1, ValueError), (-5, ValueError), ("3", TypeError), (1.5, TypeError), (None, TypeError)],
    ids=["minus-1", "minus-5", "str", "float", "none"],
)
def test_queue_bad_maxsize(client, names, maxsize, error):
    with pytest.raises(error):
        Queue(names("q"), client=client, maxsize=maxsize)
    q = Queue(names("q"), client=client, maxsize=2)
    q.put(1)
    assert q.get(timeout=TIMEOUT) == 1
    still_works(client)


def test_queue_put_on_a_full_queue_blocks_until_there_is_room(client, names):
    q = Queue(names("q"), client=client, maxsize=1)
    q.put(1, timeout=TIMEOUT)
    with pytest.raises(TimeoutError):
        q.put(2, timeout=SHORT)
    assert q.qsize() == 1  # the timed-out put added nothing
    f = client.submit(queue_get_later, names("q"), 0.3, pure=False)
    q.put(2, timeout=TIMEOUT)  # returns once the task took 1
    assert f.result(timeout=TIMEOUT) == 1
    assert q.qsize() == 1
    assert q.get(timeout=TIMEOUT) == 2


def test_queue_put_from_a_task_on_a_full_queue_waits_for_the_client(client, names):
    q = Queue(names("q"), client=client, maxsize=2)
    f = client.submit(queue_put_range, names("q"), 5, pure=False)
    got = [q.get(timeout=TIMEOUT) for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    assert f.result(timeout=TIMEOUT) == 5


# --------------------------------------------------------------------------
# Variable
# --------------------------------------------------------------------------


def test_variable_set_get_delete(client, names):
    v = Variable(names("v"), client=client)
    with pytest.raises(TimeoutError):
        v.get(timeout=SHORT)  # never set
    v.set(123)
    assert v.get(timeout=TIMEOUT) == 123
    assert v.get(timeout=TIMEOUT) == 123  # get does not take it away
    v.set({"a": (1, 2)})
    assert v.get(timeout=TIMEOUT) == {"a": [1, 2]}
    v.set(False)
    assert v.get(timeout=TIMEOUT) is False
    v.delete()
    with pytest.raises(TimeoutError):
        v.get(timeout=SHORT)  # deleted: unset again
    v.set("again")
    assert v.get(timeout=TIMEOUT) == "again"


def test_variable_get_waits_until_set(client, names):
    v = Variable(names("v"), client=client)
    f = client.submit(variable_set_later, names("v"), [4, 2], 0.3, pure=False)
    assert v.get(timeout=TIMEOUT) == [4, 2]
    assert f.result(timeout=TIMEOUT) == [4, 2]


def test_variable_between_clients_and_tasks(client, client2, names):
    v = Variable(names("v"), client=client)
    v.set("from-client-1")
    assert Variable(names("v"), client=client2).get(timeout=TIMEOUT) == "from-client-1"
    assert client.submit(variable_get, names("v"), pure=False).result(timeout=TIMEOUT) == "from-client-1"
    assert client.submit(variable_get_with, v, pure=False).result(timeout=TIMEOUT) == "from-client-1"
    client.submit(variable_set, names("v"), {"from": "task"}, pure=False).result(timeout=TIMEOUT)
    assert v.get(timeout=TIMEOUT) == {"from": "task"}
    Variable(names("v"), client=client2).set(3)
    assert v.get(timeout=TIMEOUT) == 3


def test_variable_set_of_a_non_msgpack_value_is_a_type_error(client, names):
    v = Variable(names("v"), client=client)
    v.set(1)
    with pytest.raises(TypeError):
        v.set(object())
    assert v.get(timeout=TIMEOUT) == 1  # unchanged
    still_works(client)


def test_variable_holding_a_future_keeps_its_data(client, client2, cluster, names):
    v = Variable(names("v"), client=client)
    f = client.submit(inc, 1, key=names("old"))
    assert f.result(timeout=TIMEOUT) == 2
    old = f.key
    v.set(f)
    del f
    gc.collect()
    let_time_pass(cluster, 0.3)
    assert old in scheduler_keys(cluster)  # the variable holds it
    g = Variable(names("v"), client=client2).get(timeout=TIMEOUT)
    assert isinstance(g, twofold.Future) and g.key == old
    assert g.result(timeout=TIMEOUT) == 2
    assert client.submit(variable_get_future_result, names("v"), pure=False).result(timeout=TIMEOUT) == 2
    del g
    gc.collect()
    # setting another value lets the old future go (nobody else holds it)
    h = client.submit(inc, 10, key=names("new"))
    new = h.key
    v.set(h)
    del h
    gc.collect()
    eventually(cluster, lambda: old not in scheduler_keys(cluster), what="the replaced future is released")
    assert new in scheduler_keys(cluster)
    assert v.get(timeout=TIMEOUT).result(timeout=TIMEOUT) == 11
    gc.collect()
    # deleting the variable lets the new one go too
    v.delete()
    eventually(cluster, lambda: new not in scheduler_keys(cluster), what="the deleted variable's future is released")


# --------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------


def test_lock_acquire_release_locked(client, names):
    lock = Lock(names("L"), client=client)
    assert lock.locked() is False
    assert lock.acquire(timeout=TIMEOUT) is True
    assert lock.locked() is True
    lock.release()
    assert lock.locked() is False
    assert lock.acquire(blocking=False) is True
    lock.release()
    assert lock.acquire() is True  # free: no wait
    lock.release()
    with lock:
        assert lock.locked() is True
    assert lock.locked() is False


def test_lock_release_of_a_lock_not_held_is_a_runtime_error(client, names):
    lock = Lock(names("L"), client=client)
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.acquire(timeout=TIMEOUT)
    other = Lock(names("L"), client=client)
    with pytest.raises(RuntimeError):
        other.release()  # another holder's lock
    assert lock.locked() is True  # still held
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()  # twice
    assert lock.locked() is False
    assert lock.acquire(timeout=TIMEOUT)
    lock.release()


def test_lock_nonblocking_with_a_timeout_is_a_value_error(client, names):
    lock = Lock(names("L"), client=client)
    with pytest.raises(ValueError):
        lock.acquire(blocking=False, timeout=1)
    assert lock.locked() is False
    assert lock.acquire(blocking=False) is True
    lock.release()


def test_two_lock_objects_of_one_name_in_one_client_are_distinct_holders(client, names):
    a = Lock(names("L"), client=client)
    b = Lock(names("L"), client=client)
    assert a.acquire(timeout=TIMEOUT)
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=SHORT) is False
    assert b.locked() is True
    a.release()
    assert b.acquire(blocking=False) is True
    assert a.acquire(blocking=False) is False
    b.release()


def test_lock_of_one_name_is_shared_across_clients(client, client2, names):
    a = Lock(names("L"), client=client)
    b = Lock(names("L"), client=client2)
    assert a.acquire(timeout=TIMEOUT)
    assert b.locked() is True
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=SHORT) is False
    a.release()
    assert b.acquire(timeout=TIMEOUT) is True
    assert a.acquire(timeout=SHORT) is False
    b.release()
    assert a.locked() is False


def test_lock_held_by_the_client_keeps_tasks_out(client, names):
    lock = Lock(names("L"), client=client)
    assert lock.acquire(timeout=TIMEOUT)
    assert client.submit(lock_try, names("L"), pure=False).result(timeout=TIMEOUT) is False
    assert client.submit(lock_acquire, names("L"), SHORT, pure=False).result(timeout=TIMEOUT) is False
    lock.release()
    assert client.submit(lock_try, names("L"), pure=False).result(timeout=TIMEOUT) is True
    assert client.submit(lock_acquire, names("L"), TIMEOUT, pure=False).result(timeout=TIMEOUT) is True
    assert lock.locked() is False


def test_lock_held_by_a_task_makes_the_client_wait(client, names):
    held, until = names.release("held"), names.release("until")
    lock = Lock(names("L"), client=client)
    f = client.submit(lock_hold_until, names("L"), held, until, pure=False)
    assert Event(held, client=client).wait(timeout=TIMEOUT)
    assert lock.locked() is True
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=SHORT) is False
    Event(until, client=client).set()
    assert lock.acquire(timeout=TIMEOUT) is True  # once the task released it
    assert f.result(timeout=TIMEOUT) is True
    lock.release()


def test_lock_gives_tasks_mutual_exclusion(client, names):
    Variable(names("counter"), client=client).set(0)
    fs = client.map(locked_increment, range(8), lock=names("L"), counter=names("counter"), pure=False)
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == list(range(8))
    assert Variable(names("counter"), client=client).get(timeout=TIMEOUT) == 8  # no update lost
    assert Lock(names("L"), client=client).locked() is False


def test_lock_object_passed_into_tasks(client, names):
    lock = Lock(names("L"), client=client)
    fs = client.map(use_lock, range(4), lock=lock, pure=False)
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [True] * 4
    assert lock.locked() is False
    assert lock.acquire(timeout=TIMEOUT)
    lock.release()


# --------------------------------------------------------------------------
# Event
# --------------------------------------------------------------------------


def test_event_set_clear_is_set_wait(client, names):
    e = Event(names("e"), client=client)
    assert e.is_set() is False
    assert e.wait(timeout=SHORT) is False
    e.set()
    assert e.is_set() is True
    assert e.wait(timeout=TIMEOUT) is True
    assert e.wait() is True  # set: no wait
    e.set()  # setting twice is fine
    assert e.is_set() is True
    e.clear()
    assert e.is_set() is False
    assert e.wait(timeout=SHORT) is False
    e.clear()
    assert e.is_set() is False
    e.set()
    assert e.wait(timeout=TIMEOUT) is True


def test_event_every_waiter_wakes_on_set(client, names):
    e = names.release("e")
    started = names("started")
    fs = client.map(wait_for_event, range(4), name=e, started=started, pure=False)
    # all four are waiting (each left the thread pool first, so they all run)
    assert sorted(Queue(started, client=client).get(batch=4, timeout=TIMEOUT)) == [0, 1, 2, 3]
    assert not any(f.done() for f in fs)
    Event(e, client=client).set()
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [True] * 4


def test_event_between_clients_and_tasks(client, client2, names):
    a = Event(names("e"), client=client)
    b = Event(names("e"), client=client2)
    b.set()
    assert a.is_set() is True
    assert client.submit(event_is_set, names("e"), pure=False).result(timeout=TIMEOUT) is True
    assert client.submit(event_wait_with, a, pure=False).result(timeout=TIMEOUT) is True
    a.clear()
    assert b.is_set() is False
    assert client.submit(event_is_set, names("e"), pure=False).result(timeout=TIMEOUT) is False
    assert client.submit(event_set, names("e"), pure=False).result(timeout=TIMEOUT) is True
    assert a.is_set() and b.is_set()


def test_event_set_by_a_task_wakes_the_client(client, names):
    e = Event(names("e"), client=client)
    f = client.submit(event_set_later, names("e"), 0.3, pure=False)
    assert e.wait(timeout=TIMEOUT) is True
    assert f.result(timeout=TIMEOUT) is True


# --------------------------------------------------------------------------
# Semaphore
# --------------------------------------------------------------------------


def test_semaphore_acquire_release_get_value(client, names):
    sem = Semaphore(2, names("s"), client=client)  # dask's positional order: max_leases, name
    assert sem.get_value() == 0
    assert sem.acquire(timeout=TIMEOUT) is True
    assert sem.get_value() == 1
    assert sem.acquire(timeout=TIMEOUT) is True
    assert sem.get_value() == 2
    assert sem.acquire(timeout=SHORT) is False  # full
    assert sem.get_value() == 2
    assert sem.release() is True
    assert sem.get_value() == 1
    assert sem.release() is True
    assert sem.get_value() == 0
    with pytest.raises(RuntimeError):
        sem.release()  # more releases than acquires
    assert sem.get_value() == 0
    with sem:
        assert sem.get_value() == 1
    assert sem.get_value() == 0
    sem.close()


def test_semaphore_default_is_one_lease(client, names):
    sem = Semaphore(name=names("s"), client=client)
    assert sem.acquire(timeout=TIMEOUT) is True
    assert sem.acquire(timeout=SHORT) is False
    assert sem.release() is True
    sem.close()


@pytest.mark.parametrize("max_leases", [0, -1])
def test_semaphore_needs_at_least_one_lease(client, names, max_leases):
    with pytest.raises(ValueError):
        Semaphore(max_leases=max_leases, name=names("s"), client=client)
    sem = Semaphore(max_leases=1, name=names("s"), client=client)
    assert sem.acquire(timeout=TIMEOUT)
    assert sem.release()
    still_works(client)


def test_semaphore_is_shared_across_clients_and_tasks(client, client2, names):
    a = Semaphore(max_leases=1, name=names("s"), client=client)
    b = Semaphore(max_leases=1, name=names("s"), client=client2)
    assert a.acquire(timeout=TIMEOUT)
    assert b.get_value() == 1
    assert b.acquire(timeout=SHORT) is False
    assert client.submit(semaphore_acquire, names("s"), 1, SHORT, pure=False).result(timeout=TIMEOUT) is False
    assert a.release()
    assert client.submit(semaphore_acquire, names("s"), 1, TIMEOUT, pure=False).result(timeout=TIMEOUT) is True
    assert b.acquire(timeout=TIMEOUT) is True
    assert a.get_value() == 1
    assert b.release()
    assert a.get_value() == 0


def _run_access_limited(client, names, n=10, max_leases=2):
    """The docs' example, measuring concurrency: (get_value() seen by each task, counts seen)."""
    sem = Semaphore(max_leases=max_leases, name=names("sem"), client=client)
    Variable(names("active"), client=client).set(0)
    fs = client.map(access_limited, range(n), sem=sem, active=names("active"), guard=names("guard"),
                    seen=names("seen"), pure=False)
    wait(fs, timeout=TIMEOUT)
    values = client.gather(fs)
    seen = Queue(names("seen"), client=client).get(batch=n, timeout=TIMEOUT)
    assert Variable(names("active"), client=client).get(timeout=TIMEOUT) == 0
    assert sem.get_value() == 0
    sem.close()
    return values, seen


def test_semaphore_limits_concurrent_tasks(client, names):
    values, seen = _run_access_limited(client, names)
    assert len(values) == len(seen) == 10
    assert all(1 <= v <= 2 for v in values), values
    assert all(1 <= s <= 2 for s in seen), seen


# --------------------------------------------------------------------------
# Pub / Sub
# --------------------------------------------------------------------------


def test_pub_sub_in_order(client, names):
    sub = Sub(names("t"), client=client)
    pub = Pub(names("t"), client=client)
    for i in range(10):
        pub.put(i)
    pub.put({"k": [1, 2]})
    assert [sub.get(timeout=TIMEOUT) for _ in range(10)] == list(range(10))
    assert sub.get(timeout=TIMEOUT) == {"k": [1, 2]}
    with pytest.raises(TimeoutError):
        sub.get(timeout=SHORT)


def test_sub_iteration_yields_the_messages(client, names):
    sub = Sub(names("t"), client=client)
    pub = Pub(names("t"), client=client)
    for i in range(4):
        pub.put(i)
    assert sub.get(timeout=TIMEOUT) == 0  # they flow (so the loop below does not wait forever)
    got = []
    for msg in sub:
        got.append(msg)
        if len(got) == 3:
            break
    assert got == [1, 2, 3]


def test_pub_subscribers_is_a_dict(client, names):
    pub = Pub(names("t"), client=client)
    assert isinstance(pub.subscribers, dict)
    Sub(names("t"), client=client)
    assert isinstance(pub.subscribers, dict)


def test_every_subscriber_gets_every_message(client, client2, names):
    s1 = Sub(names("t"), client=client)
    s2 = Sub(names("t"), client=client2)
    s3 = Sub(names("t"), client=client)
    pub = Pub(names("t"), client=client2)
    for i in range(5):
        pub.put(i)
    for sub in (s1, s2, s3):
        assert [sub.get(timeout=TIMEOUT) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_tasks_publish_to_the_client(client, names):
    sub = Sub(names("t"), client=client)
    assert client.submit(publish, names("t"), 5, pure=False).result(timeout=TIMEOUT) == 5
    assert [sub.get(timeout=TIMEOUT) for _ in range(5)] == [0, 1, 2, 3, 4]
    # two publishing tasks: each one's messages in order
    fs = [client.submit(publish, names("t"), 3, start, pure=False) for start in (100, 200)]
    wait(fs, timeout=TIMEOUT)
    got = [sub.get(timeout=TIMEOUT) for _ in range(6)]
    assert [m for m in got if m < 200] == [100, 101, 102]
    assert [m for m in got if m >= 200] == [200, 201, 202]


def test_a_task_subscribes_and_the_client_publishes(client, names):
    subscribed = names.release("subscribed")
    f = client.submit(subscribe_and_get, names("t"), 3, subscribed, pure=False)
    assert Event(subscribed, client=client).wait(timeout=TIMEOUT)
    pub = Pub(names("t"), client=client)
    for i in range(3):
        pub.put(["m", i])
    assert f.result(timeout=TIMEOUT) == [["m", 0], ["m", 1], ["m", 2]]


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

MAKERS = {
    "Queue": lambda name, c: Queue(name, client=c),
    "Variable": lambda name, c: Variable(name, client=c),
    "Lock": lambda name, c: Lock(name, client=c),
    "Event": lambda name, c: Event(name, client=c),
    "Semaphore": lambda name, c: Semaphore(max_leases=1, name=name, client=c),
    "Pub": lambda name, c: Pub(name, client=c),
    "Sub": lambda name, c: Sub(name, client=c),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_name_that_is_not_a_str_is_a_type_error(client, names, kind):
    for bad in (3, b"bytes", ("a", "b"), 1.5, ["x"]):
        with pytest.raises(TypeError):
            MAKERS[kind](bad, client)
    MAKERS[kind](names(kind), client)  # a good one still works
    still_works(client)


#: (timeout, the error it gives): a wrong type is a TypeError, a negative one a ValueError
BAD_TIMEOUTS = [([1], TypeError), ({"s": 1}, TypeError), (object(), TypeError), (-1, ValueError),
                (-0.5, ValueError), (datetime.timedelta(seconds=-1), ValueError)]


@pytest.mark.parametrize("kind", BLOCKED)
def test_a_bad_timeout_is_rejected(client, names, kind):
    call, on_timeout, check = blocked_call(kind, client, names.test)
    for timeout, error in BAD_TIMEOUTS:
        with pytest.raises(error):
            call(timeout)
        assert check(), timeout
    # the same call with a good timeout behaves normally
    if on_timeout == RAISES:
        with pytest.raises(TimeoutError):
            call(SHORT)
    else:
        assert call(SHORT) is False
    assert check()
    still_works(client)


@pytest.mark.parametrize("kind", BLOCKED)
def test_a_timeout_can_be_a_string_or_a_timedelta(client, names, kind):
    call, on_timeout, check = blocked_call(kind, client, names.test)
    for timeout in ("50ms", datetime.timedelta(milliseconds=50)):
        if on_timeout == RAISES:
            with pytest.raises(TimeoutError):
                call(timeout)
        else:
            assert call(timeout) is False
        assert check(), timeout


def test_good_timeout_forms_when_the_call_succeeds(client, names):
    q = Queue(names("q"), client=client)
    q.put(1, timeout="1s")
    q.put(2, timeout=datetime.timedelta(seconds=1))
    assert q.get(timeout="10s") == 1
    assert q.get(timeout=datetime.timedelta(seconds=10)) == 2
    lock = Lock(names("L"), client=client)
    assert lock.acquire(timeout="10s") is True
    lock.release()
    e = Event(names("e"), client=client)
    e.set()
    assert e.wait(timeout=datetime.timedelta(seconds=5)) is True
    assert e.wait(timeout=0) is True
    sem = Semaphore(max_leases=1, name=names("s"), client=client)
    assert sem.acquire(timeout="500ms") is True
    assert sem.release()


# ==========================================================================
# Part 2: the simulator only (seeded, exact)
# ==========================================================================


def sim_client(cluster):
    return Client(cluster, set_as_default=False)


def test_sim_a_lock_holders_worker_crashes_then_the_client_gets_the_lock():
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        f = client.submit(lock_hold_forever, "L", "held", "forever", workers=["worker-0"], pure=False)
        assert Event("held", client=client).wait(timeout=30) is True
        lock = Lock("L", client=client)
        assert lock.locked() is True
        assert lock.acquire(blocking=False) is False
        crash_at = cluster.now + 1.0
        cluster.crash("worker-0", at=crash_at)
        assert lock.acquire(timeout=30) is True
        assert cluster.now >= crash_at  # not before the holder died
        assert cluster.alive_workers == ["worker-1"]
        assert lock.locked() is True
        # the client holds it now: a task elsewhere cannot have it
        assert client.submit(lock_try, "L", workers=["worker-1"], pure=False).result(timeout=30) is False
        lock.release()
        assert client.submit(lock_try, "L", workers=["worker-1"], pure=False).result(timeout=30) is True
        assert lock.locked() is False
        assert f.status == "pending"  # restricted to the dead worker: it never ran again
        assert [x["what"] for x in cluster.records("fault") if x["what"] == "crash"] == ["crash"]


def test_sim_a_queue_consumer_dies_with_items_unread():
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        q = Queue("jobs", client=client)
        for i in range(5):
            q.put(i)
        f = client.submit(queue_consume_one_then_block, "jobs", "took", "forever", workers=["worker-0"],
                          pure=False)
        assert Variable("took", client=client).get(timeout=30) == 0
        assert q.qsize() == 4
        cluster.crash("worker-0", at=cluster.now + 0.5)
        cluster.run(cluster.now + 2.0)
        assert cluster.alive_workers == ["worker-1"]
        assert q.qsize() == 4  # the dead consumer's unread items are still there
        q.put(5)
        assert q.get(batch=5, timeout=30) == [1, 2, 3, 4, 5]
        assert q.qsize() == 0
        assert f.status == "pending"


def test_sim_a_dead_consumers_pending_get_swallows_nothing():
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        f = client.submit(queue_started_then_get_forever, "jobs", "started", workers=["worker-0"], pure=False)
        assert Event("started", client=client).wait(timeout=30) is True
        cluster.run(cluster.now + 0.5)  # its get() is waiting on the scheduler
        cluster.crash("worker-0", at=cluster.now + 0.5)
        cluster.run(cluster.now + 2.0)
        q = Queue("jobs", client=client)
        for i in range(3):
            q.put(i)
        assert q.qsize() == 3
        assert q.get(batch=3, timeout=30) == [0, 1, 2]
        assert f.status == "pending"


def test_sim_a_partitioned_semaphore_holder_loses_its_lease_after_the_lease_timeout():
    lease_timeout = 5.0
    config = {"semaphore_lease_timeout": lease_timeout}
    with cluster_of(n=2, seed=0, scheduler_config=config) as cluster, sim_client(cluster) as client:
        sem = Semaphore(max_leases=1, name="S", client=client)
        f = client.submit(semaphore_hold_forever, "S", 1, "held", "forever", workers=["worker-1"], pure=False)
        assert Event("held", client=client).wait(timeout=30) is True
        assert sem.get_value() == 1
        start = cluster.now
        # long enough for the lease to expire, shorter than worker_ttl (60 s): the worker stays
        cluster.partition("worker-1", cluster.scheduler_address, start=start, end=start + 40.0)
        assert sem.acquire(timeout=2.0) is False  # within the lease timeout it is still held
        assert sem.acquire(timeout=30.0) is True
        assert cluster.now - start > lease_timeout - 0.5  # the lease expired; it was not dropped at once
        assert cluster.now < start + 40.0  # before the partition healed
        assert sorted(cluster.scheduler.workers) == ["worker-0", "worker-1"]
        assert sem.get_value() == 1
        assert sem.release() is True
        assert sem.get_value() == 0
        assert not f.done()


def test_sim_the_semaphore_admits_exactly_max_leases_at_once():
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        values, seen = _run_access_limited(client, Names("sim-semaphore"), n=10, max_leases=2)
        assert max(values) == 2 and max(seen) == 2
        assert set(values) <= {1, 2} and set(seen) <= {1, 2}


STALLS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from coordination_support import stall_outcomes
print(json.dumps(stall_outcomes()))
"""


@pytest.fixture(scope="module")
def stall_outcomes():
    """What each never-ending wait did, run in a child process (a hang there costs 15 s, not the session)."""
    out = subprocess.run([sys.executable, "-c", STALLS, os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", BLOCKED)
def test_sim_a_wait_that_can_never_end_is_a_stall(stall_outcomes, kind):
    assert stall_outcomes[kind] == "stalled"
    assert stall_outcomes[kind + ":seconds"] < 10  # 300 virtual seconds of heartbeats first: quick


@pytest.mark.parametrize("kind", BLOCKED)
def test_sim_timeouts_are_virtual_time(kind):
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        call, on_timeout, check = blocked_call(kind, client, "virtual")
        t0, wall = cluster.now, time.monotonic()
        if on_timeout == RAISES:
            with pytest.raises(TimeoutError):
                call(5.0)
        else:
            assert call(5.0) is False
        assert time.monotonic() - wall < 3.0  # prompt in wall time
        assert cluster.now - t0 == pytest.approx(5.0, abs=0.05)  # five virtual seconds
        assert check()


def test_sim_a_task_blocked_on_a_lock_waits_in_virtual_time():
    with cluster_of(n=2, seed=0) as cluster, sim_client(cluster) as client:
        lock = Lock("L", client=client)
        assert lock.acquire(timeout=30)
        t0 = cluster.now
        f = client.submit(lock_acquire, "L", 5.0, pure=False)
        assert f.result(timeout=30) is False
        assert cluster.now - t0 == pytest.approx(5.0, abs=0.1)
        lock.release()


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------

PROGRAM = """
import json, sys
sys.path.insert(0, sys.argv[1])
from coordination_support import all_primitives_program
print(json.dumps(all_primitives_program(int(sys.argv[2]))))
"""


def _program_in_a_process(seed: int, hash_seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run([sys.executable, "-c", PROGRAM, os.path.dirname(__file__), str(seed)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_program_outcome(run: dict) -> None:
    assert sorted(run["taken"]) == [0, 1, 2, 3, 4, 5]
    assert sorted(run["results"]) == [0, 10, 20, 30, 40, 50]
    assert sorted(m[1] for m in run["messages"]) == [0, 1, 2, 3, 4, 5]
    assert run["total"] == 15
    assert run["locked"] is False and run["leases"] == 0


def test_sim_same_seed_same_program_same_digest():
    a = all_primitives_program(0)
    b = all_primitives_program(0)
    _check_program_outcome(a)
    assert a == b  # digest, virtual time, names, and every value seen, in order


def test_sim_the_digest_does_not_depend_on_the_hash_seed():
    runs = [_program_in_a_process(0, hash_seed) for hash_seed in ("0", "1")]
    _check_program_outcome(runs[0])
    assert runs[0] == runs[1]
    here = json.loads(json.dumps(all_primitives_program(0)))
    assert here == runs[0]
