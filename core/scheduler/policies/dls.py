"""DLS, "dynamic level scheduling".

Sih & Lee, "A compile-time scheduling heuristic for interconnection-
constrained heterogeneous processor architectures", IEEE Transactions on
Parallel and Distributed Systems 4(2), 1993.  The dynamic level of a task
on a processor is its static level (b-level, durations only) minus its
earliest start time there; each step schedules the (task, processor) pair
of the highest dynamic level.  (The heterogeneity term is zero: workers
here differ in threads, not speed.)

Here: placed as soon as it is ready (greedy transfer), a task goes where
its dynamic level is highest, i.e. where it starts soonest; without greedy
transfer, a worker whose thread frees takes, of all tasks waiting on the
scheduler, the one of highest dynamic level there.
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import blevels
from twofold.scheduler.policies.list_scheduling import ListScheduler

#: drop static levels of finished tasks once this many more are kept than tasks exist
_PRUNE_SLACK = 4096


class DLS(ListScheduler):
    """Highest static level minus earliest start, per (task, worker)."""

    name = "dls"

    def __init__(self, info=None, greedy_transfer=True) -> None:
        super().__init__(info, greedy_transfer)
        #: task -> static level (b-level)
        self._level: dict = {}

    def prioritize(self, view, tasks):
        levels = blevels(view, tasks)
        self._level.update(levels)
        if len(self._level) > _PRUNE_SLACK + len(view.tasks):
            self._level = {ts: b for ts, b in self._level.items() if ts.state != "forgotten"}
        return levels

    def pick(self, view, ws, waiting):
        level = self._level
        best = None
        best_key = None
        for ts in waiting:
            # (dynamic level, then priority); ``now`` is common to every start, so it cancels
            key = (view.transfer_time(ts, ws) - level.get(ts, 0.0), ts.priority)
            if best_key is None or key < best_key:
                best, best_key = ts, key
        return best
