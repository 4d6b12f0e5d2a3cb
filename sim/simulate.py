"""The simulate switch: every ``LocalCluster(...)`` / ``Client()`` the program makes is simulated.

    TWOFOLD_SIMULATE=7 python my_program.py
    TWOFOLD_SIMULATE=7,crash=0.01,delay=0.05 pytest tests/
    pytest --twofold-simulate=7 tests/          # the same, through the pytest plugin

A spec is a seed, then optional chaos rates by the names ``SimCluster(chaos=)``
takes (:data:`CHAOS_OPTIONS`).  While the switch is on, ``LocalCluster(...)``
returns a :class:`SimulatedLocalCluster` (a ``SimCluster`` with
LocalCluster's attributes) of the shape the real one would have on this
machine, on virtual time (``virtual_time=True``), and ``Client()`` with no
address connects to one that it owns (closing the client closes it).
``Client("tcp://...")``, ``SimCluster(...)`` and subclasses of LocalCluster
are left alone.

Seeds.  The k-th cluster (k = 0, 1, ...) made in a *scope* gets the seed
``derive_seed(SEED, scope, k)`` (sha256 of the three, 48 bits): under pytest
the plugin starts a scope per test, named by its node id, so a test's
clusters do not depend on what ran before it, and two tests of one suite do
not draw the same faults.  Outside pytest the scope is ``""`` for the whole
process: the run is reproduced by running the program again with the same
``TWOFOLD_SIMULATE`` (nothing can intercept a failure there to print it).
"""

from __future__ import annotations

import hashlib
import inspect
import asyncio
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from twofold.sim.backend import SimBackend
from twofold.sim.cluster import _REGISTRY, SimCluster
from twofold.sim.faults import KINDS

ENV = "TWOFOLD_SIMULATE"
#: what a spec may set after the seed: fault rates (per worker per virtual second) and
#: SimCluster's other chaos options (``delay``: probability per message, ``max_delay`` and
#: ``horizon``: seconds)
CHAOS_OPTIONS = (*KINDS, "delay", "max_delay", "horizon")


@dataclass(frozen=True)
class Spec:
    """A parsed switch: the seed and the chaos rates, in the order given."""

    seed: int
    chaos: tuple[tuple[str, float], ...] = ()

    @property
    def rates(self) -> dict[str, float]:
        return dict(self.chaos)

    def __str__(self) -> str:
        return ",".join([str(self.seed), *(f"{name}={value:g}" for name, value in self.chaos)])


def parse(text: Any) -> Spec:
    """``"7"`` or ``"7,crash=0.01,delay=0.05"`` -> :class:`Spec` (ValueError naming what is wrong)."""
    if isinstance(text, Spec):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise TypeError(f"a simulate spec is a str such as '7' or '7,crash=0.01', got {text!r}")
    head, *rest = [part.strip() for part in text.split(",")]
    usage = f"expected SEED or SEED,NAME=RATE,... with NAME one of {', '.join(CHAOS_OPTIONS)}"
    try:
        seed = int(head)
    except ValueError:
        raise ValueError(f"simulate spec {text!r}: the seed {head!r} is not an integer; {usage}") from None
    if seed < 0:
        raise ValueError(f"simulate spec {text!r}: the seed must be >= 0; {usage}")
    chaos: dict[str, float] = {}
    for part in rest:
        name, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not name:
            raise ValueError(f"simulate spec {text!r}: {part!r} is not NAME=RATE; {usage}")
        if name not in CHAOS_OPTIONS:
            raise ValueError(f"simulate spec {text!r}: unknown chaos option {name!r}; {usage}")
        if name in chaos:
            raise ValueError(f"simulate spec {text!r}: {name!r} is given twice")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"simulate spec {text!r}: {name}={value!r} is not a number") from None
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"simulate spec {text!r}: {name} must be a finite number >= 0, got {value}")
        if name == "delay" and number > 1:
            raise ValueError(f"simulate spec {text!r}: delay is a probability per message (0..1), got {value}")
        chaos[name] = number
    return Spec(seed, tuple(chaos.items()))


