"""The nanny: starts a worker process and starts it again when it dies.

A worker process (``python -m twofold.runtime.cli worker --no-nanny``) ends
with an exit code that says why (:data:`EXIT_SCHEDULER_LOST`: the scheduler
is gone, so restarting is pointless; 0: asked to stop).  Any other death —
a crash, ``SIGKILL``, the scheduler closing it for missed heartbeats — gets
a fresh process, unless the worker keeps dying within seconds of starting
(then the nanny gives up and says so instead of looping forever).

Workers are forked from a warm zygote process (:mod:`twofold.runtime.zygote`):
one interpreter start-up for all of them and for every restart.  The shared
secret goes to the child in its environment, never on its command line
(which other users can read).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from twofold.runtime.zygote import get_zygote

logger = logging.getLogger("twofold.runtime.nanny")

#: a worker's exit code when it lost the scheduler (the nanny then stops too)
EXIT_SCHEDULER_LOST = 3
#: a worker's exit code when the scheduler restarts it (``Client.restart``): started again, never a "fast death"
EXIT_RESTART = 5
#: give up after this many deaths in a row each within FAST_DEATH seconds of starting
MAX_FAST_DEATHS = 5
FAST_DEATH = 5.0


class Nanny:
    """One supervised worker process."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        memory_limit: int | None = None,
        resources: dict[str, float] | None = None,
        host: str = "127.0.0.1",
        secret: bytes | str | None = None,
        extra_args: list[str] | None = None,
        restart: bool = True,
        quiet: bool = False,
        fork: bool = True,
    ):
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads
        self.name = name
        self.memory_limit = memory_limit
        self.resources = resources
        self.host = host
        self._secret = secret
        self._extra_args = list(extra_args or [])  # TLS paths, log level: passed on to the worker command
        self._restart = restart
        self._quiet = quiet
        #: fork workers from a warm zygote (see zygote.py) rather than start an interpreter each
        self._fork = fork and hasattr(os, "fork")
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._closing = False
        self._watcher: asyncio.Task | None = None
        #: set once the nanny stops for good; its result is the reason
        self.finished: asyncio.Future | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<Nanny {self.name!r} pid={pid} restarts={self.restarts}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "twofold.runtime.cli", "worker", self.scheduler_address, "--no-nanny",
               "--nthreads", str(self.nthreads), "--host", self.host]  # fmt: skip
        if self.name:
            cmd += ["--name", self.name]
        if self.memory_limit:
            cmd += ["--memory-limit", str(self.memory_limit)]
        if self.resources:
            cmd += ["--resources", " ".join(f"{k}={v}" for k, v in self.resources.items())]
        return cmd + self._extra_args

    async def _spawn(self) -> None:
        env = dict(os.environ)
        # the child must import the same twofold, and the user's modules next to the script
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
        extra = {}
        if self._secret is not None:
            extra["TWOFOLD_SECRET"] = self._secret.decode() if isinstance(self._secret, bytes) else self._secret
        if self._fork and not self._quiet:
            try:
                zygote = await get_zygote(env)
                self.process = await zygote.spawn(self._command()[3:], extra)
                return
            except (OSError, RuntimeError) as exc:
                logger.warning("cannot fork workers from a zygote (%s); starting a fresh interpreter instead", exc)
                self._fork = False
        env.update(extra)
        out = asyncio.subprocess.DEVNULL if self._quiet else None
        self.process = await asyncio.create_subprocess_exec(*self._command(), env=env, stdin=asyncio.subprocess.DEVNULL,
                                                            stdout=out, stderr=out)  # fmt: skip

    async def start(self) -> "Nanny":
        self.finished = asyncio.get_running_loop().create_future()
        await self._spawn()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        fast_deaths = 0
        while True:
            started = time.monotonic()
            code = await self.process.wait()
            if self._closing:
                break
            if code == EXIT_SCHEDULER_LOST:
                self._finish(f"worker {self.name} lost the scheduler")
                return
            if not self._restart or code == 0:
                self._finish(f"worker {self.name} exited with code {code}")
                return
            if code == EXIT_RESTART:
                fast_deaths = 0  # asked for (Client.restart): not a crash loop
            else:
                fast_deaths = fast_deaths + 1 if time.monotonic() - started < FAST_DEATH else 1
            if fast_deaths >= MAX_FAST_DEATHS:
                logger.error("worker %s died %d times in a row within %.0f s of starting (last exit code %s); "
                             "not restarting it again", self.name, fast_deaths, FAST_DEATH, code)  # fmt: skip
                self._finish(f"worker {self.name} keeps dying")
                return
            self.restarts += 1
            logger.warning("worker %s (pid %s) died with exit code %s; restarting it (restart %d)", self.name,
                           self.process.pid, code, self.restarts)  # fmt: skip
            await self._spawn()
        self._finish("closed")

    def _finish(self, reason: str) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(reason)

    async def close(self, timeout: float = 3.0) -> None:
        """Stop the worker (SIGTERM, then SIGKILL after ``timeout``) and do not restart it."""
        self._closing = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), timeout)
            except ProcessLookupError:
                pass
            except asyncio.TimeoutError:
                logger.warning("worker %s did not stop within %.1f s of SIGTERM; killing it", self.name, timeout)
                proc.kill()
                await proc.wait()
        if self._watcher is not None:
            try:
                await asyncio.wait_for(self._watcher, 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._watcher.cancel()
        self._finish("closed")

    def kill(self) -> None:
        """SIGKILL the worker process (tests; the nanny restarts it)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
