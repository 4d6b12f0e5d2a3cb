"""SimCluster: a deterministic simulated cluster that a Client connects to.

    cluster = SimCluster(n_workers=4, threads_per_worker=2, seed=0)
    client = Client(cluster)

User functions really run (one at a time, in an order fixed by the seed),
each taking virtual time from the duration model; messages and data cross a
simulated network; faults happen when planned or when the seed says.  The
same program with the same seed gives the same trace, and so the same
``digest()``, in any process under any ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import itertools
import random
import threading
import weakref
from dataclasses import fields as dc_fields
from typing import Any, Mapping

from twofold.client.client import register_address
from twofold.config import SchedulerConfig, WorkerConfig
from twofold.sim import context as _context  # noqa: F401 - registers the task-context provider
from twofold.sim import faults, gcpolicy
from twofold.sim import virtual_time as virtual_time_module
from twofold.sim.faults import Fault
from twofold.sim.hosts import WorkerHost
from twofold.sim.simulation import Simulation

_names = itertools.count()
#: scheduler address -> cluster, so ``Client("sim://cluster-0")`` can join
#: ``time.time()`` inside tasks at virtual time 0: 2026-01-01T00:00:00Z (fixed, so runs repeat)
DEFAULT_EPOCH = 1_767_225_600.0


def _nothing() -> None:
    pass


_REGISTRY: "weakref.WeakValueDictionary[str, SimCluster]" = weakref.WeakValueDictionary()


def _config(cls: type, given: Any, defaults: dict) -> Any:
    if isinstance(given, cls):
        return given
    options = dict(defaults)
    if given is not None:
        if not isinstance(given, Mapping):
            raise TypeError(f"expected a {cls.__name__} or a dict of its options, got {given!r}")
        options.update(given)
    known = {f.name for f in dc_fields(cls)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown {cls.__name__} options {sorted(unknown)}; known: {sorted(known)}")
    return cls(**options)


class SimCluster:
    """A simulated cluster: a scheduler and ``n_workers`` workers in virtual time.

    ``serialize=True`` makes every argument, result and scattered value take the
    pickle round trip a real cluster makes (``twofold.sim.wire``): what cannot be
    pickled fails as it would in production, and sizes come from the real bytes.

    While it is open, the process's garbage collector runs with relaxed
    thresholds (young collections every 500,000 allocations instead of 700:
    see ``twofold.sim.gcpolicy``); ``close()`` restores them.
    """

    def __init__(
        self,
        n_workers: int = 4,
        threads_per_worker: int = 2,
        seed: int = 0,
        resources: Mapping[str, float] | None = None,
        memory_limit: int | None = None,
        *,
        durations: Any = None,
        sizes: Any = None,
        latency: float = 0.001,
        bandwidth: float = 1e9,
        links: Mapping | None = None,
        chaos: Mapping[str, float] | None = None,
        faults_plan: list[Fault] | None = None,
        validate: bool = False,
        trace_transitions: bool = True,
        heartbeat_interval: float = 1.0,
        restart_delay: float = 0.5,
        scheduler_config: Any = None,
        worker_config: Any = None,
        policy: Any = None,
        name: str | None = None,
        virtual_time: bool = False,
        epoch: float = DEFAULT_EPOCH,
        serialize: bool = False,
    ) -> None:
        if not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"n_workers must be an int >= 0, got {n_workers!r}")
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be an int >= 1, got {threads_per_worker!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not isinstance(virtual_time, bool):
            raise TypeError(f"virtual_time= must be True or False, got {virtual_time!r}")
        if not isinstance(serialize, bool):
            raise TypeError(f"serialize= must be True or False, got {serialize!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
            raise TypeError(f"epoch= must be seconds since 1970 (a number), got {epoch!r}")
        self.name = name or f"cluster-{next(_names)}"
        self.scheduler_address = f"sim://{self.name}"
        if self.scheduler_address in _REGISTRY:
            raise ValueError(f"a simulated cluster named {self.name!r} already exists in this process")
        self.seed = seed
        self._sim = Simulation(
            seed=seed,
            scheduler_config=_config(SchedulerConfig, scheduler_config, {}),
            worker_config=_config(WorkerConfig, worker_config, {}),
            durations=durations,
            sizes=sizes,
            latency=latency,
            bandwidth=bandwidth,
            links=links,
            validate=validate,
            trace_transitions=trace_transitions,
            heartbeat_interval=heartbeat_interval,
            restart_delay=restart_delay,
            policy=policy,
            scheduler_address=self.scheduler_address,
        )
        self._sim.cluster = self
        #: serialize=True: arguments and results make the pickle round trip (see twofold.sim.wire)
        self._sim.wire = None
        if serialize:
            from twofold.sim.wire import Wire

            self._sim.wire = Wire()
        #: time.sleep/time/monotonic/perf_counter inside tasks are virtual (see twofold.sim.virtual_time)
        self._sim.virtual_time = virtual_time
        self._sim.epoch = float(epoch)
        self._clients = itertools.count()
        for i in range(n_workers):
            self._add_worker(f"worker-{i}", threads_per_worker, resources, memory_limit)
        self.fault_plan: list[Fault] = []
        if chaos:
            rates = dict(chaos)
            sim = self._sim
            sim.network.delay_probability = float(rates.get("delay", 0.0))
            sim.network.max_delay = float(rates.get("max_delay", 0.01))
            # a generator of its own: the plan does not disturb the run's other
            # draws, so replaying it with faults_plan= gives the same run
            plan_rng = random.Random(f"twofold-faults-{seed}")
            self.fault_plan.extend(
                faults.draw_plan(plan_rng, self.workers, faults.SCHEDULER, rates,
                                 float(rates.get("horizon", 60.0)), restart_delay)
            )
        if faults_plan:
            self.fault_plan.extend(faults_plan)
        for fault in self.fault_plan:
            faults.apply(self, fault)
        _REGISTRY[self.scheduler_address] = self
        # relaxed collector thresholds while the cluster is open (see gcpolicy);
        # given back by close(), or when the cluster is dropped unclosed
        gcpolicy.hold()
        self._release_gc = weakref.finalize(self, gcpolicy.release)
        if virtual_time:
            thread = threading.get_ident()
            token = virtual_time_module.hold(self._sim, thread)
            self._release_time = weakref.finalize(self, virtual_time_module.release, token, thread)
        else:
            self._release_time = _nothing

    # -- membership ------------------------------------------------------------

    def _add_worker(self, address: str, nthreads: int, resources: Any, memory_limit: Any) -> None:
        host = WorkerHost(self._sim, address, nthreads, dict(resources) if resources else None, memory_limit)
        self._sim.workers[address] = host
        host.start()

    @property
    def workers(self) -> list[str]:
        """Addresses of the cluster's workers (alive or not), for ``workers=`` and faults."""
        return list(self._sim.workers)

    @property
    def alive_workers(self) -> list[str]:
        return [a for a, host in self._sim.workers.items() if host.alive]

    @property
    def now(self) -> float:
        """Virtual time, in seconds."""
        return self._sim.clock.now

    @property
    def scheduler(self) -> Any:
        """The scheduler's pure state machine (read it; change it only through messages)."""
        return self._sim.scheduler.state

    def _check_worker(self, address: str) -> None:
        if address not in self._sim.workers:
            raise ValueError(f"unknown worker {address!r}; the cluster's workers are {self.workers}")

    # -- planned faults --------------------------------------------------------

    def crash(self, address: str, at: float) -> None:
        """The worker dies at virtual time ``at`` and stays down."""
        self._plan(Fault("crash", address, at))

    def restart(self, address: str, at: float) -> None:
        """The worker dies at ``at`` and comes back ``restart_delay`` later, empty."""
        self._plan(Fault("restart", address, at))

    def partition(self, a: str, b: str, start: float, end: float) -> None:
        """The link between ``a`` and ``b`` (workers or the scheduler) is down in [start, end)."""
        for x in (a, b):
            if x not in (self.scheduler_address, faults.SCHEDULER):
                self._check_worker(x)
        self._plan(Fault("partition", a, start, end=end, peer=b))

    def slow(self, target: Any, factor: float, start: float, end: float) -> None:
        """A worker's tasks, or a link ``(a, b)``, take ``factor`` times longer in [start, end)."""
        if isinstance(target, tuple):
            a, b = target
            self._plan(Fault("slow", a, start, end=end, peer=b, factor=factor))
        else:
            self._plan(Fault("slow", target, start, end=end, factor=factor))

    def lose_data(self, address: str, at: float) -> None:
        """The worker's stored results vanish at ``at`` (the process lives on)."""
        self._plan(Fault("lose_data", address, at))

    def _plan(self, fault: Fault) -> None:
        if fault.at < self.now:
            raise ValueError(f"cannot plan a fault in the past (at={fault.at}, now={self.now})")
        faults.apply(self, fault)
        self.fault_plan.append(fault)

    # -- running ---------------------------------------------------------------

    def run(self, until: float) -> None:
        """Advance virtual time to ``until`` (running everything due before it)."""
        clock = self._sim.clock
        for backend in list(self._sim.clients.values()):
            backend.flush_client()  # dropped futures are released while time passes
        clock.run_until(lambda: False, timeout=max(0.0, until - clock.now))

    # -- the record --------------------------------------------------------------

    @property
    def trace(self):
        return self._sim.trace

    def records(self, kind: str | None = None) -> list[dict]:
        return self._sim.trace.records(kind)

    def digest(self) -> str:
        return self._sim.trace.digest()

    def plot(self, **kwargs: Any):
        return self._sim.trace.plot(**kwargs)

    # -- clients ---------------------------------------------------------------

    def _connect(self, client: Any):
        from twofold.sim.backend import SimBackend

        if self._sim.closed:
            raise RuntimeError(f"{self.name} is closed")
        return SimBackend(self, f"client-{next(self._clients)}")

    def close(self) -> None:
        self._sim.closed = True
        self._sim.clock.close()
        from twofold.plugins import close_worker

        for host in list(self._sim.workers.values()):  # worker plugins' teardown, uploaded files
            close_worker(host)
        _REGISTRY.pop(self.scheduler_address, None)
        self._release_gc()
        self._release_time()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<SimCluster {self.name!r} workers={len(self.alive_workers)}/{len(self.workers)}"
                f" t={self.now:g} seed={self.seed}>")


def connect(address: str, client: Any):
    """Factory for ``Client("sim://...")``: join an existing simulated cluster."""
    cluster = _REGISTRY.get(address)
    if cluster is None:
        raise ValueError(
            f"no simulated cluster at {address!r} in this process"
            f" (running: {sorted(_REGISTRY) or 'none'})"
        )
    return cluster._connect(client)


register_address("sim://", connect)
