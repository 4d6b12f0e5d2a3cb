"""The collector's thresholds while simulations are open.

A simulation allocates millions of short-lived messages and keeps every
task's state alive until it is released.  With the default thresholds
(young collections every 700 allocations, older ones every 10 of those) the
collector traverses that growing state over and over: measured on 100,000
no-op tasks, ~15% of a run with the defaults, ~5% with young collections
every 50,000, and a further ~4% for the one older collection that building
a 100k-task graph with ``map`` sets off before the run starts.

So while at least one simulation is open the thresholds are
:data:`RUN_GC_THRESHOLDS`: cyclic garbage is still collected (young
collections every 500,000 allocations), older generations seldom.  The
thresholds that were in force come back when the last simulation closes,
unless someone changed them meanwhile; a collector switched off
(threshold 0) is left off.
"""

from __future__ import annotations

import gc

RUN_GC_THRESHOLDS = (500_000, 50, 1000)

_holders = 0
_saved: tuple[int, int, int] | None = None


def hold() -> None:
    """One more open simulation: the first switches to :data:`RUN_GC_THRESHOLDS`."""
    global _holders, _saved
    if _holders == 0:
        old = gc.get_threshold()
        _saved = old if old[0] and old != RUN_GC_THRESHOLDS else None
        if _saved is not None:
            gc.set_threshold(*RUN_GC_THRESHOLDS)
    _holders += 1


def release() -> None:
    """One simulation fewer: the last restores the thresholds it found."""
    global _holders, _saved
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _saved is not None:
        if gc.get_threshold() == RUN_GC_THRESHOLDS:  # not changed by anyone else meanwhile
            gc.set_threshold(*_saved)
        _saved = None


def relax() -> tuple[int, int, int]:
    """For the length of one run: switch to :data:`RUN_GC_THRESHOLDS` (unless
    the collector is off); return the thresholds to restore."""
    old = gc.get_threshold()
    if old[0]:
        gc.set_threshold(*RUN_GC_THRESHOLDS)
    return old
