"""User code for the scheduler's process: the machine passes it on to its driver.

``RunOnScheduler`` becomes a ``RunUserCode`` output in the order the
machine saw it (so it runs after everything the client sent before); the
driver unpickles and runs it and answers the client itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_sharing import RunOnScheduler, RunUserCode
from twofold.scheduler.extension import Extension


@dataclass(frozen=True, slots=True)
class RemoteStatistics:
    name: str
    runs: int


class Remote(Extension):
    name = "remote"

    def __init__(self) -> None:
        self._runs = 0

    def handlers(self) -> dict:
        return {RunOnScheduler: self._on_run}

    def _on_run(self, event: RunOnScheduler) -> None:
        if not isinstance(event.function, bytes) or not isinstance(event.request_id, str):
            return  # malformed: nobody to answer sensibly; the client validates what it sends
        self._runs += 1
        self.send(RunUserCode(self.now, self.stimulus_id, event.client, event.request_id, event.function))

    def statistics(self) -> RemoteStatistics:
        return RemoteStatistics(self.name, self._runs)
