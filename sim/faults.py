"""Faults as data: planned by the user or drawn from the seed, applied on virtual time.

A fault plan is a list of :class:`Fault` records, so it can be printed,
replayed, and shrunk (the chaos-testing helpers hand plans to hypothesis).
Kinds:

=============  =============================================================
crash          the worker process dies at ``at`` (for good unless ``end``
               is set, when it comes back then, like a restart)
restart        dies at ``at`` and comes back ``restart_delay`` later
partition      the link ``target`` <-> ``peer`` is down from ``at`` to ``end``
slow           the worker (or the link to ``peer``) is ``factor`` x slower
               from ``at`` to ``end``
lose_data      the worker's data is wiped at ``at`` (the process lives on)
=============  =============================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from twofold.sim.cluster import SimCluster

KINDS = ("crash", "restart", "partition", "slow", "lose_data")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    target: str
    at: float
    end: float | None = None
    peer: str | None = None
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")
        if self.at < 0:
            raise ValueError(f"fault time must be >= 0, got {self.at}")
        if self.end is not None and self.end < self.at:
            raise ValueError(f"fault ends ({self.end}) before it starts ({self.at})")
        if self.kind == "partition" and (self.peer is None or self.end is None):
            raise ValueError("a partition needs a peer and an end time")
        if self.kind == "slow" and (self.end is None or self.factor <= 0):
            raise ValueError("a slow-down needs an end time and a factor > 0")


#: fault targets may name the scheduler symbolically, so plans replay on any cluster
SCHEDULER = "scheduler"


def apply(cluster: SimCluster, fault: Fault) -> None:
    """Schedule ``fault`` on the cluster's clock."""
    sim = cluster._sim
    clock = sim.clock
    if SCHEDULER in (fault.target, fault.peer):
        fault = Fault(
            fault.kind,
            sim.scheduler_address if fault.target == SCHEDULER else fault.target,
            fault.at,
            fault.end,
            sim.scheduler_address if fault.peer == SCHEDULER else fault.peer,
            fault.factor,
        )
    if fault.kind != "partition" and not (fault.kind == "slow" and fault.peer is not None):
        cluster._check_worker(fault.target)
    if fault.kind == "crash":
        clock.at(fault.at, _crash, cluster, fault.target, "crash")
        if fault.end is not None:
            clock.at(fault.end, _start, cluster, fault.target)
    elif fault.kind == "restart":
        clock.at(fault.at, _crash, cluster, fault.target, "restart")
        clock.at(fault.at + sim.restart_delay, _start, cluster, fault.target)
    elif fault.kind == "partition":
        pair = frozenset((fault.target, fault.peer))
        sim.network.partitions.append((pair, fault.at, fault.end))
        clock.at(fault.at, _note, cluster, "partition-start", fault.target, fault.peer, background=True)
        clock.at(fault.end, _note, cluster, "partition-end", fault.target, fault.peer, background=True)
    elif fault.kind == "slow":
        if fault.peer is not None:
            sim.network.slow_links.append((frozenset((fault.target, fault.peer)), fault.factor, fault.at, fault.end))
        else:
            sim.workers[fault.target].slow.append((fault.factor, fault.at, fault.end))
        clock.at(fault.at, _note, cluster, "slow", fault.target, f"x{fault.factor:g}", background=True)
    elif fault.kind == "lose_data":
        clock.at(fault.at, _lose, cluster, fault.target)


def _crash(cluster: SimCluster, address: str, why: str) -> None:
    host = cluster._sim.workers[address]
    if host.alive:
        cluster._sim.trace.fault_or_event(why, address)
        host.crash(why)


def _start(cluster: SimCluster, address: str) -> None:
    host = cluster._sim.workers[address]
    if not host.alive and not cluster._sim.closed:
        host.start()


def _lose(cluster: SimCluster, address: str) -> None:
    host = cluster._sim.workers[address]
    if host.alive:
        cluster._sim.trace.fault_or_event("lose_data", address)
        host.lose_data()


def _note(cluster: SimCluster, what: str, target: str, detail: str) -> None:
    cluster._sim.trace.fault_or_event(what, target, detail)


def draw_plan(rng: random.Random, workers: list[str], scheduler: str, rates: Mapping[str, float],
              horizon: float, restart_delay: float) -> list[Fault]:
    # (``scheduler`` is normally the symbolic SCHEDULER, so the plan replays on any cluster)
    """A random fault plan: each kind arrives as a Poisson process at its rate
    (per worker per virtual second) until ``horizon``."""
    unknown = set(rates) - set(KINDS) - {"delay", "max_delay", "horizon"}
    if unknown:
        raise ValueError(f"unknown chaos options {sorted(unknown)}; expected rates for {KINDS}, "
                         "'delay' (probability per message), 'max_delay' (seconds), 'horizon' (seconds)")
    plan: list[Fault] = []
    for kind in KINDS:
        rate = float(rates.get(kind, 0.0))
        if rate < 0:
            raise ValueError(f"chaos rate for {kind!r} must be >= 0")
        if rate == 0:
            continue
        for worker in workers:
            t = rng.expovariate(rate)
            while t < horizon:
                if kind == "crash":
                    plan.append(Fault("crash", worker, t, end=t + restart_delay + rng.expovariate(1.0)))
                elif kind == "restart":
                    plan.append(Fault("restart", worker, t))
                elif kind == "partition":
                    peer = rng.choice([scheduler] + [w for w in workers if w != worker])
                    plan.append(Fault("partition", worker, t, end=t + rng.expovariate(1.0), peer=peer))
                elif kind == "slow":
                    plan.append(Fault("slow", worker, t, end=t + rng.expovariate(0.5), factor=1 + rng.expovariate(0.5)))
                else:
                    plan.append(Fault("lose_data", worker, t))
                t += rng.expovariate(rate)
    plan.sort(key=lambda f: (f.at, f.kind, f.target))
    return plan
