"""The client's multi-step operations, written once for the sync and the async API.

Each operation (gather, scatter, a question to the scheduler, waiting) is a
generator.  It changes the client's state (:class:`~twofold.client.state.ClientState`,
under the Client's lock) and sends messages itself; whenever it must wait for
the cluster or move data it *yields a command* and is resumed with the
command's outcome:

* :class:`Wait` ``(predicate, deadline)`` -> True once ``predicate()`` holds,
  False if ``deadline`` (backend time) passed first;
* :class:`Fetch` ``(who_has)`` -> ``(data, missing)`` from the workers;
* :class:`Put` ``(placement, items, free_seqs)`` -> ``{key: (nbytes, typename)}``.

:func:`drive_sync` runs a command by blocking (``Backend.wait_until``,
``Backend.fetch``/``put``); :func:`drive_async` by awaiting (a waiter the
receiver wakes, ``Backend.afetch``/``aput``).  So the logic of who to ask
next, what to report missing and when to give up exists once, and an async
caller that is cancelled runs the same ``finally`` clean-up (the request is
forgotten, a late reply is ignored or handed back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator

from twofold.client.future import DONE, FAILED, FutureState, all_done
from twofold.errors import ProtocolError, TimeoutError
from twofold.messages import MissingData, ReleaseKeys, ScatteredKey, UpdateData, WhoHasRequest

if TYPE_CHECKING:
    from twofold.client.client import Client
    from twofold.client.state import Request

Op = Generator[Any, Any, Any]


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


class Wait:
    """Block until ``predicate()``; False if ``deadline`` (backend seconds) passes first.

    ``client``: the client whose backend waits, if not the driving one (``wait()``
    of futures of several clients)."""

    __slots__ = ("predicate", "deadline", "client")

    def __init__(self, predicate: Callable[[], bool], deadline: float | None, client: Client | None = None):
        self.predicate = predicate
        self.deadline = deadline
        self.client = client

    def sync(self, client: Client) -> bool:
        return (self.client or client)._wait(self.predicate, self.deadline)

    async def aio(self, client: Client) -> bool:
        return await (self.client or client)._await(self.predicate, self.deadline)


class Fetch:
    """Data straight from the workers that hold it: ``(data, missing)``."""

    __slots__ = ("who_has",)

    def __init__(self, who_has: dict):
        self.who_has = who_has

    def sync(self, client: Client) -> Any:
        return client._backend.fetch(self.who_has)

    async def aio(self, client: Client) -> Any:
        return await client._backend.afetch(self.who_has)


class Put:
    """Store objects on the workers a scatter plan names: ``{key: (nbytes, typename)}``."""

    __slots__ = ("placement", "items", "free_seqs")

    def __init__(self, placement: dict, items: dict, free_seqs: dict | None):
        self.placement = placement
        self.items = items
        self.free_seqs = free_seqs

    def sync(self, client: Client) -> Any:
        if self.free_seqs:
            return client._backend.put(self.placement, self.items, self.free_seqs)
        return client._backend.put(self.placement, self.items)

    async def aio(self, client: Client) -> Any:
        return await client._backend.aput(self.placement, self.items, self.free_seqs or None)


# --------------------------------------------------------------------------
# Shells
# --------------------------------------------------------------------------


def drive_sync(client: Client, op: Op) -> Any:
    """Run ``op`` to its end in this thread, blocking on each command."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                command = op.send(value)
            else:
                command, error = op.throw(error), None
        except StopIteration as stop:
            return stop.value
        try:
            value = command.sync(client)
        except BaseException as exc:  # into the operation, so that its clean-up runs
            error = exc


