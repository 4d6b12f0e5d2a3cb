"""Futures, and waiting on many of them: ``Future``, ``wait``, ``as_completed``, ``fire_and_forget``.

A :class:`Future` is a handle; what it knows lives in a :class:`FutureState`
that the Client owns, one per key it holds, shared by every Future object of
that key.  The Client changes states when scheduler messages arrive; Futures
only read them, and ask the Client to block, fetch, cancel or retry.

Reference counting is by Future objects: each one counts once on its state,
and its ``__del__`` hands the state back to the Client on a lock-free queue
(``__del__`` can run in any thread, even one that holds the Client's lock,
so it must not take locks or send).  The Client settles that queue before it
next sends or blocks.

Done callbacks run once each, in the thread that delivered the completion
(the backend's receiving thread), or at once in the registering thread when
the future is already done.

``threading`` and ``logging`` are imported on first use, not at import:
``import twofold.scheduler`` imports this package too, and the state
machines must load without thread machinery (``tests/test_purity.py``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

from twofold.client.actor import Actor
from twofold.errors import TimeoutError
from twofold.messages import TaskError

if TYPE_CHECKING:
    from twofold.client.client import Client


def log():
    """The client's logger (imported lazily, see the module docstring)."""
    import logging

    return logging.getLogger("twofold.client")


#: statuses after which a future no longer changes on its own
DONE = frozenset({"finished", "error", "cancelled"})
#: statuses whose result() raises
FAILED = frozenset({"error", "cancelled"})
_NO_VALUE = object()


class FutureState:
    """What the client knows about one key; mutated only under the Client's lock.

    ``since`` is the sequence number of the client message that made the
    scheduler hold this state's reference; it tells late replies about an
    earlier incarnation of the same key apart from replies about this one.
    ``generation`` counts arrivals in memory, so a reader that found no
    holder can wait for the *next* one.
    """

    __slots__ = (
        "key",
        "status",
        "since",
        "refs",
        "typename",
        "nbytes",
        "inline",
        "value",
        "error",
        "exc",
        "tb",
        "reason",
        "generation",
        "callbacks",
        "deps",
    )

    def __init__(self, key: str, since: int):
        self.key = key
        self.status = "pending"
        self.since = since
        self.refs = 0
        self.typename: str | None = None
        self.nbytes: int | None = None
        self.inline: bytes | None = None
        self.value: Any = _NO_VALUE
        self.error: TaskError | None = None
        self.exc: BaseException | None = None
        self.tb: Any = None
        self.reason = ""
        self.generation = 0
        self.callbacks: list[tuple[Callable, Future]] = []
        #: the keys this task was submitted with as inputs (to explain a refusal)
        self.deps: tuple[str, ...] = ()

    def finish(self, typename: str | None, nbytes: int | None, inline: bytes | None) -> list:
        """Into memory; returns the callbacks now due."""
        self.typename = typename
        self.nbytes = nbytes
        self.inline = inline
        self.value = _NO_VALUE
        self.error = self.exc = self.tb = None
        self.generation += 1
        return self._settle("finished")

    def fail(self, error: TaskError) -> list:
        """Erred; the exception is loaded from ``error`` when first asked for."""
        self.error = error
        self.exc = self.tb = None
        self._drop_data()
        return self._settle("error")

    def cancel(self, reason: str) -> list:
        self.reason = reason
        self._drop_data()
        return self._settle("cancelled")

    def lose(self) -> None:
        """The data is gone and being recomputed: pending again ('lost')."""
        self._drop_data()
        self.status = "lost"
        _EVENTS[0] += 1

    def reset(self) -> None:
        """Retried: pending again, error forgotten."""
        self.error = self.exc = self.tb = None
        self._drop_data()
        self.status = "pending"
        _EVENTS[0] += 1
        _EVENTS[1] += 1  # a failure went away: waits that stop on failure look again

    def _drop_data(self) -> None:
        self.inline = None
        self.value = _NO_VALUE

    def _settle(self, status: str) -> list:
        self.status = status
        _EVENTS[0] += 1
        if status != "finished":
            _EVENTS[1] += 1
        due, self.callbacks = self.callbacks, []
        return due


