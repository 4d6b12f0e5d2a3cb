"""``LocalCluster``: a scheduler and workers on this machine, as dask's is.

The scheduler runs in this process, on the shared event loop thread.
Workers are separate processes, each under a :class:`~twofold.runtime.nanny.Nanny`
(``processes=True``, the default: one single-threaded worker per core), or
:class:`~twofold.runtime.worker.WorkerServer` objects on the same loop,
running tasks on threads (``processes=False``: one worker with a thread per
core).  The constructor returns once every worker has registered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from twofold.config import SchedulerConfig
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.runtime import loop as loops
from twofold.runtime.nanny import Nanny
from twofold.runtime.scheduler import SchedulerServer
from twofold.runtime.security import Security
from twofold.runtime.worker import WorkerServer

logger = logging.getLogger("twofold.runtime.local")

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_memory(value: Any) -> int | None:
    """``"4GB"``, ``"512 MiB"``, ``4e9``, ``None``/``"auto"``/0 (no limit) -> bytes or None."""
    if value in (None, "auto", 0, "0"):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"memory_limit must be >= 0, got {value!r}")
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number):] or "b"
        if unit in _UNITS and number:
            try:
                return int(float(number) * _UNITS[unit])
            except ValueError:
                pass
    raise ValueError(f"memory_limit {value!r} is not a size like 4e9, '4GB' or '512MiB'")


def local_shape(n_workers: Any, threads_per_worker: Any, processes: bool) -> tuple[int, int]:
    """(workers, threads each) of a LocalCluster on this machine, the unset ones from its cores.

    Shared with the simulate switch (``twofold.sim.simulate``), so that a
    simulated ``LocalCluster()`` has the shape the real one would have here.
    """
    cores = os.cpu_count() or 1
    if n_workers is None:
        n_workers = cores if processes else 1
        if threads_per_worker is not None and processes:
            n_workers = max(1, cores // threads_per_worker)
    if threads_per_worker is None:
        threads_per_worker = 1 if processes else max(1, cores // max(1, n_workers))
    for label, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{label} must be an int, got {value!r}")
    if n_workers < 0 or threads_per_worker < 1:
        raise ValueError(f"need n_workers >= 0 and threads_per_worker >= 1, got {n_workers}, {threads_per_worker}")
    return n_workers, threads_per_worker


def _simulating() -> bool:
    """Is the simulate switch on?  Cheap when it is off: the simulator is imported only if asked for."""
    switch = sys.modules.get("twofold.sim.simulate")
    if switch is not None:
        return switch.active() is not None
    return bool(os.environ.get("TWOFOLD_SIMULATE", "").strip())


class LocalCluster:
    """A scheduler (this process) and ``n_workers`` workers on this machine.

    While the simulate switch is on (``TWOFOLD_SIMULATE=SEED`` or ``pytest
    --twofold-simulate=SEED``: see ``twofold.sim.simulate``),
    ``LocalCluster(...)`` returns a simulated cluster of the same shape
    instead (subclasses stay real: their own code would be skipped).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is LocalCluster and _simulating():
            from twofold.sim.simulate import local_cluster

            return local_cluster(*args, **kwargs)  # not a LocalCluster: Python skips __init__
        return super().__new__(cls)

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: Any = None,
        *,
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        security: Security | None = None,
        resources: dict[str, float] | None = None,
        scheduler_config: SchedulerConfig | None = None,
        policy: Any = None,
        timeout: float = 60.0,
        silence_logs: bool = True,  # worker processes log warnings and errors only (as dask's default)
        name: str = "local",
        dashboard_address: Any = ":8787",
    ):
        n_workers, threads_per_worker = local_shape(n_workers, threads_per_worker, processes)
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        self.memory_limit = parse_memory(memory_limit)
        self.resources = dict(resources) if resources else None
        self.security = security or Security.from_env()
        self.name = name
        from twofold.client.client import check_dashboard_address

        #: accepted as dask's; no dashboard is served yet, so ``dashboard_link`` is None
        self.dashboard_address = check_dashboard_address(dashboard_address)
        self.dashboard_link: str | None = None
        self._host = host
        self._port = scheduler_port
        self._config = scheduler_config
        #: the scheduling policy (None: the default); checked before anything starts
        self._policy = policy
        if policy is not None:
            from twofold.scheduler.policies.base import check_policy

            check_policy(policy)
        self._silence = silence_logs
        self.scheduler: SchedulerServer | None = None
        self.nannies: list[Nanny] = []
        self.worker_servers: list[WorkerServer] = []
        self.status = "starting"
        self._loop = loops.get_loop()
        try:
            loops.run_sync(self._loop, self._start(timeout))
        except BaseException:
            self.close()
            raise
        self.status = "running"

    # -- starting ------------------------------------------------------------------

    async def _start(self, timeout: float) -> None:
        sec = self.security
        self.scheduler = await SchedulerServer(self._host, self._port, config=self._config, policy=self._policy,
                                               secret=sec.secret,
                                               ssl=sec.server_context("scheduler")).start()  # fmt: skip
        address = self.scheduler.address
        for i in range(self.n_workers):
            await self._add_worker(address, f"{self.name}-{i}")
        try:
            await self.scheduler.wait_for_workers(self.n_workers, timeout)
        except asyncio.TimeoutError:
            raise TwofoldTimeoutError(
                f"only {len(self.scheduler.workers)} of {self.n_workers} workers registered within {timeout} s"
            ) from None

    async def _add_worker(self, address: str, name: str) -> None:
        sec = self.security
        if self.processes:
            log_args = ["--log-level", "WARNING"] if self._silence else []
            nanny = Nanny(address, nthreads=self.threads_per_worker, name=name, memory_limit=self.memory_limit,
                          resources=self.resources, host=self._host, secret=sec.secret,
                          extra_args=sec.worker_cli_args() + log_args, quiet=False)  # fmt: skip
            self.nannies.append(nanny)
            await nanny.start()
        else:
            worker = WorkerServer(address, nthreads=self.threads_per_worker, name=name, resources=self.resources,
                                  memory_limit=self.memory_limit, host=self._host, secret=sec.secret,
                                  ssl_server=sec.server_context("worker") if sec.tls else None,
                                  ssl_client=sec.client_context(address, "worker") if sec.tls else None,
                                  scheduler_server=self.scheduler)  # fmt: skip
            self.worker_servers.append(worker)
            await worker.start()
            asyncio.get_running_loop().create_task(self._restart_when_asked(worker, address, name))

    async def _restart_when_asked(self, worker: WorkerServer, address: str, name: str) -> None:
        """A thread worker closed by ``Client.restart`` starts again, empty (a nanny's job for processes)."""
        from twofold.messages_ops import RESTART_REASON

        reason = await asyncio.shield(worker.finished)
        if self.status != "closed" and isinstance(reason, str) and reason.endswith(RESTART_REASON):
            try:
                self.worker_servers.remove(worker)
            except ValueError:
                pass
            try:
                await self._add_worker(address, name)
            except Exception:
                logger.warning("%r could not restart worker %s", self, name, exc_info=True)

    # -- what a Client needs ---------------------------------------------------------

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address if self.scheduler is not None else ""

    @property
    def workers(self) -> list[str]:
        """The registered workers' addresses (the strings ``workers=`` accepts)."""
        return list(self.scheduler.workers) if self.scheduler is not None else []

    def _connect(self, client: Any) -> Any:
        from twofold.runtime.backend import RuntimeBackend

        if self.status != "running":
            raise RuntimeError(f"{self!r} is not running")
        return RuntimeBackend(self.scheduler_address, security=self.security, cluster=self)

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        loops.run_sync(self._loop, self.scheduler.wait_for_workers(n, timeout))

    # -- closing ---------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        if self.status == "closed":
            return
        self.status = "closed"
        try:
            loops.run_sync(self._loop, self._close(), timeout)
        except Exception:
            logger.warning("%r did not close cleanly", self, exc_info=True)

    async def _close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nannies), *(w.close("cluster closed") for w in self.worker_servers),
                             return_exceptions=True)  # fmt: skip
        if self.scheduler is not None:
            await self.scheduler.close()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "processes" if self.processes else "threads"
        return (f"LocalCluster({self.scheduler_address!r}, workers={len(self.workers)}, "
                f"threads_per_worker={self.threads_per_worker}, {kind}, status={self.status})")  # fmt: skip