async def drive_async(client: Client, op: Op) -> Any:
    """Run ``op`` on the running event loop, awaiting each command."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                command = op.send(value)
            else:
                command, error = op.throw(error), None
        except StopIteration as stop:
            return stop.value
        try:
            value = await command.aio(client)
        except BaseException as exc:  # cancellation included: the operation's finally runs
            error = exc


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


class Failed(Exception):
    """Internal: a future being collected failed (the public method raises its error)."""

    def __init__(self, state: FutureState):
        self.state = state


def waited(timeout: float | None) -> str:
    return f"within {timeout:g} s" if timeout is not None else "(no timeout)"


def ask(client: Client, states: list[FutureState], deadline: float | None, timeout: float | None,
        make: Callable[[str], Any]) -> Op:  # fmt: skip
    """Send ``make(request_id)`` and wait for the reply to that request id; the request."""
    core = client._core
    with client._lock:
        client._check_running()
        rid, req = core.open_request(states)
        try:
            client._send([make(rid)])
        except BaseException:
            core.close_request(rid)
            raise
    try:
        if not (yield Wait(lambda: req.reply is not None, deadline)):
            raise TimeoutError(f"the scheduler did not answer {waited(timeout)}")
    finally:
        with client._lock:
            core.close_request(rid)
    return req


def who_has_request(client: Client, keys: tuple) -> Callable[[str], Any]:
    return lambda rid: WhoHasRequest(client._backend.now(), rid, client.id, rid, keys)


def collect(client: Client, states: list[FutureState], deadline: float | None, skip: bool,
            timeout: float | None) -> Op:  # fmt: skip
    """Values of ``states`` by ``id(state)``; a failed one raises :class:`Failed`, or is left out if ``skip``."""
    values: dict[int, Any] = {}
    todo = states
    while todo:
        ready = all_done(todo, stop_on_failure=not skip)
        if not ready() and not (yield Wait(ready, deadline)):
            left = [st.key for st in todo if st.status not in DONE]
            raise TimeoutError(f"{len(left)} future(s) not done {waited(timeout)}: {left[:5]}")
        finished = []
        for st in todo:
            if st.status in FAILED:
                if not skip:
                    raise Failed(st)
            elif st.status == "finished":
                finished.append(st)
        # states whose data was lost meanwhile are pending again: wait for them too
        again = yield from fetch_round(client, finished, values, deadline, timeout)
        todo = again + [st for st in todo if st.status not in DONE]
    return values


def fetch_round(client: Client, states: list[FutureState], values: dict[int, Any], deadline: float | None,
                timeout: float | None) -> Op:  # fmt: skip
    """Fetch what can be fetched now; the states to try again."""
    need = []
    for st in states:
        if st.inline is not None:
            values[id(st)] = client._inline_value(st)
        else:
            need.append(st)
    if not need:
        return []
    req: Request = yield from ask(client, need, deadline, timeout, who_has_request(client, tuple(st.key for st in need)))
    reply = req.reply
    who_has = {}
    homeless = []
    for st in need:
        holders = tuple(reply.who_has.get(st.key, ()))
        if holders:
            who_has[st.key] = holders
        else:
            homeless.append(st)
    again = []
    if who_has:
        data, missing = yield Fetch(who_has)
        for st in need:
            if st.key in data and st.key not in missing:
                values[id(st)] = data[st.key]
            elif st.key in who_has:
                again.append(st)  # a holder failed us: report it, ask again
        if missing:
            with client._lock:
                client._check_running()
                now = client._backend.now()
                msgs = []
                for key, errant in missing.items():
                    _, sid = client._core.next_sid("missing")
                    msgs.append(MissingData(now, sid, client.id, key, errant))
                client._send(msgs)
    if homeless:
        # no holder when the scheduler answered: wait for the next arrival in memory
        gens = req.gens

        def arrived() -> bool:
            return all(st.generation > gens[id(st)] or st.status in FAILED for st in homeless)

        if not (yield Wait(arrived, deadline)):
            raise TimeoutError(f"data of {[st.key for st in homeless][:5]} lost and not recomputed {waited(timeout)}")
        again.extend(homeless)
    return again


def exception(client: Client, st: FutureState, deadline: float | None, timeout: float | None) -> Op:
    """The erred state's exception once it is done; None if it finished or was cancelled."""
    if st.status not in DONE and not (yield Wait(lambda: st.status in DONE, deadline)):
        raise TimeoutError(f"future {st.key!r} not done {waited(timeout)}")
    return client._exception_of(st) if st.status == "error" else None


