"""WorkerState: the pure worker.  ``handle(event) -> list[instruction]``.

The driver owns the data store, the thread pool and the connections; this
machine decides what to run, what to fetch from whom, and what to tell the
scheduler.  Its instructions are ``Execute``, ``GatherDeps``, ``DeleteData``
and ``RejoinGranted`` for the driver, and worker -> scheduler messages
(``TaskFinished``, ``TaskErred``, ``AddReplicas``, ...) to forward.

Transfers live in ``transfers.py`` (a mixin); this file holds compute and the
scheduler's requests.  Thread slots: ``nthreads`` tasks may be *executing*;
a seceded (``long-running``) task gives its slot back until it rejoins.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from sortedcontainers import SortedDict

from twofold.config import WorkerConfig
from twofold.messages import (
    AcquireReplicas,
    AddReplicas,
    ComputeTask,
    DataLost,
    DataPut,
    DeleteData,
    Execute,
    ExecuteFailure,
    ExecuteReschedule,
    ExecuteSuccess,
    FreeKeys,
    GatherFailure,
    GatherSuccess,
    LongRunning,
    Message,
    MissingData,
    RefreshWhoHas,
    Rejoin,
    RejoinGranted,
    RemoveReplicas,
    RescheduleTask,
    Secede,
    StealRequest,
    StealResponse,
    TaskErred,
    TaskFinished,
)
from twofold.taskqueue import TaskQueue
from twofold.worker.state import RUNNING, WTask
from twofold.worker.transfers import Transfers

#: states in which a task was asked of us and has not finished
_PENDING = frozenset({"waiting", "ready", "constrained"})


class WorkerState(Transfers):
    """All one worker knows, changed only by :meth:`handle`."""

    def __init__(
        self,
        address: str,
        nthreads: int = 1,
        resources: dict[str, float] | None = None,
        config: WorkerConfig | None = None,
    ):
        if nthreads < 1:
            raise ValueError(f"nthreads must be >= 1, got {nthreads}")
        self.address = address
        self.nthreads = nthreads
        self.config = config or WorkerConfig()
        self.total_resources = dict(resources or {})
        self.available_resources = dict(self.total_resources)
        self.tasks: dict[str, WTask] = {}
        #: tasks holding a thread: executing, or cancelled/resumed from executing
        self.executing: dict[WTask, None] = {}
        #: seceded tasks (and cancelled/resumed ones that were)
        self.long_running: dict[WTask, None] = {}
        self.ready: TaskQueue[WTask] = TaskQueue()
        #: ready tasks that need resources
        self.constrained: TaskQueue[WTask] = TaskQueue()
        #: seceded tasks waiting for a thread to rejoin, in arrival order
        self.rejoining: dict[WTask, None] = {}
        # transfers (see transfers.py)
        self.data_needed: SortedDict = SortedDict()
        #: peer -> {order: task} of what we may fetch from it (see transfers.py)
        self.data_needed_per_peer: dict[str, dict[tuple, WTask]] = {}
        self.in_flight: dict[str, dict[WTask, None]] = {}
        self._arrivals = 0
        self._story: deque | None = (
            deque(maxlen=self.config.story_length) if self.config.story_length else None
        )
        self._now = 0.0
        self._sid = ""
        self._outs: list = []
        self._delete: list[str] = []

    # -- entry point -------------------------------------------------------

    def handle(self, event: Message) -> list:
        try:
            handler = _HANDLERS[type(event)]
        except KeyError:
            raise TypeError(f"WorkerState cannot handle {type(event).__name__}") from None
        self._now = event.now
        self._sid = event.stimulus_id
        outs = self._outs = []
        handler(self, event)
        if self._delete:
            outs.append(DeleteData(self._now, self._sid, tuple(self._delete)))
            self._delete = []
        if self.data_needed:
            self._ensure_communicating()
        if len(self.executing) < self.nthreads and (self.ready or self.constrained or self.rejoining):
            self._ensure_computing()
        return outs

    # -- small helpers -----------------------------------------------------

    def _set(self, ts: WTask, state: str) -> None:
        if self._story is not None:
            self._story.append((ts.key, ts.state, state, self._sid, self._now))
        ts.state = state

    def story(self, *keys: str) -> list[tuple[str, str, str, str, float]]:
        if self._story is None:
            return []
        wanted = set(keys)
        return [entry for entry in self._story if not wanted or entry[0] in wanted]

    def _task(self, key: str) -> WTask:
        ts = self.tasks.get(key)
        if ts is None:
            ts = self.tasks[key] = WTask(key)
        return ts

    def _order(self, ts: WTask) -> None:
        self._arrivals += 1
        ts.order = ts.priority + (self._arrivals,)  # flat: cheaper to compare than nested

    def _needed_locally(self, ts: WTask) -> bool:
        """Is ``ts`` an input of a task asked of us that has not started?"""
        return any(d.state in _PENDING for d in ts.dependents)

    def _forget(self, ts: WTask) -> None:
        """Drop the task and let go of inputs nothing else here needs.

        A task that is still an input of a pending local task is not dropped:
        it becomes an input to fetch (the scheduler says from where).
        """
        if self._needed_locally(ts):
            self._unlink_inputs(ts)
            ts.previous = ts.next = None
            ts.coming_from = None
            self._set(ts, "released")
            self._want_fetch(ts)
            return
        self._set(ts, "forgotten")
        del self.tasks[ts.key]
        self._unlink_inputs(ts)
        for dts in ts.dependents:
            dts.dependencies.pop(ts, None)
        ts.dependents.clear()

    def _unlink_inputs(self, ts: WTask) -> None:
        for dep in ts.dependencies:
            dep.dependents.pop(ts, None)
            if not dep.dependents:
                self._input_unneeded(dep)
        ts.dependencies.clear()
        ts.waiting_on.clear()

    def _input_unneeded(self, dep: WTask) -> None:
        """No local task needs ``dep`` any more."""
        state = dep.state
        if state in ("fetch", "missing", "released"):
            self._drop_fetch(dep)
            self._forget(dep)
        elif state == "flight":
            self._set(dep, "cancelled")
            dep.previous = "flight"
        elif state == "resumed" and dep.next == "fetch":
            self._set(dep, "cancelled")
        elif state == "memory" and dep.unowned:
            self._delete.append(dep.key)
            self._forget(dep)

    def _to_scheduler_finished(self, ts: WTask, typename: str, start: float, stop: float, inline) -> None:
        self._outs.append(
            TaskFinished.build(self._now, self._sid, self.address, ts.key, ts.nbytes, typename, start, stop,
                               inline, ts.run_id)
        )

    def _put_in_memory(self, ts: WTask, nbytes: int) -> None:
        """Data for ``ts`` is in the store: wake local dependents."""
        if self._story is not None:
            self._story.append((ts.key, ts.state, "memory", self._sid, self._now))
        ts.state = "memory"
        ts.nbytes = nbytes
        ts.previous = ts.next = None
        ts.coming_from = None
        dependents = ts.dependents
        if dependents:
            for dts in dependents:
                waiting_on = dts.waiting_on
                if waiting_on.pop(ts, False) is None and not waiting_on and dts.state == "waiting":
                    self._make_ready(dts)

    def _make_ready(self, ts: WTask) -> None:
        if ts.resources:
            self._set(ts, "constrained")
            self.constrained.push(ts, ts.order)
        else:
            self._set(ts, "ready")
            self.ready.push(ts, ts.order)

    # -- compute requests --------------------------------------------------

    def _on_compute(self, ev: ComputeTask) -> None:
        ts = self._task(ev.key)
        ts.run_id = ev.run_id
        state = ts.state
        if state == "released":  # the common case, first: a key new to us
            if ev.who_has or ts.dependencies:
                self._fill_compute(ts, ev)
                self._start_waiting(ts)
                return
            # no inputs: _fill_compute, _start_waiting and _make_ready inlined
            ts.run_spec = ev.run_spec
            ts.priority = priority = ev.priority
            ts.resources = resources = ev.resources or None
            ts.actor = ev.actor
            ts.actor_deps = ev.actor_deps
            self._arrivals += 1
            ts.order = order = priority + (self._arrivals,)  # flat: cheaper to compare than nested
            if ts.waiting_on:
                ts.waiting_on.clear()
            story = self._story
            if resources:
                if story is not None:
                    story.append((ts.key, "released", "constrained", self._sid, self._now))
                ts.state = "constrained"
                self.constrained.push(ts, order)
            else:
                if story is not None:
                    story.append((ts.key, "released", "ready", self._sid, self._now))
                ts.state = "ready"
                self.ready.push(ts, order)
            return
        if state == "memory":
            self._to_scheduler_finished(ts, "", 0.0, 0.0, None)
            return
        if state in _PENDING or state in RUNNING:
            return  # already on it
        if state == "cancelled":
            if ts.previous in RUNNING:
                self._set(ts, ts.previous)  # the execution is still going: keep it
                ts.previous = None
            else:
                self._set(ts, "resumed")  # in flight: take the data if it arrives
                ts.next = "waiting"
                self._fill_compute(ts, ev)
            return
        if state == "resumed":
            if ts.previous in RUNNING:
                self._set(ts, ts.previous)
                ts.previous = ts.next = None
            else:
                ts.next = "waiting"
                self._fill_compute(ts, ev)
            return
        if state == "flight":
            self._set(ts, "resumed")
            ts.previous = "flight"
            ts.next = "waiting"
            self._fill_compute(ts, ev)
            return
        if state in ("fetch", "missing"):
            self._drop_fetch(ts)
        self._fill_compute(ts, ev)
        self._start_waiting(ts)

    def _fill_compute(self, ts: WTask, ev: ComputeTask) -> None:
        """Record what the scheduler said about the task and its inputs."""
        ts.run_spec = ev.run_spec
        ts.priority = ev.priority
        ts.resources = ev.resources or None
        ts.actor = ev.actor
        ts.actor_deps = ev.actor_deps
        self._order(ts)
        actor_deps = ev.actor_deps
        for dep_key, holders in ev.who_has.items():
            if dep_key in actor_deps:
                continue
            dep = self._task(dep_key)
            ts.dependencies[dep] = None
            dep.dependents[ts] = None
            if dep.state != "memory":
                dep.nbytes = ev.nbytes.get(dep_key, dep.nbytes)
                self._learn_holders(dep, holders)
                if not dep.priority or ev.priority < dep.priority:
                    dep.priority = ev.priority

    def _start_waiting(self, ts: WTask) -> None:
        """``ts`` was asked of us: fetch what is missing, or get ready."""
        waiting_on = ts.waiting_on
        waiting_on.clear()
        for dep in ts.dependencies:
            state = dep.state
            if state == "memory":
                continue
            waiting_on[dep] = None
            if state == "released" or state == "missing":
                self._want_fetch(dep)
            elif state == "cancelled":
                if dep.previous == "flight":
                    self._set(dep, "flight")
                    dep.previous = None
                else:
                    self._set(dep, "resumed")
                    dep.next = "fetch"
        if waiting_on:
            self._set(ts, "waiting")
        else:
            self._make_ready(ts)

    def _on_free_keys(self, ev: FreeKeys) -> None:
        seq = ev.seq
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                if seq >= 0 and ts.state == "memory" and ts.put_after >= seq:
                    continue  # decided before a client scattered this copy here
                self._release(ts)

    def _release(self, ts: WTask) -> None:
        """The scheduler let go of ``ts``; keep what a pending local task still needs."""
        state = ts.state
        needed = self._needed_locally(ts)
        if state in ("waiting", "ready", "constrained", "fetch", "missing", "released"):
            if needed:
                if state not in ("fetch", "missing"):
                    self._unqueue(ts)
                    self._set(ts, "released")
                    self._unlink_inputs(ts)
                    self._want_fetch(ts)
                return
            self._unqueue(ts)
            self._drop_fetch(ts)
            self._forget(ts)
        elif state in RUNNING:
            ts.previous = state
            if needed:
                self._set(ts, "resumed")  # its result is still an input here
                ts.next = "fetch"
            else:
                self._set(ts, "cancelled")
        elif state == "flight":
            if not needed:
                self._set(ts, "cancelled")
                ts.previous = "flight"
        elif state == "resumed":
            if not needed:
                self._set(ts, "cancelled")
                ts.next = None
            elif ts.previous == "flight":
                self._set(ts, "flight")
                ts.previous = ts.next = None
            else:
                ts.next = "fetch"
        elif state == "memory":
            if needed or any(d.state in RUNNING for d in ts.dependents):
                ts.unowned = True  # the scheduler forgot it, but we still need it
                return
            self._delete.append(ts.key)
            self._forget(ts)

    def _unqueue(self, ts: WTask) -> None:
        if ts.state == "ready":
            self.ready.remove(ts)
        elif ts.state == "constrained":
            self.constrained.remove(ts)

    def _on_steal_request(self, ev: StealRequest) -> None:
        ts = self.tasks.get(ev.key)
        released = ts is not None and ts.state in _PENDING
        if released:
            self._unqueue(ts)
            self._forget(ts)
        self._outs.append(StealResponse(self._now, self._sid, self.address, ev.key, released))

    # -- execution ---------------------------------------------------------

    def _ensure_computing(self) -> None:
        nthreads = self.nthreads
        executing = self.executing
        while len(executing) < nthreads:
            if self.rejoining:
                ts = next(iter(self.rejoining))
                del self.rejoining[ts]
                del self.long_running[ts]
                executing[ts] = None
                if ts.state == "long-running":
                    self._set(ts, "executing")
                else:
                    ts.previous = "executing"
                self._outs.append(RejoinGranted(self._now, self._sid, ts.key))
                continue
            if self.constrained:
                ts = self._next_runnable()
                if ts is None:
                    return
            elif self.ready:
                ts = self.ready.pop()
            else:
                return
            if self._story is not None:
                self._story.append((ts.key, ts.state, "executing", self._sid, self._now))
            ts.state = "executing"
            executing[ts] = None
            if ts.resources:
                available = self.available_resources
                for name, amount in ts.resources.items():
                    available[name] -= amount
            deps = ts.dependencies
            self._outs.append(
                Execute.build(
                    self._now,
                    self._sid,
                    ts.key,
                    ts.run_spec,
                    tuple([d.key for d in deps]) if deps else (),
                    ts.actor,
                    ts.actor_deps,
                )
            )

    def _next_runnable(self) -> WTask | None:
        """The highest-priority ready task whose resources are free, if any."""
        ready = self.ready
        if not self.constrained:
            return ready.pop() if ready else None
        best = ready.peek()
        if self.constrained:
            available = self.available_resources
            for ts in self.constrained:  # sorted; few tasks need resources
                if best is not None and ts.order > best.order:
                    break
                if all(available.get(n, 0) >= a for n, a in ts.resources.items()):
                    self.constrained.remove(ts)
                    return ts
        if best is not None:
            ready.pop()
        return best

    def _end_execution(self, ts: WTask) -> None:
        """Give back the thread (or seceded slot) and resources ``ts`` held."""
        if ts in self.executing:
            del self.executing[ts]
        else:
            self.long_running.pop(ts, None)
            self.rejoining.pop(ts, None)
        if ts.resources:
            available = self.available_resources
            for name, amount in ts.resources.items():
                available[name] += amount

    def _on_execute_success(self, ev: ExecuteSuccess) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None:
            self._delete.append(ev.key)  # the driver stored a result nobody wants
            return
        state = ts.state
        if state == "executing" and ts in self.executing and not ts.resources:
            # the common case: _end_execution inlined
            del self.executing[ts]
        elif self._was_running(ts):
            self._end_execution(ts)
            if state == "cancelled":
                self._delete.append(ts.key)
                self._forget(ts)
                return
        else:
            self._delete.append(ev.key)  # the driver stored a result nobody wants
            return
        self._put_in_memory(ts, ev.nbytes)
        if ts.dependencies or ts.waiting_on:
            self._unlink_inputs(ts)
        if state == "resumed":
            self._outs.append(AddReplicas(self._now, self._sid, self.address, {ts.key: ev.nbytes}))
        else:
            self._outs.append(
                TaskFinished.build(self._now, self._sid, self.address, ts.key, ts.nbytes, ev.typename, ev.start,
                                   ev.stop, ev.inline, ts.run_id)
            )

    def _was_running(self, ts: WTask) -> bool:
        state = ts.state
        return state in RUNNING or (state in ("cancelled", "resumed") and ts.previous in RUNNING)

    def _on_execute_failure(self, ev: ExecuteFailure) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or not self._was_running(ts):
            return
        self._end_execution(ts)
        state = ts.state
        if state == "resumed":
            # we were to fetch it anyway: do that
            ts.previous = ts.next = None
            self._set(ts, "released")
            self._want_fetch(ts, report=True)
            return
        if state != "cancelled":
            self._outs.append(
                TaskErred(self._now, self._sid, self.address, ts.key, ev.error, ev.start, ev.stop, ts.run_id)
            )
        self._forget(ts)

    def _on_execute_reschedule(self, ev: ExecuteReschedule) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or not self._was_running(ts):
            return
        self._end_execution(ts)
        if ts.state in RUNNING:
            self._outs.append(RescheduleTask(self._now, self._sid, self.address, ts.key))
        self._forget(ts)

    def _on_secede(self, ev: Secede) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or ts not in self.executing or ts in self.long_running:
            return
        del self.executing[ts]
        self.long_running[ts] = None
        if ts.state == "executing":
            self._set(ts, "long-running")
            self._outs.append(LongRunning(self._now, self._sid, self.address, ts.key))
        else:
            ts.previous = "long-running"

    def _on_rejoin(self, ev: Rejoin) -> None:
        ts = self.tasks.get(ev.key)
        if ts is None or ts not in self.long_running:
            return
        self.rejoining[ts] = None

    # -- data from clients and replicas ------------------------------------

    def _on_data_put(self, ev: DataPut) -> None:
        for key, nbytes in ev.nbytes.items():
            ts = self._task(key)
            ts.put_after = max(ts.put_after, ev.after)
            state = ts.state
            if state in ("released", "fetch", "missing"):
                self._drop_fetch(ts)
            elif state == "memory":
                ts.nbytes = nbytes
                ts.unowned = False
                continue
            elif self._was_running(ts):
                # a thread still computes it: keep its result when it ends
                if state in ("cancelled", "resumed"):
                    self._set(ts, "resumed")
                    ts.next = "fetch"
                continue
            elif state not in ("flight", "cancelled", "resumed"):
                continue  # asked of us but not started: the computation will overwrite it
            else:
                # its transfer is still under way: take it out of that batch
                batch = self.in_flight.get(ts.coming_from)
                if batch is not None:
                    batch.pop(ts, None)
            ts.unowned = False
            self._put_in_memory(ts, nbytes)

    def _on_data_lost(self, ev: DataLost) -> None:
        """The store lost these keys (the process lives on): refetch what is still needed
        here, forget the rest, and tell the scheduler we no longer hold any of them
        (one ``MissingData`` each, naming ourselves: it drops us as a holder and has
        the key recomputed, or tells us of other holders, ``RefreshWhoHas``)."""
        lost = []
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "memory":
                continue  # not ours to report: the scheduler never heard we held it
            lost.append(key)
            ts.unowned = False
            for dts in list(ts.dependents):
                if dts.state not in _PENDING:
                    # it started (or ran) with the value in hand: it no longer needs the store's
                    dts.dependencies.pop(ts, None)
                    del ts.dependents[dts]
            if self._needed_locally(ts):
                self._set(ts, "released")
                for dts in ts.dependents:
                    if dts.state in ("ready", "constrained"):
                        self._unqueue(dts)
                        self._set(dts, "waiting")
                    if dts.state == "waiting":
                        dts.waiting_on[ts] = None
                self._want_fetch(ts)  # (reported below, with the rest)
            else:
                self._forget(ts)
        address = self.address
        for key in lost:
            self._outs.append(MissingData(self._now, self._sid, address, key, address))

    def _on_acquire_replicas(self, ev: AcquireReplicas) -> None:
        for key, holders in ev.who_has.items():
            ts = self._task(key)
            if ts.state in ("released", "missing", "fetch"):
                ts.nbytes = ev.nbytes.get(key, ts.nbytes)
                if not ts.priority:
                    ts.priority = (1 << 30,)  # after any computation
                self._learn_holders(ts, holders)
                if ts.state != "fetch":  # already queued: the new holders are indexed
                    self._want_fetch(ts)

    def _on_remove_replicas(self, ev: RemoveReplicas) -> None:
        seq = ev.seq
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                if seq >= 0 and ts.put_after >= seq:
                    continue  # decided before a client scattered this copy here
                self._release(ts)

    def _on_refresh_who_has(self, ev: RefreshWhoHas) -> None:
        for key, holders in ev.who_has.items():
            ts = self.tasks.get(key)
            if ts is not None and ts.state in ("missing", "fetch"):
                self._drop_fetch(ts)
                ts.who_has.clear()
                self._learn_holders(ts, holders)
                self._want_fetch(ts)  # still none: wait for the scheduler to recompute it

    # -- inspection --------------------------------------------------------

    def validate(self) -> None:
        from twofold.worker.validate import validate_worker

        validate_worker(self)

    def __repr__(self) -> str:
        return (
            f"<WorkerState {self.address!r} tasks={len(self.tasks)} executing={len(self.executing)}"
            f" ready={len(self.ready)} in_flight={len(self.in_flight)}>"
        )


_HANDLERS: dict[type, Callable[[Any, Any], None]] = {
    ComputeTask: WorkerState._on_compute,
    FreeKeys: WorkerState._on_free_keys,
    StealRequest: WorkerState._on_steal_request,
    ExecuteSuccess: WorkerState._on_execute_success,
    ExecuteFailure: WorkerState._on_execute_failure,
    ExecuteReschedule: WorkerState._on_execute_reschedule,
    Secede: WorkerState._on_secede,
    Rejoin: WorkerState._on_rejoin,
    DataPut: WorkerState._on_data_put,
    DataLost: WorkerState._on_data_lost,
    AcquireReplicas: WorkerState._on_acquire_replicas,
    RemoveReplicas: WorkerState._on_remove_replicas,
    RefreshWhoHas: WorkerState._on_refresh_who_has,
    GatherSuccess: Transfers._on_gather_success,
    GatherFailure: Transfers._on_gather_failure,
}
