"""Scheduler handlers for what workers send, and for losing workers.

A worker's report about a task it is not (or no longer) processing is stale:
it is ignored, and the worker told to forget the key when that helps.  When
a worker goes, its processing tasks start over elsewhere (counting a failure
each; past ``allowed_failures`` they err with ``KilledWorker``) and results
only it held are recomputed if still needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.messages import (
    AddReplicas,
    AddWorker,
    CloseWorker,
    LongRunning,
    MissingData,
    RefreshWhoHas,
    RemoveReplicas,
    RemoveWorker,
    RescheduleTask,
    TaskErred,
    TaskError,
    TaskFinished,
    WorkerHeartbeat,
)
from twofold.scheduler.state import TaskState, WorkerInfo
from twofold.scheduler.transitions import Recs

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState


class WorkerHandlers:
    """Mixin of :class:`~twofold.scheduler.SchedulerState`."""

    @classmethod
    def handlers(cls) -> dict:
        return {
            AddWorker: cls._on_add_worker,
            RemoveWorker: cls._on_remove_worker,
            WorkerHeartbeat: cls._on_heartbeat,
            TaskFinished: cls._on_task_finished,
            TaskErred: cls._on_task_erred,
            AddReplicas: cls._on_add_replicas,
            LongRunning: cls._on_long_running,
            RescheduleTask: cls._on_reschedule,
            MissingData: cls._on_missing_data,
        }

    # -- membership --------------------------------------------------------

    def _on_add_worker(self: SchedulerState, event: AddWorker) -> None:
        if event.nthreads < 1:
            self._outs.append(
                CloseWorker(self._now, self._sid, event.worker, f"nthreads must be >= 1, got {event.nthreads}")
            )
            return
        if event.worker in self.workers:
            self._remove_worker(self.workers[event.worker])
        self._worker_counter += 1
        ws = WorkerInfo(
            event.worker,
            event.nthreads,
            event.resources,
            event.memory_limit,
            event.name,
            event.now,
            self._slots_for(event.nthreads),
            self._worker_counter,
        )
        self.workers[ws.address] = ws
        if event.name is not None:
            self.workers_by_name[event.name] = ws
        self._set_timer(event.now + self.config.worker_ttl, f"ttl:{ws.address}")
        self._room_changed(ws)
        if self.unrunnable:
            recs: Recs = dict.fromkeys(self.unrunnable, "processing")
            self._transitions(recs)
        for hook in self._hooks_worker_added:
            hook(ws)
        if self._pending_scatters:
            pending, self._pending_scatters = self._pending_scatters, []
            for request in pending:
                self._on_scatter_request(request)
        if self._info_waiters:
            self._answer_info_waiters()

    def _on_remove_worker(self: SchedulerState, event: RemoveWorker) -> None:
        ws = self.workers.get(event.worker)
        if ws is not None:
            self._remove_worker(ws)

    def _on_heartbeat(self: SchedulerState, event: WorkerHeartbeat) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            self._outs.append(
                CloseWorker(self._now, self._sid, event.worker, "unknown worker: register again")
            )
            return
        ws.last_seen = event.now
        ws.memory = event.memory

    def _check_worker_ttl(self: SchedulerState, address: str) -> None:
        ws = self.workers.get(address)
        if ws is None:
            return
        ttl = self.config.worker_ttl
        if self._now - ws.last_seen >= ttl:
            self._remove_worker(ws)
            self._outs.append(
                CloseWorker(self._now, self._sid, address, f"no heartbeat for {ttl:g} seconds")
            )
        else:
            self._set_timer(ws.last_seen + ttl, f"ttl:{address}")

    def _remove_worker(self: SchedulerState, ws: WorkerInfo) -> None:
        """The worker is gone: its data is lost, its tasks start over elsewhere.

        Order matters: first the worker stops being a holder of anything (so
        no placement can pick it), lost results are released (recomputed if
        still needed), then its processing tasks are counted and rescheduled,
        and only then do the accumulated recommendations run.
        """
        del self.workers[ws.address]
        if self.workers_by_name.get(ws.name) is ws:
            del self.workers_by_name[ws.name]
        self.room.pop(ws, None)
        self.timers.pop(f"ttl:{ws.address}", None)
        self._to_free.pop(ws, None)
        for hook in self._hooks_worker_removed:
            hook(ws)
        recs: Recs = {}
        lost = []
        for ts in ws.has_what:
            del ts.who_has[ws]
            if not ts.who_has:
                lost.append(ts)
        ws.has_what.clear()
        ws.nbytes = 0
        for ts in lost:
            self._transition(ts, "released", recs)
        allowed = self.config.allowed_failures
        for ts in list(ws.processing):
            ts.suspicious += 1
            if ts.suspicious > allowed:
                self._fail(
                    ts,
                    TaskError(
                        "KilledWorker",
                        f"Attempted to run task {ts.key!r} on {ts.suspicious} different workers,"
                        f" but all those workers died while running it. The last worker that"
                        f" attempted to run the task was {ws.address}.",
                    ),
                    ts.key,
                    recs,
                )
            elif ts.who_wants or ts.waiters:
                self._transition(ts, "waiting", recs)
            else:
                self._transition(ts, "released", recs)
        self._transitions(recs)

    # -- task results ------------------------------------------------------

    def _learn_duration(self: SchedulerState, ts: TaskState, start: float, stop: float) -> None:
        if stop > start:
            elapsed = stop - start
            old = self.durations.get(ts.prefix)
            if old is None:
                self.durations[ts.prefix] = elapsed
            else:
                alpha = self.config.duration_smoothing
                self.durations[ts.prefix] = old + alpha * (elapsed - old)

    def _on_task_finished(self: SchedulerState, event: TaskFinished) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            return  # from a worker we already removed
        ts = self.tasks.get(event.key)
        if ts is None:
            self._free(ws, event.key)
            return
        state = ts.state
        run_id = event.run_id
        if run_id >= 0 and run_id != ts.run_id:
            # a run we abandoned (its FreeKeys is on its way): not this run's result
            return
        if state == "processing" and ts.processing_on is ws:
            # self._learn_duration(ts, event.start, event.stop), inlined (once per task)
            start = event.start
            stop = event.stop
            if stop > start:
                elapsed = stop - start
                durations = self.durations
                old = durations.get(ts.prefix)
                if old is None:
                    durations[ts.prefix] = elapsed
                else:
                    durations[ts.prefix] = old + self.config.duration_smoothing * (elapsed - old)
            recs: Recs = {}
            self._processing_memory(ts, ws, event.nbytes, event.typename, event.inline, recs)
            if recs:
                self._transitions(recs)
            if self._hooks_task_done:
                for hook in self._hooks_task_done:
                    hook(ts, ws.address, start, stop, True)
        elif state == "memory":
            if ws not in ts.who_has:
                ts.who_has[ws] = None
                ws.has_what[ts] = None
                ws.nbytes += ts.nbytes
        else:
            self._free(ws, event.key)

    def _on_task_erred(self: SchedulerState, event: TaskErred) -> None:
        ws = self.workers.get(event.worker)
        ts = self.tasks.get(event.key)
        if ws is None or ts is None or ts.state != "processing" or ts.processing_on is not ws:
            return  # stale: the worker forgets erred tasks by itself
        if event.run_id >= 0 and event.run_id != ts.run_id:
            return  # from a run we abandoned
        recs: Recs = {}
        if ts.retries > 0:
            ts.retries -= 1
            self._transition(ts, "waiting", recs)
        else:
            self._learn_duration(ts, event.start, event.stop)
            self._fail(ts, event.error, ts.key, recs, free=False)
        self._transitions(recs)
        for hook in self._hooks_task_done:
            hook(ts, ws.address, event.start, event.stop, False)

    def _on_reschedule(self: SchedulerState, event: RescheduleTask) -> None:
        ws = self.workers.get(event.worker)
        ts = self.tasks.get(event.key)
        if ws is None or ts is None or ts.state != "processing" or ts.processing_on is not ws:
            return
        recs: Recs = {}
        self._transition(ts, "waiting", recs)
        self._transitions(recs)

    def _on_long_running(self: SchedulerState, event: LongRunning) -> None:
        ws = self.workers.get(event.worker)
        ts = self.tasks.get(event.key)
        if ws is None or ts is None or ts.processing_on is not ws or ts.long_running:
            return
        ts.long_running = True
        ws.long_running[ts] = None
        ws.occupancy = max(ws.occupancy - ts.duration_estimate, 0.0)
        self._room_changed(ws)

    # -- replicas and missing data -----------------------------------------

    def _on_add_replicas(self: SchedulerState, event: AddReplicas) -> None:
        ws = self.workers.get(event.worker)
        if ws is None:
            return
        stale = []
        for key, nbytes in event.nbytes.items():
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "processing" and ts.processing_on is ws:
                continue  # we asked this worker to compute it: it will answer from memory
            if ts is None or ts.state != "memory" or ts.actor:
                stale.append(key)
            elif ws not in ts.who_has:
                ts.who_has[ws] = None
                ws.has_what[ts] = None
                ws.nbytes += ts.nbytes
        if stale:
            ws.free_seq += 1
            self._outs.append(RemoveReplicas(self._now, self._sid, ws.address, tuple(stale), ws.free_seq))
        for hook in self._hooks_replicas_added:
            hook(ws, tuple(event.nbytes))

    def _on_missing_data(self: SchedulerState, event: MissingData) -> None:
        ts = self.tasks.get(event.key)
        if ts is None:
            return
        errant = self.workers.get(event.errant_worker)
        recs: Recs = {}
        if errant is not None and errant in ts.who_has:
            del ts.who_has[errant]
            del errant.has_what[ts]
            errant.nbytes -= ts.nbytes
            if not ts.who_has:
                self._transition(ts, "released", recs)
                self._transitions(recs)
        if ts.state == "memory" and event.reporter in self.workers:
            holders = tuple(ws.address for ws in ts.who_has)
            self._outs.append(RefreshWhoHas(self._now, self._sid, event.reporter, {ts.key: holders}))
