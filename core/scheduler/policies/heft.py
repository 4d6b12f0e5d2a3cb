"""HEFT, "heterogeneous earliest finish time".

Topcuoglu, Hariri & Wu, "Performance-effective and low-complexity task
scheduling for heterogeneous computing", IEEE Transactions on Parallel and
Distributed Systems 13(3), 2002.  Priority: the upward rank, a b-level with
the mean communication cost of each edge (here: its size over
``view.bandwidth``); placement: the worker where the task *finishes*
earliest.  The paper's insertion into idle gaps of a processor's schedule
is not modelled (workers run their queue in priority order), and workers
differ in threads, not in speed, so finish order equals start order.
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import blevels
from twofold.scheduler.policies.list_scheduling import ListScheduler


class HEFT(ListScheduler):
    """Upward rank (with communication) first, placed where it finishes soonest."""

    name = "heft"
    by_finish = True

    def prioritize(self, view, tasks):
        return blevels(view, tasks, comm=True)
