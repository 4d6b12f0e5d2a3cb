"""Moving data: results and gather (workers -> client), scatter (client -> workers).

A result comes from the inline copy that rode along with ``KeyInMemory``
when it was small, else straight from the workers: ``WhoHasRequest`` ->
``WhoHasReply`` -> ``Backend.fetch``.  A holder that turns out not to have
the key is reported (``MissingData``) and the scheduler asked again; a key
with no holder left is waited for until it is in memory once more (the
scheduler recomputes it from lineage), or errs.  Every wait is bounded by
the caller's timeout, if any.

Scatter asks the scheduler where to put the data (``ScatterRequest`` ->
``ScatterPlan``), puts it there through the backend, then tells the
scheduler what landed where (``UpdateData``), which gives the client its
one reference per key.

This is a mixin of :class:`~twofold.client.client.Client` (it uses the
Client's lock, states and plumbing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from twofold.client.actor import Actor
from twofold.client.future import (
    DONE,
    FAILED,
    _NO_VALUE,
    Future,
    FutureState,
    all_done,
    iter_futures,
    run_callbacks,
)
from twofold.client.options import check_key, check_timeout, data_token, normalize_workers
from twofold.errors import CancelledError, ProtocolError, TimeoutError, TwofoldError
from twofold.messages import (
    MissingData,
    ReleaseKeys,
    ScatteredKey,
    ScatterPlan,
    ScatterRequest,
    UpdateData,
    WhoHasReply,
    WhoHasRequest,
)

if TYPE_CHECKING:
    from twofold.client.client import Client

_SKIPPED = object()


class _Failed(Exception):
    """Internal: a future being collected failed (the public method raises its error)."""

    def __init__(self, state: FutureState):
        self.state = state


def _waited(timeout: float | None) -> str:
    return f"within {timeout:g} s" if timeout is not None else "(no timeout)"


class DataMethods:
    """Mixin of Client: gather, scatter, who_has and the result machinery."""

    # -- results -------------------------------------------------------------------

    def _result(self: Client, st: FutureState, timeout: float | None) -> Any:
        timeout = check_timeout(timeout)
        try:
            values = self._collect([st], self._deadline(timeout), False, timeout)
        except _Failed as failed:
            culprit = failed.state
        else:
            return values[id(st)]
        # raised here, outside the handler (no chained context), few frames of ours
        exc = self._failure(culprit)
        raise exc.with_traceback(culprit.tb)

    def _exception(self: Client, future: Future, timeout: float | None) -> BaseException | None:
        timeout = check_timeout(timeout)
        st = future._state
        if not self._wait(lambda: st.status in DONE, self._deadline(timeout)):
            raise TimeoutError(f"future {st.key!r} not done {_waited(timeout)}")
        return self._exception_of(st) if st.status == "error" else None

    def _exception_of(self: Client, st: FutureState) -> BaseException:
        """The erred key's exception, loaded once (``Backend.load_error``)."""
        exc = st.exc
        if exc is not None:
            return exc
        error = st.error
        if error is None:  # pragma: no cover - error states always carry one
            return TwofoldError(f"{st.key!r} erred")
        try:
            exc = self._backend.load_error(error)
            if not isinstance(exc, BaseException):
                raise TypeError(f"load_error gave {type(exc).__name__}")
        except Exception as problem:
            exc = TwofoldError(f"{error.typename}: {error.message} (the original exception could not be loaded: {problem!r})")
        if exc.__traceback__ is None and error.traceback_text and hasattr(exc, "add_note"):
            exc.add_note("Traceback on the worker:\n" + error.traceback_text.rstrip())
        with self._lock:
            if st.error is error:
                st.exc = exc
                st.tb = exc.__traceback__
        return exc

    def _failure(self: Client, st: FutureState) -> BaseException:
        """What result() raises for a failed state (raise it with ``st.tb``)."""
        if st.status == "cancelled":
            return CancelledError(f"{st.key}: {st.reason}" if st.reason else st.key)
        return self._exception_of(st)

    def _inline_value(self: Client, st: FutureState) -> Any:
        value = st.value
        if value is _NO_VALUE:
            inline = st.inline
            value = self._backend.load_inline(inline)
            with self._lock:
                if st.inline is inline:
                    st.value = value
        return value

    def _collect(
        self: Client, states: list[FutureState], deadline: float | None, skip: bool, timeout: float | None
    ) -> dict[int, Any]:
        """Values of ``states`` by ``id(state)``; failed ones raise, or are left out if ``skip``."""
        values: dict[int, Any] = {}
        todo = states
        while todo:
            ready = all_done(todo, stop_on_failure=not skip)
            if not self._wait(ready, deadline):
                left = [st.key for st in todo if st.status not in DONE]
                raise TimeoutError(f"{len(left)} future(s) not done {_waited(timeout)}: {left[:5]}")
            finished = []
            for st in todo:
                if st.status in FAILED:
                    if not skip:
                        raise _Failed(st)
                elif st.status == "finished":
                    finished.append(st)
            # states whose data was lost meanwhile are pending again: wait for them too
            todo = self._fetch_round(finished, values, deadline, timeout) + [
                st for st in todo if st.status not in DONE
            ]
        return values

    def _fetch_round(
        self: Client, states: list[FutureState], values: dict[int, Any], deadline: float | None, timeout: float | None
    ) -> list[FutureState]:
        """Fetch what can be fetched now; return the states to try again."""
        need = []
        for st in states:
            if st.inline is not None:
                values[id(st)] = self._inline_value(st)
            else:
                need.append(st)
        if not need:
            return []
        req = self._ask(need, deadline, timeout, lambda sid: WhoHasRequest(
            self._backend.now(), sid, self.id, sid, tuple(st.key for st in need)))
        reply: WhoHasReply = req.reply
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
            data, missing = self._backend.fetch(who_has)
            for st in need:
                if st.key in data and st.key not in missing:
                    values[id(st)] = data[st.key]
                elif st.key in who_has:
                    again.append(st)  # a holder failed us: report it, ask again
            if missing:
                with self._lock:
                    self._check_running()
                    now = self._backend.now()
                    msgs = []
                    for key, errant in missing.items():
                        _, sid = self._next_sid("missing")
                        msgs.append(MissingData(now, sid, self.id, key, errant))
                    self._send(msgs)
        if homeless:
            # no holder when the scheduler answered: wait for the next arrival in memory
            gens = req.gens

            def arrived() -> bool:
                return all(st.generation > gens[id(st)] or st.status in FAILED for st in homeless)

            if not self._wait(arrived, deadline):
                raise TimeoutError(
                    f"data of {[st.key for st in homeless][:5]} lost and not recomputed {_waited(timeout)}"
                )
            again.extend(homeless)
        return again

    def _ask(
        self: Client, states: list[FutureState], deadline: float | None, timeout: float | None,
        make: Callable[[str], Any],
    ):
        """Send ``make(request_id)`` and wait for the reply with that request_id."""
        from twofold.client.client import _Request

        req = _Request(states)
        with self._lock:
            self._check_running()
            _, sid = self._next_sid("ask")
            self._requests[sid] = req
            try:
                self._send([make(sid)])
            except BaseException:
                del self._requests[sid]
                raise
        try:
            if not self._wait(lambda: req.reply is not None, deadline):
                raise TimeoutError(f"the scheduler did not answer {_waited(timeout)}")
        finally:
            with self._lock:
                self._requests.pop(sid, None)
        return req

    # -- gather --------------------------------------------------------------------

    def gather(self: Client, futures: Any, errors: str = "raise", direct: Any = None, asynchronous: Any = None) -> Any:
        """Results of a future, or of futures inside lists/tuples/sets/dicts (same shape back).

        ``errors='raise'`` re-raises the first failed future's exception (a
        cancelled one raises CancelledError); ``'skip'`` leaves failed ones
        out of their container (a lone failed future gives None).
        An iterator gives a lazy iterator of gathered items.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors= must be 'raise' or 'skip', got {errors!r}")
        if isinstance(futures, Iterator):
            return (self.gather(f, errors=errors) for f in futures)
        fs = list(iter_futures(futures))
        self._check_own(fs, "gather()")
        self._check_running()
        states = list({id(f._state): f._state for f in fs}.values())
        try:
            values = self._collect(states, None, errors == "skip", None)
        except _Failed as failed:
            culprit = failed.state
        else:
            out = _pack(futures, values)
            return None if out is _SKIPPED else out
        del futures, fs, states  # the traceback keeps this frame: let go of the futures
        exc = self._failure(culprit)
        raise exc.with_traceback(culprit.tb)

    def who_has(self: Client, futures: Any = None) -> dict[str, list[str]]:
        """Which workers hold each future's data (all of this client's keys if None)."""
        if futures is None:
            with self._lock:
                states = list(self._states.values())
        else:
            fs = list(iter_futures(futures))
            self._check_own(fs, "who_has()")
            states = list({f.key: f._state for f in fs}.values())
        if not states:
            return {}
        req = self._ask(states, None, None, lambda sid: WhoHasRequest(
            self._backend.now(), sid, self.id, sid, tuple(st.key for st in states)))
        return {st.key: list(req.reply.who_has.get(st.key, ())) for st in states}

    # -- scatter -------------------------------------------------------------------

    def scatter(
        self: Client,
        data: Any,
        workers: Any = None,
        broadcast: bool = False,
        direct: Any = None,
        hash: bool = True,  # noqa: A002 - dask's name
        timeout: float | None = None,
        asynchronous: Any = None,
    ) -> Any:
        """Put local data on workers; futures in the shape of ``data``.

        An object gives one future; a list/tuple/set gives the same kind of
        container of futures, one per element; a dict gives a dict of
        futures whose keys are the dict's keys (they name the data).
        ``hash=True`` names elements by content (``<type>-<token>``), so
        equal data scattered twice is one key.
        """
        if isinstance(data, Iterator):
            raise TypeError("scatter() takes a list, tuple, set, dict or single object, not an iterator")
        if isinstance(data, range):
            data = list(data)
        pool = normalize_workers(workers)
        if not isinstance(broadcast, bool):
            raise TypeError(f"broadcast= must be True or False, got {broadcast!r}")
        timeout = check_timeout(timeout)
        self._check_running()
        if isinstance(data, dict):
            names = [check_key(k, "scatter() dict key") for k in data]
            items = dict(data)
        elif isinstance(data, (list, tuple, set, frozenset)):
            values = list(data)
            names = [self._data_key(x, hash) for x in values]
            items = dict(zip(names, values))
        else:
            names = [self._data_key(data, hash)]
            items = {names[0]: data}
        if not names:
            return {} if isinstance(data, dict) else type(data)()
        keys = tuple(items)
        req = self._ask([], self._deadline(timeout), timeout, lambda sid: ScatterRequest(
            self._backend.now(), sid, self.id, sid, keys, pool, broadcast))
        plan: ScatterPlan = req.reply
        if plan.error:
            raise ValueError(f"scatter refused by the scheduler: {plan.error}")
        unplaced = [k for k in keys if not plan.placement.get(k)]
        if unplaced:
            raise ProtocolError(f"the scheduler's scatter plan places no worker for {unplaced[:5]}")
        placement = {k: tuple(plan.placement[k]) for k in keys}
        if plan.free_seqs:
            info = self._backend.put(placement, items, plan.free_seqs)
        else:
            info = self._backend.put(placement, items)
        futures = self._scattered(keys, names, placement, info)
        if isinstance(data, dict):
            return dict(zip(names, futures))
        if isinstance(data, (list, tuple, set, frozenset)):
            return futures if type(data) is list else type(data)(futures)
        return futures[0]

    def _data_key(self: Client, obj: Any, hash: bool) -> str:  # noqa: A002
        token = data_token(obj) if hash else None
        return f"{type(obj).__name__}-{token or self._backend.new_token()}"

    def _scattered(
        self: Client, keys: tuple, names: list[str], placement: dict, info: dict
    ) -> list[Future]:
        """Register put data: UpdateData, finished states, one Future per name."""
        due: list = []
        with self._lock:
            self._check_running()
            seq, sid = self._next_sid("scatter")
            now = self._backend.now()
            records = []
            held_before = []
            for key in keys:
                try:
                    nbytes, typename = info[key]
                except KeyError:
                    raise ProtocolError(f"Backend.put did not report {key!r}") from None
                st = self._states.get(key)
                if st is None:
                    st = self._states[key] = FutureState(key, seq)
                else:
                    held_before.append(key)
                due += st.finish(typename, nbytes, None)
                records.append(ScatteredKey(key, int(nbytes), typename, placement[key]))
            futures = []
            for name in names:
                st = self._states[name]
                st.refs += 1
                futures.append(Future._attach(name, self, st))
            msgs: list = [UpdateData(now, sid, self.id, tuple(records))]
            if held_before:
                # UpdateData took a second reference to keys we already held: give it back
                _, sid = self._next_sid("release")
                msgs.append(ReleaseKeys(now, sid, self.id, tuple(held_before)))
            self._send(msgs)
        run_callbacks(due)
        return futures


def _pack(obj: Any, values: dict[int, Any]) -> Any:
    """``obj`` with futures replaced by values; skipped ones left out."""
    if isinstance(obj, Future):
        value = values.get(id(obj._state), _SKIPPED)
        if type(value) is Actor:
            return value._bind(obj.client, obj)  # as Future.result() does
        return value
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = _pack(v, values)
            if v is not _SKIPPED:
                out[k] = v
        return out if type(obj) is dict else _rebuild(type(obj), out, dict)
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_pack(v, values) for v in obj]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple keeps its arity
            return type(obj)(*(None if v is _SKIPPED else v for v in items))
        items = [v for v in items if v is not _SKIPPED]
        base = next(t for t in (list, tuple, set, frozenset) if isinstance(obj, t))
        return items if type(obj) is list else _rebuild(type(obj), items, base)
    return obj


def _rebuild(typ: type, items: Any, base: type) -> Any:
    try:
        return typ(items)
    except Exception:
        return base(items)
