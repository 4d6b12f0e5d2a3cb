"""``client.get_executor()``: a ``concurrent.futures.Executor`` over the cluster.

Its futures are real ``concurrent.futures.Future`` objects, so
``concurrent.futures.wait``/``as_completed``, ``Executor.map`` and
``shutdown`` behave as with a thread pool.  Each one follows a twofold
future: it is marked done when the task finishes (from the thread that
receives the scheduler's messages, without fetching anything), and its
``result()`` fetches the value on demand.

On a ``SimCluster`` the simulation advances only inside twofold calls, so
use the futures' ``result()``/``exception()`` (which drive it) rather than
``concurrent.futures.wait`` until the simulator owns the program's time.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from twofold.client.client import Client
    from twofold.client.future import Future

#: options of ``submit`` an executor may be given (the rest are arguments of the function)
_OPTIONS = ("workers", "resources", "retries", "priority", "allow_other_workers", "pure")


class ExecutorFuture(cf.Future):
    """A ``concurrent.futures.Future`` following a twofold ``Future``."""

    def __init__(self, future: Future):
        super().__init__()
        self.future = future
        self.set_running_or_notify_cancel()  # it runs on the cluster: no "pending" cancel window
        future.add_done_callback(self._settle)

    def _settle(self, future: Future) -> None:
        status = future.status
        if status == "finished":
            self.set_result(_NOT_FETCHED)  # done, value not fetched: result() fetches it on demand
        elif status == "cancelled":
            # (a running concurrent.futures.Future cannot become "cancelled"): done, and
            # result() raises the twofold CancelledError
            from twofold.errors import CancelledError

            self.set_exception(CancelledError(f"task {future.key!r} was cancelled"))
        else:
            exc = future.exception(timeout=0)
            self.set_exception(exc if exc is not None else RuntimeError(f"task {future.key!r} failed"))

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout=timeout)  # drives the simulator; fetches from workers

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self.future.exception(timeout=timeout)

    def cancel(self) -> bool:
        if self.future.done():
            return False
        self.future.cancel()
        return True

    def __repr__(self) -> str:
        return f"<ExecutorFuture of {self.future!r}>"


_NOT_FETCHED = object()


class ClientExecutor(cf.Executor):
    """Run callables on the cluster through ``client`` (``client.get_executor(**options)``)."""

    def __init__(self, client: Client, **options: Any):
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise TypeError(f"get_executor() got unknown options {unknown}; it takes {list(_OPTIONS)}")
        options.setdefault("pure", False)  # an executor call runs each time, as with a thread pool
        self._client = client
        self._options = options
        self._futures: dict[ExecutorFuture, None] = {}
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> ExecutorFuture:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        future = ExecutorFuture(self._client.submit(fn, *args, **self._options, **kwargs))
        with self._lock:
            self._futures[future] = None
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: cf.Future) -> None:
        with self._lock:
            self._futures.pop(future, None)

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:  # fmt: skip
        """Results of ``fn`` over ``zip(*iterables)``, in order, submitted at once (as one graph)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        futures = self._client.map(fn, *[list(it) for it in iterables], **self._options)
        wrapped = [ExecutorFuture(f) for f in futures]
        client = self._client
        deadline = None if timeout is None else client._backend.now() + timeout

        def results() -> Iterator[Any]:
            for f in wrapped:
                left = None if deadline is None else max(0.0, deadline - client._backend.now())
                yield f.result(timeout=left)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            for f in pending:
                try:
                    f.future.result()
                except BaseException:  # failures are the futures' own business
                    pass

