"""The worker server: a :class:`WorkerState` driven by real connections and threads.

It connects to the scheduler (control), listens on its own port for peers
and clients (data plane: :mod:`twofold.runtime.protocol`), runs tasks on
:class:`~twofold.runtime.execution.TaskThreads`, fetches dependencies from
peers directly over pooled connections, and sends heartbeats.

The machine and the data store are guarded by one lock, and a task thread
that finishes a task tells the machine itself and runs the next task the
machine hands out, without a trip through the event loop; the loop is woken
(once per burst, not per task) only to send the machine's messages.

Actor instances and the thread that runs their calls are in
:mod:`twofold.runtime.actors`; an actor's key holds its handle as data.

When the scheduler connection is lost the worker closes (its nanny, if any,
decides what comes next); ``finished`` says why.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import pickle
import threading
import time
from types import CoroutineType
from typing import Any

from twofold import messages as M
from twofold.client.spec import substitute
from twofold.config import WorkerConfig
from twofold.errors import CommClosedError, ProtocolError
from twofold.runtime import execution, logs, profiler, topics
from twofold.runtime.actors import WorkerActors
from twofold.runtime.comm import Comm, Listener, connect, listen
from twofold.runtime.payload import pack, unpack
from twofold.runtime.protocol import (
    ActorRequest,
    DataReply,
    GetData,
    PutData,
    PutReply,
    RunReply,
    RunRequest,
    TopicPost,
)
from twofold.plugins import close_worker as close_plugins
from twofold.plugins import flush_transitions, install_stored
from twofold.runtime.rpc import ConnectionPool
from twofold.worker import WorkerState

logger = logging.getLogger("twofold.runtime.worker")

#: workers running in this process, by address: data moves between them (and to a
#: client on the same loop) as the objects themselves, as dask's threads-only clusters do
_LOCAL: dict[str, "WorkerServer"] = {}


def local_worker(address: str, loop: asyncio.AbstractEventLoop) -> "WorkerServer | None":
    """The worker at ``address`` if it runs on ``loop`` in this process."""
    worker = _LOCAL.get(address)
    return worker if worker is not None and worker._loop is loop and not worker._closing else None


class WorkerServer:
    """One worker: ``await start()``, then it serves until ``await close()`` or the scheduler goes."""

    #: set while a worker plugin overrides ``transition`` (``twofold.plugins``)
    plugin_tap = None

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        resources: dict[str, float] | None = None,
        memory_limit: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes | str | None = None,
        ssl_server: Any = None,
        ssl_client: Any = None,
        heartbeat_interval: float = 1.0,
        config: WorkerConfig | None = None,
        connect_timeout: float = 10.0,
        scheduler_server: Any = None,
    ):
        if not isinstance(nthreads, int) or nthreads < 1:
            raise ValueError(f"nthreads must be an int >= 1, got {nthreads!r}")
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads
        self.name = name
        self.resources = dict(resources) if resources else None
        self.memory_limit = memory_limit
        self._host = host
        self._port = port
        self._secret = secret
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._heartbeat_interval = heartbeat_interval
        self._config = config
        #: which results ride back with their completion (the rule the simulator follows too)
        self._rides_inline = (config or WorkerConfig()).rides_inline
        self._connect_timeout = connect_timeout
        #: a SchedulerServer on this process's loop (LocalCluster(processes=False)): talk to it in-process
        self._scheduler_server = scheduler_server
        self.address = ""
        self.state: WorkerState | None = None
        self.data: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._listener: Listener | None = None
        self._scheduler: Comm | None = None
        self._pool: ConnectionPool | None = None
        self._threads: execution.TaskThreads | None = None
        self._functions = execution.FunctionCache()
        self.actors = WorkerActors(self)
        #: guards the machine and the data store: task threads and the loop both use them
        self._lock = threading.RLock()
        self._keep_one = False
        self._outbox: list = []
        self._flush_pending = False
        self._loop_thread = 0
        self._rejoin: dict[str, threading.Event] = {}
        self._task_client: Any = None
        self._task_client_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sids = itertools.count(1)
        self._closing = False
        #: set when the worker stops; its result is the reason
        self.finished: asyncio.Future | None = None

    def __repr__(self) -> str:
        return f"<WorkerServer {self.address or 'not started'} ({self.nthreads} threads) -> {self.scheduler_address}>"

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> "WorkerServer":
        logs.attach(logger.name)  # get_worker_logs()
        if profiler.wanted():  # client.profile(): from the start only with TWOFOLD_PROFILE=1
            profiler.start()
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.finished = loop.create_future()
        self._listener = await listen(self._host, self._port, self._serve_data, kind="worker",
                                      name=self.name or "", secret=self._secret, ssl=self._ssl_server)  # fmt: skip
        self.address = self._listener.address
        self.name = self.name or self.address
        self.state = WorkerState(self.address, self.nthreads, self.resources, self._config)
        self._pool = ConnectionPool(kind="worker", name=self.name, secret=self._secret,
                                    ssl_for=lambda _: self._ssl_client, timeout=self._connect_timeout)  # fmt: skip
        self._threads = execution.TaskThreads(self._run_task, f"twofold-task-{self.name}")
        try:
            local = self._scheduler_server
            if local is not None and local._loop is loop:
                self._scheduler = local.connect_inproc("worker", self.name)  # same loop: no socket
            else:
                self._scheduler = await connect(self.scheduler_address, kind="worker", name=self.name,
                                                secret=self._secret, ssl=self._ssl_client,
                                                timeout=self._connect_timeout, expect_kind="scheduler")  # fmt: skip
        except BaseException:
            await self._listener.close()
            raise
        _LOCAL[self.address] = self
        self._scheduler.send(M.AddWorker(time.monotonic(), self._next_sid("start"), self.address, self.nthreads,
                                         self.resources, self.memory_limit, self.name))  # fmt: skip
        self._spawn(self._read_scheduler())
        self._spawn(self._heartbeats())
        logger.info("worker %s (%d threads) connected to the scheduler at %s", self.address, self.nthreads,
                    self.scheduler_address)  # fmt: skip
        return self

    async def close(self, reason: str = "closed") -> None:
        if self._closing:
            await asyncio.shield(self.finished)
            return
        self._closing = True
        if _LOCAL.get(self.address) is self:
            del _LOCAL[self.address]
        logger.info("worker %s closing: %s", self.address, reason)
        if self._scheduler is not None:
            await self._scheduler.close(reason, timeout=1.0)
        if self._listener is not None:
            await self._listener.close(timeout=1.0)
        if self._pool is not None:
            await self._pool.close()
        if self._threads is not None:
            self._threads.close()
        self.actors.close()
        close_plugins(self)
        for event in self._rejoin.values():
            event.set()
        client, self._task_client = self._task_client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(None, client.close)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if not self.finished.done():
            self.finished.set_result(reason)

    def _spawn(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_sid(self, what: str) -> str:
        return f"{what}-{next(self._sids)}"  # (next() on a count is atomic: task threads call this too)

    # -- the scheduler ------------------------------------------------------------

    async def _read_scheduler(self) -> None:
        comm = self._scheduler
        reason = "the scheduler closed the connection"
        try:
            while True:
                msgs, _ = await comm.recv()
                for msg in msgs:
                    if type(msg) is M.CloseWorker:
                        reason = f"the scheduler closed this worker: {msg.reason}"
                        raise CommClosedError(reason)
                    if type(msg) is M.WorkerPlugins:  # for this driver, not the machine
                        install_stored(self, msg.plugins, pickle.loads)
                        continue
                    self.handle(msg)
        except CommClosedError as exc:
            if reason.startswith("the scheduler closed the connection"):
                reason = f"lost the scheduler at {self.scheduler_address}: {exc}"
        except Exception as exc:
            logger.exception("worker %s failed on a scheduler message", self.address)
            reason = f"failed on a scheduler message: {type(exc).__name__}: {exc}"
        if not self._closing:
            logger.warning("worker %s: %s", self.address, reason)
            self._spawn(self.close(reason))

    async def _heartbeats(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._heartbeat_interval)
            comm = self._scheduler
            if comm is None or comm.closed:
                return
            memory = sum(self._sizes.values())
            comm.send(M.WorkerHeartbeat(time.monotonic(), self._next_sid("hb"), self.address, memory,
                                        len(self.state.executing)))  # fmt: skip

    # -- the machine -------------------------------------------------------------

    def handle(self, msg: M.Message) -> None:
        """Feed the machine one event (any thread) and carry out its outputs."""
        with self._lock:
            self._handle(msg)

    def _handle(self, msg: M.Message) -> M.Execute | None:
        """Under the lock: returns the first ``Execute`` when ``keep_one`` is set (see ``_complete``)."""
        if self._closing:
            return None
        M.restamp(msg, time.monotonic())
        outs = self.state.handle(msg)
        if self.plugin_tap is not None:  # worker plugins overriding transition()
            flush_transitions(self.plugin_tap)
        keep = self._keep_one
        kept = None
        for out in outs:
            cls = type(out)
            if cls is M.Execute:
                if keep and kept is None:
                    kept = out
                else:
                    self._execute(out)
            elif cls is M.GatherDeps:
                self._loop.call_soon_threadsafe(self._spawn, self._gather(out))
            elif cls is M.DeleteData:
                data, sizes = self.data, self._sizes
                for key in out.keys:
                    data.pop(key, None)
                    sizes.pop(key, None)
                if self.actors.instances:
                    self.actors.forget(out.keys)
            elif cls is M.RejoinGranted:
                event = self._rejoin.pop(out.key, None)
                if event is not None:
                    event.set()
            else:
                self._outbox.append(out)
        if self._outbox:
            self._flush_soon()
        return kept

    def _flush_soon(self) -> None:
        """Send the outbox from the loop: now if on it, else wake it once for the burst."""
        if self._on_loop():
            self._flush_outbox()
        elif not self._flush_pending:
            self._flush_pending = True
            try:
                self._loop.call_soon_threadsafe(self._flush_outbox)
            except RuntimeError:  # the loop closed: the worker is gone
                pass

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _flush_outbox(self) -> None:
        self._flush_pending = False
        with self._lock:
            msgs = list(self._outbox)
            self._outbox.clear()
        comm = self._scheduler
        if msgs and not comm.closed:
            comm.send(msgs)

    # -- execution -----------------------------------------------------------------

    def _execute(self, ex: M.Execute) -> None:
        self._threads.submit(self._work_item(ex))

    def _work_item(self, ex: M.Execute) -> tuple:
        deps = None
        if ex.dependencies:
            data = self.data
            deps = {key: data[key] for key in ex.dependencies}
        if ex.actor_deps:  # inputs that are actors: their handles
            deps = self.actors.with_handles(ex.actor_deps, deps)
        return ex.key, ex.run_spec, deps, ex.actor

    def _run_task(self, item: tuple) -> None:
        """In a task thread: run tasks until the machine has none for this thread.

        The thread itself tells the machine a task ended and takes the next
        task it hands out, so a busy worker never waits on its event loop
        between tasks; the loop is woken only to send what the machine says
        to the scheduler (once per burst).
        """
        while item is not None:
            item = self._complete(self._run_one(item))

    def _run_one(self, item: tuple) -> tuple:
        key, run_spec, deps, actor = item
        execution.set_current(self, key)
        start = time.monotonic()
        try:
            func, args, kwargs = self._functions.decode(run_spec)
            if deps:
                args = substitute(args, deps)
                kwargs = substitute(kwargs, deps)
            result = func(*args, **kwargs)
            if type(result) is CoroutineType:  # an async def task: run on the worker's loop
                result = execution.run_coroutine(self, key, result)
            if actor:  # the instance stays here; the key's data is its handle
                result = self.actors.born(key, result)
            stop = time.monotonic()
            nbytes, typename, inline = execution.describe_result(result, self._rides_inline)
            return key, True, result, nbytes, typename, inline, start, stop
        except BaseException as exc:  # the user's error, reported to the scheduler
            stop = time.monotonic()
            return key, False, execution.task_error(exc), 0, "", None, start, stop
        finally:
            execution.set_current(self, None)

    def _complete(self, outcome: tuple) -> tuple | None:
        """Tell the machine how the task ended; the next task for this thread, if any."""
        key, ok, value, nbytes, typename, inline, start, stop = outcome
        with self._lock:
            if self._closing:
                return None
            if ok:
                self.data[key] = value
                self._sizes[key] = nbytes
                msg = M.ExecuteSuccess.build(0.0, self._next_sid("done"), key, nbytes, typename, start, stop, inline)
            else:
                msg = M.ExecuteFailure(0.0, self._next_sid("erred"), key, value, start, stop)
            # a result nobody wants any more comes back as DeleteData
            self._keep_one = True
            try:
                nxt = self._handle(msg)
            finally:
                self._keep_one = False
            return self._work_item(nxt) if nxt is not None else None

    # secede / rejoin, called from task threads

    def secede(self, key: str) -> None:
        with self._lock:
            self._handle(M.Secede(0.0, self._next_sid("secede"), key))

    def rejoin(self, key: str) -> None:
        event = threading.Event()
        with self._lock:
            self._rejoin[key] = event
            self._handle(M.Rejoin(0.0, self._next_sid("rejoin"), key))
        event.wait()

    def task_client(self) -> Any:
        """The Client that tasks here get from ``get_client()`` (one per worker)."""
        with self._task_client_lock:
            client = self._task_client
            if client is None or client.status != "running":
                from twofold.client import Client
                from twofold.runtime.backend import RuntimeBackend

                # a threads worker's tasks reach the scheduler in-process, as its own messages do
                backend = RuntimeBackend(self.scheduler_address, secret=self._secret, ssl=self._ssl_client,
                                         scheduler_server=self._scheduler_server)  # fmt: skip
                client = self._task_client = Client(backend, set_as_default=False)
            return client

    # -- data plane ------------------------------------------------------------------

    def local_get(self, keys: tuple) -> tuple[dict, dict, tuple]:
        """``(objects, nbytes, missing)`` for a caller in this process (no copy, no pickle)."""
        with self._lock:
            found = {key: self.data[key] for key in keys if key in self.data}
            nbytes = {key: self._sizes.get(key, 0) for key in found}
        return found, nbytes, tuple(key for key in keys if key not in found)

    def local_put(self, objects: dict, nbytes: dict, after: int) -> None:
        """A client in this process scatters ``objects`` here (no copy, no pickle)."""
        with self._lock:
            if self._closing:
                raise CommClosedError(f"worker {self.address} is closing")
            self.data.update(objects)
            self._sizes.update(nbytes)
            self._handle(M.DataPut(0.0, self._next_sid("put"), dict(nbytes), after))

    async def _gather(self, req: M.GatherDeps) -> None:
        local = local_worker(req.peer, self._loop)
        if local is not None:
            arrived, nbytes, missing = local.local_get(req.keys)
            self._arrived(req, arrived, nbytes, missing)
            return
        pool = self._pool
        try:
            reply, frames = await pool.request(req.peer, GetData(0.0, "", pool.next_id(), req.keys))
            if type(reply) is not DataReply:
                raise ProtocolError(f"expected DataReply, got {type(reply).__name__}")
            arrived = unpack(reply.keys, reply.headers, frames)
        except Exception as exc:
            if not self._closing:
                logger.info("worker %s: fetching %d keys from %s failed: %s", self.address, len(req.keys),
                            req.peer, exc)  # fmt: skip
                self.handle(M.GatherFailure(0.0, self._next_sid("gather-failed"), req.peer, req.keys))
            return
        nbytes = {key: reply.nbytes.get(key, 0) for key in arrived}
        self._arrived(req, arrived, nbytes, tuple(reply.missing))

    def _arrived(self, req: M.GatherDeps, arrived: dict, nbytes: dict, missing: tuple) -> None:
        with self._lock:
            if self._closing:
                return
            self.data.update(arrived)
            self._sizes.update(nbytes)
            self._handle(M.GatherSuccess(0.0, self._next_sid("gathered"), req.peer, nbytes, missing))

    async def _serve_data(self, comm: Comm) -> None:
        """A peer or a client: answer GetData, PutData and ActorRequest, take TopicPost, until it hangs up."""
        while True:
            try:
                msgs, frames = await comm.recv()
            except CommClosedError:
                return
            offset = 0
            for msg in msgs:
                cls = type(msg)
                if cls is GetData:
                    self._reply_data(comm, msg)
                elif cls is PutData:
                    count = sum(h.get("count", 0) if isinstance(h, dict) else 0 for h in msg.headers)
                    self._store_put(comm, msg, frames[offset:offset + count])
                    offset += count
                elif cls is ActorRequest:
                    count = sum(h.get("count", 0) if isinstance(h, dict) else 0 for h in msg.headers)
                    self.actors.remote_call(comm, msg, frames[offset:offset + count])
                    offset += count
                elif cls is RunRequest:  # client.run: user code in this process
                    self._spawn(self._run_request(comm, msg))
                elif cls is TopicPost:  # a peer's Pub, for Subs in this process (twofold.runtime.topics)
                    topics.receive(msg)
                else:
                    comm.abort(f"a worker's data port does not take {cls.__name__}")
                    return

    async def _run_request(self, comm: Comm, msg: RunRequest) -> None:
        """``client.run``: a plain function runs on a thread of the loop's executor, a
        coroutine function on this loop; ``dask_worker`` is this worker."""
        from twofold.client.remote import call_with
        from twofold.runtime.payload import dumps_small

        try:
            func, args, kwargs = pickle.loads(msg.function)
            if inspect.iscoroutinefunction(func):
                result = await call_with(func, args, kwargs, "dask_worker", self)
            else:
                result = await self._loop.run_in_executor(None, call_with, func, args, kwargs, "dask_worker", self)
                if inspect.isawaitable(result):
                    result = await result
            reply = RunReply(0.0, "", msg.request_id, True, dumps_small(result))
        except Exception as exc:  # the user's error goes back to the user
            try:
                pickled = dumps_small(exc)
            except Exception:
                pickled = None
            reply = RunReply(0.0, "", msg.request_id, False, pickled, f"{type(exc).__name__}: {exc}")
        if not comm.closed:
            comm.send(reply)

    def _reply_data(self, comm: Comm, msg: GetData) -> None:
        data = self.data
        with self._lock:
            found = {key: data[key] for key in msg.keys if key in data}
        missing = tuple(key for key in msg.keys if key not in found)
        try:
            keys, headers, nbytes, _, frames = pack(found)
            errors = None
        except Exception:
            keys, headers, nbytes, frames, errors = self._pack_each(found)
        comm.send(DataReply(0.0, "", msg.request_id, keys, headers, nbytes, missing, errors), frames)

    def _pack_each(self, found: dict) -> tuple:
        """Pack key by key: those that cannot be serialized become errors (the asker says so)."""
        keys, headers, nbytes, frames, errors = [], [], {}, [], {}
        for key, obj in found.items():
            try:
                k, h, n, _, f = pack({key: obj})
            except Exception as exc:
                errors[key] = f"{type(exc).__name__}: {exc}"
                logger.warning("worker %s cannot serialize the result of %r: %s", self.address, key, exc)
                continue
            keys += k
            headers += h
            nbytes.update(n)
            frames += f
        return tuple(keys), tuple(headers), nbytes, frames, errors

    def _store_put(self, comm: Comm, msg: PutData, frames: list) -> None:
        try:
            objects = unpack(msg.keys, msg.headers, frames)
        except Exception as exc:
            comm.send(PutReply(0.0, "", msg.request_id, f"cannot load the scattered data: {exc}"))
            return
        sizes = {key: int(msg.nbytes.get(key, 0)) for key in objects}
        with self._lock:
            if not self._closing:
                self.data.update(objects)
                self._sizes.update(sizes)
                self._handle(M.DataPut(0.0, self._next_sid("put"), sizes, msg.after))
        comm.send(PutReply(0.0, "", msg.request_id))
