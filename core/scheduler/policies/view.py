"""SchedulerView: what a policy may read of the scheduler, and nothing to write.

Built once per machine (never per decision): its mappings are read-only
proxies over the machine's live dicts, so reading them copies nothing and
is always current.  The task and worker records it hands out
(:class:`~twofold.scheduler.state.TaskState`,
:class:`~twofold.scheduler.state.WorkerInfo`) are the machine's own, to be
read, not changed: a policy changes the world only by what it returns.

Durations and sizes come from the policy's information model
(``policy.info``, :mod:`~twofold.scheduler.policies.info`), so what a
policy knows is an experimental variable.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator

from twofold.scheduler.policies.info import Estimates, check_info

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState
    from twofold.scheduler.state import TaskState, WorkerInfo


class SchedulerView:
    """A read-only window on one scheduler (see the module docstring)."""

    __slots__ = ("_state", "config", "tasks", "workers", "durations", "room", "info", "unknown_duration",
                 "bandwidth")

    def __init__(self, state: SchedulerState, info: Any = None) -> None:
        self._state = state
        #: the scheduler's frozen configuration
        self.config = state.config
        #: key -> TaskState, every task the scheduler knows
        self.tasks = MappingProxyType(state.tasks)
        #: address -> WorkerInfo, the live workers (arrival order)
        self.workers = MappingProxyType(state.workers)
        #: prefix -> learnt seconds per run
        self.durations = MappingProxyType(state.durations)
        #: workers that can take another root task now
        self.room = MappingProxyType(state.room)
        self.info = check_info(info if info is not None else Estimates())
        self.unknown_duration = state.config.unknown_task_duration
        #: assumed bytes/second between workers
        self.bandwidth = state.config.bandwidth

    @property
    def now(self) -> float:
        """The time of the event being handled."""
        return self._state._now

    def ready(self) -> Iterator[TaskState]:
        """Tasks whose inputs are all in memory, not yet on a worker: withheld on the
        scheduler (by priority), then parked with no worker."""
        yield from self._state.queued
        yield from self._state.unrunnable

    def valid_workers(self, ts: TaskState) -> dict[WorkerInfo, None] | None:
        """Workers ``ts`` may run on (restrictions, resources), or None for any."""
        return self._state.valid_workers(ts)

    def duration(self, ts: TaskState) -> float:
        """Expected seconds of one run of ``ts`` (from the information model)."""
        return self.info.duration(self, ts)

    def nbytes(self, ts: TaskState) -> int:
        """Expected size of ``ts``'s result (from the information model)."""
        return self.info.nbytes(self, ts)

    def transfer_time(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Seconds to move to ``ws`` the inputs of ``ts`` it does not hold."""
        missing = 0
        for dep in ts.dependencies:
            if ws not in dep.who_has:
                missing += self.info.nbytes(self, dep)
        return missing / self.bandwidth

    def __repr__(self) -> str:
        return f"<SchedulerView tasks={len(self.tasks)} workers={len(self.workers)}>"
