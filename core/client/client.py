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
from typing import Any, Callable, Iterable

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
from twofold.client.options import CallHasher, TaskOptions, check_key, funcname, plain_args, task_options
from twofold.client.spec import replace_futures
from twofold.errors import CommClosedError
from twofold.messages import (
    AddClient,
    CancelKeys,
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
    RemoveClient,
    RetryKeys,
    ScatterPlan,
    SchedulerInfoReply,
    TaskSpec,
    CoordinationReply,
    TopicEvent,
    TopicMessages,
    TopicPeers,
    UpdateGraph,
    WhoHasReply,
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


class _Request:
    """A question to the scheduler awaiting its reply (who_has, scatter plan)."""

    __slots__ = ("states", "reply", "gens", "seq", "decode", "value")

    def __init__(self, states: Iterable[FutureState] = ()):
        self.states = tuple(states)
        self.reply: Message | None = None
        #: each asked state's generation when the reply arrived
        self.gens: dict[int, int] = {}
        #: (coordination requests) the request's sequence number, what decodes the
        #: reply's value on receipt (None: nothing), and the decoded value
        self.seq = 0
        self.decode: Callable[[Any, int], Any] | None = None
        self.value: Any = None


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
        **kwargs: Any,
    ):
        import threading

        self.status = "connecting"
        self._lock = threading.RLock()
        #: key -> the state every live Future of that key shares
        self._states: dict[str, FutureState] = {}
        #: states whose Future objects were collected (appended by Future.__del__)
        self._drops: deque[FutureState] = deque()
        self._cancelled_keys: dict[str, None] = {}
        self._requests: dict[str, _Request] = {}
        #: keys whose scheduler-side reference a primitive handed over twice (released on the next send)
        self._extra_releases: list[str] = []
        #: live Sub objects by id, for TopicMessages
        self._subs: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        #: topic -> handler of subscribe_topic
        self._topic_handlers: dict[str, Callable] = {}
        self._seq = 0
        self.timeout = timeout
        backend = _connect(address, self, kwargs)
        self._backend = backend
        self.id: str = backend.client_id()
        self.name = name or self.id
        self.scheduler = SchedulerInfo(backend.scheduler_address)
        backend.set_receiver(self._receive)
        with self._lock:
            _, sid = self._next_sid("connect")
            backend.send([AddClient(backend.now(), sid, self.id)])
            self.status = "running"
        if set_as_default:
            _defaults.append(weakref.ref(self))

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
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Disconnect; the scheduler releases every key this client held.

        Futures not yet done become cancelled (so nobody waits forever).
        Closing twice is harmless.
        """
        with self._lock:
            if self.status == "closed":
                return
            self._drops.clear()  # RemoveClient releases everything at once
            try:
                _, sid = self._next_sid("close")
                self._backend.send([RemoveClient(self._backend.now(), sid, self.id)])
            except CommClosedError:
                pass  # the connection is gone already: the scheduler drops us by itself
            except Exception:
                log().warning("could not tell the scheduler that %r closed", self, exc_info=True)
            due: list = []
            for st in self._states.values():
                if st.status not in DONE:
                    due += st.cancel("the client closed")
            self._states.clear()
            self._requests.clear()
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
            run_callbacks(due)

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
        self._seq += 1
        return self._seq, f"{op}-{self.id}-{self._seq}"

    def _own_seq(self, stimulus_id: str) -> int | None:
        """The sequence number if ``stimulus_id`` is one of ours, else None."""
        head, sep, n = stimulus_id.rpartition("-")
        if sep and n.isdigit() and head.partition("-")[2] == self.id:
            return int(n)
        return None

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

    def _settle_drops(self) -> list[str]:
        """Count collected Futures off; the keys nobody holds any more (under the lock)."""
        released = []
        drops = self._drops
        states = self._states
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

    def _send(self, msgs: list) -> None:
        """Send ``msgs`` (under the lock), followed by any pending releases.

        Releases go last: a future dropped while building these messages
        (``client.submit(f, client.submit(g))``) may be a dependency of them,
        and the scheduler must see the graph before it lets go of the key.
        """
        released = self._settle_drops()
        if self._extra_releases:
            released += self._extra_releases
            self._extra_releases = []
        if released:
            _, sid = self._next_sid("release")
            msgs.append(ReleaseKeys(self._backend.now(), sid, self.id, tuple(released)))
        if msgs:
            self._backend.send(msgs)

    def _flush(self) -> None:
        """Send pending releases now.  Blocking waits call it; a driver may call it
        when idle so that dropped futures free cluster memory without waiting
        for the client's next action."""
        with self._lock:
            if (self._drops or self._extra_releases) and self.status == "running":
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
            st = self._states.get(key)
            if st is None:
                seq, sid = self._next_sid("desire")
                st = self._states[key] = FutureState(key, seq)
                st.refs = 1
                self._send([DesireKeys(self._backend.now(), sid, self.id, (key,))])
            else:
                st.refs += 1
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
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            return  # not for clients (or from a newer vocabulary)
        if getattr(msg, "client", self.id) != self.id:
            return
        with self._lock:
            if self.status == "closed":
                return
            due = handler(self, msg)
        if due:
            run_callbacks(due)

    def _on_in_memory(self, msg: KeyInMemory) -> list:
        st = self._states.get(msg.key)
        return st.finish(msg.typename, msg.nbytes, msg.inline) if st is not None else []

    def _on_erred(self, msg: KeyErred) -> list:
        st = self._states.get(msg.key)
        return st.fail(msg.error) if st is not None else []

    def _on_retried(self, msg: KeyRetried) -> list:
        st = self._states.get(msg.key)
        if st is not None and st.status == "error":
            st.reset()
        return []

    def _on_lost(self, msg: KeyLost) -> list:
        st = self._states.get(msg.key)
        if st is not None:
            st.lose()
        return []

    def _on_cancelled(self, msg: KeyCancelled) -> list:
        st = self._states.get(msg.key)
        if st is None:
            return []
        seq = self._own_seq(msg.stimulus_id)
        if seq is not None and st.since > seq:
            return []  # about an incarnation of this key we already let go
        del self._states[msg.key]  # the scheduler dropped our reference
        self._note_cancelled(msg.key)
        return st.cancel(msg.reason)

    def _note_cancelled(self, key: str) -> None:
        """Remember recently cancelled keys (bounded) to explain refusals that follow."""
        cancelled = self._cancelled_keys
        cancelled[key] = None
        if len(cancelled) > 10_000:
            del cancelled[next(iter(cancelled))]

    def _on_refused(self, msg: GraphRefused) -> list:
        seq = self._own_seq(msg.stimulus_id)
        due = []
        for key in msg.keys:
            st = self._states.get(key)
            if st is None or (st.since != seq if seq is not None else st.status != "pending"):
                continue
            del self._states[key]  # a refused graph took no reference
            gone = [d for d in st.deps if d in self._cancelled_keys]
            if gone:
                # an input was cancelled while this graph was on its way: as dask does
                due += st.cancel(f"its input {gone[0]!r} was cancelled")
            else:
                due += st.fail(msg.error)
        return due

    def _on_reply(self, msg: WhoHasReply | ScatterPlan | SchedulerInfoReply) -> list:
        req = self._requests.get(msg.request_id)
        if req is not None:
            req.gens = {id(st): st.generation for st in req.states}
            req.reply = msg
        return []

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
        futures: list[Future] = []
        with self._lock:
            self._check_running()
            for k in calls:  # released meanwhile by another thread: build it now
                if k not in self._states and k not in specs:
                    specs[k] = self._task_spec(k, func, calls[k], opts)
            now = self._backend.now()
            msgs: list = []
            step = batch_size or max(1, len(keys))
            for start in range(0, len(keys), step):
                seq, sid = self._next_sid(op)
                new: list[TaskSpec] = []
                for k in keys[start:start + step]:
                    st = self._states.get(k)
                    if st is None:
                        st = self._states[k] = FutureState(k, seq)
                        st.deps = specs[k].dependencies
                        new.append(specs[k])
                    st.refs += 1
                    futures.append(Future._attach(k, self, st))
                if new:
                    msgs.append(UpdateGraph(now, sid, self.id, tuple(new), tuple(s.key for s in new)))
            self._send(msgs)
        return futures

    # -- cancel, retry, fire and forget ---------------------------------------------

    def cancel(self, futures: Any, asynchronous: Any = None, force: bool = False) -> None:
        """Cancel these futures (a future or lists/dicts of them) and what depends on
        them; with ``force``, even if other clients want them."""
        if not isinstance(force, bool):
            raise TypeError(f"force= must be True or False, got {force!r}")
        fs = list(iter_futures(futures))
        self._check_own(fs, "cancel()")
        due: list = []
        with self._lock:
            self._check_running()
            keys: dict[str, None] = {}
            for f in fs:
                st = f._state
                if self._states.get(f.key) is st:
                    del self._states[f.key]
                    due += st.cancel("cancelled by the client")
                    self._note_cancelled(f.key)
                    keys[f.key] = None
            if keys:
                _, sid = self._next_sid("cancel")
                self._send([CancelKeys(self._backend.now(), sid, self.id, tuple(keys), force)])
        run_callbacks(due)

    def retry(self, futures: Any, asynchronous: Any = None) -> None:
        """Run erred futures (and the erred tasks they depend on) again."""
        fs = list(iter_futures(futures))
        self._check_own(fs, "retry()")
        with self._lock:
            self._check_running()
            keys: dict[str, None] = {}
            for f in fs:
                st = f._state
                if self._states.get(f.key) is st and st.status == "error":
                    st.reset()
                    keys[f.key] = None
            if keys:
                _, sid = self._next_sid("retry")
                self._send([RetryKeys(self._backend.now(), sid, self.id, tuple(keys))])

    def _fire_and_forget(self, futures: list[Future]) -> None:
        with self._lock:
            self._check_running()
            keys = {f.key: None for f in futures if self._states.get(f.key) is f._state}
            if keys:
                _, sid = self._next_sid("fire")
                self._send([FireAndForget(self._backend.now(), sid, self.id, tuple(keys))])


_HANDLERS: dict[type, Callable[[Client, Any], list]] = {
    KeyInMemory: Client._on_in_memory,
    KeyErred: Client._on_erred,
    KeyCancelled: Client._on_cancelled,
    KeyLost: Client._on_lost,
    KeyRetried: Client._on_retried,
    GraphRefused: Client._on_refused,
    WhoHasReply: Client._on_reply,
    ScatterPlan: Client._on_reply,
    SchedulerInfoReply: Client._on_reply,
    CoordinationReply: Client._on_coordination_reply,
    TopicMessages: Client._on_topic,
    TopicEvent: Client._on_topic_event,
    TopicPeers: Client._on_topic_peers,
}
