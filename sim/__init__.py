"""twofold.sim: the deterministic simulated cluster.

``SimCluster`` runs the real scheduler and worker state machines on virtual
time, with a network model, a duration model and faults (planned or drawn
from the seed); ``Client(cluster)`` uses it like any cluster.
``twofold.sim.run(main())`` runs an async program on the simulation's clock.
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
    "VirtualTimeLoop",
    "chaos_test",
    "run",
]


def __getattr__(name: str):
    # the async pieces import asyncio: only when asked for
    if name in ("run", "VirtualTimeLoop"):
        from twofold.sim import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'twofold.sim' has no attribute {name!r}")