#: [settlements, failures] so far in this process: waits re-scan their
#: futures only when these move, so a wait costs O(futures), not
#: O(futures x events) (the simulator checks a wait's condition after every event)
_EVENTS = [0, 0]


def all_done(states: list, stop_on_failure: bool = False) -> Callable[[], bool]:
    """A cheap predicate: every state done (or, optionally, any failed)."""
    n = len(states)
    pos = 0
    seen = -1
    failures_seen = -1
    failed = False
    last = False

    def ready() -> bool:
        nonlocal pos, seen, last, failures_seen, failed
        if seen == _EVENTS[0]:
            return last  # nothing settled anywhere since the last look
        seen = _EVENTS[0]
        while pos < n and states[pos].status in DONE:
            pos += 1
        if pos == n:
            last = True
            for i, st in enumerate(states):  # statuses can go back (lost data): confirm
                if st.status not in DONE:
                    pos = i
                    last = False
                    break
        elif stop_on_failure:
            if failures_seen != _EVENTS[1]:  # scan for failures only when some future failed somewhere
                failures_seen = _EVENTS[1]
                failed = any(st.status in FAILED for st in states)
            last = failed
        else:
            last = False
        return last

    return ready


def any_done(states: list) -> Callable[[], bool]:
    seen = -1
    last = False

    def ready() -> bool:
        nonlocal seen, last
        if seen != _EVENTS[0]:
            seen = _EVENTS[0]
            last = any(st.status in DONE for st in states)
        return last

    return ready


def run_callbacks(due: Iterable[tuple[Callable, Future]]) -> None:
    """Call done callbacks outside any lock; a failing one is logged, not raised."""
    for fn, future in due:
        try:
            fn(future)
        except Exception:
            log().exception("done callback %r of %r raised", fn, future)


