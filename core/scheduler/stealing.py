"""Work stealing: idle threads take queued work from overloaded workers.

Driven by a timer (``steal`` token) that is armed only while tasks are
processing, so an idle cluster schedules no timers.  On each tick, every
worker with idle threads (a thief) asks the most loaded worker (a victim,
more tasks than threads) to give up its lowest-priority waiting task; the
scheduler moves the task only once the victim confirms it had not started
it (``StealResponse(released=True)``).  A task is stolen only if moving its
inputs costs less than ``steal_cost_ratio`` times its expected duration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.messages import StealRequest
from twofold.scheduler.state import TaskState, WorkerInfo

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState

#: how many of a victim's newest tasks one tick looks at
_SCAN_LIMIT = 32


class Stealing:
    """Mixin of :class:`~twofold.scheduler.SchedulerState`."""

    def _arm_stealing(self: SchedulerState) -> None:
        interval = self.config.steal_interval
        if interval > 0 and len(self.workers) > 1:
            self._steal_armed = True
            self._set_timer(self._now + interval, "steal")

    def _balance(self: SchedulerState) -> None:
        workers = self.workers.values()
        if not any(ws.processing for ws in workers):
            return  # nothing running: let the timer lapse
        incoming: dict[WorkerInfo, int] = {}
        outgoing: dict[WorkerInfo, int] = {}
        for ts in self._stealing:
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
                        self._stealing[ts] = None
                        outgoing[victim] = outgoing.get(victim, 0) + 1
                        free -= 1
                        self._outs.append(StealRequest(self._now, self._sid, victim.address, ts.key))
                    if free <= 0:
                        break
        self._arm_stealing()

    def _steal_candidate(self: SchedulerState, victim: WorkerInfo, thief: WorkerInfo) -> TaskState | None:
        """The victim's lowest-priority task worth moving to ``thief``, if any."""
        bandwidth = self.config.bandwidth
        ratio = self.config.steal_cost_ratio
        scanned = 0
        for ts in reversed(victim.processing):
            scanned += 1
            if scanned > _SCAN_LIMIT:
                break
            if ts.steal_to is not None or ts.long_running or ts.actor:
                continue
            valid = self.valid_workers(ts, strict_only=True)
            if valid is not None and thief not in valid:
                continue
            moved = sum(dep.nbytes for dep in ts.dependencies if thief not in dep.who_has and dep.nbytes > 0)
            if moved / bandwidth > ratio * ts.duration_estimate:
                continue
            return ts
        return None
