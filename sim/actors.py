"""Actors in the simulator: a worker's actor instances and the calls they serve.

A call crosses the simulated network to the worker (``SimBackend.actor_call``),
waits in its actor's FIFO, runs on a clock greenlet (a method that blocks
suspends, as a task does) and then takes the virtual time the cluster's
duration model gives the name ``"<Class>.<method>"`` (the default task
duration if it names nothing; times any slow-down of the worker), after
which its reply crosses back.  One actor's calls run one at a time, in
arrival order; different actors' calls interleave.

A worker's process dying (crash, restart, closed by the scheduler) breaks
its connections: each call it had accepted and not answered fails with
:class:`~twofold.errors.ActorLost` one latency later, and what is sent to it
afterwards fails through the network's ``on_fail``.  A restarted worker
holds no actors, so calls reaching it fail too.  Objects are never pickled:
callers get the same handle object the worker keeps as the key's data.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from greenlet import getcurrent

from twofold.client.actor import CALL, Actor, input_handles, missing_attribute, names_of
from twofold.sim.models import TaskInfo, measure_nbytes
from twofold.sim.network import MESSAGE_OVERHEAD
from twofold.serialize import SerializationError

if TYPE_CHECKING:
    from twofold.sim.hosts import WorkerHost


class ActorBirth:
    """An actor task's function: build the instance, keep it on the host, return its handle.

    ``func`` is the class itself, so ``function_name`` and the duration model
    see the class, as for any task.
    """

    __slots__ = ("func", "actors", "key")

    def __init__(self, func: Callable, actors: SimActors, key: str):
        self.func = func
        self.actors = actors
        self.key = key

    def __call__(self, *args: Any, **kwargs: Any) -> Actor:
        return self.actors.keep(self.key, self.func(*args, **kwargs))


def payload_size(args: tuple, kwargs: dict) -> int:
    """Bytes a call's arguments take on the wire."""
    size = sum(measure_nbytes(a) for a in args)
    return size + measure_nbytes(kwargs) if kwargs else size


def deliver(host: WorkerHost, *request: Any) -> None:
    """A request arrives: the worker's actors *now* serve it (a restart has new ones)."""
    host.actors.request(*request)