class Future:
    """A remote result: ``Future(key, client)`` or, usually, what ``submit`` returns.

    Creating one for a key the client does not hold asks the scheduler for
    it (``DesireKeys``); the scheduler answers with its status, computes it
    again if it was released, or cancels the future if it no longer knows
    the key.
    """

    __slots__ = ("key", "client", "_state", "__weakref__")

    def __init__(self, key: str, client: Client | None = None):
        from twofold.client.client import default_client

        if not isinstance(key, str) or not key:
            raise TypeError(f"a future's key must be a non-empty str, got {key!r}")
        client = default_client(client)
        self.key = key
        self.client = client
        self._state = client._hold(key)

    @classmethod
    def _attach(cls, key: str, client: Client, state: FutureState) -> Future:
        """A Future on a state whose reference count the caller already raised."""
        self = object.__new__(cls)
        self.key = key
        self.client = client
        self._state = state
        return self

    def __del__(self) -> None:
        try:
            self.client._dropped(self._state)
        except Exception:  # partly built, or interpreter shutdown
            pass

    # -- status --------------------------------------------------------------

    @property
    def status(self) -> str:
        """'pending', 'finished', 'error', 'cancelled' or 'lost'."""
        return self._state.status

    @property
    def type(self) -> str | None:
        """The result's type name, once finished."""
        return self._state.typename

    def done(self) -> bool:
        return self._state.status in DONE

    def cancelled(self) -> bool:
        return self._state.status == "cancelled"

    # -- results ---------------------------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """Wait (at most ``timeout`` seconds) and return the result, or raise the
        task's exception with its original traceback (``CancelledError`` if
        cancelled, :class:`~twofold.errors.TimeoutError` on timeout)."""
        client, state = self.client, self._state
        if client.asynchronous:
            return self._result_async(timeout)
        try:
            # ``self`` stays referenced while we wait: a temporary future
            # (``client.submit(f).result()``) must not be released mid-wait
            value = client._result(state, timeout)
        except BaseException:
            # the raised exception's traceback keeps this frame, and the exception
            # is cached on the state: holding ``self`` there would keep the key alive
            del self
            raise
        if type(value) is Actor:
            return value._bind(client, self)  # the handle keeps the actor alive
        return value

    async def _result_async(self, timeout: float | None) -> Any:
        from twofold.client.options import check_timeout

        from twofold.client.ops import Failed

        client = self.client
        value = await client._run_async(client._result_op(self._state, check_timeout(timeout)))
        if type(value) is Failed:
            culprit = value.state
            del value
            exc = client._failure(culprit)
            raise exc.with_traceback(culprit.tb)
        if type(value) is Actor:
            return value._bind(client, self)
        return value

    def __await__(self):
        """``await future``: its result, without blocking the event loop (any client)."""
        return self._result_async(None).__await__()

    def exception(self, timeout: float | None = None) -> Any:
        """The task's exception once it erred; None if it finished or was cancelled
        (awaitable when the client is asynchronous)."""
        return self.client._exception(self._state, timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        """The traceback object of the task's exception (None if not erred;
        awaitable when the client is asynchronous)."""
        exc = self.client._exception(self._state, timeout)
        if self.client.asynchronous:
            return _traceback_async(exc, self._state)
        return None if exc is None else self._state.tb

    # -- actions ---------------------------------------------------------------

    def cancel(self, force: bool = False) -> None:
        """Cancel this future (see :meth:`Client.cancel`)."""
        self.client.cancel([self], force=force)

    def retry(self) -> None:
        """Run it again if it erred (see :meth:`Client.retry`)."""
        self.client.retry([self])

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(self)`` once this future finishes, errs or is cancelled."""
        if not callable(fn):
            raise TypeError(f"add_done_callback needs a callable, got {fn!r}")
        self.client._add_callback(self, fn)

    # -- identity --------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Future):
            return NotImplemented
        return self.key == other.key and self.client is other.client

    def __hash__(self) -> int:
        return hash(self.key) ^ id(self.client)  # no tuple: sets of 100k futures are common

    def __reduce__(self):
        # inside a task, a pickled future re-attaches to the task's client
        return (_rebuild_future, (self.key,))

    def __repr__(self) -> str:
        st = self._state
        if st.status == "finished" and st.typename:
            return f"<Future: finished, type: {st.typename}, key: {self.key}>"
        return f"<Future: {st.status}, key: {self.key}>"


async def _traceback_async(exc: Any, state: FutureState) -> Any:
    return None if (await exc) is None else state.tb


def _rebuild_future(key: str) -> Future:
    from twofold.client.client import get_client

    return Future(key, get_client())


# --------------------------------------------------------------------------
# Finding futures in nested arguments
# --------------------------------------------------------------------------

_NESTED = (list, tuple, set, frozenset)


