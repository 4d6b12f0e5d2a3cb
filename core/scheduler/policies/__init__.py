"""Scheduling policies: the interface (:class:`Policy`, :class:`SchedulerView`,
information models) and the policies twofold ships, one module each.

    from twofold.scheduler.policies import HEFT, Given
    SimCluster(policy=HEFT(info=Given(durations={"load": 2.0})))

``POLICIES`` maps each shipped policy's short name to its class (what
``twofold scheduler --policy NAME`` accepts besides ``module:Name``).
"""

from twofold.scheduler.policies.base import Binding, Policy
from twofold.scheduler.policies.default import Default
from twofold.scheduler.policies.info import Estimates, Given, InfoModel
from twofold.scheduler.policies.view import SchedulerView

__all__ = ["POLICIES", "Binding", "Default", "Estimates", "Given", "InfoModel", "Policy", "SchedulerView"]

POLICIES: dict[str, type[Policy]] = {"default": Default}
