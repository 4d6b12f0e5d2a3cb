"""Restarting and shutting down the cluster: ``RestartRequest``, answered once done.

restart (dask's ``Scheduler.restart``): every key every client holds is
cancelled (``KeyCancelled`` with :data:`RESTART_MESSAGE`: the futures become
cancelled, their data is gone), every worker is taken out of the scheduler
and closed with :data:`RESTART_REASON` (its driver starts it again, empty: a
nanny starts a new process, a simulated ``WorkerHost`` comes back
``restart_delay`` later).  Tasks that were running are not counted as
failures (no ``KilledWorker`` from a restart).  With ``wait_for_workers`` the
reply waits until as many workers as before have joined, or fails with
``TimeoutError`` after ``timeout``; the workers keep coming back either way.
One restart at a time: a second request while one waits is refused
(``RuntimeError``), nothing changes.

shutdown: every worker is closed with :data:`SHUTDOWN_REASON` (drivers do not
restart it), the request is answered, then ``StopScheduler`` asks the
scheduler's driver to stop (the CLI's scheduler process exits; every client
connection closes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from twofold.messages import CancelKeys, CloseWorker, KeyCancelled
from twofold.messages_ops import RESTART_MESSAGE, RESTART_REASON, SHUTDOWN_REASON, RestartRequest, StopScheduler
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


@dataclass(frozen=True, slots=True)
class RestartStatistics:
    #: restarts done (answered or not)
    restarts: int
    #: a restart waits for its workers
    waiting: bool


class Restart(CoordinationExtension):
    name = "restart"
    timer_prefix = "restart"
    request_type = RestartRequest
    actions = {"restart": "_restart", "shutdown": "_shutdown"}

    def __init__(self) -> None:
        super().__init__()
        #: the restart waiting for its workers: (request, how many workers)
        self._pending: tuple[RestartRequest, int] | None = None
        self._restarts = 0

    def _close_workers(self, reason: str) -> int:
        state = self.state
        workers = list(state.workers.values())
        for ws in workers:
            for ts in ws.processing:
                ts.suspicious -= 1  # a restart does not count against its tasks
            state._remove_worker(ws)
            self.send(CloseWorker(self.now, self.stimulus_id, ws.address, reason))
        return len(workers)

    def _restart(self, event: RestartRequest) -> None:
        if not isinstance(event.wait_for_workers, bool):
            raise Refused("TypeError", "wait_for_workers must be True or False")
        if self._pending is not None:
            raise Refused("RuntimeError", f"a restart (asked by {self._pending[0].client}) is still waiting for its "
                                          "workers; wait for it to finish before restarting again")  # fmt: skip
        state = self.state
        self._restarts += 1
        outs = state._outs
        mark = len(outs)
        state._on_cancel_keys(CancelKeys(self.now, self.stimulus_id, event.client, tuple(state.tasks), True))
        for i in range(mark, len(outs)):
            if type(outs[i]) is KeyCancelled:
                outs[i] = replace(outs[i], reason=RESTART_MESSAGE)
        n = self._close_workers(RESTART_REASON)
        if not event.wait_for_workers or n == 0:
            self.reply(event, n)
            return
        self._pending = (event, n)
        if event.timeout is not None:
            self.set_timer(self.now + event.timeout, "timeout")

    def _shutdown(self, event: RestartRequest) -> None:
        n = self._close_workers(SHUTDOWN_REASON)
        self.reply(event, n)
        self.send(StopScheduler(self.now, self.stimulus_id, f"shut down by client {event.client}"))

    # -- hooks ---------------------------------------------------------------

    def worker_added(self, ws: Any) -> None:
        pending = self._pending
        if pending is not None and len(self.state.workers) >= pending[1]:
            self._pending = None
            self.cancel_timer("timeout")
            self.reply(pending[0], pending[1])

    def client_removed(self, client: str) -> None:
        if self._pending is not None and self._pending[0].client == client:
            self._pending = None
            self.cancel_timer("timeout")

    def on_other_timer(self, arg: str) -> None:
        pending = self._pending
        if arg == "timeout" and pending is not None:
            self._pending = None
            event, n = pending
            self.fail(event, "TimeoutError", f"restart: only {len(self.state.workers)} of {n} workers came back "
                                             f"within {event.timeout} s (they may still join)")  # fmt: skip

    def expired(self, waiter: Any) -> None:  # (no waiters)
        pass

    # -- inspection ----------------------------------------------------------

    def statistics(self) -> Any:
        return RestartStatistics(self._restarts, self._pending is not None)
