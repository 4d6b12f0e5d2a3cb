"""Task functions for the coordination-primitive tests (``test_coordination.py``).

They run as tasks on the simulator, on threads and in worker processes, so
they live at module level in an importable module: worker processes import
them by name from this file (the nanny hands ``sys.path``, which holds
``tests/``, to its child in ``PYTHONPATH``).

Inside a task every primitive is made without ``client=``: it finds the
task's client by itself (``get_client()``).  Every blocking call here has a
timeout (``WAIT``, virtual on the simulator), so a test that goes wrong
fails instead of leaving a worker thread blocked for the next test; the
``*_until`` functions wait on an Event that the test (or its teardown) sets.
"""

from __future__ import annotations

from twofold import Client, Event, Lock, Pub, Queue, Semaphore, Sub, Variable, get_client, secede

from client_support import cluster_of, inc

#: the longest any task here waits on anything (seconds; virtual on the simulator)
WAIT = 25.0


def pause(seconds, name="coordination-support-pause"):
    """Let ``seconds`` pass inside a task (virtual time on the simulator): wait on an Event nobody sets."""
    Event(name).wait(timeout=seconds)


# -- Queue ---------------------------------------------------------------------


def queue_put(name, value):
    Queue(name).put(value, timeout=WAIT)
    return value


def queue_put_range(name, n):
    q = Queue(name)
    for i in range(n):
        q.put(i, timeout=WAIT)
    return n


def queue_get(name, batch=False):
    return Queue(name).get(timeout=WAIT, batch=batch)


def queue_get_later(name, delay):
    """Take one item from the queue ``name`` after ``delay`` seconds."""
    pause(delay)
    return Queue(name).get(timeout=WAIT)


def queue_put_with(queue, value):
    """Put into a Queue object passed as an argument."""
    queue.put(value, timeout=WAIT)
    return queue.qsize()


def queue_get_with(queue):
    return queue.get(timeout=WAIT)


def queue_put_a_future(name, x):
    """The docs' pattern: a task submits work and hands the Future over through a queue."""
    future = get_client().submit(inc, x, key=f"{name}-from-a-task")
    Queue(name).put(future, timeout=WAIT)
    return future.key


def queue_consume_one_then_block(name, took, forever):
    """Take one item, report it in the Variable ``took``, then block on the Event ``forever``."""
    x = Queue(name).get(timeout=WAIT)
    Variable(took).set(x)
    Event(forever).wait()
    return x


def queue_started_then_get_forever(name, started):
    """Say so in the Event ``started``, then wait (with no timeout) for an item of ``name``."""
    Event(started).set()
    return Queue(name).get()


# -- Variable ------------------------------------------------------------------


def variable_set(name, value):
    Variable(name).set(value)
    return value


def variable_set_later(name, value, delay):
    """Set the Variable ``name`` after ``delay`` seconds."""
    pause(delay)
    Variable(name).set(value)
    return value


def variable_get(name):
    return Variable(name).get(timeout=WAIT)


def variable_get_with(variable):
    return variable.get(timeout=WAIT)


def variable_get_future_result(name):
    """The result of the Future a Variable holds, read from a task."""
    return Variable(name).get(timeout=WAIT).result(timeout=WAIT)


# -- Lock ----------------------------------------------------------------------


def lock_try(name):
    """A non-blocking attempt: True (and released again) or False."""
    lock = Lock(name)
    got = lock.acquire(blocking=False)
    if got:
        lock.release()
    return got


def lock_acquire(name, timeout):
    """``acquire(timeout=timeout)``; released again when it succeeded."""
    lock = Lock(name)
    got = lock.acquire(timeout=timeout)
    if got:
        lock.release()
    return got


def lock_hold_until(name, held, until):
    """Acquire the lock, set the Event ``held``, release once the Event ``until`` is set."""
    lock = Lock(name)
    assert lock.acquire(timeout=WAIT)
    try:
        Event(held).set()
        Event(until).wait(timeout=WAIT)
    finally:
        lock.release()
    return True


def lock_hold_forever(name, held, forever):
    """Acquire the lock, set the Event ``held``, then block (no timeout) on the Event ``forever``."""
    lock = Lock(name)
    assert lock.acquire(timeout=WAIT)
    Event(held).set()
    Event(forever).wait()
    return True


def locked_increment(x, lock, counter):
    """Read-pause-write a Variable under the Lock named ``lock``: updates get lost without the lock."""
    with Lock(lock):
        v = Variable(counter)
        n = v.get(timeout=WAIT)
        pause(0.01)
        v.set(n + 1)
    return x


