"""The simulation: one clock, one network, one scheduler host, worker hosts, clients.

It owns everything that makes a run repeatable: the seeded generator (all
randomness of the run comes from it), the object registry (user functions,
arguments, results and exceptions stay Python objects, referenced from the
machines' opaque bytes by a counter, so nothing is pickled on the hot
path), and the trace.

A registry reference is a ``bytes`` subclass whose entry is freed when the
last reference to it goes: the entry lives exactly as long as something
(a scheduler or worker task, a message in flight, a client's error) can
still look it up, so a long run does not keep every task's function and
arguments.  When that happens does not matter to the run: nothing can ask
for an entry after its last reference is gone.
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
    #: set by SimCluster: tasks' time.* on the virtual clock, and time.time()'s value at 0
    virtual_time = False
    epoch = 0.0
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
        self._ref = _ref_type(self.objects)
        state = SchedulerState(scheduler_config, policy)
        if trace_transitions:
            state.observe_transitions(self.trace)
        self.scheduler = SchedulerHost(self, state)
        self.workers: dict[str, WorkerHost] = {}
        self.clients: dict[str, Any] = {}
        #: endpoint -> the host it lives on (a task's client -> its worker), for deaths and partitions
        self.node_of: dict[str, str] = {}
        #: addresses that cannot send or receive (crashed workers, closed clients
        #: and, once the cluster is closed, the scheduler)
        self.dead: set[str] = set()
        self._closed = False

    # -- registry --------------------------------------------------------------

    def put_object(self, obj: Any) -> bytes:
        """Register ``obj``.  The reference reads b"1", b"2", ... (its length
        counts in message sizes); the entry goes when the reference does."""
        self._object_counter += 1
        key = b"%d" % self._object_counter
        self.objects[key] = obj
        return self._ref(key)

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


def _ref_type(objects: dict[bytes, Any]) -> type:
    """The reference type of one registry: ``bytes`` that free their entry when dropped.

    The registry's keys are plain ``bytes`` (equal, same hash), so it never
    keeps a reference alive itself.
    """

    def __del__(ref: bytes) -> None:
        objects.pop(ref, None)

    def __reduce__(ref: bytes) -> tuple:
        return bytes, (bytes(ref),)  # pickled, it is plain bytes (outside this process)

    def same(ref: bytes, *memo: Any) -> bytes:
        return ref  # immutable: copies share it, so it still frees only when all are gone

    namespace = {"__slots__": (), "__del__": __del__, "__reduce__": __reduce__, "__copy__": same, "__deepcopy__": same}
    return type("ObjectRef", (bytes,), namespace)