class SimActors:
    """One incarnation of a worker's actors (``WorkerHost.start`` makes a fresh one)."""

    def __init__(self, host: WorkerHost):
        self.host = host
        self.instances: dict[str, Any] = {}
        #: key -> calls waiting or running (the first runs), while the actor is busy
        self._queues: dict[str, deque] = {}

    # -- life ------------------------------------------------------------------

    def birth(self, func: Callable, key: str) -> ActorBirth:
        return ActorBirth(func, self, key)

    def keep(self, key: str, instance: Any) -> Actor:
        if self._current():  # (a constructor that outlived its worker leaves nothing behind)
            self.instances[key] = instance
        return Actor(type(instance).__name__, key, self.host.address, *names_of(instance))

    def handles(self, keys: tuple) -> dict[str, Actor]:
        """Handles for a task's actor inputs: this worker's own, or ones that look theirs up."""
        return input_handles(self.host.store, keys)

    def forget(self, keys: tuple) -> None:
        for key in keys:
            self.instances.pop(key, None)

    def lose(self, why: str) -> None:
        """The process died: what it accepted fails when the connection breaks (one latency)."""
        self.instances = {}
        queues, self._queues = self._queues, {}
        sim = self.host.sim
        for queue in queues.values():
            for entry in queue:  # (src, ..., lost): each caller notices its own broken connection
                sim.clock.at(sim.network.noticed(self.host.address, entry[0]), entry[-1], why)

    def _current(self) -> bool:
        host = self.host
        return host.alive and host.actors is self

    # -- calls -----------------------------------------------------------------

    def request(self, src: str, key: str, kind: str, name: str, args: tuple, kwargs: dict,
                settle: Callable, lost: Callable) -> None:  # fmt: skip
        if key not in self.instances:
            self._reply(src, settle, lost, False, None, "the worker does not hold it (it restarted, or the actor "
                        "was released)")  # fmt: skip
            return
        entry = (src, key, kind, name, args, kwargs, settle, lost)
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque((entry,))
            self.host.sim.clock.spawn(self._run, entry)
        else:
            queue.append(entry)

    def _run(self, entry: tuple) -> None:
        """On a greenlet: run the call, then hold the actor for the call's duration."""
        src, key, kind, name, args, kwargs, settle, lost = entry
        host = self.host
        sim = host.sim
        start = sim.clock.now
        me = getcurrent()
        me.twofold_task = (host, key)  # get_client() works in a method; a crash ends a blocked one
        instance = self.instances.get(key)
        try:
            if instance is None:
                ok, value = False, None  # released meanwhile
            elif kind == CALL:
                method = getattr(instance, name, None)
                if method is None:
                    ok, value = False, missing_attribute(type(instance).__name__, key, name)
                else:
                    ok, value = True, method(*args, **kwargs)
            else:
                ok, value = True, getattr(instance, name)
        except BaseException as exc:  # the user's error goes back to the caller
            ok, value = False, exc
            if isinstance(exc, AttributeError) and kind != CALL:
                value = missing_attribute(type(instance).__name__, key, name)
        finally:
            me.twofold_task = None
        debt = getattr(me, "twofold_debt", 0.0)  # virtual time: what its clock reads cost it
        if debt:
            me.twofold_debt = 0.0
        if not self._current():
            return
        qualified = f"{type(instance).__name__}.{name}"
        duration = sim.constant_duration
        if duration is None:
            info = TaskInfo(qualified, qualified, qualified, host.address)
            duration = sim.durations.value(info, sim.default_duration)
        duration += debt
        if host.slow:
            duration *= host._slowdown()
        clock = sim.clock
        clock.schedule(clock.now + duration, self._done, (entry, ok, value, start, instance is not None))

    def _done(self, entry: tuple, ok: bool, value: Any, start: float, held: bool) -> None:
        if not self._current():
            return  # the process died meanwhile (lose() failed the call)
        src, key, kind, name, _, _, settle, lost = entry
        host = self.host
        host.sim.trace.actor_call(host.address, key, name, start, host.sim.clock.now, ok)
        if held:
            self._reply(src, settle, lost, ok, value, "", f"{name}() on actor {key!r}")
        else:
            self._reply(src, settle, lost, False, None, "it was released (or its data lost) before the call ran")
        queue = self._queues.get(key)
        if queue is not None:
            queue.popleft()
            if queue:
                host.sim.clock.spawn(self._run, queue[0])
            else:
                del self._queues[key]

    def _reply(self, src: str, settle: Callable, lost: Callable, ok: bool, value: Any, gone: str,
               what: str = "") -> None:
        host = self.host
        sim = host.sim
        if gone:
            sim.network.send(host.address, src, MESSAGE_OVERHEAD, lost, gone,
                             on_fail=lambda: lost("the worker died before its reply arrived"))  # fmt: skip
            return
        wire = getattr(sim, "wire", None)
        if wire is not None and not ok:  # serialize=True: the error as the caller loads it
            copy = wire.exception(value) if isinstance(value, BaseException) else None
            value = value if copy is None else copy
            size = MESSAGE_OVERHEAD
        elif wire is not None:  # serialize=True: the reply as the caller loads it (or why it cannot)
            try:
                value, nbytes = wire.copy(value)
            except Exception as exc:
                ok, nbytes = False, 0
                value = SerializationError(f"the result of {what} cannot be sent: {type(exc).__name__}: {exc}")
            size = MESSAGE_OVERHEAD + (nbytes if ok else 0)
        else:
            size = MESSAGE_OVERHEAD + (measure_nbytes(value) if ok else 0)
        sim.network.send(host.address, src, size, settle, ok, value,
                         on_fail=lambda: lost("the worker died before its reply arrived"))  # fmt: skip
