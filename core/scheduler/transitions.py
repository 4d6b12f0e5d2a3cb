"""The scheduler's task transitions: one small method per (start, finish) pair.

Rules:

* A transition changes one task's state and the bookkeeping that goes with
  it, appends outputs, and may *recommend* further transitions by writing
  ``recs[task] = finish``; :meth:`Transitions._transitions` runs them until
  none are left.
* A recommendation can be stale by the time it runs (the task was wanted
  again meanwhile): transitions toward ``released``/``forgotten`` check that
  the task is really unneeded and do nothing otherwise.
* "Needed" means some client wants the key (``who_wants``) or a dependent
  still waits for its data (``waiters``).
* Transitions that need more than the task (which worker finished it, with
  what error) are called directly by the event handlers:
  :meth:`_processing_memory` and :meth:`_fail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twofold.messages import ComputeTask, KeyErred, KeyInMemory, KeyLost, TaskError
from twofold.scheduler.state import NEEDS_INPUTS, TaskState, WorkerInfo

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState

Recs = dict[TaskState, str]

#: the pseudo-client that holds fire-and-forget keys
FIRE_AND_FORGET = "fire-and-forget"


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a bug in the scheduler."""


def _needed(ts: TaskState) -> bool:
    return bool(ts.who_wants or ts.waiters)


def _input_missing(ts: TaskState) -> bool:
    for dep in ts.dependencies:
        if dep.state != "memory":
            return True
    return False


