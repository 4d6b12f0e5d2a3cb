"""Frozen defaults for the state machines (no file or environment I/O here).

Drivers build a :class:`SchedulerConfig` / :class:`WorkerConfig` (perhaps from
user options) and hand it to the machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    #: a task whose workers died this many times errs with KilledWorker
    allowed_failures: int = 3
    #: a worker silent this long (seconds) is removed
    worker_ttl: float = 60.0
    #: expected duration of a task whose prefix has never run (seconds)
    unknown_task_duration: float = 0.5
    #: assumed network bandwidth for placement cost (bytes/second)
    bandwidth: float = 100e6
    #: root tasks wait on the scheduler once each worker has
    #: ``ceil(nthreads * worker_saturation)`` tasks and at least
    #: ``pipeline_seconds`` of expected work per thread; ``inf`` disables queuing
    worker_saturation: float = 2.0
    pipeline_seconds: float = 0.05
    #: never more than this many tasks per thread on one worker from the queue
    max_tasks_per_thread: int = 256
    #: work stealing: how often to look for imbalance (seconds; 0 disables)
    steal_interval: float = 0.1
    #: steal a task only if moving its inputs costs less than this
    #: multiple of its expected duration
    steal_cost_ratio: float = 2.0
    #: the scheduler forwards an inline result to clients only up to this size (a guard:
    #: what rides inline is the workers' decision, ``WorkerConfig.inline_result_limit``)
    inline_result_limit: int = 64 * 1024
    #: keep this many transitions per key in the story log (0 = off)
    story_length: int = 0
    #: weight of the newest sample in the per-prefix duration average
    duration_smoothing: float = 0.5
    #: a semaphore lease not refreshed for this long (seconds) is released (dask's ``lease-timeout``)
    semaphore_lease_timeout: float = 30.0
    #: structured events (``log_event``) kept per topic
    events_per_topic: int = 100_000
    #: finished task runs kept for ``get_task_stream`` (0: none recorded)
    task_stream_length: int = 100_000


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    #: how many peers we fetch from at once
    transfer_incoming_count_limit: int = 4
    #: how many bytes one gather from one peer may ask for (at least one key)
    transfer_message_bytes_limit: int = 50_000_000
    #: keep this many transitions per key in the story log (0 = off)
    story_length: int = 0
    #: results at most this many bytes ride back with the completion (``rides_inline``)
    inline_result_limit: int = 64 * 1024

    def rides_inline(self, nbytes: int) -> bool:
        """Does a result of ``nbytes`` travel with its completion (``TaskFinished.inline``)?

        The one rule both drivers follow, so that a simulated ``result()`` of a small
        value skips the fetch round trip exactly when a real one does: the runtime
        asks it of the result's measured size and then of its pickle's length, the
        simulator of the size it measured or modelled.
        """
        return nbytes <= self.inline_result_limit
