"""The default policy: earliest start, root-task queuing, work stealing.

What twofold (and dask.distributed, whose scheduler it follows) does
unless told otherwise: a ready task goes to the candidate worker where it
would start soonest (queued work per thread plus moving its inputs, see
:class:`~twofold.scheduler.placement.EarliestStart`); root tasks wait on
the scheduler while every worker is saturated
(``SchedulerConfig.worker_saturation``, dask's root-task queuing); idle
threads steal queued work (:class:`~twofold.scheduler.stealing.Stealing`).
"""

from __future__ import annotations

from twofold.scheduler.placement import EarliestStart
from twofold.scheduler.policies.base import Policy


class Default(Policy):
    """Earliest start + queuing + stealing: the machine's behaviour when no policy is given."""

    name = "default"
    # the very function EarliestStart runs (the view has the ``config`` it reads): no extra call
    decide_worker = EarliestStart.decide_worker
