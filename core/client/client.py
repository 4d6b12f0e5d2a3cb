"""The Client: futures in, messages out, over whichever :class:`Backend` it got.

Rules (the reasons are in the comments where they apply):

* One scheduler-side reference per key per client.  The first Future of a
  key puts it in ``UpdateGraph.wanted`` (or sends ``DesireKeys``); further
  Future objects of that key only count locally; when the last one is
  garbage-collected, one ``ReleaseKeys`` goes out.  Releases are batched:
  they ride with the next message or are flushed before the next blocking
  wait, never sent from ``__del__``.
* Everything is checked before anything is sent: a call that raises sent
  nothing.
* State changes happen under one ``RLock``; messages are sent under it too
  (so the scheduler sees them in the order the client's state assumes);
  ``Backend.wait_until`` is never called while holding it, and done
  callbacks run after it is released.
* A state (``FutureState``) stops being the key's current one when the key
  is cancelled, refused or released; a later Future of that key starts a
  fresh state.  Scheduler replies carry the ``stimulus_id`` of the client
  message that caused them, and each state remembers the sequence number of
  the message that introduced it, so a late cancellation or refusal of an
  earlier incarnation never hits the fresh state.

``threading`` is imported when the first Client is made, not at import
(see ``twofold.client.future``).
"""

from __future__ import annotations

import weakref
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from twofold.client.backend import Backend
from twofold.client.cluster_ops import ClusterOpsMethods
from twofold.client.collections import CollectionMethods
from twofold.client.coordinating import CoordinationPlumbing
from twofold.client.data import DataMethods
from twofold.client.info import InfoMethods
from twofold.client.plugins import PluginMethods
from twofold.client.remote import RemoteMethods
from twofold.client.sharing import SharingMethods
from twofold.client.taskstream import TaskStreamMethods
from twofold.client.future import DONE, Future, FutureState, iter_futures, log, run_callbacks
from twofold.client.state import ClientState, Request
from twofold.client.options import CallHasher, TaskOptions, check_key, funcname, plain_args, task_options
from twofold.client.spec import replace_futures
from twofold.context import forced_sync, in_async_task
from twofold.errors import CommClosedError
from twofold.messages import (
    AddClient,
    Message,
    RemoveClient,
    TaskSpec,
    TopicEvent,
    TopicMessages,
    TopicPeers,
    UpdateGraph,
)

# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------

#: address prefix -> factory(address, client) -> Backend
_FACTORIES: dict[str, Callable[[str, "Client"], Backend]] = {}


def register_address(prefix: str, factory: Callable[[str, "Client"], Backend]) -> None:
    """Let ``Client("<prefix>...")`` connect through ``factory(address, client)``.

    Drivers call this at import (the simulator registers ``"sim://"``).
    Registering a prefix again replaces its factory.
    """
    if not isinstance(prefix, str) or not prefix:
        raise TypeError(f"an address prefix must be a non-empty str, got {prefix!r}")
    if not callable(factory):
        raise TypeError(f"the factory for {prefix!r} must be callable, got {factory!r}")
    _FACTORIES[prefix] = factory


def _supported() -> str:
    prefixes = ", ".join(repr(p) for p in sorted(_FACTORIES)) or "none registered yet"
    return (
        "pass a cluster object (twofold.sim.SimCluster(...), twofold.LocalCluster(...)), "
        f"an address starting with a registered prefix ({prefixes}), or nothing to start a LocalCluster"
    )


#: Client() keywords that go to the connection (the rest go to the LocalCluster Client() starts)
_CONNECT_KWARGS = ("security",)


def check_dashboard_address(value: Any) -> Any:
    """``None`` (no dashboard) or an address such as ``":8787"``, ``":0"``, ``"127.0.0.1:8787"``."""
    if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int))):
        raise TypeError(f"dashboard_address= takes None or an address such as ':8787', got {value!r}")
    return value