# --------------------------------------------------------------------------
# Waiting on a condition
# --------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], deadline: float | None) -> Op:
    """True once ``predicate()`` (False on timeout)."""
    if predicate():
        return True
    return (yield Wait(predicate, deadline))


# --------------------------------------------------------------------------
# Scatter
# --------------------------------------------------------------------------


def scatter(client: Client, keys: tuple, names: list[str], items: dict, pool: Any, broadcast: bool,
            deadline: float | None, timeout: float | None) -> Op:  # fmt: skip
    """Ask where, put the data there, register it: one Future per name."""
    from twofold.messages import ScatterRequest

    req = yield from ask(client, [], deadline, timeout, lambda rid: ScatterRequest(
        client._backend.now(), rid, client.id, rid, keys, pool, broadcast))
    plan = req.reply
    if plan.error:
        raise ValueError(f"scatter refused by the scheduler: {plan.error}")
    unplaced = [k for k in keys if not plan.placement.get(k)]
    if unplaced:
        raise ProtocolError(f"the scheduler's scatter plan places no worker for {unplaced[:5]}")
    placement = {k: tuple(plan.placement[k]) for k in keys}
    info = yield Put(placement, items, plan.free_seqs)
    return scattered(client, keys, names, placement, info)


def scattered(client: Client, keys: tuple, names: list[str], placement: dict, info: dict) -> list:
    """Register put data: UpdateData, finished states, one Future per name."""
    from twofold.client.future import Future, run_callbacks

    missing = [k for k in keys if k not in info]
    if missing:
        raise ProtocolError(f"Backend.put did not report {missing[0]!r}")
    core = client._core
    with client._lock:
        client._check_running()
        seq, sid = core.next_sid("scatter")
        now = client._backend.now()
        due, held_before = core.stored(keys, seq, info)
        records = [ScatteredKey(key, int(info[key][0]), info[key][1], placement[key]) for key in keys]
        futures = []
        for name in names:
            st = core.states[name]
            st.refs += 1
            futures.append(Future._attach(name, client, st))
        msgs: list = [UpdateData(now, sid, client.id, tuple(records))]
        if held_before:
            # UpdateData took a second reference to keys we already held: give it back
            _, sid = core.next_sid("release")
            msgs.append(ReleaseKeys(now, sid, client.id, tuple(held_before)))
        client._send(msgs)
    run_callbacks(due)
    client._wake_waiters()
    return futures


# --------------------------------------------------------------------------
# Coordination requests
# --------------------------------------------------------------------------


def coordinate(client: Client, make: Callable[[float, str, str], Any], decode: Callable[[Any, int], Any] | None,
               deadline: float | None = None, orphan: Callable[[Any], Any] | None = None) -> Op:  # fmt: skip
    """Send ``make(now, stimulus_id, request_id)`` and wait for its reply; the request.

    Given up before the reply (``orphan``): the reply, when it comes, is handed to
    ``orphan(value)``, which may give a ``make`` of a request undoing it."""
    core = client._core
    with client._lock:
        client._check_running()
        rid, req = core.open_request(op="coord")
        req.decode = decode
        try:
            client._send([make(client._backend.now(), rid, rid)])
        except BaseException:
            core.close_request(rid)
            raise
    try:
        if not (yield Wait(lambda: req.reply is not None, deadline)):
            raise TimeoutError("the scheduler did not answer in time")
    finally:
        with client._lock:
            core.close_request(rid, orphan if req.reply is None else None)
    return req