def use_lock(x, lock=None):
    """``with lock:`` on a Lock object passed as an argument; what ``locked()`` says inside."""
    with lock:
        return lock.locked()


# -- Event ---------------------------------------------------------------------


def wait_for_event(x, name, started):
    """The docs' waiter: leave the thread pool, say so on the Queue ``started``, wait for the Event."""
    secede()
    Queue(started).put(x, timeout=WAIT)
    return Event(name).wait(timeout=WAIT)


def event_set(name):
    Event(name).set()
    return True


def event_set_later(name, delay):
    pause(delay)
    Event(name).set()
    return True


def event_wait_with(event):
    """``wait`` on an Event object passed as an argument."""
    return event.wait(timeout=WAIT)


def event_is_set(name):
    return Event(name).is_set()


# -- Semaphore -----------------------------------------------------------------


def access_limited(val, sem, active, guard, seen):
    """The docs' semaphore task, measuring concurrency.

    It leaves the thread pool first (so the threads do not bound the
    concurrency: only the semaphore does), then, holding a lease, counts
    itself into the Variable ``active`` (under the Lock ``guard``), puts
    the count it saw on the Queue ``seen``, holds the lease a moment and
    counts itself out.  Returns ``sem.get_value()`` as seen while holding.
    """
    secede()
    with sem:
        value = sem.get_value()
        counter = Variable(active)
        with Lock(guard):
            n = counter.get(timeout=WAIT) + 1
            counter.set(n)
        Queue(seen).put(n, timeout=WAIT)
        pause(0.05)
        with Lock(guard):
            counter.set(counter.get(timeout=WAIT) - 1)
    return value


def semaphore_acquire(name, max_leases, timeout):
    """``acquire(timeout=timeout)`` on the Semaphore ``name``; released again when it succeeded."""
    sem = Semaphore(max_leases=max_leases, name=name)
    got = sem.acquire(timeout=timeout)
    if got:
        sem.release()
    return got


def semaphore_hold_forever(name, max_leases, held, forever):
    """Take a lease, set the Event ``held``, then block (no timeout) on the Event ``forever``."""
    sem = Semaphore(max_leases=max_leases, name=name)
    assert sem.acquire(timeout=WAIT)
    Event(held).set()
    Event(forever).wait()
    return True


# -- Pub / Sub -----------------------------------------------------------------


def publish(topic, n, start=0):
    """Publish ``start .. start + n - 1`` on ``topic`` from a task."""
    pub = Pub(topic)
    for i in range(start, start + n):
        pub.put(i)
    return n


# -- everything at once (the determinism test) -----------------------------------


def subscribe_and_get(topic, n, subscribed):
    """Subscribe from a task, set the Event ``subscribed``, then return the next ``n`` messages."""
    sub = Sub(topic)
    Event(subscribed).set()
    return [sub.get(timeout=WAIT) for _ in range(n)]


def all_primitives_task(i, jobs, results, counter, guard, gate, topic, sem):
    """One task of the determinism program: every primitive, some by name, some passed in."""
    assert Event(gate).wait(timeout=WAIT)
    with sem:
        x = Queue(jobs).get(timeout=WAIT)
        with Lock(guard):
            v = Variable(counter)
            v.set(v.get(timeout=WAIT) + x)
        Pub(topic).put([i, x])
    results.put(x * 10, timeout=WAIT)
    return x


def all_primitives_program(seed: int) -> dict:
    """A seeded simulated run using every primitive; what it saw, and the cluster's digest.

    The cluster has a fixed name, so runs in different processes (and
    one after another in the same process) are comparable to the byte.
    """
    n = 6
    cluster = cluster_of(n=2, seed=seed, durations=0.1, name="coordination-determinism")
    try:
        with Client(cluster, set_as_default=False) as client:
            anonymous = Queue(client=client)  # a random name: from the cluster's seeded generator
            jobs = Queue("jobs", client=client)
            for x in range(n):
                jobs.put(x)
            Variable("counter", client=client).set(0)
            sem = Semaphore(max_leases=2, name="sem", client=client)
            sub = Sub("topic", client=client)
            gate = Event("gate", client=client)
            futures = client.map(all_primitives_task, range(n), jobs="jobs", results=anonymous,
                                 counter="counter", guard="guard", gate="gate", topic="topic", sem=sem,
                                 pure=False)
            gate.set()
            taken = client.gather(futures)
            messages = [sub.get(timeout=WAIT) for _ in range(n)]
            results = anonymous.get(batch=n, timeout=WAIT)
            total = Variable("counter", client=client).get(timeout=WAIT)
            locked = Lock("guard", client=client).locked()
            leases = sem.get_value()
            return {
                "digest": cluster.digest(),
                "now": cluster.now,
                "anonymous": anonymous.name,
                "taken": taken,
                "messages": messages,
                "results": results,
                "total": total,
                "locked": locked,
                "leases": leases,
            }
    finally:
        cluster.close()


