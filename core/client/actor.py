"""Actors: a stateful object on one worker, called straight from clients and tasks.

``client.submit(Cls, actor=True)`` runs ``Cls(...)`` on a worker, which keeps
the instance.  The key's *data* there is an :class:`Actor` handle (class
name, key, worker address, method names), so ``future.result()``, a gather,
and a task given the actor's future all get the handle, never the instance.
Method calls and attribute reads go from the caller to that worker directly,
not through the scheduler (``Backend.actor_call``); the worker runs one
actor's calls one at a time, in arrival order.

A handle is not tied to one client.  At call time it uses the running
task's client (inside a task or an actor method), else the client whose
``Future.result()`` gave it (that handle also holds the future, which keeps
the actor alive), else the default client.  So the simulator's shared
handle objects and the pickled copies in worker processes both talk through
the right connection, and a wait inside a simulated task suspends that task.

Beyond dask: when the holding worker dies or restarts, calls in flight and
later calls raise :class:`~twofold.errors.ActorLost` naming the actor and
the worker, rather than hanging.

Nothing here imports ``threading`` or ``asyncio`` at import time
(``twofold.client.future`` imports this module, see its docstring).
"""

from __future__ import annotations

from typing import Any, Callable

from twofold.context import current_task
from twofold.errors import ActorLost, TimeoutError

#: the two kinds of request a worker serves for an actor
CALL = "call"
GETATTR = "getattr"


#: names generic code probes objects for (``measure_nbytes``, ``describe_result``): answered
#: locally (AttributeError) unless the actor had such an attribute when it was made
_PROBES = frozenset({"nbytes"})


