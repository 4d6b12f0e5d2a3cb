"""The client's bookkeeping as a pure state machine: events in, messages and callbacks out.

:class:`ClientState` knows every key the client holds (one
:class:`~twofold.client.future.FutureState` each, with its reference count),
the Future objects collected since the last send, the requests awaiting a
reply (by request id) and the sequence of stimulus ids.  It takes no lock,
owns no connection, reads no clock (``now`` is an argument) and never blocks:
the shells around it do.  The sync :class:`~twofold.Client` calls it under its
lock and hands the messages it returns to the backend; the async API drives
the same operations (:mod:`twofold.client.ops`) from an event loop.

Its methods return what must happen next:

* messages, in the order the scheduler must see them (releases of collected
  futures always ride last, see :meth:`outgoing`);
* "due" done callbacks, ``[(fn, future), ...]``, which the shell runs after
  it released its lock.

Replies are matched to the request that asked by ``request_id``.  A late
cancellation or refusal of a key is told apart from one about a fresh
incarnation of the same key by its stimulus id, which this machine made:
``<op>-<client id>-<seq>`` carries the sequence number of the message that
caused it, compared with the sequence number that introduced the state
(``FutureState.since``).  (A table of every id sent would grow without bound:
the scheduler acknowledges no graph.)
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable

from twofold.client.future import DONE, Future, FutureState
from twofold.messages import (
    CancelKeys,
    CoordinationReply,
    DesireKeys,
    FireAndForget,
    GraphRefused,
    KeyCancelled,
    KeyErred,
    KeyInMemory,
    KeyLost,
    KeyRetried,
    Message,
    ReleaseKeys,
    RetryKeys,
    ScatterPlan,
    SchedulerInfoReply,
    TaskSpec,
    UpdateGraph,
    WhoHasReply,
)

#: how many recently cancelled keys are remembered (to explain a refusal that follows)
CANCELLED_MEMORY = 10_000


class Request:
    """A question to the scheduler awaiting its reply (who_has, scatter plan, a primitive)."""

    __slots__ = ("states", "reply", "gens", "seq", "decode", "value")

    def __init__(self, states: Iterable[FutureState] = ()):
        self.states = tuple(states)
        self.reply: Message | None = None
        #: each asked state's generation when the reply arrived
        self.gens: dict[int, int] = {}
        #: the request's sequence number, what decodes the reply's value on receipt
        #: (None: nothing), and the decoded value
        self.seq = 0
        self.decode: Callable[[Any, int], Any] | None = None
        self.value: Any = None


class ClientState:
    """What one client holds, and what it must tell the scheduler (see the module docstring)."""

    def __init__(self, client_id: str):
        self.client_id = client_id
        self.status = "running"
        #: key -> the state every live Future of that key shares
        self.states: dict[str, FutureState] = {}
        #: states whose Future objects were collected (appended lock-free by Future.__del__)
        self.drops: deque[FutureState] = deque()
        #: keys whose scheduler-side reference was handed to us twice (released on the next send)
        self.extra_releases: list[str] = []
        #: request id -> the request awaiting its reply
        self.requests: dict[str, Request] = {}
        self.cancelled_keys: dict[str, None] = {}
        #: request id -> what undoes its reply, for requests whose waiter gave up
        self.orphans: dict[str, Callable[[Any], Any]] = {}
        #: ``make(now, sid, rid)`` of requests to send with the next messages (undoing orphans)
        self.deferred: list[Callable[[float, str, str], Any]] = []
        self.seq = 0

    # -- stimulus ids ------------------------------------------------------------

    def next_sid(self, op: str) -> tuple[int, str]:
        """A sequence number and the stimulus id ``op-<client id>-<n>``."""
        self.seq += 1
        return self.seq, f"{op}-{self.client_id}-{self.seq}"

    def own_seq(self, stimulus_id: str) -> int | None:
        """The sequence number of a stimulus id this machine made, else None."""
        head, sep, n = stimulus_id.rpartition("-")
        if sep and n.isdigit() and head.partition("-")[2] == self.client_id:
            return int(n)
        return None

    # -- references ---------------------------------------------------------------

    def dropped(self, state: FutureState) -> None:
        """A Future object of ``state`` was collected (any thread, no lock: a deque append)."""
        if self.status != "closed":
            self.drops.append(state)

    def has_pending(self) -> bool:
        return bool(self.drops or self.extra_releases or self.deferred)

    def settle_drops(self) -> list[str]:
        """Count collected Futures off; the keys nobody holds any more."""
        released = []
        drops = self.drops
        states = self.states
        while drops:
            try:
                st = drops.popleft()
            except IndexError:  # pragma: no cover - emptied by another thread
                break
            st.refs -= 1
            if st.refs <= 0 and states.get(st.key) is st:
                del states[st.key]
                released.append(st.key)
        return released

    def outgoing(self, msgs: list, now: float) -> list:
        """``msgs`` followed by one ReleaseKeys for every key nobody holds any more, and
        preceded by the deferred undos (:meth:`close_request`'s orphans, a foreign
        cancel's release).

        Releases go last: a future dropped while these messages were built
        (``client.submit(f, client.submit(g))``) may be an input of them,
        and the scheduler must see the graph before it lets go of the key.
        """
        deferred = self.deferred
        if deferred:  # undos first: they are about what happened before these messages
            undo = []
            for make in deferred:
                _, sid = self.next_sid("undo")
                undo.append(make(now, sid, ""))
            deferred.clear()
            msgs[:0] = undo
        released = self.settle_drops()
        extra = self.extra_releases
        if extra:
            released += extra
            extra.clear()
        if released:
            _, sid = self.next_sid("release")
            msgs.append(ReleaseKeys(now, sid, self.client_id, tuple(released)))
        return msgs

    def hold(self, key: str, now: float) -> tuple[FutureState, list]:
        """One more Future of ``key``; a DesireKeys if the client did not hold it."""
        st = self.states.get(key)
        if st is not None:
            st.refs += 1
            return st, []
        seq, sid = self.next_sid("desire")
        st = self.states[key] = FutureState(key, seq)
        st.refs = 1
        return st, [DesireKeys(now, sid, self.client_id, (key,))]

    def adopt(self, key: str, seq: int) -> FutureState:
        """One more reference to ``key``, which the scheduler just gave us (a primitive's item)."""
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = FutureState(key, seq)
        else:
            self.extra_releases.append(key)  # we held it already: one reference is enough
        st.refs += 1
        return st

    # -- graphs ---------------------------------------------------------------------

    def add_graph(
        self, op: str, keys: list[str], specs: dict[str, TaskSpec], now: float, step: int, owner: Any,
    ) -> tuple[list[Future], list]:
        """A Future of ``owner`` for each of ``keys`` (one reference each) and one
        UpdateGraph per ``step`` keys for the keys not held yet (their specs are in ``specs``)."""
        attach = Future._attach
        handles: list[Future] = []
        msgs: list = []
        states = self.states
        client = self.client_id
        for start in range(0, len(keys), step):
            seq, sid = self.next_sid(op)
            new: list[TaskSpec] = []
            for k in keys[start:start + step]:
                st = states.get(k)
                if st is None:
                    st = states[k] = FutureState(k, seq)
                    spec = specs[k]
                    st.deps = spec.dependencies
                    new.append(spec)
                st.refs += 1
                handles.append(attach(k, owner, st))
            if new:
                msgs.append(UpdateGraph(now, sid, client, tuple(new), tuple(s.key for s in new)))
        return handles, msgs

    def stored(self, keys: Iterable[str], seq: int, info: dict) -> tuple[list, list[str]]:
        """Scattered data landed: finished states (no reference taken yet); the due callbacks
        and the keys held before (UpdateData takes a second reference to those)."""
        due: list = []
        held_before = []
        states = self.states
        for key in keys:
            nbytes, typename = info[key]
            st = states.get(key)
            if st is None:
                st = states[key] = FutureState(key, seq)
            else:
                held_before.append(key)
            due += st.finish(typename, nbytes, None)
        return due, held_before

    # -- actions ------------------------------------------------------------------------

    def cancel(self, states: Iterable[FutureState], force: bool, now: float) -> tuple[list, list]:
        """Cancel the current ones of ``states``: (due callbacks, messages)."""
        due: list = []
        keys: dict[str, None] = {}
        current = self.states
        for st in states:
            if current.get(st.key) is st:
                del current[st.key]
                due += st.cancel("cancelled by the client")
                self.note_cancelled(st.key)
                keys[st.key] = None
        if not keys:
            return due, []
        _, sid = self.next_sid("cancel")
        return due, [CancelKeys(now, sid, self.client_id, tuple(keys), force)]

    def retry(self, states: Iterable[FutureState], now: float) -> list:
        keys: dict[str, None] = {}
        for st in states:
            if self.states.get(st.key) is st and st.status == "error":
                st.reset()
                keys[st.key] = None
        if not keys:
            return []
        _, sid = self.next_sid("retry")
        return [RetryKeys(now, sid, self.client_id, tuple(keys))]

    def fire_and_forget(self, states: Iterable[FutureState], now: float) -> list:
        keys = {st.key: None for st in states if self.states.get(st.key) is st}
        if not keys:
            return []
        _, sid = self.next_sid("fire")
        return [FireAndForget(now, sid, self.client_id, tuple(keys))]

    def note_cancelled(self, key: str) -> None:
        """Remember recently cancelled keys (bounded) to explain refusals that follow."""
        cancelled = self.cancelled_keys
        cancelled[key] = None
        if len(cancelled) > CANCELLED_MEMORY:
            del cancelled[next(iter(cancelled))]

    # -- requests -------------------------------------------------------------------------

    def open_request(self, states: Iterable[FutureState] = (), op: str = "ask") -> tuple[str, Request]:
        """A new request awaiting its reply: (request id, request)."""
        req = Request(states)
        seq, sid = self.next_sid(op)
        req.seq = seq
        self.requests[sid] = req
        return sid, req

    def close_request(self, request_id: str, orphan: Callable[[Any], Any] | None = None) -> None:
        """Nobody waits for this reply any more (answered, timed out or cancelled).

        ``orphan``: the wait was given up before the reply; if the reply still comes
        (ok), ``orphan(value)`` may return a ``make(now, sid, rid)`` of a request that
        undoes what it granted, sent with the next messages (see :meth:`outgoing`)."""
        self.requests.pop(request_id, None)
        if orphan is not None:
            self.orphans[request_id] = orphan
            if len(self.orphans) > CANCELLED_MEMORY:
                del self.orphans[next(iter(self.orphans))]

    # -- receiving --------------------------------------------------------------------------

    def receive(self, msg: Message) -> list | None:
        """A scheduler message: the callbacks now due, or None if it is not about keys or
        requests (the shell handles topics and other vocabulary)."""
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            return None
        return handler(self, msg)

    def _on_in_memory(self, msg: KeyInMemory) -> list:
        st = self.states.get(msg.key)
        return st.finish(msg.typename, msg.nbytes, msg.inline) if st is not None else []

    def _on_erred(self, msg: KeyErred) -> list:
        st = self.states.get(msg.key)
        return st.fail(msg.error) if st is not None else []

    def _on_retried(self, msg: KeyRetried) -> list:
        st = self.states.get(msg.key)
        if st is not None and st.status == "error":
            st.reset()
        return []

    def _on_lost(self, msg: KeyLost) -> list:
        st = self.states.get(msg.key)
        if st is not None:
            st.lose()
        return []

    def _on_cancelled(self, msg: KeyCancelled) -> list:
        st = self.states.get(msg.key)
        if st is None:
            return []
        seq = self.own_seq(msg.stimulus_id)
        if seq is not None and st.since > seq:
            return []  # about an incarnation of this key we already let go
        del self.states[msg.key]  # the scheduler dropped our reference
        self.note_cancelled(msg.key)
        if seq is None:
            # another client's forced cancel: it may have reached the scheduler before a
            # ReleaseKeys + DesireKeys of ours that re-took the reference this state holds;
            # a release of a key we do not hold is harmless there, a leaked one is not
            key, client = msg.key, self.client_id
            self.deferred.append(lambda now, sid, rid: ReleaseKeys(now, sid, client, (key,)))
        return st.cancel(msg.reason)

    def _on_refused(self, msg: GraphRefused) -> list:
        seq = self.own_seq(msg.stimulus_id)
        due = []
        for key in msg.keys:
            st = self.states.get(key)
            if st is None or (st.since != seq if seq is not None else st.status != "pending"):
                continue
            del self.states[key]  # a refused graph took no reference
            gone = [d for d in st.deps if d in self.cancelled_keys]
            if gone:
                # an input was cancelled while this graph was on its way: as dask does
                due += st.cancel(f"its input {gone[0]!r} was cancelled")
            else:
                due += st.fail(msg.error)
        return due

    def _on_reply(self, msg: WhoHasReply | ScatterPlan | SchedulerInfoReply) -> list:
        req = self.requests.get(msg.request_id)
        if req is not None:
            req.gens = {id(st): st.generation for st in req.states}
            req.reply = msg
        return []

    def on_coordination_reply(self, msg: Any) -> list:
        """A primitive's reply: decoded on receipt (its items may be futures), in message order."""
        req = self.requests.get(msg.request_id)
        if req is not None:
            if msg.ok and req.decode is not None:
                req.value = req.decode(msg.value, req.seq)
            req.reply = msg
            return []
        orphan = self.orphans.pop(msg.request_id, None)
        if orphan is not None and msg.ok:
            undo = orphan(msg.value)
            if undo is not None:
                self.deferred.append(undo)
        if msg.ok and isinstance(msg.value, (list, tuple)):
            # nobody waits any more (the wait was given up): give back the futures that came
            self.extra_releases.extend(
                i[1] for i in msg.value if type(i) in (list, tuple) and i[:1] == ("future",))
        return []

    # -- closing --------------------------------------------------------------------------------

    def close(self, reason: str) -> list:
        """Closed: every state not done is cancelled (nobody waits forever); the due callbacks."""
        self.drops.clear()
        due: list = []
        for st in self.states.values():
            if st.status not in DONE:
                due += st.cancel(reason)
        self.states.clear()
        self.requests.clear()
        self.status = "closed"
        return due

    # -- invariants -------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent."""
        for key, st in self.states.items():
            assert st.key == key, (key, st.key)
            pending = sum(1 for d in self.drops if d is st)
            assert st.refs - pending >= 0, f"{key!r}: {st.refs} references, {pending} drops pending"
            assert st.since <= self.seq, (key, st.since, self.seq)
        for rid, req in self.requests.items():
            assert self.own_seq(rid) == req.seq, (rid, req.seq)
        if self.status == "closed":
            assert not self.states and not self.requests


_HANDLERS: dict[type, Callable[[ClientState, Any], list]] = {
    KeyInMemory: ClientState._on_in_memory,
    KeyErred: ClientState._on_erred,
    KeyCancelled: ClientState._on_cancelled,
    KeyLost: ClientState._on_lost,
    KeyRetried: ClientState._on_retried,
    GraphRefused: ClientState._on_refused,
    WhoHasReply: ClientState._on_reply,
    ScatterPlan: ClientState._on_reply,
    SchedulerInfoReply: ClientState._on_reply,
    CoordinationReply: ClientState.on_coordination_reply,
}
