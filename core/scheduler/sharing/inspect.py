"""Introspection: which keys each worker holds or runs, and how many bytes keys take.

Read-only answers built from the scheduler's records (``has_what``,
``processing``, ``nbytes``), in the workers' arrival order.
"""

from __future__ import annotations

from twofold.messages_sharing import InspectRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


def _strs(value, what: str):
    if value is None:
        return None
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise Refused("TypeError", f"{what} must be a tuple of str or None")
    return value


class Inspect(CoordinationExtension):
    name = "inspect"
    request_type = InspectRequest
    actions = {"has_what": "_has_what", "processing": "_processing", "nbytes": "_nbytes"}

    def _workers(self, event: InspectRequest) -> list:
        state = self.state
        wanted = _strs(event.workers, "workers")
        if wanted is None:
            return list(state.workers.values())
        found = {}
        for name in wanted:
            ws = state.workers.get(name) or state.workers_by_name.get(name)
            if ws is not None:
                found[ws] = None
        return sorted(found, key=lambda ws: ws.order)

    def _has_what(self, event: InspectRequest) -> None:
        self.reply(event, {ws.address: tuple(ts.key for ts in ws.has_what) for ws in self._workers(event)})

    def _processing(self, event: InspectRequest) -> None:
        self.reply(event, {ws.address: tuple(ts.key for ts in ws.processing) for ws in self._workers(event)})

    def _nbytes(self, event: InspectRequest) -> None:
        tasks = self.state.tasks
        keys = _strs(event.keys, "keys")
        chosen = [tasks[k] for k in keys if k in tasks] if keys is not None else list(tasks.values())
        sizes = {ts.key: ts.nbytes for ts in chosen if ts.state == "memory" and ts.nbytes >= 0}
        if event.summary:
            totals: dict[str, int] = {}
            for ts in chosen:
                if ts.key in sizes:
                    totals[ts.prefix] = totals.get(ts.prefix, 0) + sizes[ts.key]
            self.reply(event, totals)
        else:
            self.reply(event, sizes)
