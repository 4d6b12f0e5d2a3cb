"""The scheduler server: connections in, :class:`SchedulerState` in the middle.

Every connection is a client or a worker, decided by its first message
(``AddClient`` or ``AddWorker``); from then on it may send only the messages
of its kind, naming itself.  A message that breaks those rules, or that the
machine refuses with an exception, closes *that* connection with a logged
reason; the scheduler and everyone else carry on.

What a peer may send and where an output goes are read from each message
class's own declaration (``senders`` and ``destination``, see
:func:`twofold.messages.message`): to the worker or client the message
names, ``SetTimer`` onto the event loop, and ``CloseWorker`` closes the
worker's connection.  Replies leave batched: the
``Comm`` coalesces everything sent while one incoming batch is handled.

The scheduler never unpickles user data: run specs, results and errors are
bytes it forwards.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import time
from typing import Any

from twofold import messages as M
from twofold.config import SchedulerConfig
from twofold.errors import CommClosedError
from twofold.messages_ops import StopScheduler
from twofold.runtime import inproc, logs
from twofold.runtime.comm import Comm, Listener, listen
from twofold.runtime.inproc import InprocComm
from twofold.runtime.framing import FrameLimits
from twofold.scheduler import SchedulerState

logger = logging.getLogger("twofold.runtime.scheduler")

#: the scheduler reads control messages only: a payload frame closes the connection before it is read
SCHEDULER_LIMITS = FrameLimits(max_frames=0, max_frame_bytes=0, max_total_bytes=FrameLimits().max_header_bytes + 64)

class SchedulerServer:
    """Serve a :class:`SchedulerState` on ``host:port`` (``port=0``: any free port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: SchedulerConfig | None = None,
        policy: Any = None,
        secret: bytes | str | None = None,
        ssl: Any = None,
        limits: FrameLimits = SCHEDULER_LIMITS,
        name: str = "scheduler",
    ):
        self.state = SchedulerState(config, policy)
        self._host = host
        self._port = port
        self._secret = secret
        self._ssl = ssl
        self._limits = limits
        self._name = name
        self._listener: Listener | None = None
        self.address = ""
        self.workers: dict[str, Comm] = {}
        self.clients: dict[str, Comm] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._inproc: set[InprocComm] = set()
        self._inproc_tasks: set[asyncio.Task] = set()
        self._workers_changed: asyncio.Event | None = None
        self._sid = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopped: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<SchedulerServer {self.address or 'not started'}: {len(self.workers)} workers, {len(self.clients)} clients>"

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> "SchedulerServer":
        logs.attach(logger.name)  # get_scheduler_logs()
        self._loop = asyncio.get_running_loop()
        self._workers_changed = asyncio.Event()
        self.stopped = asyncio.Event()  # set once closed (Client.shutdown, or close())
        self._listener = await listen(
            self._host, self._port, self._serve, kind="scheduler", name=self._name, secret=self._secret,
            ssl=self._ssl, limits=self._limits,
        )  # fmt: skip
        self.address = self._listener.address
        logger.info("scheduler listening at %s", self.address)
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stopped is not None:
            self.stopped.set()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for comm in list(self._inproc):
            comm.abort("scheduler closed")
        if self._inproc_tasks:
            await asyncio.wait(list(self._inproc_tasks), timeout=2.0)
        if self._listener is not None:
            await self._listener.close()
        logger.info("scheduler at %s closed", self.address)

    async def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        """Return once at least ``n`` workers are registered."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.workers) < n:
            if self._closed:
                raise CommClosedError("the scheduler closed while waiting for workers")
            event = self._workers_changed
            event.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise asyncio.TimeoutError
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                if len(self.workers) >= n:
                    return
                raise

    # -- connections -----------------------------------------------------------

    def connect_inproc(self, kind: str, name: str) -> InprocComm:
        """A connection from this process's event loop (a Client next to its LocalCluster).

        Call on the scheduler's loop; returns the caller's end.
        """
        if self._closed:
            raise CommClosedError(f"the scheduler at {self.address} is closed")
        mine, theirs = inproc.pair(self._loop, (kind, name), ("scheduler", self._name), f"inproc://{self.address}")
        self._inproc.add(theirs)
        task = self._loop.create_task(self._serve_inproc(theirs))
        self._inproc_tasks.add(task)
        task.add_done_callback(self._inproc_tasks.discard)
        return mine

    async def _serve_inproc(self, comm: InprocComm) -> None:
        try:
            await self._serve(comm)
        except CommClosedError:
            pass
        except Exception as exc:
            logger.exception("in-process connection handler failed")
            comm.abort(f"handler failed: {type(exc).__name__}: {exc}")
        finally:
            self._inproc.discard(comm)
            await comm.close("handler returned")

    async def _serve(self, comm: Comm) -> None:
        msgs, frames = await comm.recv()
        if frames:
            comm.abort("the scheduler takes no payload frames")
            return
        first = msgs[0] if msgs else None
        if type(first) is M.AddClient and isinstance(first.client, str):
            await self._serve_client(comm, first.client, msgs)
        elif type(first) is M.AddWorker and isinstance(first.worker, str):
            await self._serve_worker(comm, first.worker, msgs)
        else:
            what = type(first).__name__ if first is not None else "an empty batch"
            logger.warning("dropping %s: its first message was %s, not AddClient or AddWorker", comm.peer_address, what)
            comm.abort(f"first message must be AddClient or AddWorker, got {what}")

    async def _serve_client(self, comm: Comm, client: str, msgs: tuple) -> None:
        if client in self.clients or client == "fire-and-forget":
            logger.warning("refusing a second connection for client %r from %s", client, comm.peer_address)
            comm.abort(f"client id {client!r} is already connected")
            return
        self.clients[client] = comm
        logger.info("client %s connected from %s", client, comm.peer_address)
        try:
            await self._pump(comm, client, "client", msgs)
        finally:
            if self.clients.get(client) is comm:
                del self.clients[client]
                if not self._closed:
                    self._handle(M.RemoveClient(0.0, f"client-lost-{self._next_sid()}", client))
            logger.info("client %s disconnected: %s", client, comm.close_reason or "closed")

    async def _serve_worker(self, comm: Comm, worker: str, msgs: tuple) -> None:
        if worker in self.workers:
            logger.warning("refusing a second connection for worker %s", worker)
            comm.abort(f"worker {worker!r} is already registered")
            return
        self.workers[worker] = comm
        self._workers_changed.set()
        first = msgs[0]
        logger.info("worker %s registered (%d threads%s)", worker, first.nthreads,
                    f", name {first.name!r}" if first.name and first.name != worker else "")  # fmt: skip
        reason = "connection lost"
        try:
            await self._pump(comm, worker, "worker", msgs)
        finally:
            reason = comm.close_reason or reason
            if self.workers.get(worker) is comm:
                del self.workers[worker]
                self._workers_changed.set()
                if not self._closed:
                    self._handle(M.RemoveWorker(0.0, f"worker-lost-{self._next_sid()}", worker, reason))
            logger.info("worker %s left: %s", worker, reason)

    async def _pump(self, comm: Comm, identity: str, kind: str, msgs: tuple) -> None:
        """Feed the machine this connection's messages until it closes.

        A message is taken only if its class declares that a ``kind`` peer
        may send it and it names this connection's peer as its sender."""
        while True:
            for msg in msgs:
                senders = getattr(type(msg), "senders", None)  # (a batch may hold plain values: refused)
                field = senders.get(kind) if senders is not None else None
                if field is None or getattr(msg, field) != identity:
                    why = (f"{type(msg).__name__} is not allowed from a {kind}" if field is None
                           else f"{type(msg).__name__} names {getattr(msg, field)!r}, not {identity!r}")  # fmt: skip
                    logger.warning("dropping %s (%s): %s", identity, comm.peer_address, why)
                    comm.abort(why)
                    return
                try:
                    self._handle(msg)
                except Exception as exc:
                    logger.exception("the scheduler refused %s from %s", type(msg).__name__, identity)
                    comm.abort(f"message refused: {type(msg).__name__}: {exc}")
                    return
            try:
                msgs, frames = await comm.recv()
            except CommClosedError:
                return
            if frames:
                comm.abort("the scheduler takes no payload frames")
                return

    # -- the machine -------------------------------------------------------------

    def _next_sid(self) -> int:
        self._sid += 1
        return self._sid

    def _handle(self, msg: M.Message) -> None:
        M.restamp(msg, time.monotonic())
        self._route(self.state.handle(msg))
        if self.state.plugin_hub is not None:  # scheduler plugins: their hooks, after the outputs
            self.state.plugin_hub.after(msg)

    def _route(self, outs: list) -> None:
        workers = self.workers
        clients = self.clients
        for out in outs:
            kind = type(out).destination
            if kind == "worker":
                comm = workers.get(out.worker)
                if comm is not None and not comm.closed:
                    comm.send(out)
            elif kind == "client":
                comm = clients.get(out.client)
                if comm is not None and not comm.closed:
                    comm.send(out)
            elif kind == "timer":
                self._set_timer(out)
            elif kind == "close":
                comm = workers.get(out.worker)
                if comm is not None:
                    logger.warning("closing worker %s: %s", out.worker, out.reason)
                    comm.send(out)
                    self._loop.create_task(comm.close(out.reason))
            elif kind == "driver":
                if type(out) is StopScheduler:
                    self._loop.create_task(self._stop(out.reason))
                else:
                    self._loop.create_task(self._run_user_code(out))

    async def _stop(self, reason: str) -> None:
        """``Client.shutdown``: flush what is queued to every connection, then close."""
        logger.info("scheduler at %s stopping: %s", self.address, reason)
        comms = [*self.clients.values(), *self.workers.values()]
        await asyncio.gather(*(c.close(reason) for c in comms if not c.closed), return_exceptions=True)
        await self.close()

    async def _run_user_code(self, out: M.RunUserCode) -> None:
        """``run_on_scheduler``: user code in this process, on this loop (a coroutine function
        is awaited; a plain one blocks the loop while it runs, as in dask); ``dask_scheduler``
        is the state machine (read it, never change it)."""
        from twofold.client.remote import call_with
        from twofold.runtime.payload import dumps_small

        try:
            func, args, kwargs = pickle.loads(out.function)
            result = call_with(func, args, kwargs, "dask_scheduler", self.state)
            if inspect.isawaitable(result):
                result = await result
            reply = M.CoordinationReply(time.monotonic(), out.stimulus_id, out.client, out.request_id, True,
                                        dumps_small(result))  # fmt: skip
        except Exception as exc:  # the user's error (or an unpicklable result) goes back to the user
            try:
                pickled = dumps_small(exc)
            except Exception:
                pickled = None
            reply = M.CoordinationReply(time.monotonic(), out.stimulus_id, out.client, out.request_id, False,
                                        pickled, "pickled", f"{type(exc).__name__}: {exc}")  # fmt: skip
        comm = self.clients.get(out.client)
        if comm is not None and not comm.closed:
            comm.send(reply)

    def _set_timer(self, out: M.SetTimer) -> None:
        old = self._timers.pop(out.token, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, out.at - time.monotonic())
        self._timers[out.token] = self._loop.call_later(delay, self._fire, out.token)

    def _fire(self, token: str) -> None:
        self._timers.pop(token, None)
        if not self._closed:
            self._handle(M.TimerFired(0.0, f"timer-{self._next_sid()}", token))
