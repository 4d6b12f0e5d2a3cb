"""Work stealing, the scheduler's first extension: idle threads take queued work
from overloaded workers.

Driven by a timer (``steal`` token) that is armed only while tasks are
processing, so an idle cluster schedules no timers.  On each tick, every
worker with idle threads (a thief) asks the most loaded worker (a victim,
more tasks than threads) to give up its lowest-priority waiting task; the
scheduler moves the task only once the victim confirms it had not started
it (``StealResponse(released=True)``).  A task is stolen only if moving its
inputs costs less than ``steal_cost_ratio`` times its expected duration.

It is an :class:`~twofold.scheduler.extension.Extension`, so a policy can
replace it (``SchedulerState(extensions=[...])`` without it: no stealing).
The machine keeps two hooks into it on the hot path, both cheap: assigning
a task arms the timer if it is not armed (:meth:`Stealing.arm`), and
unassigning a task with a steal request in flight forgets the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twofold.messages import StealRequest, StealResponse
from twofold.scheduler.extension import Extension
from twofold.scheduler.state import TaskState, WorkerInfo

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState

#: how many of a victim's newest tasks one tick looks at
_SCAN_LIMIT = 32


@dataclass(frozen=True, slots=True)
class StealingStatistics:
    name: str
    #: steal requests sent so far
    requested: int
    #: of those, how many moved their task
    moved: int
    #: requests awaiting the victim's answer
    in_flight: int


class Stealing(Extension):
    """Balance processing tasks between workers (see the module docstring)."""

    name = "stealing"
    timer_prefix = "steal"

    def __init__(self) -> None:
        #: tasks with a steal request in flight
        self.stealing: dict[TaskState, None] = {}
        #: a steal timer is pending
        self.armed = False
        self._requested = 0
        self._moved = 0

    def attach(self, state: SchedulerState) -> None:
        super().attach(state)
        state._stealer = self

    def handlers(self) -> dict:
        return {StealResponse: self._on_steal_response}

    # -- the timer ---------------------------------------------------------

    def arm(self) -> None:
        state = self.state
        interval = state.config.steal_interval
        if interval > 0 and len(state.workers) > 1:
            self.armed = True
            # background: a tick alone is not progress (a task blocked forever keeps the
            # timer going; the simulator must still call that run stalled)
            state._set_timer(state._now + interval, "steal", background=True)

    def on_timer(self, token: str, arg: str) -> None:
        self.armed = False
        self._balance()

    # -- reactions ---------------------------------------------------------

    def worker_added(self, ws: WorkerInfo) -> None:
        if not self.armed and any(w.processing for w in self.state.workers.values()):
            self.arm()  # the newcomer may take over queued work

    def worker_removed(self, ws: WorkerInfo) -> None:
        for ts in list(self.stealing):
            if ts.steal_to is ws:
                ts.steal_to = None
                del self.stealing[ts]

    def forget(self, ts: TaskState) -> None:
        """``ts`` left processing: its steal request (if any) is void."""
        ts.steal_to = None
        self.stealing.pop(ts, None)

    # -- balancing ---------------------------------------------------------

    def _balance(self) -> None:
        state = self.state
        workers = state.workers.values()
        if not any(ws.processing for ws in workers):
            return  # nothing running: let the timer lapse
        incoming: dict[WorkerInfo, int] = {}
        outgoing: dict[WorkerInfo, int] = {}
        for ts in self.stealing:
            incoming[ts.steal_to] = incoming.get(ts.steal_to, 0) + 1
            outgoing[ts.processing_on] = outgoing.get(ts.processing_on, 0) + 1
        thieves = [
            ws for ws in workers if ws.busy_count + incoming.get(ws, 0) < ws.nthreads
        ]
        if thieves:
            victims = [
                ws for ws in workers if ws.busy_count - outgoing.get(ws, 0) > ws.nthreads
            ]
            victims.sort(key=lambda ws: (-ws.occupancy / ws.nthreads, ws.order))
            for thief in thieves:
                free = thief.nthreads - thief.busy_count - incoming.get(thief, 0)
                for victim in victims:
                    while free > 0 and victim.busy_count - outgoing.get(victim, 0) > victim.nthreads:
                        ts = self._steal_candidate(victim, thief)
                        if ts is None:
                            break
                        ts.steal_to = thief
                        self.stealing[ts] = None
                        outgoing[victim] = outgoing.get(victim, 0) + 1
                        free -= 1
                        self._requested += 1
                        self.send(StealRequest(state._now, state._sid, victim.address, ts.key))
                    if free <= 0:
                        break
        self.arm()

    def _steal_candidate(self, victim: WorkerInfo, thief: WorkerInfo) -> TaskState | None:
        """The victim's lowest-priority task worth moving to ``thief``, if any."""
        state = self.state
        bandwidth = state.config.bandwidth
        ratio = state.config.steal_cost_ratio
        scanned = 0
        for ts in reversed(victim.processing):
            scanned += 1
            if scanned > _SCAN_LIMIT:
                break
            if ts.steal_to is not None or ts.long_running or ts.actor:
                continue
            valid = state.valid_workers(ts, strict_only=True)
            if valid is not None and thief not in valid:
                continue
            moved = sum(dep.nbytes for dep in ts.dependencies if thief not in dep.who_has and dep.nbytes > 0)
            if moved / bandwidth > ratio * ts.duration_estimate:
                continue
            return ts
        return None

    def _on_steal_response(self, event: StealResponse) -> None:
        state = self.state
        ts = state.tasks.get(event.key)
        ws = state.workers.get(event.worker)
        if ts is None or ws is None or ts.state != "processing" or ts.processing_on is not ws:
            return  # the task moved on meanwhile; a pending steal of it still stands
        thief = ts.steal_to
        ts.steal_to = None
        self.stealing.pop(ts, None)
        if not event.released:
            return
        self._moved += 1
        # the victim has forgotten the task: move it without another FreeKeys
        state._unassign(ts, free=False)
        ts.state = "waiting"
        state._room_changed(ws)
        if thief is not None and thief.address in state.workers:
            state._assign(ts, thief)
            if state._story is not None:
                state._log(ts, "processing")
        else:
            # the thief left meanwhile: place it afresh
            state._transitions({ts: "processing"})

    # -- inspection ----------------------------------------------------------

    def validate(self) -> None:
        workers = self.state.workers
        for ts in self.stealing:
            assert ts.state == "processing" and ts.steal_to is not None, f"stale steal of {ts.key!r}"
            assert workers.get(ts.steal_to.address) is ts.steal_to, f"steal of {ts.key!r} to a dead worker"

    def statistics(self) -> StealingStatistics:
        return StealingStatistics(self.name, self._requested, self._moved, len(self.stealing))
