"""Task functions for the direct Pub/Sub tests (``test_pubsub_direct.py``).

They run as tasks on the simulator, on threads and in worker processes, so
they live at module level in an importable module (worker processes import
them by name: the nanny hands ``sys.path``, which holds ``tests/``, to its
child).  Every blocking call has a timeout (``WAIT``, virtual on the
simulator).
"""

from __future__ import annotations

import os
import signal
import time

from twofold import Event, Pub, Sub, secede
from twofold.context import current_task

#: the longest any task here waits on anything (seconds; virtual on the simulator)
WAIT = 25.0


def on_sim() -> bool:
    ctx = current_task()
    return ctx is not None and type(ctx).__module__.startswith("twofold.sim")


def pause(seconds: float) -> None:
    """Let ``seconds`` pass in a task (virtual time on the simulator, where sleeping would stop the world)."""
    if on_sim():
        Event("pubsub-support-pause").wait(timeout=seconds)
    else:
        time.sleep(seconds)


def clock() -> float:
    """Seconds on the cluster's clock (virtual on the simulator, monotonic on the runtime)."""
    return current_task().client()._backend.now()


def subscribe_and_collect(topic, n, subscribed, leave=False):
    """Subscribe, set the Event ``subscribed``, return the next ``n`` messages (``leave``: secede
    first, so that another task can run on this worker meanwhile)."""
    if leave:
        secede()
    sub = Sub(topic)
    Event(subscribed).set()
    return [sub.get(timeout=WAIT) for _ in range(n)]


def subscribe_until(topic, last, subscribed, delay=0.0):
    """After ``delay`` seconds subscribe, set the Event ``subscribed``, then collect up to the message ``last``."""
    if delay:
        pause(delay)
    sub = Sub(topic)
    Event(subscribed).set()
    got = []
    while not got or got[-1] != last:
        got.append(sub.get(timeout=WAIT))
    return got


def subscribe_and_hold(topic, subscribed, release, leave=False):
    """Subscribe, set ``subscribed``, keep the Sub until the Event ``release`` is set; what came
    meanwhile (``leave``: secede first)."""
    if leave:
        secede()
    sub = Sub(topic)
    Event(subscribed).set()
    Event(release).wait(timeout=WAIT)
    got = []
    try:
        while True:
            got.append(sub.get(timeout=0))
    except TimeoutError:
        return got


def subscribe_then_close(topic, subscribed, closed):
    """Subscribe, set ``subscribed``, close the Sub, set ``closed``."""
    sub = Sub(topic)
    Event(subscribed).set()
    sub.close()
    Event(closed).set()
    return True


def publish(topic, n, start=0, gate=None, every=0.0):
    """Once the Event ``gate`` (if any) is set, publish ``start .. start + n - 1``, ``every`` seconds apart."""
    if gate is not None:
        assert Event(gate).wait(timeout=WAIT)
    pub = Pub(topic)
    for i in range(start, start + n):
        pub.put(i)
        if every:
            pause(every)
    return n


def publish_watching(topic, n, flag, every=0.0):
    """Publish ``0 .. n - 1``; before each put look at the Event ``flag``: the first index put
    after it was seen set (a subscriber made before that put must get it and all after)."""
    pub = Pub(topic)
    event = Event(flag)
    first = None
    for i in range(n):
        if first is None and event.is_set():
            first = i
        pub.put(i)
        if every:
            pause(every)
    return first


def subscribers_seen(topic, gate=None):
    """``Pub(topic).subscribers`` from a task (once the Event ``gate``, if any, is set)."""
    if gate is not None:
        assert Event(gate).wait(timeout=WAIT)
    return Pub(topic).subscribers


def subscribers_until(topic, expected, every=0.01):
    """``Pub(topic).subscribers`` from a task, once it has ``expected`` workers (or WAIT passed)."""
    pub = Pub(topic)
    seen = pub.subscribers
    for _ in range(int(WAIT / every)):
        if len(seen) == expected:
            break
        pause(every)
        seen = pub.subscribers
    return seen


def subscribe_and_die(topic, subscribed, marker):
    """Subscribe, set ``subscribed``, then kill this worker process (only the first time:
    the task runs again elsewhere once its worker is gone, and then just returns)."""
    if os.path.exists(marker):
        return "again"
    with open(marker, "w") as f:
        f.write("died\n")
    Sub(topic)
    Event(subscribed).set()
    os.kill(os.getpid(), signal.SIGKILL)


def publish_timed(topic, n, gate, every=0.0):
    """Publish ``0 .. n - 1`` once ``gate`` is set; how long the puts took (seconds, cluster clock)."""
    assert Event(gate).wait(timeout=WAIT)
    pub = Pub(topic)
    t0 = clock()
    for i in range(n):
        pub.put(i)
        if every:
            pause(every)
    return clock() - t0


# -- a causal channel that bypasses the scheduler: a file ------------------------------


def subscribe_then_touch(topic, n, path, wait=WAIT):
    """Subscribe, then create the file ``path`` (a signal that does not go through the
    scheduler), then return the next ``n`` messages (each within ``wait`` seconds)."""
    sub = Sub(topic)
    with open(path, "w"):
        pass
    return [sub.get(timeout=wait) for _ in range(n)]


def publish_once_touched(topic, n, path, poll=0.0002):
    """Make a Pub (registering now), wait for the file ``path``, then put ``0 .. n - 1`` at once."""
    pub = Pub(topic)
    for _ in range(int(WAIT / poll)):
        if os.path.exists(path):
            break
        pause(poll)
    else:
        raise RuntimeError(f"{path} never appeared")
    for i in range(n):
        pub.put(i)
    return n


def publish_big(topic, n, size):
    """Publish ``n`` strings of ``size`` characters (``str(i)`` repeated), each a few TopicPosts' worth."""
    pub = Pub(topic)
    for i in range(n):
        pub.put(str(i % 10) * size)
    return n


def subscribe_and_measure(topic, n, subscribed):
    """Subscribe, set ``subscribed``, return (first character, length) of the next ``n`` messages."""
    sub = Sub(topic)
    Event(subscribed).set()
    return [(m[0], len(m)) for m in (sub.get(timeout=WAIT) for _ in range(n))]
