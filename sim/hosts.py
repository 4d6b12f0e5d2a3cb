"""Simulated hosts: drivers that feed the pure machines and carry out their outputs.

:class:`SchedulerHost` runs a :class:`~twofold.scheduler.SchedulerState`;
:class:`WorkerHost` runs a :class:`~twofold.worker.WorkerState`, holds the
worker's data (real Python objects) and actors (``actors.py``), executes
user functions on greenlets (see ``clock.py``) taking virtual time from the
duration model, serves its data to peers, and sends heartbeats.  A host that crashes bumps its
*incarnation*, so completions and transfers started before the crash are
dropped when they arrive.
"""

from __future__ import annotations

import traceback as tb_module
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from greenlet import getcurrent

from twofold.client.actor import Actor
from twofold.client.spec import substitute
from twofold.messages import (
    AddWorker,
    DataLost,
    DataPut,
    DeleteData,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    GatherDeps,
    GatherFailure,
    GatherSuccess,
    RejoinGranted,
    RemoveWorker,
    TaskError,
    TaskFinished,
    TimerFired,
    WorkerHeartbeat,
)
from twofold.scheduler import SchedulerState
from twofold.messages_ops import RETIRE_REASON
from twofold.messages_plugins import WorkerPlugins
from twofold.plugins import flush_transitions, install_stored
from twofold.scheduler.state import key_prefix
from twofold.sim.actors import SimActors
from twofold.sim.models import _NONE_NBYTES, TaskInfo, function_name, measure_nbytes
from twofold.sim.network import MESSAGE_OVERHEAD
from twofold.worker import WorkerState

if TYPE_CHECKING:
    from twofold.sim.simulation import Simulation

def run_coroutine(coro: Any) -> Any:
    """An ``async def`` function's result outside tasks (``run_on_scheduler``): run on an
    event loop of its own, taking no virtual time (tasks: ``twofold.sim.aio``)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def message_size(msg: Any) -> int:
    """Bytes on the wire: the overhead, plus a run spec's bytes or an inline result's size."""
    spec = getattr(msg, "run_spec", None)
    if spec:
        return MESSAGE_OVERHEAD + len(spec)
    if getattr(msg, "inline", None) is not None:
        return MESSAGE_OVERHEAD + msg.nbytes
    return MESSAGE_OVERHEAD


_setattr = object.__setattr__  # restamp(msg, now), inlined on the hot paths

#: per output class, how SchedulerHost.route treats it: (kind, sized: 1 counts its run_spec,
#: 2 its inline result);
#: kind -1: for this driver, 0: a timer, 1: close a worker, 2: to the worker it names, 3: to the client it names
_ROUTES: dict[type, tuple[int, int]] = {}


_KINDS = {"driver": -1, "timer": 0, "close": 1, "worker": 2, "client": 3}


def _route_of(cls: type) -> tuple[int, int]:
    """From the class's own declaration (``destination``, see ``twofold.messages.message``)."""
    kind = _KINDS.get(cls.destination)
    if kind is None:
        raise TypeError(f"the scheduler output {cls.__name__} declares no destination (to=...)")
    route = _ROUTES[cls] = (kind, 1 if hasattr(cls, "run_spec") else 2 if hasattr(cls, "inline") else 0)
    return route


