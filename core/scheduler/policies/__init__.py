"""Scheduling policies: the interface (:class:`Policy`, :class:`SchedulerView`,
information models) and the policies twofold ships, one module each.

    from twofold.scheduler.policies import HEFT, Given
    SimCluster(policy=HEFT(info=Given(durations={"load": 2.0})))

``POLICIES`` maps each shipped policy's short name to its class (what
``twofold scheduler --policy NAME`` accepts besides ``module:Name``).
"""

from twofold.scheduler.policies.base import Binding, Policy, check_policy
from twofold.scheduler.policies.blevel import BLevel
from twofold.scheduler.policies.default import Default
from twofold.scheduler.policies.dls import DLS
from twofold.scheduler.policies.etf import ETF
from twofold.scheduler.policies.heft import HEFT
from twofold.scheduler.policies.info import Estimates, Given, InfoModel
from twofold.scheduler.policies.list_scheduling import ListScheduler
from twofold.scheduler.policies.mcp import MCP
from twofold.scheduler.policies.random_choice import Random
from twofold.scheduler.policies.round_robin import RoundRobin
from twofold.scheduler.policies.single import Single
from twofold.scheduler.policies.tlevel import TLevel
from twofold.scheduler.policies.view import SchedulerView
from twofold.scheduler.policies.work_stealing import WorkStealing

__all__ = [
    "DLS", "ETF", "HEFT", "MCP", "POLICIES", "BLevel", "Binding", "Default", "Estimates", "Given", "InfoModel",
    "ListScheduler", "Policy", "check_policy", "Random", "RoundRobin", "SchedulerView", "Single", "TLevel", "WorkStealing",
]  # fmt: skip

#: short name -> policy class, for ``--policy NAME``
POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (Default, Random, RoundRobin, Single, WorkStealing, BLevel, TLevel, HEFT, MCP, ETF, DLS)
}
