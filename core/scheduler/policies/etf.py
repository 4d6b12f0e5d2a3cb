"""ETF, "earliest time first".

Hwang, Chow, Anger & Lee, "Scheduling precedence graphs in systems with
interprocessor communication times", SIAM Journal on Computing 18(2), 1989.
At each step ETF takes, over every ready task and every processor, the pair
with the earliest start time, ties broken by the higher static b-level.

Here: a ready task placed as soon as it is ready (greedy transfer) goes to
its earliest-start worker, ready tasks taken in b-level order, which is the
pair choice restricted to one task at a time; without greedy transfer the
pair choice is real: when a worker's thread frees, of all tasks waiting on
the scheduler it takes the one that can start there earliest (its inputs
already there, or the least to move), ties to the higher b-level.
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import blevels
from twofold.scheduler.policies.list_scheduling import ListScheduler


class ETF(ListScheduler):
    """Earliest (task, worker) start first; ties: higher b-level."""

    name = "etf"

    def prioritize(self, view, tasks):
        return blevels(view, tasks)

    def pick(self, view, ws, waiting):
        best = None
        best_key = None
        for ts in waiting:
            key = (view.transfer_time(ts, ws), ts.priority)  # priority: b-level order, then submission
            if best_key is None or key < best_key:
                best, best_key = ts, key
        return best