class SchedulerHost:
    def __init__(self, sim: Simulation, state: SchedulerState) -> None:
        self.sim = sim
        self.address = sim.scheduler_address
        self.state = state
        self._sid = 0

    def handle(self, msg: Any) -> None:
        sim = self.sim
        _setattr(msg, "now", sim.clock.now)  # restamp
        outs = self.state.handle(msg)
        if sim.validate:
            self.state.validate()
        if outs:
            self.route(outs)
        if self.state.plugin_hub is not None:  # scheduler plugins: their hooks, after the outputs
            self.state.plugin_hub.after(msg)

    def route(self, outs: list) -> None:
        sim = self.sim
        network = sim.network
        clock = sim.clock
        # Network.post with its liveness check hoisted: nothing is dead or cut (the usual case)
        # -> only the arrival arithmetic (Network.arrival, the one copy of it) per message
        plain = not (sim.dead or network.partitions)
        arrival = network.arrival
        post = network.post
        schedule = clock.schedule
        workers = sim.workers
        address = self.address
        routes = _ROUTES
        for out in outs:
            cls = type(out)
            kind, sized = routes.get(cls) or _route_of(cls)
            if kind >= 2:
                if sized == 1:
                    spec = out.run_spec
                    size = MESSAGE_OVERHEAD + (len(spec) if spec else 0)
                elif sized:  # a result riding along: its bytes (the reference stands for them)
                    size = MESSAGE_OVERHEAD + (out.nbytes if out.inline is not None else 0)
                else:
                    size = MESSAGE_OVERHEAD
                worker = out.worker if kind == 2 else None
                if worker is not None:
                    host = workers.get(worker)
                    if host is None:
                        continue
                    dst, deliver, args = worker, host.handle, (out, host.incarnation)
                else:
                    dst = out.client
                    endpoint = sim.clients.get(dst)
                    if endpoint is None:
                        continue
                    deliver, args = endpoint.receive, (out,)
                if plain:
                    schedule(arrival(address, dst, size), deliver, args)
                else:
                    post(address, dst, size, deliver, args)
            elif kind == 0:
                background = out.background or out.token.startswith("ttl:")
                clock.at(out.at, self._fire, out.token, background=background)
            elif kind == -1:
                if hasattr(out, "function"):  # (StopScheduler: Client.shutdown closes the SimCluster itself)
                    self._run_user_code(out)
            else:
                host = workers.get(out.worker)
                if host is not None:
                    network.send(address, out.worker, MESSAGE_OVERHEAD, host.closed_by_scheduler, out.reason)

    def _fire(self, token: str) -> None:
        self._sid += 1
        self.handle(TimerFired(self.sim.clock.now, f"timer-{self._sid}", token))

    def _run_user_code(self, out: Any) -> None:
        """``run_on_scheduler``: the function runs here, at once, taking no virtual time;
        ``dask_scheduler`` is the machine (read it, never change it)."""
        from twofold.client.remote import call_with
        from twofold.messages_coordination import CoordinationReply

        sim = self.sim
        try:
            func, args, kwargs = sim.objects[out.function]
            result = call_with(func, args, kwargs, "dask_scheduler", self.state)
            if type(result) is CoroutineType:
                result = run_coroutine(result)
            reply = CoordinationReply(sim.clock.now, out.stimulus_id, out.client, out.request_id, True,
                                      sim.put_object(result))  # fmt: skip
        except Exception as exc:  # the user's error goes back to the user
            reply = CoordinationReply(sim.clock.now, out.stimulus_id, out.client, out.request_id, False,
                                      sim.put_object(exc), "pickled", f"{type(exc).__name__}: {exc}")  # fmt: skip
        self.route([reply])


