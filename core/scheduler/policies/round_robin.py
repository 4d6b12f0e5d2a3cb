"""round robin: ready tasks to the workers in turn, ignoring load and data.

The textbook baseline (as in any operating-systems text; a foil for
load- and locality-aware placement).  Every valid worker is a candidate,
in arrival order; no queuing, no stealing.  (The older
``twofold.scheduler.placement.RoundRobin`` cycles through the machine's
narrowed short list instead.)
"""

from __future__ import annotations

from twofold.scheduler.placement import take_turn
from twofold.scheduler.policies.base import Policy


class RoundRobin(Policy):
    """The i-th ready task goes to the (i mod n)-th valid worker."""

    name = "round-robin"
    queuing = False
    narrow = False

    def __init__(self) -> None:
        self._turn = 0

    def decide_worker(self, view, ts, candidates):
        return take_turn(self, candidates)

    def stealer(self):
        return None
