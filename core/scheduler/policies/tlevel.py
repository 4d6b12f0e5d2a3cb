"""tlevel: smallest t-level first.

The t-level (the longest path from an entry task, a task's earliest
possible start) as a priority, as in Kwok & Ahmad's survey (ACM Computing
Surveys 31(4), 1999) and Estee's "tlevel" (Beránek, Böhm & Cima,
J. Supercomputing 2022): tasks that could start earliest go first; it
ignores what remains below a task, so it can starve the critical path.
Placement: earliest start.
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import tlevels
from twofold.scheduler.policies.list_scheduling import ListScheduler


class TLevel(ListScheduler):
    """Earliest possible start first: lowest t-level, placed where it starts soonest."""

    name = "tlevel"

    def prioritize(self, view, tasks):
        return {ts: -level for ts, level in tlevels(view, tasks).items()}
