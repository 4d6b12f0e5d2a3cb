"""Helpers shared by the socket-runtime tests (test_runtime_e2e, _cli, _faults).

Everything here is importable by worker processes: the nanny hands the
parent's ``sys.path`` (which holds this ``tests/`` folder under pytest) to its
child in ``PYTHONPATH``, so functions defined here or in a test module are
pickled by reference and imported on the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

#: every blocking call in these tests has a timeout of at most this (seconds)
TIMEOUT = 20.0


# --------------------------------------------------------------------------
# waiting
# --------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def on_loop(cluster: Any, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run ``fn()`` on the cluster's event loop thread (where the scheduler's state lives)."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), cluster._loop).result(timeout)


def scheduler_keys(cluster: Any) -> set[str]:
    """The keys the scheduler of a LocalCluster knows right now."""
    return on_loop(cluster, lambda: set(cluster.scheduler.state.tasks))


def scheduler_clients(cluster: Any) -> set[str]:
    """The client ids connected to the scheduler of a LocalCluster."""
    return on_loop(cluster, lambda: set(cluster.scheduler.clients))


def state_clients(cluster: Any) -> set[str]:
    """The client ids the scheduler's state machine still has records for (fire-and-forget aside)."""
    return on_loop(cluster, lambda: {c for c in cluster.scheduler.state.clients if c != "fire-and-forget"})


def worker_names(cluster: Any) -> dict[str, str]:
    """address -> name of the registered workers."""
    return on_loop(cluster, lambda: {a: ws.name for a, ws in cluster.scheduler.state.workers.items()})


# --------------------------------------------------------------------------
# task functions (module level: importable by worker processes)
# --------------------------------------------------------------------------


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def wait_for_file(path: str, value: Any = "released", timeout: float = TIMEOUT) -> Any:
    """A task that blocks until ``path`` exists (a gate a test opens; works across processes)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def touch(path: str | os.PathLike) -> None:
    Path(path).touch()


def append_line(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: str | os.PathLike) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


def getpid(*_: Any) -> int:
    return os.getpid()


def slow_inc(x, delay: float = 0.05):
    time.sleep(delay)
    return x + 1


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for ``python -m twofold.runtime.cli``: this sys.path, no inherited secret."""
    env = dict(os.environ)
    env.pop("TWOFOLD_SECRET", None)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class Proc:
    """A ``twofold`` command line process whose stderr goes to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "twofold.runtime.cli", *args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env or child_env(),
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args[0]} (pid {self.pid}) still running after {timeout} s; log:\n{self.log()}")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """Stop it and (best effort) what it started: SIGTERM, then SIGKILL after a few seconds."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def descendants_of(pid: int) -> list[int]:
    """All pids below ``pid`` (workers are forked by the nanny's zygote: grandchildren)."""
    out = []
    for child in children_of(pid):
        out += [child, *descendants_of(child)]
    return out


def children_of(pid: int) -> list[int]:
    """Direct child pids of ``pid`` (Linux /proc)."""
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out = [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out
