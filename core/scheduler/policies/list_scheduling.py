"""What the classic list schedulers share: rank once, then place by earliest start.

A list scheduler (Kwok & Ahmad 1999, section 4) gives every task a
priority, then takes ready tasks highest priority first and puts each on
the processor where it starts (or finishes) earliest.  Here the ranks are
computed when a graph is submitted (:meth:`Policy.prioritize`; they also
order each worker's queue), a ready task is placed as soon as it is ready,
over every worker it may run on, and the estimate of its start on a worker
is

    max(when the worker has a free thread, when its missing inputs arrive)

with the worker's queued work divided over its threads and the inputs
moving at ``view.bandwidth``; durations and sizes from the policy's
information model.  Ties go to the worker that joined first.

Each list scheduler exists with and without *greedy transfer* (Beránek,
Böhm & Cima, "Analysis of workflow schedulers in simulated distributed
environments", J. Supercomputing 2022): with it (the default) a task is
sent to its worker as soon as it is ready, and the worker fetches its
inputs meanwhile; without it (``greedy_transfer=False``) it waits on the
scheduler until some worker has a free thread, and only then is placed and
its inputs moved.  No work stealing, no root-task queuing: what is studied
is the list scheduler alone.
"""

from __future__ import annotations

from heapq import heapreplace
from typing import TYPE_CHECKING, Any

from twofold.scheduler.policies.base import Policy

if TYPE_CHECKING:
    from twofold.scheduler.policies.view import SchedulerView
    from twofold.scheduler.state import TaskState, WorkerInfo

_INF = float("inf")
#: prune the table of expected starts once it holds this many entries more than tasks processing
_PRUNE_SLACK = 4096


def free_at(view: SchedulerView, ws: WorkerInfo, ts: TaskState, started: dict) -> float:
    """When a thread of ``ws`` is expected to be free for ``ts``.

    Each of its threads is busy until its running tasks end (a task is
    taken as running from the start expected when it was placed); its
    queued tasks of higher priority than ``ts`` run first; those of lower
    priority wait behind ``ts`` (a worker runs its queue by priority)."""
    threads = ws.nthreads
    busy = len(ws.processing) - len(ws.long_running)
    now = view.now
    if busy < threads:
        return now
    ends = [now] * threads
    queued = []
    priority = ts.priority
    for other in ws.processing:
        if other.long_running:
            continue
        start = started.get(other, now)
        if start <= now:
            heapreplace(ends, max(start + view.duration(other), now))
        elif other.priority < priority:
            queued.append((other.priority, other))
    if queued:
        queued.sort(key=_first)
        for _, other in queued:
            heapreplace(ends, ends[0] + view.duration(other))
    return ends[0]


def _first(item: tuple) -> Any:
    return item[0]


class ListScheduler(Policy):
    """Base of the list schedulers: subclasses define :meth:`prioritize`."""

    name = "list"
    queuing = False
    narrow = False
    #: place by earliest finish (HEFT) rather than earliest start
    by_finish = False

    def __init__(self, info: Any = None, greedy_transfer: bool = True) -> None:
        if not isinstance(greedy_transfer, bool):
            raise TypeError(f"greedy_transfer must be True or False, got {greedy_transfer!r}")
        self.info = info
        self.greedy_transfer = greedy_transfer
        #: task -> the start expected when it was placed (while it is processing)
        self._started: dict = {}

    def decide_worker(self, view, ts, candidates):
        """The candidate where ``ts`` starts (HEFT: finishes) soonest; ties by arrival."""
        started = self._started
        best = None
        best_time = best_order = best_start = _INF
        now = view.now
        duration = view.duration(ts) if self.by_finish else 0.0
        for ws in candidates:
            start = max(free_at(view, ws, ts, started), now + view.transfer_time(ts, ws))
            end = start + duration
            if end < best_time or (end == best_time and ws.order < best_order):
                best, best_time, best_order, best_start = ws, end, ws.order, start
        if best is not None:
            started[ts] = best_start
            if len(started) > _PRUNE_SLACK + len(view.tasks):
                self._prune(view)
        return best

    def _prune(self, view) -> None:
        self._started = {ts: t for ts, t in self._started.items() if ts.state == "processing"}

    def stealer(self):
        return None

    def __repr__(self) -> str:
        greedy = "" if self.greedy_transfer else " greedy_transfer=False"
        return f"<{type(self).__name__} {self.name!r}{greedy}>"
