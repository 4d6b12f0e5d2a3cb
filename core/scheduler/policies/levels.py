"""Graph levels for list schedulers: topological order, b-level, t-level.

Definitions as in Kwok & Ahmad, "Static scheduling algorithms for allocating
directed task graphs to multiprocessors", ACM Computing Surveys 31(4), 1999:

* the **b-level** of a task is the length of the longest path from it to an
  exit task, its own duration included (with ``comm``: plus the transfer
  time of each edge on the path, the data crossing at ``view.bandwidth``);
* the **t-level** is the length of the longest path from an entry task to
  it, its own duration excluded.

Computed over the tasks given (a newly submitted graph): an input outside
that set is already known to the scheduler and counts as available at
once.  Durations and sizes come from the view's information model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from twofold.scheduler.policies.view import SchedulerView
    from twofold.scheduler.state import TaskState


def topological(tasks: Iterable[TaskState]) -> list[TaskState]:
    """``tasks`` with every input before its dependents (Kahn; ties in the given order)."""
    members = dict.fromkeys(tasks)
    missing = {ts: sum(1 for dep in ts.dependencies if dep in members) for ts in members}
    order = [ts for ts, n in missing.items() if n == 0]
    i = 0
    while i < len(order):
        for dts in order[i].dependents:
            if dts in missing:
                missing[dts] -= 1
                if missing[dts] == 0:
                    order.append(dts)
        i += 1
    return order


def _edge(view: SchedulerView, ts: TaskState, comm: bool) -> float:
    return view.nbytes(ts) / view.bandwidth if comm else 0.0


def blevels(view: SchedulerView, tasks: Iterable[TaskState], comm: bool = False) -> dict[TaskState, float]:
    """Task -> b-level (see the module docstring)."""
    order = topological(tasks)
    level: dict[TaskState, float] = {}
    for ts in reversed(order):
        below = 0.0
        out = _edge(view, ts, comm)
        for dts in ts.dependents:
            b = level.get(dts)
            if b is not None and out + b > below:
                below = out + b
        level[ts] = view.duration(ts) + below
    return level


def tlevels(view: SchedulerView, tasks: Iterable[TaskState], comm: bool = False) -> dict[TaskState, float]:
    """Task -> t-level (see the module docstring)."""
    order = topological(tasks)
    level: dict[TaskState, float] = {}
    for ts in order:
        above = 0.0
        for dep in ts.dependencies:
            t = level.get(dep)
            if t is not None:
                t += view.duration(dep) + _edge(view, dep, comm)
                if t > above:
                    above = t
        level[ts] = above
    return level
