"""The scheduler's records of tasks, workers and clients.

Mutable, slotted, owned by :class:`~twofold.scheduler.SchedulerState` and
changed only through its ``handle``.  Every collection whose iteration order
can reach an output is a ``dict`` used as an ordered set (values ``None``):
insertion order is deterministic, ``set`` order is not across processes.
"""

from __future__ import annotations

from typing import Literal

from twofold.messages import Key, TaskError

TaskStateName = Literal[
    "released", "waiting", "queued", "no-worker", "processing", "memory", "erred", "forgotten"
]

#: states in which a task still needs its dependencies' data
NEEDS_INPUTS = frozenset({"waiting", "queued", "no-worker", "processing"})


class TaskState:
    """One key the scheduler knows about."""

    __slots__ = (
        "key",
        "prefix",
        "run_spec",
        "state",
        "priority",
        "dependencies",
        "dependents",
        "waiting_on",
        "waiters",
        "who_wants",
        "who_has",
        "processing_on",
        "duration_estimate",
        "workers",
        "allow_other_workers",
        "resources",
        "retries",
        "actor",
        "suspicious",
        "error",
        "blamed",
        "nbytes",
        "typename",
        "steal_to",
        "long_running",
        "run_id",
        "queue_key",
    )

    def __init__(self, key: Key, prefix: str, run_spec: bytes | None, priority: tuple[int, int]):
        self.key = key
        self.prefix = prefix
        self.run_spec = run_spec
        self.state: TaskStateName = "released"
        self.priority = priority
        #: ``priority`` as one int (same order): integer keys make heap operations twice as fast
        self.queue_key = priority[0] * (1 << 48) + priority[1]
        self.dependencies: dict[TaskState, None] = {}
        self.dependents: dict[TaskState, None] = {}
        #: dependencies not yet in memory (while waiting)
        self.waiting_on: dict[TaskState, None] = {}
        #: dependents that still need this task's data
        self.waiters: dict[TaskState, None] = {}
        #: client -> number of references it holds
        self.who_wants: dict[str, int] = {}
        self.who_has: dict[WorkerInfo, None] = {}
        self.processing_on: WorkerInfo | None = None
        self.duration_estimate = 0.0
        self.workers: tuple[str, ...] | None = None
        self.allow_other_workers = False
        self.resources: dict[str, float] | None = None
        self.retries = 0
        self.actor = False
        #: how many workers died while this task was processing on them
        self.suspicious = 0
        self.error: TaskError | None = None
        self.blamed: TaskState | None = None
        self.nbytes = -1
        self.typename = ""
        #: thief of an in-flight steal request
        self.steal_to: WorkerInfo | None = None
        self.long_running = False
        #: number of the current (or last) assignment to a worker
        self.run_id = -1

    @property
    def is_root(self) -> bool:
        """Queue-able on the scheduler: no inputs, no placement constraints."""
        return not self.dependencies and self.workers is None and self.resources is None and not self.actor

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


class WorkerInfo:
    """What the scheduler knows of one worker."""

    __slots__ = (
        "address",
        "name",
        "nthreads",
        "resources",
        "memory_limit",
        "processing",
        "long_running",
        "has_what",
        "occupancy",
        "nbytes",
        "last_seen",
        "memory",
        "slots",
        "order",
        "free_seq",
    )

    def __init__(
        self,
        address: str,
        nthreads: int,
        resources: dict[str, float] | None,
        memory_limit: int | None,
        name: str | None,
        now: float,
        slots: int,
        order: int,
    ):
        self.address = address
        self.name = name if name is not None else address
        self.nthreads = nthreads
        self.resources = dict(resources or {})
        self.memory_limit = memory_limit
        self.processing: dict[TaskState, None] = {}
        self.long_running: dict[TaskState, None] = {}
        self.has_what: dict[TaskState, None] = {}
        #: expected seconds of work in ``processing`` (long-running excluded)
        self.occupancy = 0.0
        self.nbytes = 0
        self.last_seen = now
        self.memory = 0
        #: tasks from the root queue this worker may hold at once
        self.slots = slots
        #: arrival order, the tie-breaker for placement
        self.order = order
        #: how many FreeKeys messages were sent to this worker
        self.free_seq = 0

    @property
    def busy_count(self) -> int:
        """Tasks holding (or waiting for) a thread slot."""
        return len(self.processing) - len(self.long_running)

    def __repr__(self) -> str:
        return f"<WorkerInfo {self.address!r} nthreads={self.nthreads} processing={len(self.processing)}>"


class ClientInfo:
    """A client and the references it holds."""

    __slots__ = ("name", "wants", "holder")

    def __init__(self, name: str):
        self.name = name
        #: key -> reference count (always > 0)
        self.wants: dict[Key, int] = {}
        #: a pseudo-client of an extension (a queue, a variable, a dataset) keeping keys alive:
        #: a forced cancel leaves its references alone
        self.holder = False

    def __repr__(self) -> str:
        return f"<ClientInfo {self.name!r} wants={len(self.wants)}>"


def key_prefix(key: Key) -> str:
    """The task's group name: ``'inc-1f2e'`` -> ``'inc'``, for duration estimates."""
    head, sep, _ = key.rpartition("-")
    return head if sep else key