# -- calls that wait for something that never happens --------------------------------

#: what a waiting call gives when its timeout passes: it raises TimeoutError, or returns False
RAISES, FALSE = "raises", "false"

#: every kind of waiting call, for ``blocked_call``
BLOCKED = ("Queue.get", "Queue.get-batch", "Queue.put", "Variable.get", "Lock.acquire", "Event.wait",
           "Semaphore.acquire", "Sub.get")


def blocked_call(kind, client, prefix):
    """A call that waits, with nothing that will ever end the wait (names start with ``prefix``).

    Returns ``(call, on_timeout, check)``: ``call(timeout)`` makes the call;
    ``on_timeout`` is RAISES or FALSE; ``check()`` says the state is as it
    was (a timed-out or rejected call changed nothing).  Holders are kept
    alive by the closures.
    """
    if kind == "Queue.get":
        q = Queue(f"{prefix}:q", client=client)
        return (lambda t: q.get(timeout=t)), RAISES, lambda: q.qsize() == 0
    if kind == "Queue.get-batch":
        q = Queue(f"{prefix}:q", client=client)
        q.put(1)
        return (lambda t: q.get(timeout=t, batch=2)), RAISES, lambda: q.qsize() == 1
    if kind == "Queue.put":
        q = Queue(f"{prefix}:q", client=client, maxsize=1)
        q.put("first")
        return (lambda t: q.put("second", timeout=t)), RAISES, lambda: q.qsize() == 1
    if kind == "Variable.get":
        v = Variable(f"{prefix}:v", client=client)
        return (lambda t: v.get(timeout=t)), RAISES, lambda: True
    if kind == "Lock.acquire":
        holder = Lock(f"{prefix}:L", client=client)
        assert holder.acquire(timeout=WAIT)
        lock = Lock(f"{prefix}:L", client=client)
        return (lambda t: lock.acquire(timeout=t)), FALSE, lambda: holder.locked()
    if kind == "Event.wait":
        e = Event(f"{prefix}:e", client=client)
        return (lambda t: e.wait(timeout=t)), FALSE, lambda: e.is_set() is False
    if kind == "Semaphore.acquire":
        holder = Semaphore(max_leases=1, name=f"{prefix}:s", client=client)
        assert holder.acquire(timeout=WAIT)
        sem = Semaphore(max_leases=1, name=f"{prefix}:s", client=client)
        return (lambda t: sem.acquire(timeout=t)), FALSE, lambda: holder is not None and sem.get_value() == 1
    if kind == "Sub.get":
        sub = Sub(f"{prefix}:t", client=client)
        return (lambda t: sub.get(timeout=t)), RAISES, lambda: True
    raise AssertionError(kind)


def stall_outcomes(limit: int = 15) -> dict:
    """For each kind of never-ending wait, on a fresh simulated cluster: what the wait did.

    ``"stalled"`` (SimulationStalled), ``"hung"`` (still waiting after
    ``limit`` wall seconds: SIGALRM ends it), ``"returned ..."`` or the
    exception's type and message.  Meant to run in a child process, so that
    a wait that hangs costs this run ``limit`` seconds rather than the
    whole test session.
    """
    import signal
    import time

    from twofold.errors import SimulationStalled

    class Hung(BaseException):
        pass

    def alarm(signum, frame):
        raise Hung()

    signal.signal(signal.SIGALRM, alarm)
    out = {}
    for kind in BLOCKED:
        cluster = cluster_of(n=2, seed=0)
        client = Client(cluster, set_as_default=False)
        t0 = time.monotonic()
        signal.alarm(limit)
        try:
            try:
                call, _, _ = blocked_call(kind, client, "stall")
                result = call(None)
                out[kind] = f"returned {result!r}"
            finally:
                signal.alarm(0)
        except SimulationStalled:
            out[kind] = "stalled"
        except Hung:
            out[kind] = "hung"
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[kind] = f"{type(exc).__name__}: {exc}"
        out[kind + ":seconds"] = round(time.monotonic() - t0, 1)
        try:
            client.close()
        except BaseException:  # noqa: BLE001 - a broken client after a hang; the cluster goes anyway
            pass
        cluster.close()
    return out
