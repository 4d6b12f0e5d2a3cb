"""A hand-wired cluster: one SchedulerState and some WorkerStates, routed in memory.

No network, no threads, no clock: messages wait in per-link FIFO queues,
executions and transfers wait until someone completes them, and time moves
only when the caller says.  Every step is explicit, so tests (including the
hypothesis state machine) choose the interleaving, and the benchmark and the
demo can run both machines without a driver.  Tasks do not really run: an
execution succeeds with ``nbytes`` chosen by the caller (default 8) unless
it is told to fail.  The simulator (``twofold.sim``) is the real driver
built on the same machines.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from twofold.config import SchedulerConfig, WorkerConfig
from twofold.messages import (
    AddWorker,
    CloseWorker,
    DataPut,
    ExecuteFailure,
    ExecuteSuccess,
    GatherDeps,
    GatherFailure,
    GatherSuccess,
    Message,
    RemoveWorker,
    SetTimer,
    TaskError,
    TimerFired,
    restamp,
)
from twofold.scheduler import SchedulerState
from twofold.worker import WorkerState

#: messages a worker sends its scheduler (they carry a ``worker`` field too)
_TO_SCHEDULER = {"TaskFinished", "TaskErred", "AddReplicas", "StealResponse", "LongRunning",
                 "RescheduleTask", "MissingData"}


@dataclass
class HandWired:
    """One scheduler, workers named ``w0``, ``w1``, ...; see the module docstring."""

    n_workers: int = 2
    nthreads: int = 1
    resources: dict | None = None
    scheduler_config: SchedulerConfig | None = None
    worker_config: WorkerConfig | None = None
    validate: bool = True
    now: float = 0.0

    scheduler: SchedulerState = field(init=False)
    workers: dict = field(init=False, default_factory=dict)
    #: (src, dst) -> deque of messages in flight on that link
    links: dict = field(init=False, default_factory=dict)
    #: (worker, key) -> Execute waiting to be completed
    executions: dict = field(init=False, default_factory=dict)
    #: (worker, peer) -> GatherDeps waiting to be completed
    gathers: dict = field(init=False, default_factory=dict)
    #: worker -> {key: nbytes}: what each worker's driver store holds
    stores: dict = field(init=False, default_factory=dict)
    #: client -> list of messages the scheduler sent it
    inbox: dict = field(init=False, default_factory=dict)
    timers: dict = field(init=False, default_factory=dict)
    rejoined: list = field(init=False, default_factory=list)
    closed: list = field(init=False, default_factory=list)
    events: int = field(init=False, default=0)
    _sid: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.scheduler = SchedulerState(self.scheduler_config)
        for i in range(self.n_workers):
            self.add_worker(f"w{i}")

    # -- plumbing ------------------------------------------------------------

    def stimulus(self, prefix: str = "test") -> str:
        self._sid += 1
        return f"{prefix}-{self._sid}"

    def to_scheduler(self, event: Message) -> list:
        """Hand ``event`` to the scheduler now and route what it says."""
        restamp(event, self.now)
        outs = self.scheduler.handle(event)
        self.events += 1
        if self.validate:
            self.scheduler.validate()
        self._route_scheduler(outs)
        return outs

    def _route_scheduler(self, outs: list) -> None:
        for msg in outs:
            if isinstance(msg, SetTimer):
                self.timers[msg.token] = msg.at
            elif isinstance(msg, CloseWorker):
                self.closed.append(msg)
            elif hasattr(msg, "worker"):
                if msg.worker in self.workers:
                    self.links.setdefault(("scheduler", msg.worker), deque()).append(msg)
            else:
                self.inbox.setdefault(msg.client, []).append(msg)

    def to_worker(self, address: str, event: Message) -> list:
        restamp(event, self.now)
        ws = self.workers[address]
        outs = ws.handle(event)
        self.events += 1
        if self.validate:
            ws.validate()
        store = self.stores[address]
        for msg in outs:
            op = msg.op
            if op in _TO_SCHEDULER:
                self.links.setdefault((address, "scheduler"), deque()).append(msg)
            elif op == "Execute":
                self.executions[(address, msg.key)] = msg
            elif op == "GatherDeps":
                self.gathers[(address, msg.peer)] = msg
            elif op == "DeleteData":
                for key in msg.keys:
                    store.pop(key, None)
            elif op == "RejoinGranted":
                self.rejoined.append((address, msg.key))
        return outs

    # -- cluster membership ------------------------------------------------

    def add_worker(self, address: str, nthreads: int | None = None, resources: dict | None = None) -> None:
        nthreads = nthreads or self.nthreads
        resources = resources if resources is not None else self.resources
        self.workers[address] = WorkerState(address, nthreads, resources, self.worker_config)
        self.stores[address] = {}
        self.to_scheduler(AddWorker(self.now, self.stimulus("add-worker"), address, nthreads, resources))

    def kill(self, address: str) -> None:
        """The worker dies: its links, executions, transfers and data vanish."""
        del self.workers[address]
        del self.stores[address]
        for link in [link for link in self.links if address in link]:
            del self.links[link]
        for item in [k for k in self.executions if k[0] == address]:
            del self.executions[item]
        for item in [k for k in self.gathers if k[0] == address]:
            del self.gathers[item]
        self.to_scheduler(RemoveWorker(self.now, self.stimulus("kill"), address))

    # -- steps ---------------------------------------------------------------

    def deliver(self, link: tuple[str, str]) -> None:
        """Deliver the oldest message on ``link``."""
        queue = self.links[link]
        msg = queue.popleft()
        if not queue:
            del self.links[link]
        src, dst = link
        if dst == "scheduler":
            if src in self.workers:
                self.to_scheduler(msg)
        elif dst in self.workers:
            self.to_worker(dst, msg)

    def finish(self, address: str, key: str, nbytes: int = 8, error: str | None = None) -> None:
        """Complete an execution: success with ``nbytes``, or failure with ``error``."""
        self.executions.pop((address, key))
        if error is None:
            self.stores[address][key] = nbytes
            self.to_worker(address, ExecuteSuccess(self.now, self.stimulus("exec"), key, nbytes, "int", self.now, self.now))
        else:
            err = TaskError("ValueError", error, None, None, f"ValueError: {error}")
            self.to_worker(address, ExecuteFailure(self.now, self.stimulus("exec"), key, err, self.now, self.now))

    def complete_gather(self, address: str, peer: str) -> None:
        """A transfer ends: what the peer's store holds arrives, or the peer is gone."""
        req: GatherDeps = self.gathers.pop((address, peer))
        sid = self.stimulus("gather")
        if peer not in self.workers:
            self.to_worker(address, GatherFailure(self.now, sid, peer, req.keys))
            return
        source = self.stores[peer]
        got = {key: source[key] for key in req.keys if key in source}
        missing = tuple(key for key in req.keys if key not in source)
        self.stores[address].update(got)
        self.to_worker(address, GatherSuccess(self.now, sid, peer, got, missing))

    def scatter(self, address: str, nbytes: dict, after: int = -1) -> None:
        """A client put data on ``address`` (the worker side of scatter; ``after``
        is the ScatterPlan's free_seqs entry for it)."""
        self.stores[address].update(nbytes)
        self.to_worker(address, DataPut(self.now, self.stimulus("scatter"), dict(nbytes), after))

    def fire_timers(self, until: float | None = None) -> None:
        """Advance time to ``until`` (default: the earliest timer) and fire what is due."""
        if until is None:
            if not self.timers:
                return
            until = min(self.timers.values())
        self.now = max(self.now, until)
        due = sorted((at, token) for token, at in self.timers.items() if at <= self.now)
        for at, token in due:
            if self.timers.get(token) == at:
                del self.timers[token]
                self.to_scheduler(TimerFired(self.now, self.stimulus("timer"), token))

    @property
    def busy(self) -> bool:
        return bool(self.links or self.executions or self.gathers)

    def drain(self, nbytes: int = 8, fail: frozenset = frozenset(), max_steps: int = 1_000_000) -> int:
        """Deliver, execute and transfer until nothing is pending; return steps taken.

        Executions of keys in ``fail`` fail; the rest succeed.  Timers are not
        fired (call :meth:`fire_timers`).
        """
        steps = 0
        while self.busy:
            steps += 1
            if steps > max_steps:
                raise RuntimeError("drain did not settle: livelock?")
            if self.links:
                self.deliver(next(iter(self.links)))
            elif self.executions:
                address, key = next(iter(self.executions))
                self.finish(address, key, nbytes, error="boom" if key in fail else None)
            else:
                self.complete_gather(*next(iter(self.gathers)))
        return steps

    def received(self, client: str, op: str | None = None) -> list:
        """Messages the client got (of one op, if given)."""
        msgs = self.inbox.get(client, [])
        return [m for m in msgs if op is None or m.op == op]
