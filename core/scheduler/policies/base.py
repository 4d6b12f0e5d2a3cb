"""The policy interface: what a scheduling policy decides, and how the machine asks.

A policy is a :class:`Policy` subclass instance.  The machine builds one
read-only :class:`~twofold.scheduler.policies.view.SchedulerView` when it
is constructed and passes it to every call, so a decision costs no more
than a method call.  A policy decides:

* **where** a ready task runs: :meth:`Policy.decide_worker` (a worker of
  ``candidates``, or None: "not yet", the task waits as ``no-worker``
  until the cluster changes);
* **in which order** ready tasks are handed out (and run on a worker):
  :meth:`Policy.prioritize`, called once per submitted graph before any
  of its tasks is placed (user ``priority=`` still comes first);
* **whether root tasks wait** on the scheduler while every worker is
  saturated: ``queuing`` (None: as ``SchedulerConfig.worker_saturation``
  says);
* **when inputs move**: ``greedy_transfer`` (True: a task goes to its
  worker, which starts fetching its inputs, as soon as it is ready; False:
  every unrestricted ready task waits on the scheduler until some worker
  has a free thread, and is placed then);
* **which waiting task a freed worker takes**: :meth:`Policy.pick`
  (default: the first by priority), for tasks withheld on the scheduler;
* **whether and what to steal**: :meth:`Policy.stealer`, an
  :class:`~twofold.scheduler.extension.Extension` (the default
  :class:`~twofold.scheduler.stealing.Stealing`) or None.

``narrow``: True hands :meth:`decide_worker` the machine's short list
(workers holding an input, plus workers with room when the inputs are
small: cheap on 1,000 workers); False hands it every worker the task may
run on, as list schedulers need.

The older protocol, any object with ``decide_worker(state, ts,
candidates)`` (``EarliestStart``, ``RoundRobin`` in ``placement.py``),
still works: such an object gets the machine itself, narrowed
candidates, queuing and stealing as configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from twofold.scheduler.policies.info import check_info

if TYPE_CHECKING:
    from twofold.scheduler.extension import Extension
    from twofold.scheduler.policies.view import SchedulerView
    from twofold.scheduler.state import TaskState, WorkerInfo


class Policy:
    """Base class of scheduling policies: override what you decide."""

    #: a short name (``twofold scheduler --policy NAME``, reports)
    name = "policy"
    #: withhold root tasks while workers are saturated (None: ``worker_saturation`` decides)
    queuing: bool | None = None
    #: candidates are the machine's short list (True) or every valid worker (False)
    narrow = True
    #: hand a ready task out at once (True) or only when a worker has a free thread (False)
    greedy_transfer = True
    #: the information model durations and sizes come from (None: the scheduler's estimates)
    info: Any = None

    def decide_worker(
        self, view: SchedulerView, ts: TaskState, candidates: Iterable[WorkerInfo]
    ) -> WorkerInfo | None:
        """The worker of ``candidates`` to run ``ts`` on, or None to keep it waiting."""
        raise NotImplementedError(f"{type(self).__name__} must define decide_worker(view, ts, candidates)")

    def prioritize(self, view: SchedulerView, tasks: list[TaskState]) -> dict[TaskState, float] | None:
        """Ranks of a graph's new tasks (higher first), or None to keep submission order.

        Called once per graph, before any of ``tasks`` is placed; the ranks
        reorder the tasks only among equal user ``priority=``."""
        return None

    def pick(self, view: SchedulerView, ws: WorkerInfo, waiting: Iterable[TaskState]) -> TaskState | None:
        """Which of the tasks withheld on the scheduler ``ws`` takes now that it has
        room (None: the first by priority).  ``waiting`` is in no particular order;
        every one of them may run on ``ws``.  Overriding it costs a scan per hand-out."""
        return None

    def stealer(self) -> Extension | None:
        """The stealing component to run (None: no stealing); called once per machine."""
        from twofold.scheduler.stealing import Stealing

        return Stealing()

    def attach(self, view: SchedulerView) -> None:
        """Called once, when a machine adopts this policy (it may keep ``view``)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass(frozen=True, slots=True)
class Binding:
    """What the machine takes from a policy, resolved once (nothing is looked up per task)."""

    policy: Any
    #: ``decide(arg, ts, candidates)``
    decide: Any
    #: the view (a :class:`Policy`) or the machine itself (the older protocol)
    arg: Any
    queuing: bool | None
    narrow: bool
    greedy: bool
    #: the bound ``prioritize``, or None when the policy keeps submission order
    prioritize: Any
    #: the bound ``pick``, or None when the queue's first goes
    pick: Any
    #: makes the stealing extension (None: no stealing)
    stealer: Any


def check_policy(policy: Any) -> None:
    """Raise a clear TypeError unless ``policy`` is usable (a :class:`Policy` or an
    object of the older protocol); drivers call it before starting anything."""
    if isinstance(policy, type):
        raise TypeError(f"policy must be an instance, got the class {policy.__name__}: pass {policy.__name__}()")
    if not callable(getattr(policy, "decide_worker", None)):
        raise TypeError(
            f"a scheduling policy needs a decide_worker(view, ts, candidates) method;"
            f" {type(policy).__name__} has none (subclass twofold.scheduler.policies.Policy)"
        )
    if not isinstance(policy, Policy):
        return
    name = type(policy).__name__
    if type(policy).decide_worker is Policy.decide_worker:
        raise TypeError(f"{name} must define decide_worker(view, ts, candidates)")
    if policy.queuing not in (None, True, False):
        raise TypeError(f"{name}.queuing must be None, True or False, got {policy.queuing!r}")
    for flag in ("narrow", "greedy_transfer"):
        if not isinstance(getattr(policy, flag), bool):
            raise TypeError(f"{name}.{flag} must be True or False, got {getattr(policy, flag)!r}")
    if policy.info is not None:
        check_info(policy.info)


def bind(state: Any, policy: Any, view: SchedulerView) -> Binding:
    """Check ``policy`` and resolve what the machine calls (a clear TypeError if it cannot)."""
    check_policy(policy)
    if not isinstance(policy, Policy):
        # the older protocol: decide_worker(state, ts, candidates), defaults for the rest
        from twofold.scheduler.stealing import Stealing

        return Binding(policy, policy.decide_worker, state, None, True, True, None, None, Stealing)
    prioritize = policy.prioritize if type(policy).prioritize is not Policy.prioritize else None
    pick = policy.pick if type(policy).pick is not Policy.pick else None
    policy.attach(view)
    return Binding(policy, policy.decide_worker, view, policy.queuing, policy.narrow, policy.greedy_transfer,
                   prioritize, pick, policy.stealer)