def iter_futures(obj: Any) -> Iterator[Future]:
    """Every Future inside lists, tuples, sets and dict values of ``obj``, in order."""
    if isinstance(obj, Future):
        yield obj
    elif isinstance(obj, _NESTED):
        for item in obj:
            yield from iter_futures(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from iter_futures(item)


def by_client(futures: Iterable[Future]) -> dict[Client, list[Future]]:
    """Futures grouped by client, in first-seen order (a dict, not hash order)."""
    groups: dict[int, tuple[Client, list[Future]]] = {}
    for f in futures:
        entry = groups.get(id(f.client))
        if entry is None:
            groups[id(f.client)] = (f.client, [f])
        else:
            entry[1].append(f)
    return {client: fs for client, fs in groups.values()}


def _as_future_list(fs: Any, what: str) -> list[Future]:
    if isinstance(fs, Future):
        return [fs]
    if isinstance(fs, (str, bytes)) or not isinstance(fs, Iterable):
        raise TypeError(f"{what} takes a future or an iterable of futures, got {type(fs).__name__}")
    out = list(fs)
    for f in out:
        if not isinstance(f, Future):
            raise TypeError(f"{what} takes futures, got {type(f).__name__} {f!r}")
    return out


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"


class DoneAndNotDoneFutures(NamedTuple):
    done: set
    not_done: set


def wait(fs: Any, timeout: float | None = None, return_when: str = ALL_COMPLETED) -> DoneAndNotDoneFutures:
    """Block until all (or, with ``FIRST_COMPLETED``, any) of ``fs`` are done.

    Done means finished, erred or cancelled.  Raises
    :class:`~twofold.errors.TimeoutError` if ``timeout`` seconds (backend
    time) pass first.
    """
    from twofold.client.options import check_timeout

    futures = _as_future_list(fs, "wait()")
    timeout = check_timeout(timeout)
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED):
        raise ValueError(f"return_when must be 'ALL_COMPLETED' or 'FIRST_COMPLETED', got {return_when!r}")
    groups = by_client(futures)
    if not groups:
        return DoneAndNotDoneFutures(set(), set())
    from twofold.client import ops

    op = _wait_op(futures, groups, timeout, return_when)
    if any(c.asynchronous for c in groups):
        return ops.drive_async(next(iter(groups)), op)
    return ops.drive_sync(next(iter(groups)), op)


def _wait_op(futures: list[Future], groups: dict, timeout: float | None, return_when: str) -> Any:
    """:func:`wait` as an operation of ``twofold.client.ops`` (blocked on or awaited)."""
    from twofold.client.ops import Wait

    deadlines = {id(c): c._deadline(timeout) for c in groups}
    if return_when == FIRST_COMPLETED:
        first = any_done([f._state for f in futures])
        if not first():
            # one backend drives the wait; the others' receivers still update states
            client = next(iter(groups))
            if not (yield Wait(first, deadlines[id(client)], client)):
                raise TimeoutError(f"none of {len(futures)} futures finished within {timeout:g} s")
    else:
        for client, group in groups.items():
            ready = all_done([f._state for f in group])
            if not ready() and not (yield Wait(ready, deadlines[id(client)], client)):
                left = sum(f._state.status not in DONE for f in futures)
                raise TimeoutError(f"{left} of {len(futures)} futures not done after {timeout:g} s")
    return _split(futures)


def _split(futures: list[Future]) -> DoneAndNotDoneFutures:
    not_done = [f for f in futures if f._state.status not in DONE]
    if not not_done:  # the usual end of a wait: one pass, each future hashed once
        return DoneAndNotDoneFutures(set(futures), set())
    not_done_set = set(not_done)
    return DoneAndNotDoneFutures({f for f in futures if f not in not_done_set}, not_done_set)


# --------------------------------------------------------------------------
# as_completed
# --------------------------------------------------------------------------


