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

from twofold.client import ops
from twofold.client.actor import Actor
from twofold.client.future import _NO_VALUE, Future, FutureState, iter_futures
from twofold.client.ops import Failed as _Failed
from twofold.client.ops import drive_sync
from twofold.client.options import check_key, check_timeout, data_token, normalize_workers
from twofold.errors import CancelledError, TwofoldError

if TYPE_CHECKING:
    from twofold.client.client import Client

_SKIPPED = object()


class DataMethods:
    """Mixin of Client: gather, scatter, who_has and the result machinery."""

    # -- results -------------------------------------------------------------------

    def _result(self: Client, st: FutureState, timeout: float | None) -> Any:
        """The value of ``st`` (blocking; the async API drives :meth:`_result_op` itself)."""
        if st.status == "finished" and st.inline is not None:
            return self._inline_value(st)  # the usual case: nothing to wait for, nothing to fetch
        value = drive_sync(self, self._result_op(st, check_timeout(timeout)))
        if type(value) is _Failed:
            # raised here, outside any handler (no chained context), few frames of ours
            culprit = value.state
            del value
            exc = self._failure(culprit)
            raise exc.with_traceback(culprit.tb)
        return value

    def _result_op(self: Client, st: FutureState, timeout: float | None) -> ops.Op:
        """The value, or the :class:`ops.Failed` of a failed state (the caller raises: fewer frames)."""
        try:
            values = yield from ops.collect(self, [st], self._deadline(timeout), False, timeout)
        except _Failed as failed:
            return failed
        return values[id(st)]

    def _exception(self: Client, st: FutureState, timeout: float | None) -> Any:
        timeout = check_timeout(timeout)
        return self._run(ops.exception(self, st, self._deadline(timeout), timeout))

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
        """Values of ``states`` by ``id(state)`` (blocking; see :func:`ops.collect`)."""
        return drive_sync(self, ops.collect(self, states, deadline, skip, timeout))

    def _ask(
        self: Client, states: list[FutureState], deadline: float | None, timeout: float | None,
        make: Callable[[str], Any],
    ):
        """Send ``make(request_id)`` and wait for the reply with that request_id (blocking)."""
        return drive_sync(self, ops.ask(self, states, deadline, timeout, make))

    # -- gather --------------------------------------------------------------------

    def gather(self: Client, futures: Any, errors: str = "raise", direct: Any = None, asynchronous: Any = None) -> Any:
        """Results of a future, or of futures inside lists/tuples/sets/dicts (same shape back).

        ``errors='raise'`` re-raises the first failed future's exception (a
        cancelled one raises CancelledError); ``'skip'`` leaves failed ones
        out of their container (a lone failed future gives None).
        An iterator gives a lazy iterator of gathered items.
        Awaitable when the client is asynchronous.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors= must be 'raise' or 'skip', got {errors!r}")
        if isinstance(futures, Iterator):
            if self.asynchronous:
                raise TypeError("an asynchronous client gathers lists of futures, not iterators")
            return (self.gather(f, errors=errors) for f in futures)
        fs = list(iter_futures(futures))
        self._check_own(fs, "gather()")
        self._check_running()
        states = list({id(f._state): f._state for f in fs}.values())
        del fs
        if self.asynchronous:
            return self._gather_async(futures, states, errors == "skip")
        value = drive_sync(self, self._gather_op(futures, states, errors == "skip"))
        if type(value) is _Failed:
            culprit = value.state
            del futures, states, value  # the traceback keeps this frame: let go of the futures
            exc = self._failure(culprit)
            raise exc.with_traceback(culprit.tb)
        return value

    async def _gather_async(self: Client, futures: Any, states: list[FutureState], skip: bool) -> Any:
        value = await ops.drive_async(self, self._gather_op(futures, states, skip))
        if type(value) is _Failed:
            culprit = value.state
            del futures, states, value
            exc = self._failure(culprit)
            raise exc.with_traceback(culprit.tb)
        return value

    def _gather_op(self: Client, futures: Any, states: list[FutureState], skip: bool) -> ops.Op:
        """The gathered values in the shape of ``futures``, or the :class:`ops.Failed` of the first failure."""
        try:
            values = yield from ops.collect(self, states, None, skip, None)
        except _Failed as failed:
            return failed
        out = _pack(futures, values)
        return None if out is _SKIPPED else out

    def who_has(self: Client, futures: Any = None) -> Any:
        """Which workers hold each future's data (all of this client's keys if None)."""
        if futures is None:
            with self._lock:
                states = list(self._states.values())
        else:
            fs = list(iter_futures(futures))
            self._check_own(fs, "who_has()")
            states = list({f.key: f._state for f in fs}.values())
        return self._run(self._who_has_op(states))

    def _who_has_op(self: Client, states: list[FutureState]) -> ops.Op:
        if not states:
            return {}
        req = yield from ops.ask(self, states, None, None, ops.who_has_request(self, tuple(st.key for st in states)))
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
        equal data scattered twice is one key.  Awaitable when the client
        is asynchronous.
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
            return self._maybe_done({} if isinstance(data, dict) else type(data)())
        return self._run(self._scatter_op(data, tuple(items), names, items, pool, broadcast, timeout))

    def _scatter_op(self: Client, data: Any, keys: tuple, names: list[str], items: dict, pool: Any, broadcast: bool,
                    timeout: float | None) -> ops.Op:  # fmt: skip
        futures = yield from ops.scatter(self, keys, names, items, pool, broadcast, self._deadline(timeout), timeout)
        if isinstance(data, dict):
            return dict(zip(names, futures))
        if isinstance(data, (list, tuple, set, frozenset)):
            return futures if type(data) is list else type(data)(futures)
        return futures[0]

    def _data_key(self: Client, obj: Any, hash: bool) -> str:  # noqa: A002
        token = data_token(obj) if hash else None
        return f"{type(obj).__name__}-{token or self._backend.new_token()}"


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