class WorkerHost:
    #: set while a worker plugin overrides ``transition`` (``twofold.plugins``)
    plugin_tap = None

    def __init__(
        self,
        sim: Simulation,
        address: str,
        nthreads: int,
        resources: dict | None,
        memory_limit: int | None,
    ) -> None:
        self.sim = sim
        self.address = address
        self.nthreads = nthreads
        self.resources = resources
        self.memory_limit = memory_limit
        self.incarnation = 0
        self.alive = False
        self.state: WorkerState | None = None
        self.store: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}
        self.slots: list[str | None] = []
        self.slot_of: dict[str, int] = {}
        self.rejoin_granted: set[str] = set()
        #: this incarnation's actor instances and the calls they serve (see ``actors.py``)
        self.actors = SimActors(self)
        #: the Client that tasks on this worker get from get_client()
        self.client: Any = None
        #: duration multiplier windows from cluster.slow(worker, ...)
        self.slow: list[tuple[float, float, float]] = []
        self._sid = 0

    # -- what get_worker() shows a task ------------------------------------------

    @property
    def name(self) -> str:
        return self.address

    @property
    def data(self) -> dict[str, Any]:
        """The worker's data: key -> value."""
        return self.store

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        self.alive = True
        sim.dead.discard(self.address)
        self.state = WorkerState(self.address, self.nthreads, self.resources, sim.worker_config)
        #: which results ride back with their completion (the runtime's rule: ``WorkerConfig``)
        self.rides_inline = sim.worker_config.rides_inline
        #: SimCluster(serialize=True): the pickle round trips (``twofold.sim.wire``), else None
        self.wire = getattr(sim, "wire", None)
        #: the reference every ``None`` result rides inline with (one, not one per task)
        self.none_ref = sim.put_object(None)
        self.store = {}
        self.sizes = {}
        self.slots = [None] * self.nthreads
        self.slot_of = {}
        self.rejoin_granted = set()
        self.actors = SimActors(self)
        sim.trace.fault_or_event("worker-start", self.address)
        sim.to_scheduler(
            self.address,
            AddWorker(sim.clock.now, self.sid("start"), self.address, self.nthreads, self.resources,
                      self.memory_limit, self.address),
        )
        self._schedule_heartbeat(self.incarnation)

    def crash(self, reason: str = "crashed") -> None:
        """The process dies: data, running tasks and connections are gone."""
        if not self.alive:
            return
        sim = self.sim
        self.alive = False
        sim.dead.add(self.address)
        self.incarnation += 1
        self.state = None
        self.store = {}
        self.sizes = {}
        self.actors.lose(f"its worker died ({reason})")
        self._lose_client(reason)
        sim.clock.abort(self)
        # the scheduler notices the broken connection after one latency
        sched = sim.scheduler
        clock = sim.clock
        clock.at(
            sim.network.noticed(self.address, sim.scheduler_address),
            sched.handle,
            RemoveWorker(clock.now, self.sid("lost"), self.address, f"connection lost ({reason})"),
        )

    def closed_by_scheduler(self, reason: str) -> None:
        """The scheduler dropped us (missed heartbeats): start afresh and re-register."""
        if not self.alive:
            return
        self.sim.trace.fault_or_event("worker-closed", self.address, reason)
        self.alive = False
        self.sim.dead.add(self.address)
        self.incarnation += 1
        self.state = None
        self.actors.lose(f"the scheduler closed its worker ({reason})")
        self._lose_client(reason)
        self.sim.clock.abort(self)
        if reason != RETIRE_REASON:  # (a retired worker stays down)
            self.sim.clock.at(self.sim.clock.now + self.sim.restart_delay, self._restart_if_dead)

    def _lose_client(self, reason: str) -> None:
        """The tasks' client dies with the process (its locks and leases go back)."""
        client, self.client = self.client, None
        if client is not None:
            client._backend.lose(reason)
            client.close()

    def _restart_if_dead(self) -> None:
        if not self.alive and not self.sim.closed:
            self.start()

    def sid(self, what: str) -> str:
        self._sid += 1
        return f"{self.address}-{what}-{self._sid}"

    def _schedule_heartbeat(self, incarnation: int) -> None:
        sim = self.sim
        sim.clock.at(sim.clock.now + sim.heartbeat_interval, self._heartbeat, incarnation, background=True)

    def _heartbeat(self, incarnation: int) -> None:
        if incarnation != self.incarnation or not self.alive or self.sim.closed:
            return
        sim = self.sim
        msg = WorkerHeartbeat(sim.clock.now, self.sid("hb"), self.address, sum(self.sizes.values()),
                              len(self.state.executing))
        sim.network.send(self.address, sim.scheduler_address, MESSAGE_OVERHEAD, sim.scheduler.handle, msg,
                         background=True)
        self._schedule_heartbeat(incarnation)

    # -- the machine -----------------------------------------------------------

    def handle(self, msg: Any, incarnation: int | None = None) -> None:
        """Feed the machine ``msg``; with ``incarnation``, a message sent to the
        process that was running then: lost if it died since."""
        if not self.alive or (incarnation is not None and incarnation != self.incarnation):
            return
        sim = self.sim
        if type(msg) is WorkerPlugins:  # for this driver, not the machine
            install_stored(self, msg.plugins, sim.objects.__getitem__)
            return
        _setattr(msg, "now", sim.clock.now)  # restamp
        outs = self.state.handle(msg)
        if self.plugin_tap is not None:  # worker plugins overriding transition()
            flush_transitions(self.plugin_tap)
        if sim.validate:
            self.state.validate()
        if outs:
            self._route(outs)

    def _route(self, outs: list) -> None:
        sim = self.sim
        for out in outs:
            cls = type(out)
            if cls is Execute:
                self._execute(out)
            elif cls is TaskFinished:  # sim.to_scheduler(self.address, out), inlined: once per task
                size = MESSAGE_OVERHEAD if out.inline is None else MESSAGE_OVERHEAD + out.nbytes
                sim.network.post(self.address, sim.scheduler_address, size, sim.scheduler.handle, (out,))
            elif cls is GatherDeps:
                self._gather(out)
            elif cls is DeleteData:
                store, sizes = self.store, self.sizes
                for key in out.keys:
                    store.pop(key, None)
                    sizes.pop(key, None)
                if self.actors.instances:
                    self.actors.forget(out.keys)
            elif cls is RejoinGranted:
                self.rejoin_granted.add(out.key)
            else:
                sim.to_scheduler(self.address, out)

    # -- execution -------------------------------------------------------------

    def _execute(self, ex: Execute) -> None:
        if ex.actor or ex.actor_deps:
            self._execute_actor(ex)
            return
        sim = self.sim
        wire = self.wire
        func, args, kwargs = sim.objects[ex.run_spec] if wire is None else self._decode(wire, ex)
        if ex.dependencies:
            data = {key: self.store[key] for key in ex.dependencies}
            args = substitute(args, data)
            kwargs = substitute(kwargs, data)
        key = ex.key
        slots = self.slots
        if slots[0] is None:  # self._take_slot(key), its common case inlined
            slots[0] = key
            self.slot_of[key] = slot = 0
        else:
            slot = self._take_slot(key)  # a task is traced once, when it stops
        sim.clock.spawn(self._run, self.incarnation, key, func, args, kwargs, slot)

    def _execute_actor(self, ex: Execute) -> None:
        """``_execute`` for a task that makes an actor, or takes actors as inputs (handles)."""
        wire = self.wire
        func, args, kwargs = self.sim.objects[ex.run_spec] if wire is None else self._decode(wire, ex)
        data = {key: self.store[key] for key in ex.dependencies}
        if ex.actor_deps:
            data.update(self.actors.handles(ex.actor_deps))
        if data:
            args = substitute(args, data)
            kwargs = substitute(kwargs, data)
        if ex.actor:
            func = self.actors.birth(func, ex.key)
        slot = self._take_slot(ex.key)
        self.sim.clock.spawn(self._run, self.incarnation, ex.key, func, args, kwargs, slot)

    def _decode(self, wire: Any, ex: Execute) -> tuple:
        """The run spec's pickle loaded as in the task (a Future inside it re-attaches to the
        task's client, as on a real worker, where the task's thread unpickles it)."""
        here = getcurrent()
        outer = getattr(here, "twofold_task", None)
        here.twofold_task = (self, ex.key)
        try:
            return wire.decode_task(ex.run_spec)
        finally:
            here.twofold_task = outer

    def _take_slot(self, key: str) -> int:
        slots = self.slots
        for i, holder in enumerate(slots):
            if holder is None:
                slots[i] = key
                self.slot_of[key] = i
                return i
        slots.append(key)  # a seceded task gave its slot away: trace it on an extra lane
        self.slot_of[key] = len(slots) - 1
        return len(slots) - 1

    def _run(self, incarnation: int, key: str, func: Any, args: tuple, kwargs: dict, slot: int) -> None:
        sim = self.sim
        start = sim.clock.now
        me = getcurrent()
        me.twofold_task = (self, key)
        error = None
        result = None
        try:
            result = func(*args, **kwargs)
            if type(result) is CoroutineType:  # an async def task, on virtual time
                from twofold.sim.aio import run_task_coroutine

                result = run_task_coroutine(result, sim.clock)
        except BaseException as exc:  # the user's error, reported like a real worker would
            error = exc
        finally:
            me.twofold_task = None
        debt = getattr(me, "twofold_debt", 0.0)  # virtual time: what its clock reads cost it
        if debt:
            me.twofold_debt = 0.0
        if incarnation != self.incarnation:
            return
        constant = sim.constant_duration
        if constant is None:
            info = TaskInfo(key, key_prefix(key), function_name(func), self.address)
            duration = sim.durations.value(info, sim.default_duration)
        else:
            info = None  # built later only if the size model needs it
            duration = constant
        duration += debt
        if self.slow:
            duration *= self._slowdown()
        clock = sim.clock
        clock.schedule(clock.now + duration, self._finish, (incarnation, key, func, info, start, result, error, slot))

    def _slowdown(self) -> float:
        factor = 1.0
        now = self.sim.clock.now
        for f, start, end in self.slow:
            if start <= now < end:
                factor *= f
        return factor

    def _finish(self, incarnation: int, key: str, func: Any, info: TaskInfo | None, start: float, result: Any,
                error: BaseException | None, slot: int) -> None:
        if incarnation != self.incarnation:
            return
        sim = self.sim
        now = sim.clock.now
        if self.slot_of.get(key) == slot:
            del self.slot_of[key]
            self.slots[slot] = None
        sim.trace.task_stop(self.address, slot, key, start, now, error is None)
        if error is None:
            if self.wire is not None and type(result) is not Actor:
                nbytes, inline = self._wire_result(key, func, info, result)
            else:
                if sim.sizes is None:
                    nbytes = _NONE_NBYTES if result is None else measure_nbytes(result)
                else:
                    if info is None:
                        info = TaskInfo(key, key_prefix(key), function_name(func), self.address)
                    nbytes = sim.result_size(info, result)
                # small results ride back with the completion, by the runtime's rule
                # (a reference into the registry stands for their bytes)
                if not self.rides_inline(nbytes):
                    inline = None
                elif result is None:
                    inline = self.none_ref
                else:
                    inline = sim.put_object(result)
            self.store[key] = result
            self.sizes[key] = nbytes
            self._sid += 1  # self.sid("done"), inlined
            self.handle(ExecuteSuccess.build(now, f"{self.address}-done-{self._sid}", key, nbytes,
                                             type(result).__name__, start, now, inline))
        else:
            text = "".join(tb_module.format_exception(type(error), error, error.__traceback__))
            typename, message = type(error).__name__, str(error)
            if self.wire is not None:
                error = self.wire.exception(error)
            ref = None if error is None else sim.put_object(error)
            err = TaskError(typename, message, ref, None, text)
            self.handle(ExecuteFailure(now, self.sid("erred"), key, err, start, now))

    def _wire_result(self, key: str, func: Any, info: TaskInfo | None, result: Any) -> tuple[int, bytes | None]:
        """``(nbytes, inline reference)`` of a result under ``serialize=True``: measured and
        pickled as the runtime's worker does; a size model, if it names the task, still rules."""
        sim = self.sim
        nbytes, copy, rides = self.wire.result(result, self.rides_inline)
        if sim.sizes is not None:
            if info is None:
                info = TaskInfo(key, key_prefix(key), function_name(func), self.address)
            if sim.sizes.lookup(info) is not None:
                nbytes = int(sim.sizes.value(info, 0.0))
                rides = rides and self.rides_inline(nbytes)
        return nbytes, (sim.put_object(copy) if rides else None)

    # -- data ------------------------------------------------------------------

    def _gather(self, req: GatherDeps) -> None:
        sim = self.sim
        peer = sim.workers.get(req.peer)
        incarnation = self.incarnation

        def failed() -> None:
            if incarnation == self.incarnation:
                self.handle(GatherFailure(sim.clock.now, self.sid("gather-failed"), req.peer, req.keys))

        if peer is None:
            sim.clock.soon(failed)
            return
        sim.network.send(self.address, req.peer, MESSAGE_OVERHEAD, peer.serve, self, incarnation,
                         req.keys, sim.clock.now, on_fail=failed)

    def serve(self, requester: WorkerHost, incarnation: int, keys: tuple, asked: float) -> None:
        """A peer asks for data: send what we hold."""
        sim = self.sim
        data = {key: self.store[key] for key in keys if key in self.store}
        missing = tuple(key for key in keys if key not in data)
        if self.wire is not None:
            # copies, as a peer unpickles them; what cannot be pickled does not go (nor is
            # it missing: the runtime's peer leaves it out of its reply the same way)
            data = self.ship(data)[0]
        sizes = {key: self.sizes[key] for key in data}
        total = sum(sizes.values())

        def failed() -> None:
            if incarnation == requester.incarnation:
                requester.handle(GatherFailure(sim.clock.now, requester.sid("gather-failed"), self.address, keys))

        sim.network.send(self.address, requester.address, MESSAGE_OVERHEAD + total, requester.gathered,
                         incarnation, self.address, data, sizes, missing, asked, on_fail=failed)

    def ship(self, found: dict) -> tuple[dict, dict[str, str]]:
        """``serialize=True``: what of ``found`` leaves this worker, as copies (actor
        handles as they are), and why the rest cannot (see ``Wire.ship_all``)."""
        plain = {key: obj for key, obj in found.items() if type(obj) is Actor}
        copies, _, errors = self.wire.ship_all({k: v for k, v in found.items() if k not in plain})
        if plain:
            copies.update(plain)
            copies = {key: copies[key] for key in found if key in copies}  # in the order asked
        for key, why in errors.items():
            self._warn_unsendable(key, why)
        return copies, errors

    def _warn_unsendable(self, key: str, why: str) -> None:
        import logging

        logging.getLogger("twofold.sim").warning("worker %s cannot serialize the result of %r: %s",
                                                  self.address, key, why)  # fmt: skip

    def gathered(self, incarnation: int, peer: str, data: dict, sizes: dict, missing: tuple, asked: float) -> None:
        if incarnation != self.incarnation:
            return
        sim = self.sim
        self.store.update(data)
        self.sizes.update(sizes)
        if data:
            sim.trace.transfer(peer, self.address, tuple(data), sum(sizes.values()), asked, sim.clock.now)
        self.handle(GatherSuccess(sim.clock.now, self.sid("gathered"), peer, sizes, missing))

    def put(self, data: dict, sizes: dict, after: int = -1) -> None:
        """A client scattered data here."""
        if not self.alive:
            return
        self.store.update(data)
        self.sizes.update(sizes)
        self.handle(DataPut(self.sim.clock.now, self.sid("put"), dict(sizes), after))

    def topic_post(self, incarnation: int, subs: tuple, payloads: tuple) -> None:
        """Values a Pub on a worker published straight to Subs of this worker's tasks
        (``SimBackend.topic_post``); lost if this process died since they were sent."""
        if incarnation != self.incarnation or not self.alive or self.client is None:
            return
        from twofold.client.pubsub import deliver

        if deliver(subs, payloads, self.client):
            self.sim.clock.touches += 1  # a client wait looks again

    def lose_data(self) -> None:
        """Fault: the data store is wiped while the process lives on.

        The driver only wipes it; what to do about it (refetch, forget, tell the
        scheduler) is the machine's answer to ``DataLost``.
        """
        if not self.alive:
            return
        keys = tuple(self.store)
        self.store = {}
        self.sizes = {}
        self.actors.forget(tuple(self.actors.instances))
        self.handle(DataLost(self.sim.clock.now, self.sid("lost"), keys))