# -- the active setting ---------------------------------------------------------

_UNSET: Any = object()
#: set by :func:`activate` (the pytest option, :func:`simulating`); _UNSET: the env var decides
_explicit: Any = _UNSET
_env_parsed: tuple[str, Spec] | None = None


class _Scope:
    """Which clusters the current scope (a test, or the process) has made."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: (seed, cluster name) of each cluster made in this scope, in order
        self.made: list[tuple[int, str]] = []


_scope = _Scope("")


def active() -> Spec | None:
    """The switch in force: what :func:`activate` set, else ``$TWOFOLD_SIMULATE``, else None (off)."""
    global _env_parsed
    if _explicit is not _UNSET:
        return _explicit
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    if _env_parsed is None or _env_parsed[0] != text:
        try:
            _env_parsed = (text, parse(text))
        except ValueError as err:
            raise ValueError(f"${ENV}: {err}") from None
    return _env_parsed[1]


def activate(spec: Any) -> Any:
    """Turn the switch on with ``spec`` (a Spec, str or int), or force it off with None;
    returns the previous setting, for :func:`restore`."""
    global _explicit
    previous = _explicit
    _explicit = None if spec is None else parse(spec)
    return previous


def restore(previous: Any) -> None:
    """Put back what :func:`activate` returned (``_UNSET``: the env var decides again)."""
    global _explicit
    _explicit = previous


def install_virtual_loops() -> Any:
    """Every new asyncio loop (``asyncio.run``, ``new_event_loop``) a :class:`~twofold.sim.aio.VirtualTimeLoop`,
    so an async program's ``asyncio.sleep``/``wait_for`` run on the simulation's clock as its
    Client's cluster does (the pytest option does this for the session); returns the previous
    policy, to put back with ``asyncio.set_event_loop_policy``."""
    import asyncio

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_VirtualLoopPolicy())
    return previous


class _VirtualLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        from twofold.sim.aio import VirtualTimeLoop

        return VirtualTimeLoop()


def begin(scope: str) -> None:
    """A new scope (the pytest plugin: one per test): cluster seeds count from 0 again."""
    global _scope
    _scope = _Scope(str(scope))


def made() -> list[tuple[int, str]]:
    """(seed, name) of the clusters the switch made in the current scope."""
    return list(_scope.made)


@contextmanager
def simulating(spec: Any, scope: str = "") -> Iterator[Spec | None]:
    """The switch on with ``spec`` (or off, for None) inside the block, in a fresh scope."""
    global _scope
    previous, outer = activate(spec), _scope
    _scope = _Scope(scope)
    try:
        yield active()
    finally:
        restore(previous)
        _scope = outer


def derive_seed(seed: int, scope: str, k: int) -> int:
    """The seed of the k-th cluster of ``scope`` (stable across processes and PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"twofold-simulate|{seed}|{scope}|{k}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


# -- LocalCluster(...) and Client() under the switch ------------------------------

#: LocalCluster parameters given to the SimCluster (the shape, its limits, the scheduler's config,
#: the policy; processes=True: every argument and result makes the pickle round trip, serialize=True)
MAPPED = ("n_workers", "threads_per_worker", "memory_limit", "resources", "scheduler_config", "policy", "processes")
#: LocalCluster parameters accepted and kept as attributes but without effect on the simulator:
#: host/scheduler_port (no sockets: the address is sim://...), security (no connections to secure), timeout (no processes to wait
#: for), silence_logs (no worker processes), name (simulated workers are worker-0, worker-1...),
#: dashboard_address (checked as LocalCluster does; no dashboard, dashboard_link is None)
IGNORED = ("host", "scheduler_port", "security", "timeout", "silence_logs", "name",
           "dashboard_address")  # fmt: skip


def local_cluster(*args: Any, **kwargs: Any) -> SimulatedLocalCluster:
    """What ``LocalCluster(*args, **kwargs)`` is while the switch is on (TypeError for what it would refuse)."""
    from twofold.client.client import check_dashboard_address
    from twofold.runtime.local import LocalCluster, local_shape, parse_memory

    spec = active()
    if spec is None:
        raise RuntimeError("the simulate switch is off: make a LocalCluster instead")
    try:
        bound = inspect.signature(LocalCluster.__init__).bind(None, *args, **kwargs)
    except TypeError as err:
        raise TypeError(f"LocalCluster() {err}") from None
    bound.apply_defaults()
    options = dict(bound.arguments)
    del options["self"]
    n_workers, threads = local_shape(options["n_workers"], options["threads_per_worker"], options["processes"])
    memory_limit = parse_memory(options["memory_limit"])
    check_dashboard_address(options["dashboard_address"])
    k = len(_scope.made)
    seed = derive_seed(spec.seed, _scope.name, k)
    name = f"simulated-{seed}"
    while f"sim://{name}" in _REGISTRY:  # the same scope run twice while its cluster is open
        name += "+"
    cluster = SimulatedLocalCluster(
        n_workers, threads, seed, options["resources"], memory_limit,
        chaos=spec.rates or None, scheduler_config=options["scheduler_config"], policy=options["policy"], serialize=bool(options["processes"]),
        name=name, virtual_time=True,
    )  # fmt: skip
    cluster.switch = spec
    #: every LocalCluster argument, defaults filled in (the ignored ones are kept here)
    cluster.local_options = options
    cluster.processes = options["processes"]
    cluster.security = options["security"]
    cluster.dashboard_address = options["dashboard_address"]
    cluster.dashboard_link = None
    _scope.made.append((seed, name))
    return cluster


_RUNTIME_ONLY = ("nannies", "worker_servers", "_loop")


class SimulatedLocalCluster(SimCluster):
    """A SimCluster standing in for a LocalCluster: LocalCluster's attributes, ``wait_for_workers``,
    ``close(timeout)`` and ``status``; its runtime internals (nannies, worker servers, event
    loop) raise AttributeError saying why.  ``scheduler`` is SimCluster's (the state machine)."""

    def __init__(self, n_workers: int, threads_per_worker: int, seed: int, resources: Any, memory_limit: Any,
                 **options: Any) -> None:  # fmt: skip
        super().__init__(n_workers, threads_per_worker, seed, resources, memory_limit, **options)
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.resources = dict(resources) if resources else None
        self.memory_limit = memory_limit
        self.status = "running"

    def __getattr__(self, name: str) -> Any:
        if name in _RUNTIME_ONLY:
            raise AttributeError(
                f"LocalCluster.{name} does not exist on the simulated cluster the simulate switch "
                f"(${ENV} / --twofold-simulate) made in its place: there are no processes, sockets "
                "or event loop; code that needs them is runtime-only"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        """Until ``n`` workers are registered with the scheduler (``timeout`` in virtual seconds)."""
        from twofold.errors import TimeoutError as TwofoldTimeoutError

        deadline = None if timeout is None else self.now + timeout
        while len(self.scheduler.workers) < n:
            if self._sim.closed:
                raise RuntimeError(f"{self.name} is closed")
            if deadline is not None and self.now >= deadline:
                raise TwofoldTimeoutError(f"only {len(self.scheduler.workers)} of {n} workers registered "
                                          f"within {timeout} virtual s")  # fmt: skip
            step = 0.01 if deadline is None else min(0.01, deadline - self.now)
            self.run(self.now + step)

    def _connect_owned(self, client: Any) -> SimBackend:
        """The connection of a ``Client()`` (no address) that made this cluster: closing it closes the cluster."""
        if self._sim.closed:
            raise RuntimeError(f"{self.name} is closed")
        return _OwningBackend(self, f"client-{next(self._clients)}")

    def close(self, timeout: float | None = None) -> None:
        """Close (``timeout`` is accepted as LocalCluster's; nothing real to wait for)."""
        if self.status == "closed":
            return
        self.status = "closed"
        super().close()

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" (LocalCluster under {ENV}={self.switch})>"


class _OwningBackend(SimBackend):
    """A SimBackend that closes its cluster when the client closes (``Client()`` started it)."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.cluster.close()
