"""The scheduler's extension seam: scheduler-side features that own their state.

Work stealing, the coordination primitives (locks, queues, ...) and what
comes after them (datasets, events, plugins) are each an :class:`Extension`:

* it owns its state and declares the message types it handles
  (:meth:`Extension.handlers`) and the prefix of its timer tokens
  (``timer_prefix``: a token ``"<prefix>"`` or ``"<prefix>:<arg>"`` comes
  back to :meth:`Extension.on_timer`);
* it may react to the cluster changing: :meth:`worker_added`,
  :meth:`worker_removed`, :meth:`client_removed`, :meth:`graph_added`, to
  every task transition (:meth:`transition`), every finished run
  (:meth:`task_done`) and new copies of data (:meth:`replicas_added`); the per-task hooks cost a call only for the
  extensions that override them;
* it has :meth:`validate` (raise AssertionError on a broken invariant; the
  scheduler's ``validate()`` calls it) and :meth:`statistics` (a frozen
  snapshot, for tests and dashboards).

An extension changes the world only through the machine it is attached to:
outputs go through :meth:`Extension.send`, timers through
:meth:`Extension.set_timer`, references to keys through the machine's
``hold_key``/``release_key``.  Like the machine it stays pure: no I/O,
clocks, threads or global random (the purity test reads these modules too).
Hooks are called in the order the extensions were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState
    from twofold.scheduler.state import WorkerInfo

#: the hooks an extension may override; the machine calls only the overridden ones
HOOKS = ("worker_added", "worker_removed", "client_removed", "graph_added", "transition", "task_done",
         "replicas_added")


@dataclass(frozen=True, slots=True)
class NoStatistics:
    """What an extension without counters reports."""

    name: str


class Extension:
    """Base class of scheduler extensions (see the module docstring)."""

    #: unique among a machine's extensions; ``state.extensions[name]``
    name: ClassVar[str] = ""
    #: timer tokens ``prefix`` or ``prefix:...`` are this extension's (None: it sets no timers)
    timer_prefix: ClassVar[str | None] = None

    state: SchedulerState

    def attach(self, state: SchedulerState) -> None:
        """Called once, when the machine is built."""
        self.state = state

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        """Message class -> bound method handling it (each class once across the machine)."""
        return {}

    # -- reactions (override what you need) -------------------------------------

    def worker_added(self, ws: WorkerInfo) -> None:
        """A worker joined (it is in ``state.workers``)."""

    def worker_removed(self, ws: WorkerInfo) -> None:
        """A worker left: it is out of ``state.workers``; its tasks are not yet rescheduled."""

    def client_removed(self, client: str) -> None:
        """A client left (closed, or its connection was lost); its keys are released."""

    def graph_added(self, client: str, keys: tuple[str, ...]) -> None:
        """A client's graph was accepted; ``keys`` are the tasks it submitted."""

    def transition(self, key: str, start: str, finish: str, stimulus_id: str, now: float) -> None:
        """A task moved from ``start`` to ``finish`` (overriding this costs a call per transition)."""

    def task_done(self, ts: Any, worker: str, start: float, stop: float, ok: bool) -> None:
        """A task's run on ``worker`` ended (its worker's clock: ``start``, ``stop``), with a
        result (``ok``) or an error, and the scheduler took the outcome."""

    def replicas_added(self, ws: WorkerInfo, keys: tuple[str, ...]) -> None:
        """``ws`` reported holding copies of ``keys`` (``AddReplicas``); those the
        scheduler took are in ``ts.who_has``."""

    def on_timer(self, token: str, arg: str) -> None:
        """A timer of ours fired (``arg``: what followed ``prefix:`` in the token)."""

    # -- inspection ------------------------------------------------------------

    def validate(self) -> None:
        """Raise AssertionError if an invariant of this extension is broken."""

    def statistics(self) -> Any:
        """A frozen snapshot of this extension's state."""
        return NoStatistics(self.name)

    # -- talking through the machine -------------------------------------------

    @property
    def now(self) -> float:
        """The current event's time."""
        return self.state._now

    @property
    def stimulus_id(self) -> str:
        """The current event's stimulus id (outputs carry it)."""
        return self.state._sid

    def send(self, msg: Any) -> None:
        """Emit an output of the current event."""
        self.state._outs.append(msg)

    def set_timer(self, at: float, arg: str = "", background: bool = False) -> None:
        """``on_timer(token, arg)`` at ``at``; a timer with the same arg replaces the pending one.

        ``background``: a keep-alive check that, alone, should not keep a
        simulated run from being declared stalled."""
        prefix = self.timer_prefix
        if prefix is None:
            raise TypeError(f"{type(self).__name__} declares no timer_prefix")
        self.state._set_timer(at, f"{prefix}:{arg}" if arg else prefix, background)

    def cancel_timer(self, arg: str = "") -> None:
        """Forget a pending timer (its TimerFired, when it comes, is ignored)."""
        prefix = self.timer_prefix
        self.state.timers.pop(f"{prefix}:{arg}" if arg else prefix, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def overrides(ext: Extension, hook: str) -> bool:
    """Does ``ext`` override ``hook`` (so the machine must call it)?"""
    return getattr(type(ext), hook) is not getattr(Extension, hook)


class TransitionFanOut:
    """One sink for transition entries ``(key, start, finish, stimulus_id, now)``
    that hands each to several (the story log, a trace, extensions)."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: list[Callable[[tuple], None]]):
        self.sinks = sinks

    def append(self, entry: tuple) -> None:
        for sink in self.sinks:
            sink(entry)