def names_of(instance: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(methods, attributes)`` of a new actor, dunders aside: the class's callables
    are called; its other attributes and the instance's are read."""
    cls = type(instance)
    methods = []
    attrs = []
    for name in dir(cls):
        if not name.startswith("__"):
            (methods if callable(getattr(cls, name, None)) else attrs).append(name)
    known = set(methods) | set(attrs)
    own = getattr(instance, "__dict__", ())
    attrs += sorted(name for name in own if name not in known and not name.startswith("__"))
    return tuple(methods), tuple(attrs)


def missing_attribute(cls: str, key: str, name: str) -> AttributeError:
    return AttributeError(f"actor {cls!r} (key {key!r}) has no attribute {name!r}")


class PendingCall:
    """One call's outcome: settled once by the backend (any thread), read by its ActorFuture.

    ``settle(ok, payload, load)``: ``payload`` is the value (``ok``) or the
    exception; with ``load``, a raw reply that ``load(ok, payload) -> (ok,
    value)`` turns into one in the reader's thread (unpickling stays off the
    event loop).
    """

    __slots__ = ("cls", "key", "worker", "name", "done", "_ok", "_payload", "_load", "_tb")

    def __init__(self, cls: str, key: str, worker: str, name: str):
        self.cls = cls
        self.key = key
        self.worker = worker
        self.name = name
        self.done = False
        self._ok = False
        self._payload: Any = None
        self._load: Callable | None = None
        self._tb: Any = None

    def settle(self, ok: bool, payload: Any, load: Callable[[bool, Any], tuple[bool, Any]] | None = None) -> bool:
        """Record the outcome; False (and nothing changes) if it was settled already."""
        if self.done:
            return False
        self._ok, self._payload, self._load = ok, payload, load
        if load is None and not ok:
            self._tb = payload.__traceback__
        self.done = True
        return True

    def lost(self, why: str) -> ActorLost:
        """The error of a call whose actor is gone (what the backends settle with)."""
        return ActorLost(f"actor {self.cls!r} (key {self.key!r}) on worker {self.worker} is lost: {why}; "
                         f"{self.cls}.{self.name} did not run or its reply never came")  # fmt: skip

    def outcome(self) -> tuple[bool, Any, Any]:
        """``(ok, value or exception, traceback)``, loading a raw reply once."""
        load = self._load
        if load is not None:
            try:
                ok, value = load(self._ok, self._payload)
            except Exception as exc:
                ok, value = False, exc
            self._tb = None if ok else value.__traceback__
            self._ok, self._payload, self._load = ok, value, None
        return self._ok, self._payload, self._tb


class ActorFuture:
    """The pending result of an actor method call (dask's ``ActorFuture``)."""

    __slots__ = ("_call", "_backend", "_client")

    def __init__(self, call: PendingCall, backend: Any, client: Any = None):
        self._call = call
        self._backend = backend
        self._client = client

    def done(self) -> bool:
        return self._call.done

    def result(self, timeout: float | None = None) -> Any:
        """Wait (at most ``timeout`` seconds: virtual ones on the simulator) and return
        what the method returned, or raise what it raised (with the worker's
        traceback where the runtime carries one); :class:`~twofold.errors.ActorLost`
        if the actor's worker died or restarted.  Awaitable when the client is asynchronous."""
        client = self._client
        if client is not None and client.asynchronous:
            return self._result_async(timeout)
        ok, value, tb = self._wait(timeout)
        if ok:
            return value
        raise value.with_traceback(tb)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """What the call raised, or None once it returned."""
        ok, value, _ = self._wait(timeout)
        return None if ok else value

    def _wait(self, timeout: float | None) -> tuple[bool, Any, Any]:
        from twofold.client.options import check_timeout  # (lazily: see the module docstring)

        timeout = check_timeout(timeout)
        call = self._call
        if not call.done and not self._backend.wait_until(lambda: call.done, timeout):
            raise TimeoutError(f"the actor call {call.cls}.{call.name} was not done within {timeout:g} s")
        return call.outcome()

    def _wait_op(self, timeout: float | None) -> Any:
        from twofold.client.ops import Wait
        from twofold.client.options import check_timeout

        timeout = check_timeout(timeout)
        call = self._call
        deadline = None if timeout is None else self._backend.now() + timeout
        if not call.done and not (yield Wait(lambda: call.done, deadline)):
            raise TimeoutError(f"the actor call {call.cls}.{call.name} was not done within {timeout:g} s")
        return call.outcome()

    async def _result_async(self, timeout: float | None) -> Any:
        from twofold.client.ops import drive_async

        client = self._client
        if client is None:
            from twofold.client.client import default_client

            client = default_client()
        ok, value, tb = await drive_async(client, self._wait_op(timeout))
        if ok:
            return value
        raise value.with_traceback(tb)

    def __await__(self):
        """``await`` it in async code: the call's outcome, without blocking the loop."""
        return self._result_async(None).__await__()

    def __repr__(self) -> str:
        return "<ActorFuture>"


class _Method:
    """``actor.method``: calling it sends the call and returns an :class:`ActorFuture`."""

    __slots__ = ("_actor", "_name")

    def __init__(self, actor: Actor, name: str):
        self._actor = actor
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> ActorFuture:
        return self._actor._send(CALL, self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<actor method {self._actor._cls}.{self._name} of {self._actor!r}>"


_SLOT_NAMES = ("_cls", "_key", "_address", "_methods", "_attrs", "_client", "_future")
_SLOTS = frozenset(_SLOT_NAMES)


class Actor:
    """A handle to an actor (dask's ``Actor``): ``handle.method(...)`` gives an
    :class:`ActorFuture`; ``handle.attribute`` blocks and returns the value.

    ``Actor(cls, key, address, methods, attrs)`` is what a worker makes
    (:func:`names_of` the new instance); ``address`` None is a handle to be
    looked up (who holds ``key``?) on first use, as a task on another worker
    gets for an actor future among its inputs.

    A name in ``methods`` gives a method; any other is read from the worker
    (an attribute the instance gained later too), except dunders, names with
    a leading underscore and ``nbytes`` that were not attributes when the
    actor was made: those raise AttributeError here, so probes such as
    ``_repr_html_`` or ``getattr(x, "nbytes", None)`` cost no round trip.
    """

    __slots__ = _SLOT_NAMES

    def __init__(self, cls: str, key: str, address: str | None = None, methods: tuple[str, ...] | None = None,
                 attrs: tuple[str, ...] = ()):  # fmt: skip
        self._cls = cls
        self._key = key
        self._address = address
        self._methods = None if methods is None else frozenset(methods)
        self._attrs = frozenset(attrs)
        self._client: Any = None
        self._future: Any = None

    @property
    def key(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return f"<Actor: {self._cls}, key={self._key}>"

    def __reduce__(self):
        # by class name, key and address: a copy elsewhere talks through its own client
        methods = None if self._methods is None else tuple(sorted(self._methods))
        return (Actor, (self._cls, self._key, self._address, methods, tuple(sorted(self._attrs))))

    def __dir__(self) -> list[str]:
        return sorted(set(self._methods or ()) | self._attrs | {"key"})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _SLOTS:
            raise AttributeError(name)
        if self._methods is None:
            self._resolve(self._pick_client())
        if name in self._methods:
            return _Method(self, name)
        if (name.startswith("_") or name in _PROBES) and name not in self._attrs:
            raise missing_attribute(self._cls, self._key, name)
        return self._send(GETATTR, name, (), {}).result()  # (awaitable when the client is asynchronous)

    # -- plumbing ----------------------------------------------------------------

    def _bind(self, client: Any, future: Any) -> Actor:
        """This handle for ``client`` (a copy: the simulator shares handle objects);
        holding ``future`` keeps the actor alive while the handle is."""
        if self._client is client:
            return self
        handle = Actor(self._cls, self._key, self._address, None)
        handle._methods, handle._attrs = self._methods, self._attrs
        handle._client = client
        handle._future = future
        return handle

    def _pick_client(self) -> Any:
        ctx = current_task()
        if ctx is not None:
            return ctx.client()
        client = self._client
        if client is not None and client.status == "running":
            return client
        from twofold.client.client import default_client

        return default_client()

    def _send(self, kind: str, name: str, args: tuple, kwargs: dict) -> ActorFuture:
        client = self._pick_client()
        if self._address is None:
            self._resolve(client)
        call = PendingCall(self._cls, self._key, self._address, name)
        backend = client._backend
        backend.actor_call(self._address, self._key, kind, name, args, kwargs, call)
        return ActorFuture(call, backend, client)

    def _resolve(self, client: Any) -> None:
        """Learn where the actor lives (who_has) and what it is (the holder's handle)."""
        from twofold.messages import WhoHasRequest

        key = self._key
        req = client._ask([], None, None, lambda sid: WhoHasRequest(client._backend.now(), sid, client.id, sid, (key,)))
        holders = tuple(req.reply.who_has.get(key, ()))
        if not holders:
            raise ActorLost(f"actor {self._cls!r} (key {key!r}) is in no worker's memory")
        data, _ = client._backend.fetch({key: holders})
        handle = data.get(key)
        if type(handle) is not Actor or handle._methods is None:
            raise ActorLost(f"actor {self._cls!r} (key {key!r}): its holders {list(holders)} do not have it")
        self._cls, self._methods, self._attrs = handle._cls, handle._methods, handle._attrs
        self._address = handle._address


def unresolved(key: str) -> Actor:
    """A handle that finds its actor on first use (the class name guessed from the key until then)."""
    return Actor(key.rpartition("-")[0] or key, key)


def input_handles(store: dict, keys: tuple) -> dict[str, Actor]:
    """Handles for a task's actor inputs: the worker's own (from its data ``store``), or
    ones that look theirs up on first use (the actor lives elsewhere)."""
    out = {}
    for key in keys:
        handle = store.get(key)
        out[key] = handle if type(handle) is Actor else unresolved(key)
    return out
