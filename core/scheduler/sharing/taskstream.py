"""The task stream: every finished run, for ``get_task_stream`` (and, later, the dashboard).

A bounded ring of ``(key, worker, start, stop, ok, nbytes, typename, done_at)``,
``done_at`` being the scheduler's clock when it took the outcome (so a
window ``[start, stop)`` of the scheduler's clock selects runs whatever the
workers' clocks say); ``start``/``stop`` are the worker's.  Appending is
the whole per-task cost; ``config.task_stream_length = 0`` turns it off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_sharing import TaskStreamRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


@dataclass(frozen=True, slots=True)
class TaskStreamStatistics:
    name: str
    kept: int
    recorded: int


class TaskStream(CoordinationExtension):
    name = "task-stream"
    request_type = TaskStreamRequest
    actions = {"get": "_get", "now": "_now"}

    def __init__(self) -> None:
        super().__init__()
        self.runs: deque = deque()
        self._recorded = 0

    def attach(self, state) -> None:
        super().attach(state)
        length = state.config.task_stream_length
        self.runs = deque(maxlen=max(length, 1))
        if length <= 0:  # off: no per-task hook at all
            self.task_done = None  # type: ignore[assignment]

    def task_done(self, ts, worker: str, start: float, stop: float, ok: bool) -> None:
        self._recorded += 1
        self.runs.append((ts.key, worker, start, stop, ok, ts.nbytes, ts.typename, self.state._now))

    def _get(self, event: TaskStreamRequest) -> None:
        for value in (event.start, event.stop):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise Refused("TypeError", f"start and stop are times (numbers) or None, got {value!r}")
        count = event.count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise Refused("ValueError", f"count must be an int >= 0 or None, got {count!r}")
        lo, hi = event.start, event.stop
        chosen = [r for r in self.runs if (lo is None or r[7] >= lo) and (hi is None or r[7] < hi)]
        if count is not None:
            chosen = chosen[-count:] if count else []
        self.reply(event, tuple(chosen))

    def _now(self, event: TaskStreamRequest) -> None:
        self.reply(event, self.now)

    def statistics(self) -> TaskStreamStatistics:
        return TaskStreamStatistics(self.name, len(self.runs), self._recorded)
