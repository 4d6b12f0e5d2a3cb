"""A warm process to fork workers from: one interpreter start-up, not one per worker.

Starting a worker as ``python -m twofold.runtime.cli worker`` costs an
interpreter and ~0.3 s of imports; with several workers on a busy machine,
and every time a nanny restarts a worker, that is most of the wait.  The
zygote is started once per process (:func:`serve`),
imports the worker's modules, then forks a child per request, which runs
the same command-line entry point (``cli.main(argv)``).  A fork of a
single-threaded process that has started no event loop is safe; the child
makes its own loop.  (It never re-imports the user's ``__main__``, unlike
``multiprocessing``'s fork server: no ``if __name__ == "__main__"`` guard is
needed.)

Protocol, one JSON object per line: requests on the zygote's stdin
``{"argv": [...], "env": {...}, "path": [...]}`` (``path``: the parent's
``sys.path`` now, put in front of the child's); replies on its stdout ``{"ready": true}``
once, ``{"pid": n}`` per request (in order), and ``{"exit": pid, "code": c}``
when a child ends (``c`` negative for a signal, as ``Popen.returncode``).
The zygote exits when its stdin closes (its parent is gone).

:class:`Zygote` is the parent's side; :class:`ForkedProcess` looks like the
part of ``asyncio.subprocess.Process`` the nanny uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import sys
from typing import Any

# --------------------------------------------------------------------------
# The zygote process
# --------------------------------------------------------------------------


def _child(argv: list[str], env: dict[str, str], path: list[str], keep: set[int]) -> None:
    """In the forked child: become a worker process and never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in keep:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # stdout is the protocol pipe: the worker's prints go to stderr
        os.environ.update(env)
        # the parent's import path now (it may have grown since the zygote started)
        sys.path[:0] = [p for p in path if p not in sys.path]
        from twofold.runtime import cli

        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)


def serve() -> None:
    """The zygote's main loop (its process runs only this)."""
    # the worker's modules, imported once here and shared by every fork
    import twofold.runtime.cli  # noqa: F401
    import twofold.runtime.worker  # noqa: F401

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd says a child ended
    out = os.fdopen(os.dup(1), "w", buffering=1)
    stdin = os.fdopen(0, "rb", buffering=0)
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "cmd")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    children: set[int] = set()
    buffer = b""

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    reply({"ready": True})
    while True:
        for key, _ in sel.select():
            if key.data == "child":
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                reap()
                continue
            chunk = stdin.read(65536)
            if not chunk:  # the parent is gone: so are we (the workers notice on their own)
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request["argv"], request.get("env", {}), request.get("path", []),
                           {wake_r, wake_w, out.fileno()})
                children.add(pid)
                reply({"pid": pid})
        reap()


# --------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------


class ForkedProcess:
    """A worker forked by the zygote: ``pid``, ``returncode``, ``wait``, ``send_signal``, ``kill``."""

    def __init__(self, pid: int, exited: asyncio.Future):
        self.pid = pid
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The parent's handle on a zygote process (one per event loop, see :func:`get_zygote`)."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future | None = None
        self._spawns: list[asyncio.Future] = []
        self._exits: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def start(self, env: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from twofold.runtime.zygote import serve; serve()", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = loop.create_task(self._read())

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not (
            self._reader is not None and self._reader.done()
        )

    async def _read(self) -> None:
        stdout = self._proc.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "pid" in msg:
                    self._spawns.pop(0).set_result(msg["pid"])
                elif "exit" in msg:
                    self._exit_future(msg["exit"]).set_result(msg["code"])
                elif msg.get("ready") and not self._ready.done():
                    self._ready.set_result(True)
        finally:
            error = RuntimeError("the worker zygote process ended")
            for fut in [self._ready, *self._spawns]:
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            for fut in self._exits.values():
                if not fut.done():
                    fut.set_result(-signal.SIGKILL)  # its children are orphans now: count them dead

    def _exit_future(self, pid: int) -> asyncio.Future:
        fut = self._exits.get(pid)
        if fut is None:
            fut = self._exits[pid] = asyncio.get_running_loop().create_future()
        return fut

    async def spawn(self, argv: list[str], env: dict[str, str]) -> ForkedProcess:
        """Fork a worker running ``cli.main(argv)`` with ``env`` added to its environment."""
        async with self._lock:  # replies come in request order
            fut = asyncio.get_running_loop().create_future()
            self._spawns.append(fut)
            request = {"argv": argv, "env": env, "path": [p for p in sys.path if p and os.path.isdir(p)]}
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            await self._proc.stdin.drain()
            pid = await fut
        return ForkedProcess(pid, self._exit_future(pid))

    def close(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.stdin.close()


_zygotes: dict[Any, Zygote] = {}


async def get_zygote(env: dict[str, str]) -> Zygote:
    """This loop's zygote, started (with ``env``: PYTHONPATH etc., no secrets) on first use."""
    loop = asyncio.get_running_loop()
    zygote = _zygotes.get(loop)
    if zygote is None or not zygote.alive:
        zygote = _zygotes[loop] = Zygote()
        await zygote.start(env)
    return zygote