def _connect(address: Any, client: Client, kwargs: dict) -> Backend:
    scheduler_file = kwargs.pop("scheduler_file", None)
    dashboard = check_dashboard_address(kwargs.pop("dashboard_address", ":8787"))
    if address is None and dashboard != ":8787":
        kwargs["dashboard_address"] = dashboard  # an option of the LocalCluster Client() starts
    if scheduler_file is not None:
        if address is not None:
            raise ValueError("Client() takes an address or scheduler_file=, not both")
        from twofold.runtime.cli import read_scheduler_file

        address = read_scheduler_file(scheduler_file)
    if isinstance(address, str) and "://" not in address:
        address = f"tcp://{address}"  # dask accepts "host:port"
    if (address is None or (isinstance(address, str) and address.startswith(("tcp://", "tls://")))) and (
        "tcp://" not in _FACTORIES
    ):
        import twofold.runtime.backend  # noqa: F401 - registers tcp:// and tls://
    connect = getattr(address, "_connect", None)
    if isinstance(address, Backend):
        backend = address
    elif address is None:
        from twofold.runtime.backend import RuntimeBackend
        from twofold.runtime.local import LocalCluster

        security = kwargs.get("security")
        cluster = LocalCluster(**kwargs)
        if not isinstance(cluster, LocalCluster):
            # the simulate switch is on (twofold.sim.simulate): a simulated cluster, which this client owns
            return cluster._connect_owned(client)
        try:
            backend = RuntimeBackend(cluster.scheduler_address, security=security or cluster.security, cluster=cluster,
                                     owns_cluster=True, timeout=client.timeout)  # fmt: skip
        except BaseException:
            cluster.close()
            raise
        kwargs = {}
    elif callable(connect) and not isinstance(address, str):
        backend = connect(client)
    elif isinstance(address, str):
        prefix = next((p for p in sorted(_FACTORIES, key=len, reverse=True) if address.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"cannot connect to {address!r}: {_supported()}")
        backend = _FACTORIES[prefix](address, client, **{k: kwargs.pop(k) for k in _CONNECT_KWARGS if k in kwargs})
    else:
        raise TypeError(f"Client() takes an address str or a cluster object, got {type(address).__name__}")
    if kwargs:
        names = sorted(kwargs)
        raise TypeError(f"Client() got unexpected keyword arguments {names}: cluster options such as n_workers "
                        "apply only when Client() starts its own LocalCluster (no address)")  # fmt: skip
    if not isinstance(backend, Backend):
        raise TypeError(f"connecting to {address!r} gave {type(backend).__name__}, not a twofold Backend")
    return backend


@contextmanager
def _gc_paused():
    """No cyclic garbage collection while a big graph is built.

    Building 100,000 tasks allocates millions of containers, and CPython's
    collector (3.11) would scan the growing set again and again: 5-10% of a
    ``map``.  The graph makes no reference cycles; collection resumes after.
    """
    import gc

    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --------------------------------------------------------------------------
# The current client
# --------------------------------------------------------------------------

#: set by a driver: returns the client of the task running in this thread, or None
def _client_of_running_task() -> "Client | None":
    from twofold.context import current_task

    ctx = current_task()
    return ctx.client() if ctx is not None else None


_task_client_hook: Callable[[], "Client | None"] | None = _client_of_running_task
#: clients made with set_as_default=True, oldest first (weak: they may be dropped);
#: only appended to, removed from and copied (each atomic), so it needs no lock
_defaults: list[weakref.ref] = []
_current: ContextVar[Client | None] = ContextVar("twofold_current_client", default=None)

_NO_CLIENT = (
    "No clients found. Start one and point it to a cluster:\n"
    "    from twofold import Client\n"
    "    client = Client(cluster_or_address)"
)


def _running(c: Client | None) -> Client | None:
    return c if c is not None and c.status == "running" else None


def _find_current() -> Client | None:
    hook = _task_client_hook
    if hook is not None:
        c = _running(hook())
        if c is not None:
            return c
    c = _running(_current.get())
    if c is not None:
        return c
    for ref in reversed(list(_defaults)):
        c = _running(ref())
        if c is not None:
            return c
    return None


def default_client(c: Client | None = None) -> Client:
    """``c`` if given, else the current client (see :meth:`Client.current`)."""
    if c is not None:
        return c
    found = _find_current()
    if found is None:
        raise ValueError(_NO_CLIENT)
    return found


def get_client(address: str | None = None, timeout: float | None = None, resolve_address: bool = True) -> Client:
    """The client to use here: inside a task, the task's client (driver hook);
    else the current client if it talks to ``address`` (or no address is
    given); else a new ``Client(address)``."""
    c = _find_current()
    if c is not None and (address is None or c.scheduler.address == address):
        return c
    if address is not None:
        return Client(address, timeout=timeout)
    raise ValueError("No global client found and no address provided")


@contextmanager
def worker_client(timeout: float | None = None, separate_thread: bool = True):
    """Inside a task: the task's client, with the task out of the worker's thread pool
    meanwhile (``secede``; ``rejoin`` on exit), so that waiting on other tasks from a
    one-thread worker cannot deadlock it::

        def fib(n):
            if n < 2:
                return n
            with worker_client() as client:
                a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
                return a.result() + b.result()
    """
    from twofold.context import current_task, rejoin, secede

    if current_task() is None:
        raise ValueError("worker_client() can only be used from inside a running task")
    client = get_client(timeout=timeout)
    if separate_thread:
        secede()
    try:
        yield client
    finally:
        if separate_thread:
            rejoin()


@dataclass(frozen=True, slots=True)
class SchedulerInfo:
    """``client.scheduler``: where the scheduler is."""

    address: str


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------


class Client(DataMethods, InfoMethods, CoordinationPlumbing, SharingMethods, RemoteMethods, PluginMethods, TaskStreamMethods,
             CollectionMethods, ClusterOpsMethods):
    """Connect to a cluster and run functions on it through futures.

    ``address`` is a cluster object with ``_connect(client) -> Backend`` or
    an address string whose prefix a driver registered
    (:func:`register_address`).
    """

    def __init__(
        self,
        address: Any = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        set_as_default: bool = True,
        asynchronous: bool = False,
        **kwargs: Any,
    ):
        import threading

        if not isinstance(asynchronous, bool):
            raise TypeError(f"asynchronous= must be True or False, got {asynchronous!r}")
        self.status = "connecting"
        self._lock = threading.RLock()
        #: UpdateGraphs held back to go as one (``_one_graph``), or None
        self._graph_buffer: list | None = None
        #: async waits in progress (see twofold.client.aio); woken after each delivery
        self._waiters: list = []
        self._asynchronous = asynchronous
        #: live Sub objects by id, for TopicMessages
        self._subs: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        #: topic -> handler of subscribe_topic
        self._topic_handlers: dict[str, Callable] = {}
        self.timeout = timeout
        backend = _connect(address, self, kwargs)
        self._backend = backend
        self.id: str = backend.client_id()
        #: the bookkeeping (a pure state machine); the attributes below are its containers
        self._core = core = ClientState(self.id)
        self._states: dict[str, FutureState] = core.states
        self._drops: deque[FutureState] = core.drops
        self._requests: dict[str, Request] = core.requests
        self._extra_releases: list[str] = core.extra_releases
        self.name = name or self.id
        self.scheduler = SchedulerInfo(backend.scheduler_address)
        backend.set_receiver(self._receive)
        with self._lock:
            _, sid = core.next_sid("connect")
            backend.send([AddClient(backend.now(), sid, self.id)])
            self.status = "running"
        if asynchronous:
            from twofold.client.aio import attach_loop

            attach_loop(self)
        if set_as_default:
            _defaults.append(weakref.ref(self))
            from twofold.client.dask_default import became_default

            became_default(self)

    # -- identity --------------------------------------------------------------

    @property
    def cluster(self) -> Any:
        return self._backend.cluster

    @property
    def dashboard_link(self) -> str | None:
        """The cluster's dashboard, if it serves one (none does yet: None, never a wrong link)."""
        return getattr(self.cluster, "dashboard_link", None)

    @classmethod
    def current(cls, allow_global: bool = True) -> Client:
        """The client of the running task, else the one made current with
        :meth:`as_current`, else (``allow_global``) the last default client."""
        c = _find_current() if allow_global else _running(_current.get())
        if c is None:
            raise ValueError(_NO_CLIENT)
        return c

    @contextmanager
    def as_current(self):
        """Within this block (thread/task-local), :meth:`current` returns this client."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def __repr__(self) -> str:
        return (
            f"<Client: scheduler={self.scheduler.address!r} id={self.id!r} "
            f"status={self.status!r} keys={len(self._states)}>"
        )

    def __enter__(self) -> Client:
        if self._asynchronous:
            raise RuntimeError("an asynchronous Client is used with 'async with', not 'with'")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    # -- asynchronous use ---------------------------------------------------------

    @property
    def asynchronous(self) -> bool:
        """True if methods that talk to the cluster return awaitables: made with
        ``asynchronous=True``, or the client of a coroutine task running now."""
        if forced_sync():
            return False
        if self._asynchronous:
            return True
        if not in_async_task():
            return False
        from twofold.client.aio import in_coroutine_task

        return in_coroutine_task(self)

    def __await__(self):
        """``client = await Client(..., asynchronous=True)``: connected already, so itself."""
        from twofold.client.aio import done

        return done(self).__await__()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._close()

    def _run(self, op: Any) -> Any:
        """Drive a multi-step operation (:mod:`twofold.client.ops`): to its result now, or,
        when the client is asynchronous, as an awaitable of it."""
        from twofold.client import ops

        if self.asynchronous:
            return ops.drive_async(self, op)
        return ops.drive_sync(self, op)

    def _run_async(self, op: Any) -> Any:
        """An awaitable of a multi-step operation's result, whatever the client's mode."""
        from twofold.client import ops

        return ops.drive_async(self, op)

    def _await(self, predicate: Callable[[], bool], deadline: float | None) -> Any:
        """The async counterpart of :meth:`_wait` (see :mod:`twofold.client.aio`)."""
        from twofold.client.aio import wait_async

        return wait_async(self, predicate, deadline)

    def _wake_waiters(self) -> None:
        """State changed: resolve the async waits whose condition holds now (any thread)."""
        if self._waiters:
            from twofold.client.aio import wake

            wake(self)

    def close(self, timeout: float | None = None) -> Any:
        """Disconnect; the scheduler releases every key this client held.

        Futures not yet done become cancelled (so nobody waits forever).
        Closing twice is harmless.  Awaitable when the client is asynchronous.
        """
        self._close()
        if self.asynchronous:
            from twofold.client.aio import done

            return done(None)
        return None

    def _close(self) -> None:
        with self._lock:
            if self.status == "closed":
                return
            self._drops.clear()  # RemoveClient releases everything at once
            try:
                _, sid = self._core.next_sid("close")
                self._backend.send([RemoveClient(self._backend.now(), sid, self.id)])
            except CommClosedError:
                pass  # the connection is gone already: the scheduler drops us by itself
            except Exception:
                log().warning("could not tell the scheduler that %r closed", self, exc_info=True)
            due = self._core.close("the client closed")
            self.status = "closed"
        try:
            self._backend.close()
        finally:
            for ref in list(_defaults):
                if ref() is None or ref() is self:
                    try:
                        _defaults.remove(ref)
                    except ValueError:  # removed by another thread meanwhile
                        pass
            from twofold.client.dask_default import closed

            closed(self)
            run_callbacks(due)
            self._wake_waiters()

    def get(self, dsk: dict, keys: Any, workers: Any = None, allow_other_workers: bool = False,
            resources: dict | None = None, sync: bool = True, asynchronous: Any = None, direct: Any = None,
            retries: int | None = None, priority: int = 0, **kwargs: Any) -> Any:  # fmt: skip
        """Compute a raw dask graph (``{key: (func, *args)}``): the results of ``keys`` (a key or
        nested lists of keys) in the same shape, or their futures with ``sync=False``."""
        from twofold.client.graphs import submit_graph

        futures = submit_graph(self, dsk, keys, workers=workers, allow_other_workers=allow_other_workers,
                               resources=resources, retries=retries, priority=priority)  # fmt: skip
        return self._gather_from_task(futures) if sync else futures

    def get_executor(self, **options: Any):
        """A ``concurrent.futures.Executor`` that runs calls on the cluster (``options``:
        ``workers``, ``resources``, ``retries``, ``priority``, ``allow_other_workers``, ``pure``)."""
        from twofold.client.executor import ClientExecutor

        return ClientExecutor(self, **options)

    def write_scheduler_file(self, scheduler_file: str) -> None:
        """Write the scheduler's address to ``scheduler_file`` (JSON, as dask's), for
        ``Client(scheduler_file=...)`` and ``twofold worker --scheduler-file``."""
        import json
        import os

        tmp = f"{scheduler_file}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"type": "Scheduler", "address": self.scheduler.address}, f)
        os.replace(tmp, scheduler_file)

    # -- plumbing ----------------------------------------------------------------

    def _next_sid(self, op: str) -> tuple[int, str]:
        """A sequence number and the stimulus_id ``op-<client id>-<n>`` (call under the lock)."""
        return self._core.next_sid(op)

    def _check_running(self) -> None:
        if self.status != "running":
            raise RuntimeError(f"{self!r} is {self.status}; start a new Client")

    def _check_own(self, futures: Iterable[Future], what: str) -> None:
        for f in futures:
            if f.client is not self:
                raise ValueError(
                    f"{what}: future {f.key!r} belongs to another client ({f.client.id!r}); "
                    f"this is client {self.id!r}"
                )

    def _own_future(self, obj: Any) -> bool:
        if isinstance(obj, Future):
            if obj.client is not self:
                raise ValueError(
                    f"future {obj.key!r} of client {obj.client.id!r} cannot be an argument of a task "
                    f"submitted by client {self.id!r}; gather it first or submit through its client"
                )
            return True
        return False

    def _dropped(self, state: FutureState) -> None:
        """Future.__del__: no lock, no send (see the module docstring)."""
        if self.status != "closed":
            self._drops.append(state)

    def _send(self, msgs: list) -> None:
        """Send ``msgs`` (under the lock), followed by any pending releases (see
        :meth:`ClientState.outgoing`)."""
        msgs = self._core.outgoing(msgs, self._backend.now())
        if msgs:
            self._backend.send(msgs)

    def _flush(self) -> None:
        """Send pending releases now.  Blocking waits call it; a driver may call it
        when idle so that dropped futures free cluster memory without waiting
        for the client's next action."""
        with self._lock:
            if self._core.has_pending() and self.status == "running":
                self._send([])

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self._backend.now() + timeout

    def _wait(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """Block (never under the lock) until ``predicate()``; False on timeout."""
        if predicate():
            return True
        if self.status == "closed":
            raise RuntimeError(f"{self!r} is closed")
        self._flush()
        remaining = None if deadline is None else max(0.0, deadline - self._backend.now())
        self._backend.wait_until(lambda: self.status == "closed" or predicate(), remaining)
        if predicate():
            return True
        if self.status == "closed":
            raise RuntimeError(f"{self!r} was closed while waiting")
        return False

    def _hold(self, key: str) -> FutureState:
        """One more Future of ``key`` (public ``Future(key, client)``): DesireKeys if new."""
        with self._lock:
            self._check_running()
            st, msgs = self._core.hold(key, self._backend.now())
            if msgs:
                self._send(msgs)
            return st

    def _add_callback(self, future: Future, fn: Callable) -> None:
        st = future._state
        with self._lock:
            if st.status not in DONE:
                st.callbacks.append((fn, future))
                return
        run_callbacks([(fn, future)])

    # -- receiving -----------------------------------------------------------------

    def _receive(self, msg: Message) -> None:
        """Backend -> client delivery (any thread)."""
        if getattr(msg, "client", self.id) != self.id:
            return
        with self._lock:
            if self.status == "closed":
                return
            due = self._core.receive(msg)
            if due is None:
                handler = _HANDLERS.get(type(msg))
                if handler is None:
                    return  # not for clients (or from a newer vocabulary)
                due = handler(self, msg)
        if due:
            run_callbacks(due)
        if self._waiters:
            self._wake_waiters()

    # -- submitting ------------------------------------------------------------------

    def submit(
        self,
        func: Callable,
        *args: Any,
        key: str | None = None,
        workers: Any = None,
        resources: dict | None = None,
        retries: int | None = None,
        priority: int = 0,
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        **kwargs: Any,
    ) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; futures in the arguments
        are replaced by their results there.  Returns at once."""
        if not callable(func):
            raise TypeError(f"submit() needs a callable as its first argument, got {type(func).__name__} {func!r}")
        opts = task_options(
            workers=workers, resources=resources, retries=retries, priority=priority,
            allow_other_workers=allow_other_workers, actor=actor or actors,
        )
        if key is not None:
            check_key(key)
        self._check_running()
        deps: dict[str, None] = {}
        args = replace_futures(args, self._own_future, deps)
        kwargs = replace_futures(kwargs, self._own_future, deps)
        if key is None:
            token = CallHasher(func).token(args, kwargs) if pure and not opts.actor else None
            key = f"{funcname(func)}-{token or self._backend.new_token()}"
        spec_args = {key: (args, kwargs, tuple(deps))}
        return self._submit_graph("submit", func, [key], spec_args, opts, None)[0]

    def map(
        self,
        func: Callable,
        *iterables: Iterable,
        key: str | list | None = None,
        workers: Any = None,
        retries: int | None = None,
        resources: dict | None = None,
        priority: int = 0,
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[Future]:
        """``submit`` for each tuple of ``zip(*iterables)``; a list of futures.

        ``key`` is a prefix (str) or the list of keys.  ``batch_size`` splits
        the tasks into several UpdateGraph messages of that many calls.
        """
        if not callable(func):
            raise TypeError(f"map() needs a callable as its first argument, got {type(func).__name__} {func!r}")
        if not iterables:
            raise TypeError("map() needs at least one iterable of arguments")
        for it in iterables:
            if not isinstance(it, Iterable):
                raise TypeError(f"map() arguments after the function must be iterables, got {type(it).__name__}")
        opts = task_options(
            workers=workers, resources=resources, retries=retries, priority=priority,
            allow_other_workers=allow_other_workers, actor=actor or actors,
        )
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)):
            raise TypeError(f"batch_size= must be a positive int or None, got {batch_size!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size= must be >= 1, got {batch_size!r}")
        explicit = None
        if isinstance(key, (list, tuple)):
            explicit = [check_key(k, "key") for k in key]
        elif key is not None:
            check_key(key)
        with _gc_paused():
            rows = list(zip(*iterables))
            if explicit is not None and len(explicit) != len(rows):
                raise ValueError(f"map() got {len(explicit)} keys for {len(rows)} calls")
            self._check_running()
            kw_deps: dict[str, None] = {}
            kwargs = replace_futures(kwargs, self._own_future, kw_deps)
            return self._map_rows(func, rows, explicit, key, kwargs, kw_deps, opts, pure, batch_size)

    def _map_rows(self, func, rows, explicit, key, kwargs, kw_deps, opts, pure, batch_size) -> list[Future]:
        """The keys and calls of ``map``'s checked rows, submitted as one graph."""
        prefix = key if isinstance(key, str) else funcname(func)
        hasher = CallHasher(func) if explicit is None and pure and not opts.actor else None
        keys: list[str] = []
        spec_args: dict[str, tuple] = {}
        own = self._own_future
        kw_dep_keys = tuple(kw_deps)
        for i, row in enumerate(rows):
            if plain_args(row):  # no futures inside: the inputs are the keyword arguments' only
                args, dep_keys = row, kw_dep_keys
            else:
                deps: dict[str, None] = {}
                args = replace_futures(row, own, deps)
                deps.update(kw_deps)
                dep_keys = tuple(deps)
            if explicit is not None:
                k = explicit[i]
            else:
                token = hasher.token(args, kwargs) if hasher is not None else None
                k = f"{prefix}-{token or self._backend.new_token()}"
            keys.append(k)
            spec_args.setdefault(k, (args, kwargs, dep_keys))
        return self._submit_graph("map", func, keys, spec_args, opts, batch_size)

    def _task_spec(self, key: str, func: Callable, call: tuple, opts: TaskOptions) -> TaskSpec:
        args, kwargs, deps = call
        return TaskSpec.build(
            key,
            self._backend.dump_task(func, args, kwargs),
            deps,
            opts.priority,
            opts.workers,
            opts.allow_other_workers,
            dict(opts.resources) if opts.resources else None,
            opts.retries,
            opts.actor,
        )

    def _submit_graph(
        self, op: str, func: Callable, keys: list[str], calls: dict[str, tuple], opts: TaskOptions,
        batch_size: int | None,
    ) -> list[Future]:
        """Futures for ``keys``; one UpdateGraph per batch for the keys not yet held.

        Task specs are serialized before taking the lock (and before anything
        is sent, so an unpicklable argument sends nothing).
        """
        specs = {k: self._task_spec(k, func, calls[k], opts) for k in calls if k not in self._states}
        with self._lock:
            self._check_running()
            for k in calls:  # released meanwhile by another thread: build it now
                if k not in self._states and k not in specs:
                    specs[k] = self._task_spec(k, func, calls[k], opts)
            futures, msgs = self._core.add_graph(op, keys, specs, self._backend.now(), batch_size or max(1, len(keys)),
                                                 self)  # fmt: skip
            if self._graph_buffer is not None:
                self._graph_buffer.extend(msgs)
            else:
                self._send(msgs)
        return futures

    @contextmanager
    def _one_graph(self) -> Iterator[None]:
        """Submits inside go to the scheduler as one graph (one UpdateGraph), as
        dask's ``get`` sends its graph: the scheduler, and a policy ranking
        graphs when they arrive (b-level, HEFT), sees it whole."""
        with self._lock:
            if self._graph_buffer is not None:
                yield  # nested: the outer one sends
                return
            self._graph_buffer = buffer = []
            try:
                yield
            finally:
                self._graph_buffer = None
                if buffer:
                    first = buffer[0]
                    tasks = tuple(spec for msg in buffer for spec in msg.tasks)
                    wanted = tuple(key for msg in buffer for key in msg.wanted)
                    self._send([UpdateGraph(first.now, first.stimulus_id, first.client, tasks, wanted)])

    # -- cancel, retry, fire and forget ---------------------------------------------

    def cancel(self, futures: Any, asynchronous: Any = None, force: bool = False) -> None:
        """Cancel these futures (a future or lists/dicts of them) and what depends on
        them; with ``force``, even if other clients want them."""
        if not isinstance(force, bool):
            raise TypeError(f"force= must be True or False, got {force!r}")
        fs = list(iter_futures(futures))
        self._check_own(fs, "cancel()")
        with self._lock:
            self._check_running()
            due, msgs = self._core.cancel([f._state for f in fs], force, self._backend.now())
            if msgs:
                self._send(msgs)
        run_callbacks(due)
        self._wake_waiters()
        return self._maybe_done(None)

    def retry(self, futures: Any, asynchronous: Any = None) -> None:
        """Run erred futures (and the erred tasks they depend on) again."""
        fs = list(iter_futures(futures))
        self._check_own(fs, "retry()")
        with self._lock:
            self._check_running()
            msgs = self._core.retry([f._state for f in fs], self._backend.now())
            if msgs:
                self._send(msgs)
        return self._maybe_done(None)

    def _maybe_done(self, value: Any) -> Any:
        """``value``, or an awaitable of it when the client is asynchronous (dask's
        ``cancel``/``retry`` are coroutines there)."""
        if self.asynchronous:
            from twofold.client.aio import done

            return done(value)
        return value

    def _fire_and_forget(self, futures: list[Future]) -> None:
        with self._lock:
            self._check_running()
            msgs = self._core.fire_and_forget([f._state for f in futures], self._backend.now())
            if msgs:
                self._send(msgs)


#: what the client itself handles (ClientState handles keys and requests)
_HANDLERS: dict[type, Callable[[Client, Any], list]] = {
    TopicMessages: Client._on_topic,
    TopicEvent: Client._on_topic_event,
    TopicPeers: Client._on_topic_peers,
}
