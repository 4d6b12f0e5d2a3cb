"""MCP, "modified critical path".

Wu & Gajski, "Hypertool: a programming aid for message-passing systems",
IEEE Transactions on Parallel and Distributed Systems 1(3), 1990.  Each
task's ALAP time (as late as possible: the critical-path length minus its
b-level, communication included) is its priority, smallest first; ties are
broken by the ALAP times of its descendants, compared as sorted lists
(here the :data:`_TIE_DEPTH` smallest, so a large graph costs linear
memory).  Placement: earliest start (the paper's insertion into idle slots is not
modelled).
"""

from __future__ import annotations

from twofold.scheduler.policies.levels import blevels, topological
from twofold.scheduler.policies.list_scheduling import ListScheduler

#: how many descendants' ALAP times break a tie
_TIE_DEPTH = 32


class MCP(ListScheduler):
    """Smallest ALAP time first (ties: descendants' ALAP times), placed where it starts soonest."""

    name = "mcp"

    def prioritize(self, view, tasks):
        b = blevels(view, tasks, comm=True)
        if not b:
            return None
        critical = max(b.values())
        alap = {ts: critical - level for ts, level in b.items()}
        # each task's own ALAP followed by its descendants', sorted (Wu & Gajski's tie-break)
        # (ALAP, submission counter) of the smallest descendants, per task
        below: dict = {}
        for ts in reversed(topological(b)):
            seen: dict = {}
            for dts in ts.dependents:
                if dts in below:
                    seen[(alap[dts], dts.priority[1])] = None
                    seen.update(dict.fromkeys(below[dts]))
            below[ts] = sorted(seen)[:_TIE_DEPTH]
        order = sorted(b, key=lambda ts: (alap[ts], [a for a, _ in below[ts]], ts.priority[1]))
        n = len(order)
        return {ts: float(n - i) for i, ts in enumerate(order)}
