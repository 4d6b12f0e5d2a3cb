"""The simulation: one clock, one network, one scheduler host, worker hosts, clients.

It owns everything that makes a run repeatable: the seeded generator (all
randomness of the run comes from it), the object registry (user functions,
arguments, results and exceptions stay Python objects, referenced from the
machines' opaque bytes by a counter, so nothing is pickled on the hot
path), and the trace.
"""

from __future__ import annotations

import random
from typing import Any

from twofold.config import SchedulerConfig, WorkerConfig
from twofold.scheduler import SchedulerState
from twofold.sim.clock import Clock
from twofold.sim.hosts import SchedulerHost, WorkerHost, message_size
from twofold.sim.models import Model, TaskInfo, measure_nbytes
from twofold.sim.network import Network
from twofold.sim.trace import Trace


class Simulation:
    def __init__(
        self,
        seed: int,
        scheduler_config: SchedulerConfig,
        worker_config: WorkerConfig,
        durations: Any,
        sizes: Any,
        latency: float,
        bandwidth: float,
        links: dict | None,
        validate: bool,
        trace_transitions: bool,
        heartbeat_interval: float,
        restart_delay: float,
        policy: Any = None,
        scheduler_address: str = "sim://scheduler",
    ) -> None:
        self.scheduler_address = scheduler_address
        self.rng = random.Random(seed)
        self.clock = Clock(stall_grace=2 * scheduler_config.worker_ttl + 10 * heartbeat_interval)
        self.network = Network(self, latency, bandwidth, links)
        self.trace = Trace(transitions=trace_transitions)
        self.trace.clock_now = lambda: self.clock.now
        self.validate = validate
        self.worker_config = worker_config
        self.durations = Model(durations, self.rng, "durations")
        self.default_duration = 0.001
        #: the duration when it is one number for every task (the fast path)
        self.constant_duration: float | None = None
        if self.durations.table is None:
            default = self.durations.default
            if default is None:
                self.constant_duration = self.default_duration
            elif isinstance(default, (int, float)):
                self.constant_duration = float(default)
        self.sizes = Model(sizes, self.rng, "sizes") if sizes is not None else None
        self.heartbeat_interval = heartbeat_interval
        self.restart_delay = restart_delay
        self.objects: dict[bytes, Any] = {}
        self._object_counter = 0
        state = SchedulerState(scheduler_config, policy)
        if trace_transitions:
            state._story = self.trace
        self.scheduler = SchedulerHost(self, state)
        self.workers: dict[str, WorkerHost] = {}
        self.clients: dict[str, Any] = {}
        #: addresses that cannot send or receive (crashed workers, closed clients
        #: and, once the cluster is closed, the scheduler)
        self.dead: set[str] = set()
        self._closed = False

    # -- registry --------------------------------------------------------------

    def put_object(self, obj: Any) -> bytes:
        self._object_counter += 1
        ref = b"%d" % self._object_counter
        self.objects[ref] = obj
        return ref

    def result_size(self, info: TaskInfo | None, result: Any) -> int:
        if self.sizes is not None:
            spec = self.sizes.lookup(info)
            if spec is not None:
                return int(self.sizes.value(info, 0.0))
        return measure_nbytes(result)

    # -- routing ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        if value:
            self.dead.add(self.scheduler_address)

    def is_alive(self, address: str) -> bool:
        return address not in self.dead

    def to_scheduler(self, src: str, msg: Any) -> None:
        self.network.post(src, self.scheduler_address, message_size(msg), self.scheduler.handle, (msg,))
