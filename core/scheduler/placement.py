"""Placement policies: which worker runs a ready task.

A policy is any object with ``decide_worker(state, ts, candidates)``; the
scheduler has already narrowed ``candidates`` to workers the task may run on
(restrictions, resources) and, for tasks with inputs, to those holding some
of them (plus idle workers when the inputs are small).  This is the older
protocol, still accepted; new policies subclass
:class:`twofold.scheduler.policies.Policy`, which also decides ranks, root
queuing, greedy transfer and stealing, and reads a read-only view instead
of the machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

_INF = float("inf")

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState
    from twofold.scheduler.state import TaskState, WorkerInfo


class PlacementPolicy(Protocol):
    def decide_worker(
        self, state: SchedulerState, ts: TaskState, candidates: Iterable[WorkerInfo]
    ) -> WorkerInfo | None:
        """The worker to run ``ts`` on, or None to leave it unrunnable for now."""


class EarliestStart:
    """Pick the worker where the task would start soonest.

    Start time is estimated as queued work per thread (``occupancy /
    nthreads``) plus the time to move the inputs it does not already hold
    at ``config.bandwidth``.  Ties go to the worker that joined first, so
    the choice is deterministic.
    """

    def decide_worker(self, state, ts, candidates):
        bandwidth = state.config.bandwidth
        # bytes each holder already has, from the (few) holders of the inputs:
        # then a candidate costs one lookup, not one per input (candidates can
        # be every idle worker)
        total = 0
        held: dict = {}
        for dep in ts.dependencies:
            nbytes = dep.nbytes
            if nbytes > 0:
                total += nbytes
                for ws in dep.who_has:
                    held[ws] = held.get(ws, 0) + nbytes
        held_by = held.get
        best = None
        best_cost = best_order = _INF
        for ws in candidates:
            cost = ws.occupancy / ws.nthreads + (total - held_by(ws, 0)) / bandwidth
            if cost < best_cost or (cost == best_cost and ws.order < best_order):
                best, best_cost, best_order = ws, cost, ws.order
        return best


class RoundRobin:
    """Ignore load and data: cycle through candidates (a baseline for research)."""

    def __init__(self) -> None:
        self._turn = 0

    def decide_worker(self, state, ts, candidates):
        return take_turn(self, candidates)


def take_turn(policy, candidates):
    """The next candidate in join order after the one ``policy`` picked last (its ``_turn``)."""
    ordered = sorted(candidates, key=lambda ws: ws.order)
    if not ordered:
        return None
    choice = ordered[policy._turn % len(ordered)]
    policy._turn += 1
    return choice
