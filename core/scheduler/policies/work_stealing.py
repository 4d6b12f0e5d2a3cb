"""work stealing only: place without balancing, let idle workers steal.

Blumofe & Leiserson, "Scheduling multithreaded computations by work
stealing", Journal of the ACM 46(5), 1999; Estee's "ws" (Beránek, Böhm &
Cima, J. Supercomputing 2022).  A ready task goes where most of its input
bytes are (a root: to the first worker that joined), with no look at load
and no root-task queuing; balance comes only from the stealing component
(:class:`~twofold.scheduler.stealing.Stealing`: idle threads take the
lowest-priority queued tasks of overloaded workers).
"""

from __future__ import annotations

from twofold.scheduler.policies.base import Policy


class WorkStealing(Policy):
    """Data-local placement, balanced by stealing alone."""

    name = "work-stealing"
    queuing = False

    def decide_worker(self, view, ts, candidates):
        held: dict = {}
        for dep in ts.dependencies:
            for ws in dep.who_has:
                held[ws] = held.get(ws, 0) + max(dep.nbytes, 0)
        best = None
        best_key = None
        for ws in candidates:
            key = (-held.get(ws, 0), ws.order)
            if best_key is None or key < best_key:
                best, best_key = ws, key
        return best
