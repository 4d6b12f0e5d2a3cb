"""twofold.sim: the deterministic simulated cluster.

``SimCluster`` runs the real scheduler and worker state machines on virtual
time, with a network model, a duration model and faults (planned or drawn
from the seed); ``Client(cluster)`` uses it like any cluster.
"""

from twofold.sim.chaos import ChaosFailure, ChaosReport, chaos_test
from twofold.sim.cluster import SimCluster
from twofold.sim.faults import Fault
from twofold.sim.models import Exponential, LogNormal, TaskInfo, Uniform

__all__ = [
    "ChaosFailure",
    "ChaosReport",
    "Exponential",
    "Fault",
    "LogNormal",
    "SimCluster",
    "TaskInfo",
    "Uniform",
    "chaos_test",
]
