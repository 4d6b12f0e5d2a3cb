"""blevel (HLFET, "highest level first with estimated times").

Adam, Chandy & Dickson, "A comparison of list schedules for parallel
processing systems", Communications of the ACM 17(12), 1974; as surveyed by
Kwok & Ahmad (ACM Computing Surveys 31(4), 1999) and simulated by Estee
(Beránek, Böhm & Cima, J. Supercomputing 2022) as "blevel".  Priority: the
static b-level (longest path to an exit, durations only); placement:
earliest start (:mod:`~twofold.scheduler.policies.list_scheduling`).
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import blevels
from twofold.scheduler.policies.list_scheduling import ListScheduler


class BLevel(ListScheduler):
    """Critical path first: highest b-level, placed where it starts soonest."""

    name = "blevel"

    def prioritize(self, view, tasks):
        return blevels(view, tasks)
