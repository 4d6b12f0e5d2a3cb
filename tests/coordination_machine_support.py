"""A model of the coordination primitives, for ``test_stateful_coordination.py``.

:class:`Model` is what the scheduler's Locks, Semaphores, Events, Queues,
Variables and PubSub should do, written from their documented rules (the
module docstrings of ``twofold.scheduler.coordination``), plus the
references to futures that clients, queues and variables hold.  It is fed
the same events as the real ``SchedulerState`` and, for each, says which
``CoordinationReply`` (by request id) and which ``TopicMessages`` and
``TopicPeers`` the scheduler must send, which futures it hands to which client, and which
request starts waiting (and until when).

It knows nothing of the machine's insides except the names of its
pseudo-clients (``queue:<name>``, ``variable:<name>``), which the
reference-count invariant compares.

At the top: what the state machine draws (names, timeouts, each rule's
arguments, the malformed requests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from twofold.messages_coordination import (
    EventRequest,
    LockRequest,
    PubSubRequest,
    QueueRequest,
    SemaphoreRequest,
    VariableRequest,
)

#: names: mostly the first, so that requests meet (and sometimes another)
LOCKS = ("L0", "L0", "L0", "L1")
SEMAPHORES = ("S0", "S0", "S0", "S1")
EVENTS = ("E0", "E0", "E1")
QUEUES = ("Q0", "Q0", "Q0", "Q1")
VARIABLES = ("V0", "V0", "V1")
TOPICS = ("T0", "T0", "T0", "T1")
#: each example uses a few primitives only (hypothesis picks rules evenly: fewer rules, deeper histories)
PRIMITIVES = ("lock", "semaphore", "event", "queue", "variable", "pubsub")
#: request timeouts: None waits for ever (so does inf), 0 only tries
TIMEOUTS = st.sampled_from([None, 0, 0, 0.5, 1.0, 3.0, math.inf])
#: the arguments of each primitive's rule (also drawn by ``burst``), and the primitive it needs
ARGS = {
    "lock": dict(name=st.sampled_from(LOCKS), timeout=TIMEOUTS,
                 action=st.sampled_from(["acquire", "acquire", "release", "release", "locked"])),
    "semaphore": dict(name=st.sampled_from(SEMAPHORES), max_leases=st.integers(1, 3), timeout=TIMEOUTS,
                      action=st.sampled_from(["acquire", "acquire", "acquire", "release", "release", "refresh",
                                              "refresh", "value", "register", "close"])),
    "event": dict(name=st.sampled_from(EVENTS), timeout=TIMEOUTS,
                  action=st.sampled_from(["set", "clear", "is_set", "wait", "wait", "wait"])),
    "queue_put": dict(name=st.sampled_from(QUEUES), maxsize=st.sampled_from([0, 1, 1, 2]), timeout=TIMEOUTS),
    "queue_get": dict(name=st.sampled_from(QUEUES), maxsize=st.sampled_from([0, 1, 1, 2]), timeout=TIMEOUTS,
                      count=st.sampled_from([1, 1, 2, 3, -1])),
    "variable": dict(name=st.sampled_from(VARIABLES), timeout=TIMEOUTS,
                     action=st.sampled_from(["set", "set", "get", "get", "delete"])),
    "pubsub": dict(name=st.sampled_from(TOPICS),
                   action=st.sampled_from(["subscribe", "subscribe", "unsubscribe", "publish", "publish",
                                           "subscribers", "publisher", "publisher"])),
}  # fmt: skip
NEEDS = {"lock": "lock", "semaphore": "semaphore", "event": "event", "queue_put": "queue", "queue_get": "queue",
         "variable": "variable", "pubsub": "pubsub"}  # fmt: skip
#: malformed requests, always refused: (message class, error type, fields)
BAD = {
    "name not a str": (EventRequest, "TypeError", dict(action="set", name=5)),
    "name too long": (VariableRequest, "TypeError", dict(action="get", name="v" * 10_001)),
    "unknown action": (LockRequest, "ValueError", dict(action="frobnicate")),
    "action not a str": (QueueRequest, "ValueError", dict(action=None)),
    "negative timeout": (LockRequest, "ValueError", dict(action="acquire", holder="h", timeout=-1.0)),
    "timeout a str": (QueueRequest, "ValueError", dict(action="get", timeout="soon")),
    "timeout a bool": (EventRequest, "ValueError", dict(action="wait", timeout=True)),
    "timeout nan": (VariableRequest, "ValueError", dict(action="get", timeout=math.nan)),
    "empty lock holder": (LockRequest, "ValueError", dict(action="acquire", holder="")),
    "empty lease id": (SemaphoreRequest, "ValueError", dict(action="acquire", lease="")),
    "zero max_leases": (SemaphoreRequest, "ValueError", dict(action="register", name="S-new", max_leases=0)),
    "bool max_leases": (SemaphoreRequest, "ValueError", dict(action="acquire", name="S-new", lease="x",
                                                             max_leases=True)),
    "two items put": (QueueRequest, "ValueError", dict(action="put", items=(("value", b"a"), ("value", b"b")))),
    "malformed item": (QueueRequest, "TypeError", dict(action="put", items=(("blob", b"a"),))),
    "empty future key": (VariableRequest, "TypeError", dict(action="set", items=(("future", ""),))),
    "value not bytes": (VariableRequest, "TypeError", dict(action="set", items=(("value", "text"),))),
    "zero count": (QueueRequest, "ValueError", dict(action="get", count=0)),
    "count below -1": (QueueRequest, "ValueError", dict(action="get", count=-2)),
    "negative maxsize": (QueueRequest, "ValueError", dict(action="get", name="Q-new", maxsize=-1, timeout=0)),
    "no item set": (VariableRequest, "ValueError", dict(action="set")),
    "empty sub id": (PubSubRequest, "ValueError", dict(action="subscribe", sub="")),
    "items not a tuple": (PubSubRequest, "TypeError", dict(action="publish", items=[("value", b"a")])),
    "delivered not a tuple": (PubSubRequest, "TypeError", dict(action="publish", delivered="T0/sub")),
}  # fmt: skip


@dataclass(eq=False)
class Req:
    """One request as the model keeps it (``eq=False``: identity, as waiters)."""

    rid: str
    client: str
    kind: str  # lock | semaphore | event | queue | variable | pubsub
    action: str
    name: str
    timeout: float | None = None
    worker: str | None = None
    #: lock holder id / semaphore lease id / subscriber id
    ident: str = ""
    item: tuple | None = None
    items: tuple = ()
    count: int = 1
    maxsize: int = 0
    max_leases: int = 1
    leases: tuple = ()
    #: when it waits with a timeout: the time it must be answered by
    deadline: float | None = None
    #: a waiting queue get: the items it took so far (they are still the queue's)
    taken: list = field(default_factory=list)


@dataclass
class LockM:
    holder: tuple | None = None  # (holder id, client, worker)
    waiters: list = field(default_factory=list)


@dataclass
class SemM:
    max_leases: int
    leases: dict = field(default_factory=dict)  # lease id -> [client, worker, seen]
    waiters: list = field(default_factory=list)


@dataclass
class EventM:
    flag: bool = False
    waiters: list = field(default_factory=list)


@dataclass
class QueueM:
    maxsize: int
    items: list = field(default_factory=list)
    getters: list = field(default_factory=list)
    putters: list = field(default_factory=list)  # each Req's .item is held by the queue

    def full(self) -> bool:
        return bool(self.maxsize) and len(self.items) >= self.maxsize


@dataclass
class TopicM:
    subs: dict = field(default_factory=dict)  # sub id -> (client, worker)
    pubs: dict = field(default_factory=dict)  # publisher client -> its worker
    pending: dict = field(default_factory=dict)  # sub id -> (subscribe Req, {publisher client: None})


@dataclass
class VariableM:
    item: tuple | None = None
    waiters: list = field(default_factory=list)


def fut(item) -> str | None:
    """The key of a future item, else None."""
    return item[1] if item is not None and item[0] == "future" else None


class Model:
    """The expected behaviour (see the module docstring)."""

    def __init__(self, lease_timeout: float):
        self.T = lease_timeout
        self.now = 0.0
        self.locks: dict[str, LockM] = {}
        self.sems: dict[str, SemM] = {}
        self.events: dict[str, EventM] = {}
        self.queues: dict[str, QueueM] = {}
        self.variables: dict[str, VariableM] = {}
        self.topics: dict[str, TopicM] = {}
        #: client -> key -> references (live clients only)
        self.refs: dict[str, dict[str, int]] = {}
        #: rid -> the request, while it waits
        self.waiting: dict[str, Req] = {}
        self.begin(0.0)

    # -- per event ---------------------------------------------------------------

    def begin(self, now: float) -> None:
        self.now = now
        #: rid -> (client, ok, value (if ok) or error type)
        self.replies: dict[str, tuple] = {}
        self.topic_msgs: list[tuple] = []
        #: TopicPeers: (client, name, subs, removed, reset, ack)
        self.peers: list[tuple] = []
        #: (client, key): a future handed to a client by this event
        self.handed: list[tuple[str, str]] = []
        self.new_waiter: Req | None = None

    def ok(self, req: Req, value: Any) -> None:
        assert req.rid not in self.replies, f"model answers {req.rid} twice"
        self.replies[req.rid] = (req.client, True, value)

    def fail(self, req: Req, error_type: str) -> None:
        assert req.rid not in self.replies, f"model answers {req.rid} twice"
        self.replies[req.rid] = (req.client, False, error_type)

    def park(self, req: Req, queue: list) -> None:
        t = req.timeout
        req.deadline = None if t is None or math.isinf(t) else self.now + t
        queue.append(req)
        self.waiting[req.rid] = req
        self.new_waiter = req

    def unpark(self, req: Req) -> None:
        del self.waiting[req.rid]

    def give(self, client: str, items) -> None:
        for item in items:
            key = fut(item)
            if key is not None:
                held = self.refs[client]
                held[key] = held.get(key, 0) + 1
                self.handed.append((client, key))

    # -- references ----------------------------------------------------------------

    def holders(self, key: str) -> dict[str, int]:
        """Who holds ``key`` (real and pseudo-clients), as the scheduler's ``who_wants`` should say."""
        out: dict[str, int] = {}
        for client, held in self.refs.items():
            if held.get(key):
                out[client] = held[key]
        for name, q in self.queues.items():
            n = sum(fut(i) == key for i in q.items) + sum(fut(p.item) == key for p in q.putters)
            n += sum(fut(i) == key for g in q.getters for i in g.taken)
            if n:
                out[f"queue:{name}"] = n
        for name, var in self.variables.items():
            if fut(var.item) == key:
                out[f"variable:{name}"] = 1
        return out

    def known(self, key: str) -> bool:
        return bool(self.holders(key))

    # -- dispatch ------------------------------------------------------------------

    def request(self, req: Req) -> None:
        getattr(self, f"_{req.kind}_{req.action}")(req)

    def expire(self, req: Req) -> None:
        """``req``'s timeout passed."""
        self.unpark(req)
        getattr(self, f"_{req.kind}_expire")(req)

    # -- locks ---------------------------------------------------------------------

    def _lock_acquire(self, req: Req) -> None:
        lock = self.locks.setdefault(req.name, LockM())
        if lock.holder is None:
            lock.holder = (req.ident, req.client, req.worker)
            self.ok(req, True)
        elif req.timeout == 0:
            self.ok(req, False)
        else:
            self.park(req, lock.waiters)

    def _lock_release(self, req: Req) -> None:
        lock = self.locks.get(req.name)
        if lock is None or lock.holder is None or lock.holder[0] != req.ident:
            self.fail(req, "RuntimeError")
            return
        self._lock_free(req.name)
        self.ok(req, True)

    def _lock_free(self, name: str) -> None:
        lock = self.locks[name]
        lock.holder = None
        if lock.waiters:
            nxt = lock.waiters.pop(0)
            self.unpark(nxt)
            lock.holder = (nxt.ident, nxt.client, nxt.worker)
            self.ok(nxt, True)
        else:
            del self.locks[name]

    def _lock_locked(self, req: Req) -> None:
        lock = self.locks.get(req.name)
        self.ok(req, lock is not None and lock.holder is not None)

    def _lock_expire(self, req: Req) -> None:
        self.locks[req.name].waiters.remove(req)
        self.ok(req, False)

    def _locks_drop(self, gone) -> None:
        for name in list(self.locks):
            lock = self.locks[name]
            for w in [w for w in lock.waiters if gone(w.client, w.worker)]:
                lock.waiters.remove(w)
                self.unpark(w)
            if lock.holder is not None and gone(lock.holder[1], lock.holder[2]):
                self._lock_free(name)

    # -- semaphores ----------------------------------------------------------------

    def _sem(self, req: Req) -> SemM:
        sem = self.sems.get(req.name)
        if sem is None:
            sem = self.sems[req.name] = SemM(req.max_leases)
        return sem

    def _semaphore_register(self, req: Req) -> None:
        self.ok(req, self._sem(req).max_leases)

    def _semaphore_acquire(self, req: Req) -> None:
        sem = self._sem(req)
        if req.ident in sem.leases:
            self.fail(req, "RuntimeError")
        elif len(sem.leases) < sem.max_leases:
            self._sem_grant(sem, req)
        elif req.timeout == 0:
            self.ok(req, [False, self.T])
        else:
            self.park(req, sem.waiters)

    def _sem_grant(self, sem: SemM, req: Req) -> None:
        sem.leases[req.ident] = [req.client, req.worker, self.now]
        self.ok(req, [True, self.T])

    def _sem_serve(self, sem: SemM) -> None:
        while sem.waiters and len(sem.leases) < sem.max_leases:
            w = sem.waiters.pop(0)
            self.unpark(w)
            if w.ident in sem.leases:
                self.fail(w, "RuntimeError")
            else:
                self._sem_grant(sem, w)

    def _semaphore_release(self, req: Req) -> None:
        sem = self.sems.get(req.name)
        if sem is None or req.ident not in sem.leases:
            self.ok(req, False)
            return
        del sem.leases[req.ident]
        self._sem_serve(sem)
        self.ok(req, True)

    def _semaphore_refresh(self, req: Req) -> None:
        sem = self.sems.get(req.name)
        if sem is not None:
            for lease in req.leases:
                if lease in sem.leases:
                    sem.leases[lease][2] = self.now
        self.ok(req, True)

    def _semaphore_value(self, req: Req) -> None:
        sem = self.sems.get(req.name)
        self.ok(req, len(sem.leases) if sem is not None else 0)

    def _semaphore_close(self, req: Req) -> None:
        sem = self.sems.pop(req.name, None)
        if sem is not None:
            for w in sem.waiters:
                self.unpark(w)
                self.fail(w, "RuntimeError")
        self.ok(req, True)

    def _semaphore_expire(self, req: Req) -> None:
        self.sems[req.name].waiters.remove(req)
        self.ok(req, [False, self.T])

    def semaphore_leases_expire(self, name: str) -> None:
        """The expiry check of semaphore ``name`` ran now: leases not refreshed for T seconds go."""
        sem = self.sems.get(name)
        if sem is None:
            return
        stale = [lease for lease, (_, _, seen) in sem.leases.items() if seen + self.T <= self.now]
        for lease in stale:
            del sem.leases[lease]
        if stale:
            self._sem_serve(sem)

    def _sems_drop(self, gone) -> None:
        for sem in self.sems.values():
            for w in [w for w in sem.waiters if gone(w.client, w.worker)]:
                sem.waiters.remove(w)
                self.unpark(w)
            stale = [lease for lease, (c, w, _) in sem.leases.items() if gone(c, w)]
            for lease in stale:
                del sem.leases[lease]
            if stale:
                self._sem_serve(sem)

    # -- events --------------------------------------------------------------------

    def _event_set(self, req: Req) -> None:
        ev = self.events.setdefault(req.name, EventM())
        ev.flag = True
        for w in ev.waiters:
            self.unpark(w)
            self.ok(w, True)
        ev.waiters.clear()
        self.ok(req, True)

    def _event_clear(self, req: Req) -> None:
        ev = self.events.get(req.name)
        if ev is not None:
            ev.flag = False
            self._event_forget(req.name)
        self.ok(req, True)

    def _event_is_set(self, req: Req) -> None:
        ev = self.events.get(req.name)
        self.ok(req, ev is not None and ev.flag)

    def _event_wait(self, req: Req) -> None:
        ev = self.events.setdefault(req.name, EventM())
        if ev.flag:
            self.ok(req, True)
        elif req.timeout == 0:
            self._event_forget(req.name)
            self.ok(req, False)
        else:
            self.park(req, ev.waiters)

    def _event_expire(self, req: Req) -> None:
        self.events[req.name].waiters.remove(req)
        self._event_forget(req.name)
        self.ok(req, False)

    def _event_forget(self, name: str) -> None:
        ev = self.events[name]
        if not ev.flag and not ev.waiters:
            del self.events[name]

    def _events_drop(self, client: str) -> None:
        for name in list(self.events):
            ev = self.events[name]
            gone = [w for w in ev.waiters if w.client == client]
            for w in gone:
                ev.waiters.remove(w)
                self.unpark(w)
            if gone:
                self._event_forget(name)

    # -- queues --------------------------------------------------------------------

    def _queue(self, req: Req) -> QueueM:
        q = self.queues.get(req.name)
        if q is None:
            q = self.queues[req.name] = QueueM(req.maxsize)
        return q

    def _queue_put(self, req: Req) -> None:
        q = self._queue(req)
        key = fut(req.item)
        if q.full() and req.timeout == 0:
            self.fail(req, "TimeoutError")
        elif key is not None and not self.known(key):
            self.fail(req, "ValueError")
        elif q.full():
            self.park(req, q.putters)  # its future is held from now on
        else:
            q.items.append(req.item)
            self.ok(req, True)
            self._queue_serve(q)

    def _queue_get(self, req: Req) -> None:
        """A get of ``count`` items takes them one at a time as they come (as dask's
        ``get(batch=n)``), so puts waiting for room get in meanwhile."""
        q = self._queue(req)
        if req.count == -1:
            self._queue_deliver(req, q.items[:])
            q.items.clear()
            self._queue_serve(q)
        elif not q.getters and len(q.items) >= req.count:
            self._queue_deliver(req, q.items[:req.count])
            del q.items[:req.count]
            self._queue_serve(q)
        elif req.timeout == 0:
            self.fail(req, "TimeoutError")
        else:
            req.taken = []
            self.park(req, q.getters)
            self._queue_serve(q)

    def _queue_deliver(self, req: Req, taken: list) -> None:
        self.ok(req, taken)
        self.give(req.client, taken)

    def _queue_serve(self, q: QueueM) -> None:
        progress = True
        while progress:
            progress = False
            while q.putters and not q.full():
                p = q.putters.pop(0)
                self.unpark(p)
                q.items.append(p.item)
                self.ok(p, True)
                progress = True
            while q.getters and q.items:
                g = q.getters[0]
                while q.items and len(g.taken) < g.count:
                    g.taken.append(q.items.pop(0))
                progress = True
                if len(g.taken) < g.count:
                    break
                q.getters.pop(0)
                self.unpark(g)
                self._queue_deliver(g, g.taken)

    @staticmethod
    def _queue_give_back(q: QueueM, req: Req) -> None:
        """A get that ends unanswered puts what it took back at the front, in order."""
        q.items[:0] = req.taken
        req.taken = []

    def _queue_qsize(self, req: Req) -> None:
        q = self.queues.get(req.name)
        self.ok(req, len(q.items) if q is not None else 0)

    def _queue_expire(self, req: Req) -> None:
        q = self.queues[req.name]
        if req in q.getters:
            q.getters.remove(req)
            self._queue_give_back(q, req)
        else:
            q.putters.remove(req)  # the queue lets go of its item
        self.fail(req, "TimeoutError")
        self._queue_serve(q)

    def _queues_drop(self, client: str) -> None:
        for q in self.queues.values():
            for w in reversed([w for w in q.getters if w.client == client]):
                q.getters.remove(w)
                self.unpark(w)
                self._queue_give_back(q, w)
            for w in [w for w in q.putters if w.client == client]:
                q.putters.remove(w)
                self.unpark(w)
            self._queue_serve(q)

    # -- variables -----------------------------------------------------------------

    def _variable_set(self, req: Req) -> None:
        key = fut(req.item)
        if key is not None and not self.known(key):
            self.fail(req, "ValueError")
            return
        var = self.variables.setdefault(req.name, VariableM())
        var.item = req.item
        self.ok(req, True)
        for w in var.waiters:
            self.unpark(w)
            self.ok(w, [req.item])
            self.give(w.client, [req.item])
        var.waiters.clear()

    def _variable_get(self, req: Req) -> None:
        var = self.variables.get(req.name)
        if var is not None and var.item is not None:
            self.ok(req, [var.item])
            self.give(req.client, [var.item])
        elif req.timeout == 0:
            self.fail(req, "TimeoutError")
        else:
            self.park(req, self.variables.setdefault(req.name, VariableM()).waiters)

    def _variable_delete(self, req: Req) -> None:
        var = self.variables.get(req.name)
        if var is not None and var.item is not None:
            var.item = None
            self._variable_forget(req.name)
        self.ok(req, True)

    def _variable_expire(self, req: Req) -> None:
        self.variables[req.name].waiters.remove(req)
        self._variable_forget(req.name)
        self.fail(req, "TimeoutError")

    def _variable_forget(self, name: str) -> None:
        var = self.variables[name]
        if var.item is None and not var.waiters:
            del self.variables[name]

    def _variables_drop(self, client: str) -> None:
        for name in list(self.variables):
            var = self.variables[name]
            gone = [w for w in var.waiters if w.client == client]
            for w in gone:
                var.waiters.remove(w)
                self.unpark(w)
            if gone:
                self._variable_forget(name)

    # -- pub/sub -------------------------------------------------------------------
    #
    # A publisher is a client on a worker that registered ("publisher"); it is
    # told of the topic's subscribers (TopicPeers) and a subscription waits
    # until every publisher acknowledged it ("ack", which wants no reply).

    def _topic(self, name: str) -> TopicM:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = TopicM()
        return topic

    def _pubsub_subscribe(self, req: Req) -> None:
        topic = self.topics.get(req.name)
        if topic is not None and req.ident in topic.subs:
            self.fail(req, "ValueError")
            return
        topic = self._topic(req.name)
        topic.subs[req.ident] = (req.client, req.worker)
        if not topic.pubs:
            self.ok(req, True)
            return
        for client in topic.pubs:
            self.peers.append((client, req.name, {req.ident: req.worker or ""}, (), False, req.ident))
        topic.pending[req.ident] = (req, dict.fromkeys(topic.pubs))
        self.waiting[req.rid] = req
        self.new_waiter = req

    def pubsub_ack(self, client: str, name: str, sub: str) -> None:
        topic = self.topics.get(name)
        if topic is not None:
            self._acknowledged(topic, sub, client)

    def _acknowledged(self, topic: TopicM, sub: str, client: str) -> None:
        waiting = topic.pending.get(sub)
        if waiting is not None:
            req, publishers = waiting
            publishers.pop(client, None)
            if not publishers:
                del topic.pending[sub]
                self.unpark(req)
                self.ok(req, True)

    def _pubsub_unsubscribe(self, req: Req) -> None:
        topic = self.topics.get(req.name)
        if topic is not None:
            sub = topic.subs.get(req.ident)
            if sub is not None and sub[0] == req.client:
                del topic.subs[req.ident]
                waiting = topic.pending.pop(req.ident, None)
                if waiting is not None:
                    self.unpark(waiting[0])
                    self.ok(waiting[0], True)
                self._tell_publishers(req.name, topic, (req.ident,))
                self._topic_forget(req.name)
        self.ok(req, True)

    def _tell_publishers(self, name: str, topic: TopicM, removed: tuple) -> None:
        for client in topic.pubs:
            self.peers.append((client, name, {}, removed, False, ""))

    def _topic_forget(self, name: str) -> None:
        topic = self.topics[name]
        if not topic.subs and not topic.pubs and not topic.pending:
            del self.topics[name]

    def _pubsub_publish(self, req: Req) -> None:
        if any(kind != "value" for kind, _ in req.items):
            self.fail(req, "TypeError")
            return
        topic = self.topics.get(req.name)
        if topic is not None:
            for sub, (client, _) in topic.subs.items():
                if sub not in req.leases:  # (``leases`` carries ``delivered`` here)
                    self.topic_msgs.append((client, req.name, sub, tuple(req.items)))
        self.ok(req, True)

    def _pubsub_publisher(self, req: Req) -> None:
        if not req.worker:
            self.fail(req, "ValueError")
            return
        topic = self._topic(req.name)
        topic.pubs[req.client] = req.worker
        subs = {sub: worker or "" for sub, (_, worker) in topic.subs.items()}
        self.peers.append((req.client, req.name, subs, (), True, ""))
        self.ok(req, True)

    def _pubsub_subscribers(self, req: Req) -> None:
        topic = self.topics.get(req.name)
        subs = topic.subs.values() if topic is not None else ()
        self.ok(req, {worker: {} for _, worker in subs if worker})

    def _pubsub_drop(self, sub_gone, pub_gone) -> None:
        for name in list(self.topics):
            topic = self.topics[name]
            gone = tuple(sub for sub, (c, w) in topic.subs.items() if sub_gone(c, w))
            for sub in gone:
                del topic.subs[sub]
                waiting = topic.pending.pop(sub, None)
                if waiting is not None:
                    self.unpark(waiting[0])  # nobody to answer
            for client in [c for c, w in topic.pubs.items() if pub_gone(c, w)]:
                del topic.pubs[client]
                for sub in list(topic.pending):
                    self._acknowledged(topic, sub, client)
            if gone:
                self._tell_publishers(name, topic, gone)
            self._topic_forget(name)

    # -- membership ----------------------------------------------------------------

    def client_added(self, client: str) -> None:
        self.refs[client] = {}

    def client_removed(self, client: str) -> None:
        """Its references go first, then each primitive drops what was its (in the extensions' order)."""
        del self.refs[client]
        gone = lambda c, w: c == client  # noqa: E731
        self._locks_drop(gone)
        self._sems_drop(gone)
        self._events_drop(client)
        self._queues_drop(client)
        self._variables_drop(client)
        self._pubsub_drop(gone, gone)
        assert not [r for r in self.waiting.values() if r.client == client]

    def worker_removed(self, worker: str) -> None:
        gone = lambda c, w: w == worker  # noqa: E731
        self._locks_drop(gone)
        self._sems_drop(gone)
        self._pubsub_drop(gone, gone)
