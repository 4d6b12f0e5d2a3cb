"""SchedulerState: the pure scheduler.  ``handle(event) -> list[output]``.

The one entry point is :meth:`SchedulerState.handle`.  It dispatches on the
event's type to a handler (client events in ``clients.py``, worker events in
``workers.py``, work stealing in ``stealing.py``), which changes state through
the transition engine (``transitions.py``) and appends outputs.  Frees of
worker data are batched into one ``FreeKeys`` per worker per event.

No clocks, I/O or randomness: time comes from ``event.now``; timeouts are
``SetTimer`` outputs answered by ``TimerFired`` events.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, Iterable

from twofold.config import SchedulerConfig
from twofold.messages import FreeKeys, Message, SetTimer, TimerFired
from twofold.scheduler.clients import ClientHandlers
from twofold.scheduler.placement import EarliestStart, PlacementPolicy
from twofold.scheduler.state import ClientInfo, TaskState, WorkerInfo
from twofold.scheduler.stealing import Stealing
from twofold.scheduler.transitions import FIRE_AND_FORGET, Transitions
from twofold.scheduler.workers import WorkerHandlers
from twofold.taskqueue import TaskQueue


class SchedulerState(ClientHandlers, WorkerHandlers, Stealing, Transitions):
    """All the scheduler knows, changed only by :meth:`handle`."""

    def __init__(self, config: SchedulerConfig | None = None, policy: PlacementPolicy | None = None):
        self.config = config = config or SchedulerConfig()
        self.policy: PlacementPolicy = policy or EarliestStart()
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.workers_by_name: dict[str, WorkerInfo] = {}
        self.clients: dict[str, ClientInfo] = {FIRE_AND_FORGET: ClientInfo(FIRE_AND_FORGET)}
        #: root tasks waiting for room on a worker, by priority
        self.queued: TaskQueue[TaskState] = TaskQueue()
        #: ready tasks no current worker may run
        self.unrunnable: dict[TaskState, None] = {}
        #: workers that can take more root tasks
        self.room: dict[WorkerInfo, None] = {}
        #: task prefix -> smoothed duration (seconds)
        self.durations: dict[str, float] = {}
        #: tasks with a steal request in flight
        self._stealing: dict[TaskState, None] = {}
        #: pending timers: token -> due time
        self.timers: dict[str, float] = {}
        self._steal_armed = False
        self._queuing = math.isfinite(config.worker_saturation)
        self._unknown_duration = config.unknown_task_duration
        self._task_counter = 0
        self._run_counter = 0
        self._worker_counter = 0
        self._scatter_counter = 0
        self._pending_scatters: list = []
        #: SchedulerInfoRequests waiting for more workers, oldest first
        self._info_waiters: list = []
        self._story: deque | None = deque(maxlen=config.story_length) if config.story_length else None
        # per-event scratch
        self._now = 0.0
        self._sid = ""
        self._outs: list = []
        self._to_free: dict[WorkerInfo, list[str]] = {}

    # -- entry point -------------------------------------------------------

    def handle(self, event: Message) -> list:
        """Apply one event; return the outputs it causes, in order."""
        try:
            handler = _HANDLERS[type(event)]
        except KeyError:
            raise TypeError(f"SchedulerState cannot handle {type(event).__name__}") from None
        self._now = event.now
        self._sid = event.stimulus_id
        outs = self._outs = []
        handler(self, event)
        if self._to_free:
            self._flush_frees()
        return outs

    # -- output helpers ----------------------------------------------------

    def _free(self, ws: WorkerInfo, key: str) -> None:
        if ws.address in self.workers:
            frees = self._to_free.get(ws)
            if frees is None:
                self._to_free[ws] = [key]
            else:
                frees.append(key)

    def _flush_frees(self) -> None:
        now, sid, outs = self._now, self._sid, self._outs
        for ws, keys in self._to_free.items():
            if ws.address in self.workers:
                ws.free_seq += 1
                outs.append(FreeKeys(now, sid, ws.address, tuple(keys), ws.free_seq))
        self._to_free = {}

    def _flush_frees_for(self, ws: WorkerInfo) -> None:
        keys = self._to_free.pop(ws)
        ws.free_seq += 1
        self._outs.append(FreeKeys(self._now, self._sid, ws.address, tuple(keys), ws.free_seq))

    def _set_timer(self, at: float, token: str) -> None:
        self.timers[token] = at
        self._outs.append(SetTimer(self._now, self._sid, at, token))

    def _on_timer(self, event: TimerFired) -> None:
        token = event.token
        due = self.timers.get(token)
        if due is None or due > event.now:
            return  # cancelled, or superseded by a later one
        del self.timers[token]
        kind, _, arg = token.partition(":")
        if kind == "steal":
            self._steal_armed = False
            self._balance()
        elif kind == "ttl":
            self._check_worker_ttl(arg)

    def _log(self, ts: TaskState, start: str) -> None:
        self._story.append((ts.key, start, ts.state, self._sid, self._now))

    def story(self, *keys: str) -> list[tuple[str, str, str, str, float]]:
        """Recorded transitions ``(key, start, finish, stimulus_id, now)`` of these keys."""
        if self._story is None:
            return []
        wanted = set(keys)
        return [entry for entry in self._story if not wanted or entry[0] in wanted]

    # -- placement helpers -------------------------------------------------

    def _has_room(self, ws: WorkerInfo) -> bool:
        """Can ``ws`` take another root task from the queue?"""
        busy = len(ws.processing) - len(ws.long_running)
        if busy < ws.slots:
            return True
        config = self.config
        return (
            busy < ws.nthreads * config.max_tasks_per_thread
            and ws.occupancy < ws.nthreads * config.pipeline_seconds
        )

    def _room_changed(self, ws: WorkerInfo) -> None:
        """``ws`` lost a task: feed it from the queue, track whether it has room."""
        if ws.address not in self.workers:
            return
        # self._has_room(ws), inlined (once or twice per task)
        config = self.config
        busy = len(ws.processing) - len(ws.long_running)
        if busy < ws.slots or (
            busy < ws.nthreads * config.max_tasks_per_thread and ws.occupancy < ws.nthreads * config.pipeline_seconds
        ):
            queued = self.queued
            if queued:
                assign = self._assign
                story = self._story
                while queued:
                    ts = queued.pop()
                    assign(ts, ws)
                    if story is not None:
                        self._log(ts, "queued")
                    busy = len(ws.processing) - len(ws.long_running)
                    if not (busy < ws.slots or (
                        busy < ws.nthreads * config.max_tasks_per_thread
                        and ws.occupancy < ws.nthreads * config.pipeline_seconds
                    )):
                        self.room.pop(ws, None)
                        return
            self.room[ws] = None
        else:
            self.room.pop(ws, None)

    def _slots_for(self, nthreads: int) -> int:
        if not self._queuing:
            return 2**62
        return max(1, math.ceil(nthreads * self.config.worker_saturation))

    def valid_workers(self, ts: TaskState, strict_only: bool = False) -> dict[WorkerInfo, None] | None:
        """Workers ``ts`` may run on, or ``None`` for any worker.

        ``strict_only``: ignore ``workers=`` when it is only a preference
        (``allow_other_workers``), as work stealing does.
        """
        workers = ts.workers
        if workers is not None and strict_only and ts.allow_other_workers:
            workers = None
        if workers is None and not ts.resources:
            return None
        if workers is not None:
            allowed: dict[WorkerInfo, None] = {}
            for name in workers:
                ws = self.workers.get(name) or self.workers_by_name.get(name)
                if ws is not None:
                    allowed[ws] = None
            if not allowed and ts.allow_other_workers:
                allowed = dict.fromkeys(self.workers.values())
        else:
            allowed = dict.fromkeys(self.workers.values())
        if ts.resources:
            need = ts.resources.items()
            allowed = {
                ws: None for ws in allowed if all(ws.resources.get(r, 0) >= n for r, n in need)
            }
        return allowed

    def _decide_worker(self, ts: TaskState) -> WorkerInfo | None:
        valid = self.valid_workers(ts)
        candidates: Iterable[WorkerInfo]
        if ts.dependencies:
            holders: dict[WorkerInfo, None] = {}
            total = 0
            for dep in ts.dependencies:
                holders.update(dep.who_has)
                total += max(dep.nbytes, 0)
            if total <= self.config.bandwidth * 0.001:
                # cheap inputs: idle workers are fair game too
                holders.update(self.room)
            if valid is not None:
                candidates = [ws for ws in holders if ws in valid] or list(valid)
            else:
                candidates = holders or self.workers.values()
        elif valid is not None:
            candidates = valid
        else:
            candidates = self.room or self.workers.values()
        if not candidates:
            return None
        return self.policy.decide_worker(self, ts, candidates)

    # -- inspection --------------------------------------------------------

    def validate(self) -> None:
        """Raise AssertionError if any invariant is broken (see validate.py)."""
        from twofold.scheduler.validate import validate_scheduler

        validate_scheduler(self)

    def __repr__(self) -> str:
        return (
            f"<SchedulerState tasks={len(self.tasks)} workers={len(self.workers)}"
            f" clients={len(self.clients) - 1} queued={len(self.queued)}>"
        )


_HANDLERS: dict[type, Callable[[Any, Any], None]] = {}
_HANDLERS.update(ClientHandlers.handlers())
_HANDLERS.update(WorkerHandlers.handlers())
_HANDLERS[TimerFired] = SchedulerState._on_timer
