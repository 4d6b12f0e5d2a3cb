"""single: every task on one worker (the first to join that may run it).

Estee's "single" scheduler (Beránek, Böhm & Cima, J. Supercomputing 2022):
the sequential baseline, its makespan the sum of the durations (over a
worker's threads), with no data ever moved.  No queuing, no stealing.
"""

from __future__ import annotations

from twofold.scheduler.policies.base import Policy


class Single(Policy):
    """All on the earliest-joined valid worker."""

    name = "single"
    queuing = False
    narrow = False

    def decide_worker(self, view, ts, candidates):
        return min(candidates, key=lambda ws: ws.order, default=None)

    def stealer(self):
        return None