class as_completed:  # noqa: N801 - dask's name
    """Iterate over futures in the order they complete; more can be added meanwhile.

    With ``with_results=True`` it yields ``(future, result)``; an erred or
    cancelled future then raises (``raise_errors=True``) or yields
    ``(future, exception)``.  Results are fetched when yielded.  A future
    added twice is yielded twice.
    """

    def __init__(self, futures: Iterable[Future] | None = None, with_results: bool = False, raise_errors: bool = True):
        self.with_results = with_results
        self.raise_errors = raise_errors
        import threading  # lazily: see the module docstring

        self._lock = threading.Lock()
        self._queue: deque[Future] = deque()
        self._pending: dict[Future, int] = {}
        if futures is not None:
            self.update(futures)

    def add(self, future: Future) -> None:
        if not isinstance(future, Future):
            raise TypeError(f"as_completed takes futures, got {type(future).__name__} {future!r}")
        with self._lock:
            self._pending[future] = self._pending.get(future, 0) + 1
        future.add_done_callback(self._on_done)

    def update(self, futures: Iterable[Future]) -> None:
        for f in _as_future_list(futures, "as_completed"):
            self.add(f)

    def _on_done(self, future: Future) -> None:
        with self._lock:
            n = self._pending.get(future, 0)
            if n <= 1:
                self._pending.pop(future, None)
            else:
                self._pending[future] = n - 1
            self._queue.append(future)

    def count(self) -> int:
        """Futures not yet yielded (done or not)."""
        with self._lock:
            return len(self._queue) + sum(self._pending.values())

    def __len__(self) -> int:
        return self.count()

    def is_empty(self) -> bool:
        return self.count() == 0

    def clear(self) -> None:
        """Forget every future not yet yielded."""
        with self._lock:
            self._queue.clear()
            self._pending.clear()

    def __iter__(self) -> as_completed:
        return self

    def __next__(self) -> Any:
        self._block()
        with self._lock:
            future = self._queue.popleft()
        return self._item(future)

    def next_batch(self, block: bool = True) -> list:
        """Everything done since the last call (waiting for one if ``block``)."""
        if block:
            self._block()
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
        return [self._item(f) for f in batch]

    def batches(self) -> Any:
        """Lists of whatever completed since the previous list (``for``, or ``async for``)."""
        return _Batches(self)

    def _sync_batches(self) -> Iterator[list]:
        while True:
            try:
                yield self.next_batch(block=True)
            except StopIteration:
                return

    # -- async iteration ----------------------------------------------------------------

    def __aiter__(self) -> as_completed:
        return self

    async def __anext__(self) -> Any:
        if not await self._block_async():
            raise StopAsyncIteration
        with self._lock:
            future = self._queue.popleft()
        return await self._item_async(future)

    async def _block_async(self) -> bool:
        """Await something queued; False when nothing is left."""
        from twofold.client import ops

        while True:
            with self._lock:
                if self._queue:
                    return True
                if not self._pending:
                    return False
                client = next(iter(self._pending)).client
            await client._run_async(ops.wait_for(lambda: bool(self._queue) or not self._pending, None))

    async def _item_async(self, future: Future) -> Any:
        if not self.with_results:
            return future
        try:
            return future, await future._result_async(None)
        except Exception as exc:
            if self.raise_errors:
                raise
            return future, exc

    async def _async_batches(self) -> Any:
        while await self._block_async():
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
            yield [await self._item_async(f) for f in batch]

    def _block(self) -> None:
        """Wait until something is queued; StopIteration when nothing is left."""
        while True:
            with self._lock:
                if self._queue:
                    return
                if not self._pending:
                    raise StopIteration
                client = next(iter(self._pending)).client
            client._wait(lambda: bool(self._queue) or not self._pending, None)

    def _item(self, future: Future) -> Any:
        if not self.with_results:
            return future
        try:
            return future, future.result()
        except Exception as exc:
            if self.raise_errors:
                raise
            return future, exc


class _Batches:
    """``as_completed(...).batches()``: iterable with ``for`` and with ``async for``."""

    __slots__ = ("_ac", "_sync")

    def __init__(self, ac: as_completed):
        self._ac = ac
        self._sync: Iterator[list] | None = None

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> list:
        if self._sync is None:
            self._sync = self._ac._sync_batches()
        return next(self._sync)

    def __aiter__(self) -> Any:
        return self._ac._async_batches()


# --------------------------------------------------------------------------
# fire_and_forget
# --------------------------------------------------------------------------


def fire_and_forget(obj: Any) -> None:
    """Have the scheduler run these futures' tasks even once nobody holds them.

    ``obj`` is a future or lists/tuples/sets/dicts of them (other values are
    ignored).
    """
    for client, futures in by_client(iter_futures(obj)).items():
        client._fire_and_forget(futures)