class Transitions:
    """Mixin of :class:`~twofold.scheduler.SchedulerState`: the transition engine."""

    # -- engine -----------------------------------------------------------

    def _transitions(self: SchedulerState, recs: Recs) -> None:
        transition = self._transition
        while recs:
            ts, finish = recs.popitem()
            transition(ts, finish, recs)

    def _transition(self: SchedulerState, ts: TaskState, finish: str, recs: Recs) -> None:
        start = ts.state
        if start == finish or start == "forgotten":
            return
        func = _TABLE.get((start, finish))
        if func is None:
            if finish in _STALE_OK:
                return  # a recommendation overtaken by events (e.g. erred meanwhile)
            raise InvalidTransition(f"{ts.key!r}: no transition {start} -> {finish}")
        func(self, ts, recs)
        if self._story is not None:
            self._log(ts, start)

    # -- released -> ... --------------------------------------------------

    def _released_waiting(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        if not (ts.who_wants or ts.waiters):
            return  # stale: whoever needed it let go meanwhile
        if ts.run_spec is None:
            self._fail(
                ts,
                TaskError(
                    "FutureLost",
                    f"the data of {ts.key!r} was lost with every worker that held it;"
                    " it was scattered, not computed, so it cannot be recomputed",
                ),
                ts.key,
                recs,
            )
            return
        deps = ts.dependencies
        if deps:
            for dep in deps:
                if dep.state == "erred":
                    self._fail(ts, dep.error, dep.blamed, recs)
                    return
        ts.state = "waiting"
        waiting_on = ts.waiting_on
        if deps:
            for dep in deps:
                dep.waiters[ts] = None
                if dep.state != "memory":
                    waiting_on[dep] = None
                    if dep.state == "released":
                        recs[dep] = "waiting"
        if not waiting_on:
            recs[ts] = "processing"

    def _released_forgotten(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        if _needed(ts) or ts.dependents:
            return
        del self.tasks[ts.key]
        ts.state = "forgotten"
        for dep in ts.dependencies:
            del dep.dependents[ts]
            dep.waiters.pop(ts, None)
            if not dep.dependents and not _needed(dep):
                recs[dep] = "forgotten" if dep.state in ("released", "erred") else "released"

    # -- waiting / queued / no-worker -> ... -------------------------------

    def _ready_processing(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        """All inputs are in memory: send to a worker, or queue, or park."""
        if ts.waiting_on:
            return  # stale recommendation: an input was lost meanwhile
        if ts.state == "no-worker":
            del self.unrunnable[ts]
        elif ts.state == "queued":
            self.queued.remove(ts)
        if (
            # is_root (or any unrestricted task, without greedy transfer)
            (not ts.dependencies or self._withhold_all) and ts.workers is None and ts.resources is None
            and not ts.actor and self._queuing and not self.room
        ):
            ts.state = "queued"
            self.queued.push(ts, ts.queue_key)
            return
        ws = self._decide_worker(ts)
        if ws is None:
            # no worker may run it (or the policy declined): park until the cluster changes
            ts.state = "no-worker"
            self.unrunnable[ts] = None
            return
        self._assign(ts, ws)

    def _ready_released(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        if _needed(ts):
            if ts.state != "waiting" and _input_missing(ts):
                self._ready_waiting(ts, recs)  # as in _processing_released
            return
        state = ts.state
        if state == "queued":
            self.queued.remove(ts)
        elif state == "no-worker":
            del self.unrunnable[ts]
        ts.state = "released"
        ts.waiting_on.clear()
        self._drop_inputs(ts, recs)
        if not ts.dependents:
            recs[ts] = "forgotten"

    def _ready_waiting(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        """An input was lost before the task could start: wait for it again."""
        if ts.state == "no-worker":
            del self.unrunnable[ts]
        elif ts.state == "queued":
            self.queued.remove(ts)
        ts.state = "waiting"
        self._refresh_waiting_on(ts, recs)

    def _dependency_erred(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        for dep in ts.dependencies:
            if dep.state == "erred":
                self._fail(ts, dep.error, dep.blamed, recs)
                return

    # -- processing -> ... -------------------------------------------------

    def _processing_released(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        if _needed(ts):
            # stale, but it may have overwritten a 'waiting' recommendation (one per
            # task): a task whose input was lost meanwhile must start over
            if _input_missing(ts):
                self._processing_waiting(ts, recs)
            return
        ws = self._unassign(ts, free=True)
        ts.state = "released"
        self._drop_inputs(ts, recs)
        if not ts.dependents:
            recs[ts] = "forgotten"
        self._room_changed(ws)

    def _processing_waiting(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        """Start over: the worker died, an input was lost, or the task rescheduled."""
        ws = self._unassign(ts, free=True)
        ts.state = "waiting"
        self._refresh_waiting_on(ts, recs)
        self._room_changed(ws)

    def _processing_memory(
        self: SchedulerState,
        ts: TaskState,
        ws: WorkerInfo,
        nbytes: int,
        typename: str,
        inline: bytes | None,
        recs: Recs,
    ) -> None:
        start = ts.state
        old = self._unassign(ts, free=False) if start == "processing" else None
        ts.state = "memory"
        ts.nbytes = nbytes
        ts.typename = typename
        ts.who_has[ws] = None
        ws.has_what[ts] = None
        ws.nbytes += nbytes
        if ts.dependencies:
            self._drop_inputs(ts, recs)
        waiters = ts.waiters
        if waiters:
            for dts in waiters:
                waiting_on = dts.waiting_on
                waiting_on.pop(ts, None)
                if not waiting_on and dts.state == "waiting":
                    recs[dts] = "processing"
        who_wants = ts.who_wants
        if who_wants:
            self._report_memory(ts, inline)
        if not who_wants and not waiters:
            recs[ts] = "released"
        if old is not None:
            self._room_changed(old)
        if self._story is not None:
            self._log(ts, start)

    # -- memory -> ... -----------------------------------------------------

    def _memory_released(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        """Free the data; if the task is still needed its data was lost: recompute."""
        if ts.who_has and _needed(ts):
            return
        nbytes = ts.nbytes
        for ws in ts.who_has:
            del ws.has_what[ts]
            ws.nbytes -= nbytes
            self._free(ws, ts.key)
        ts.who_has.clear()
        ts.state = "released"
        if _needed(ts):
            if ts.run_spec is not None:  # scattered data errs with FutureLost instead
                self._report_lost(ts)
            for dts in ts.waiters:
                if dts.state == "waiting":
                    dts.waiting_on[ts] = None
                else:
                    recs[dts] = "waiting"
            recs[ts] = "waiting"
        elif not ts.dependents:
            recs[ts] = "forgotten"

    # -- erred -> ... ------------------------------------------------------

    def _erred_released(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        ts.state = "released"
        ts.error = None
        ts.blamed = None
        ts.suspicious = 0
        if _needed(ts):
            recs[ts] = "waiting"
        elif not ts.dependents:
            recs[ts] = "forgotten"

    # -- shared pieces -----------------------------------------------------

    def _fail(
        self: SchedulerState, ts: TaskState, error: TaskError, blamed: str, recs: Recs, free: bool = True
    ) -> None:
        """Put ``ts`` (any state but memory) into erred and spread it to dependents.

        ``free=False`` when the worker already dropped the task (it reported the error).
        """
        start = ts.state
        if start == "processing":
            self._room_changed(self._unassign(ts, free=free))
        elif start == "queued":
            self.queued.remove(ts)
        elif start == "no-worker":
            del self.unrunnable[ts]
        ts.state = "erred"
        ts.error = error
        ts.blamed = blamed
        ts.waiting_on.clear()
        self._drop_inputs(ts, recs)
        self._report_erred(ts)
        for dts in ts.dependents:
            if dts.state in NEEDS_INPUTS:
                recs[dts] = "erred"
        if not _needed(ts) and not ts.dependents:
            recs[ts] = "forgotten"
        if self._story is not None:
            self._log(ts, start)

    def _drop_inputs(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        """``ts`` no longer needs its inputs: release those nobody else needs."""
        for dep in ts.dependencies:
            if dep.waiters.pop(ts, False) is None and not dep.waiters and not dep.who_wants:
                state = dep.state
                if state in ("released", "erred"):
                    if not dep.dependents:
                        recs[dep] = "forgotten"
                else:
                    recs[dep] = "released"

    def _refresh_waiting_on(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        waiting_on = ts.waiting_on
        waiting_on.clear()
        for dep in ts.dependencies:
            dep.waiters[ts] = None
            state = dep.state
            if state != "memory":
                waiting_on[dep] = None
                if state == "released":
                    recs[dep] = "waiting"
                elif state == "erred":
                    recs[ts] = "erred"
        if not waiting_on:
            recs[ts] = "processing"

    def _assign(self: SchedulerState, ts: TaskState, ws: WorkerInfo) -> None:
        """processing on ``ws``: book it and tell the worker."""
        ts.state = "processing"
        ts.processing_on = ws
        run_id = self._run_counter = self._run_counter + 1
        ts.run_id = run_id
        est = self.durations.get(ts.prefix, self._unknown_duration)
        ts.duration_estimate = est
        ws.processing[ts] = None
        ws.occupancy += est
        to_free = self._to_free
        if to_free and ws in to_free:
            self._flush_frees_for(ws)  # a FreeKeys of this key must not overtake the ComputeTask
        room = self.room
        if ws in room and not self._has_room(ws):
            del room[ws]
        deps = ts.dependencies
        if deps:
            who_has = {}
            nbytes = {}
            actor_deps = ()
            for dep in deps:
                who_has[dep.key] = tuple([w.address for w in dep.who_has])
                nbytes[dep.key] = dep.nbytes
                if dep.actor:
                    actor_deps += (dep.key,)
            msg = ComputeTask.build(self._now, self._sid, ws.address, ts.key, ts.run_spec, ts.priority, who_has,
                                    nbytes, ts.resources, ts.actor, actor_deps, run_id)
        else:
            msg = ComputeTask.build(self._now, self._sid, ws.address, ts.key, ts.run_spec, ts.priority, {}, {},
                                    ts.resources, ts.actor, (), run_id)
        self._outs.append(msg)
        stealer = self._stealer
        if stealer is not None and not stealer.armed and len(self.workers) > 1:
            stealer.arm()

    def _unassign(self: SchedulerState, ts: TaskState, free: bool) -> WorkerInfo:
        ws = ts.processing_on
        del ws.processing[ts]
        if ts.long_running:
            del ws.long_running[ts]
            ts.long_running = False
        else:
            ws.occupancy -= ts.duration_estimate
            if ws.occupancy < 1e-9:
                ws.occupancy = 0.0
        ts.processing_on = None
        if ts.steal_to is not None:
            self._stealer.forget(ts)
        if free:
            self._free(ws, ts.key)
        return ws

    def _report_memory(self: SchedulerState, ts: TaskState, inline: bytes | None) -> None:
        who_wants = ts.who_wants
        if FIRE_AND_FORGET in who_wants:
            self._drop_wants(FIRE_AND_FORGET, ts)
        if not who_wants:
            return
        if inline is not None and len(inline) > self.config.inline_result_limit:
            inline = None
        outs = self._outs
        now, sid, key, nbytes, typename = self._now, self._sid, ts.key, ts.nbytes, ts.typename
        for client in who_wants:
            outs.append(KeyInMemory.build(now, sid, client, key, nbytes, typename, inline))

    def _report_erred(self: SchedulerState, ts: TaskState) -> None:
        who_wants = ts.who_wants
        if FIRE_AND_FORGET in who_wants:
            self._drop_wants(FIRE_AND_FORGET, ts)
        outs = self._outs
        for client in who_wants:
            outs.append(KeyErred(self._now, self._sid, client, ts.key, ts.error, ts.blamed))

    def _report_lost(self: SchedulerState, ts: TaskState) -> None:
        outs = self._outs
        for client in ts.who_wants:
            if client != FIRE_AND_FORGET:
                outs.append(KeyLost(self._now, self._sid, client, ts.key))


_TABLE: dict[tuple[str, str], Callable[..., None]] = {
    ("released", "waiting"): Transitions._released_waiting,
    ("released", "forgotten"): Transitions._released_forgotten,
    ("waiting", "processing"): Transitions._ready_processing,
    ("waiting", "released"): Transitions._ready_released,
    ("waiting", "erred"): Transitions._dependency_erred,
    ("queued", "processing"): Transitions._ready_processing,
    ("queued", "released"): Transitions._ready_released,
    # a task with inputs is queued only without greedy transfer (policies.Policy.greedy_transfer)
    ("queued", "waiting"): Transitions._ready_waiting,
    ("queued", "erred"): Transitions._dependency_erred,
    ("no-worker", "processing"): Transitions._ready_processing,
    ("no-worker", "released"): Transitions._ready_released,
    ("no-worker", "waiting"): Transitions._ready_waiting,
    ("no-worker", "erred"): Transitions._dependency_erred,
    ("processing", "released"): Transitions._processing_released,
    ("processing", "waiting"): Transitions._processing_waiting,
    ("processing", "erred"): Transitions._dependency_erred,
    ("memory", "released"): Transitions._memory_released,
    ("erred", "released"): Transitions._erred_released,
    ("erred", "forgotten"): Transitions._released_forgotten,
}

#: targets of recommendations that may be overtaken by events; without a table
#: entry for the task's current state they are dropped instead of raising
_STALE_OK = frozenset({"waiting", "processing", "erred"})

#: every (start, finish) pair the engine accepts, for tests and docs
TRANSITIONS = frozenset(_TABLE)
