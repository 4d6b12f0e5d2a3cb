"""The Client's view of a real cluster (the :class:`Backend` for ``tcp://`` and ``tls://``).

The connection to the scheduler lives on the process's shared event loop
(:mod:`twofold.runtime.loop`); the Client's own thread only queues
messages and waits on a condition that the reader notifies after each
incoming batch.  Data goes straight to and from workers over pooled
connections (:mod:`twofold.runtime.rpc`); pickling and unpickling happen in
the caller's thread, not on the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import sys
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Mapping, Sequence

from twofold.client.backend import Backend, keys_by_worker
from twofold.client.client import register_address
from twofold.context import real_time
from twofold.errors import CommClosedError, error_class
from twofold.messages import Message, TaskError
from twofold.runtime import actors, topics
from twofold.runtime import loop as loops
from twofold.runtime.comm import connect
from twofold.runtime.execution import RunSpecEncoder
from twofold.runtime.payload import dumps_small, pack, unpack
from twofold.runtime.protocol import DataReply, GetData, PutData, PutReply
from twofold.runtime.rpc import ConnectionPool
from twofold.runtime.scheduler import SchedulerServer
from twofold.runtime.security import Security
from twofold.runtime.tracebacks import rebuild
from twofold.serialize import SerializationError, nbytes_of

logger = logging.getLogger("twofold.runtime.client")


def _real_clock() -> Any:
    """``time.monotonic`` as it was before any SimCluster put the time module on virtual
    time (``twofold.sim.virtual_time``): a real cluster's client keeps real seconds even in
    a thread that also drives a simulation."""
    vt = sys.modules.get("twofold.sim.virtual_time")
    return vt._REAL["monotonic"] if vt is not None else time.monotonic


_monotonic = _real_clock()

#: how often dropped futures' releases are sent when the client is otherwise idle
_IDLE_FLUSH = 0.5


class RuntimeBackend(Backend):
    """A connection from a Client to a scheduler at ``address``."""

    def __init__(
        self,
        address: str,
        *,
        security: Security | None = None,
        secret: bytes | str | None = None,
        ssl: Any = None,
        cluster: Any = None,
        owns_cluster: bool = False,
        scheduler_server: Any = None,
        timeout: float | None = None,
    ):
        security = security or Security()
        security.check_address(address)
        self.scheduler_address = address
        self.cluster = cluster
        self._owns_cluster = owns_cluster
        self._secret = secret if secret is not None else security.secret
        self._ssl = ssl if ssl is not None else security.client_context(address)
        self._id = f"client-{uuid.uuid4().hex[:12]}"
        self._token_prefix = uuid.uuid4().hex[:16]
        self._tokens = itertools.count()
        self._receiver: Callable[[Message], None] | None = None
        self._cond = threading.Condition()
        self._outbox: deque = deque()
        self._flush_pending = False
        self._lost: str | None = None
        self._closed = False
        self._encoder = RunSpecEncoder()
        self._loop = loop = loops.get_loop()
        self._pool = ConnectionPool(kind="client", name=self._id, secret=self._secret,
                                    ssl_for=lambda _: self._ssl)  # fmt: skip
        connect_timeout = 10.0 if timeout is None else float(timeout)
        # a scheduler on our own loop (our LocalCluster's, or a threads worker's for its tasks)
        local = scheduler_server if scheduler_server is not None else getattr(cluster, "scheduler", None)
        if isinstance(local, SchedulerServer) and local._loop is loop:
            # the scheduler runs on our own loop: hand messages over, no socket (see inproc.py);
            # made on that loop's own thread too (an async def task's client on a threads worker)
            if loops.in_loop_thread(loop):
                self._comm = local.connect_inproc("client", self._id)
            else:
                self._comm = loops.run_sync(loop, _inproc(local, self._id))
        else:
            self._comm = loops.run_sync(loop, connect(address, kind="client", name=self._id, secret=self._secret,
                                                      ssl=self._ssl, timeout=connect_timeout,
                                                      expect_kind="scheduler"))  # fmt: skip
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), loop)
        self._idle_handle = None
        loop.call_soon_threadsafe(self._arm_idle_flush)

    def __repr__(self) -> str:
        return f"<RuntimeBackend {self._id} -> {self.scheduler_address}>"

    # -- identity and time -----------------------------------------------------------

    def client_id(self) -> str:
        return self._id

    def new_token(self) -> str:
        # unique without a uuid per task (5x cheaper): a random 64-bit prefix per client, then a counter
        return f"{self._token_prefix}{next(self._tokens):016x}"

    def now(self) -> float:
        return _monotonic()

    # -- messages ------------------------------------------------------------------

    def set_receiver(self, receiver: Callable[[Message], None]) -> None:
        self._receiver = receiver

    def send(self, msgs: Sequence[Message], background: bool = False) -> None:
        if self._lost is not None:
            raise CommClosedError(self._lost)
        if self._closed:
            raise CommClosedError(f"{self._id} is closed")
        self._outbox.extend(msgs)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon_threadsafe(self._flush_outbox)

    def _flush_outbox(self) -> None:
        self._flush_pending = False
        outbox = self._outbox
        msgs = []
        while outbox:
            msgs.append(outbox.popleft())
        if msgs and not self._comm.closed:
            self._comm.send(msgs)

    async def _read(self) -> None:
        comm = self._comm
        try:
            while True:
                msgs, _ = await comm.recv()
                receiver = self._receiver
                if receiver is not None:
                    for msg in msgs:
                        receiver(msg)
                with self._cond:
                    self._cond.notify_all()
        except CommClosedError as exc:
            reason = str(exc)
        except Exception as exc:  # a bug in handling a message: do not leave waiters hanging
            logger.exception("client %s failed on a scheduler message", self._id)
            reason = f"client failed on a scheduler message: {type(exc).__name__}: {exc}"
            comm.abort(reason)
        if not self._closed:
            logger.warning("client %s lost the scheduler at %s: %s", self._id, self.scheduler_address, reason)
        with self._cond:
            self._lost = f"lost the connection to the scheduler at {self.scheduler_address}: {reason}"
            self._cond.notify_all()

    def _arm_idle_flush(self) -> None:
        if self._closed or self._lost is not None:
            return
        owner = getattr(self._receiver, "__self__", None)
        flush = getattr(owner, "_flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:  # the client closed meanwhile
                pass
        self._idle_handle = self._loop.call_later(_IDLE_FLUSH, self._arm_idle_flush)

    # -- user objects --------------------------------------------------------------

    def dump_task(self, func: Callable, args: tuple, kwargs: dict) -> bytes:
        return self._encoder.encode(func, args, kwargs)

    def load_error(self, error: TaskError) -> BaseException:
        if error.exception is not None:
            try:
                exc = pickle.loads(error.exception)
            except Exception:
                exc = None
            if isinstance(exc, BaseException):
                return exc.with_traceback(rebuild(error.traceback))
        return error_class(error.typename)(error.message)

    def dump_value(self, obj: Any) -> bytes:
        return dumps_small(obj)

    def run(self, workers: Sequence[str], function: bytes, wait: bool = True) -> dict[str, tuple[bool, Any]]:
        if not wait:
            asyncio.run_coroutine_threadsafe(self._run(workers, function), self._loop)
            return {}
        replies = loops.run_sync(self._loop, self._run(workers, function))
        out: dict[str, tuple[bool, Any]] = {}
        for worker in workers:
            reply = replies[worker]
            if isinstance(reply, BaseException):
                out[worker] = (False, reply)
            elif reply.ok:
                out[worker] = (True, pickle.loads(reply.value))
            else:
                try:
                    exc = pickle.loads(reply.value) if reply.value is not None else None
                except Exception:
                    exc = None
                out[worker] = (False, exc if isinstance(exc, BaseException) else RuntimeError(reply.error))
        return out

    async def _run(self, workers: Sequence[str], function: bytes) -> dict[str, Any]:
        from twofold.runtime.protocol import RunReply, RunRequest

        pool = self._pool
        replies: dict[str, Any] = {}

        async def one(worker: str) -> None:
            try:
                reply, _ = await pool.request(worker, RunRequest(0.0, "", pool.next_id(), function))
                if type(reply) is not RunReply:
                    raise CommClosedError(f"{worker} answered {type(reply).__name__}")
                replies[worker] = reply
            except Exception as exc:
                replies[worker] = exc if isinstance(exc, CommClosedError) else CommClosedError(
                    f"could not run the function on {worker}: {exc}")

        await asyncio.gather(*(one(w) for w in workers))
        return replies

    def load_inline(self, data: bytes) -> Any:
        return pickle.loads(data)

    # -- blocking ---------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        if loops.in_loop_thread(self._loop):
            raise RuntimeError("cannot block on the event loop's thread (e.g. in a done-callback): "
                               "call result() from a regular thread")  # fmt: skip
        deadline = None if timeout is None else _monotonic() + timeout
        with self._cond, real_time():
            while True:
                if predicate():
                    return True
                if self._lost is not None:
                    raise CommClosedError(self._lost)
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        loop = self._loop
        handle: list = [None, False]  # the TimerHandle once armed; cancelled?

        def run() -> None:
            if not handle[1] and not self._closed:
                try:
                    callback()
                except Exception:
                    logger.exception("client %s: a scheduled callback failed", self._id)

        def arm() -> None:
            if not handle[1]:
                handle[0] = loop.call_later(delay, run)

        def cancel() -> None:
            handle[1] = True
            if handle[0] is not None:
                loop.call_soon_threadsafe(handle[0].cancel)

        loop.call_soon_threadsafe(arm)
        return cancel

    # -- data plane ----------------------------------------------------------------------

    def fetch(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
        data, pending = self._fetch_local(who_has)
        if not pending:
            return data, {}
        return self._fetched(data, loops.run_sync(self._loop, self._fetch(pending)))

    async def afetch(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
        data, pending = self._fetch_local(who_has)
        if not pending:
            return data, {}
        return self._fetched(data, await self._on_loop(self._fetch(pending)))

    async def _on_loop(self, coro: Any) -> Any:
        """Await ``coro`` running on the client's loop, from whichever loop awaits this."""
        if loops.in_loop_thread(self._loop):
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _fetch_local(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """What workers of this process hand over as objects; the keys left to ask for."""
        data: dict[str, Any] = {}
        pending: dict[str, list[str]] = {}
        for key, holders in who_has.items():
            local = next((w for w in map(self._local_worker, holders) if w is not None), None)
            if local is not None:  # a worker in this process: the object itself, as dask's threads do
                found, _, _ = local.local_get((key,))
                if found:
                    data.update(found)
                    continue
            pending[key] = list(holders)
        return data, pending

    def _fetched(self, data: dict[str, Any], outcome: tuple) -> tuple[dict[str, Any], dict[str, str]]:
        """Unpack what the workers sent (in the caller's thread, not on the loop)."""
        replies, missing = outcome
        for reply, frames in replies:
            data.update(unpack(reply.keys, reply.headers, frames))
        errors = {key: why for reply, _ in replies for key, why in (reply.errors or {}).items() if key not in data}
        if errors:
            key, why = next(iter(errors.items()))
            more = f" (and {len(errors) - 1} more keys)" if len(errors) > 1 else ""
            raise SerializationError(f"the result of {key!r} cannot be sent from its worker: {why}{more}")
        for key in data:
            missing.pop(key, None)
        return data, missing

    def _local_worker(self, address: str) -> Any:
        from twofold.runtime.worker import local_worker

        return local_worker(address, self._loop)

    async def _fetch(self, pending: dict[str, list[str]]) -> tuple[list, dict[str, str]]:
        """Ask each key's holders in turn, all holders at once; the replies and what no holder had."""
        replies: list = []
        missing: dict[str, str] = {key: "" for key, holders in pending.items() if not holders}
        todo = [key for key, holders in pending.items() if holders]
        pool = self._pool
        while todo:
            by_holder: dict[str, list[str]] = {}
            for key in todo:
                holders = pending[key]
                if holders:
                    by_holder.setdefault(holders.pop(0), []).append(key)
            todo = []

            async def ask(holder: str, keys: list[str]) -> None:
                try:
                    reply, frames = await pool.request(holder, GetData(0.0, "", pool.next_id(), tuple(keys)))
                    if type(reply) is not DataReply:
                        raise CommClosedError(f"{holder} answered {type(reply).__name__}")
                except (OSError, Exception) as exc:
                    logger.debug("fetching %d keys from %s failed: %s", len(keys), holder, exc)
                    lacking = keys
                else:
                    replies.append((reply, frames))
                    got = set(reply.keys)
                    lacking = [key for key in keys if key not in got]
                for key in lacking:
                    missing[key] = holder
                    if pending[key]:
                        todo.append(key)

            await asyncio.gather(*(ask(holder, keys) for holder, keys in by_holder.items()))
        return replies, missing

    def put(
        self,
        placement: Mapping[str, Sequence[str]],
        data: Mapping[str, Any],
        free_seqs: Mapping[str, int] | None = None,
    ) -> dict[str, tuple[int, str]]:
        info, by_worker, packed, seqs = self._put_local(placement, data, free_seqs)
        if by_worker:
            self._put_failures(loops.run_sync(self._loop, self._put(by_worker, packed, info, seqs)))
        return info

    async def aput(
        self,
        placement: Mapping[str, Sequence[str]],
        data: Mapping[str, Any],
        free_seqs: Mapping[str, int] | None = None,
    ) -> dict[str, tuple[int, str]]:
        info, by_worker, packed, seqs = self._put_local(placement, data, free_seqs)
        if by_worker:
            self._put_failures(await self._on_loop(self._put(by_worker, packed, info, seqs)))
        return info

    def _put_local(self, placement: Mapping[str, Sequence[str]], data: Mapping[str, Any],
                   free_seqs: Mapping[str, int] | None) -> tuple:  # fmt: skip
        """Hand objects to workers of this process; pack the rest (in the caller's thread)."""
        by_worker = keys_by_worker(placement)
        seqs = dict(free_seqs or {})
        info: dict[str, tuple[int, str]] = {}
        for worker in list(by_worker):
            local = self._local_worker(worker)
            if local is not None:  # a worker in this process: hand the objects over, as dask's threads do
                keys = by_worker.pop(worker)
                objects = {key: data[key] for key in keys}
                for key in keys:
                    if key not in info:
                        info[key] = (nbytes_of(data[key]), type(data[key]).__name__)
                local.local_put(objects, {key: info[key][0] for key in keys}, seqs.get(worker, -1))
        packed = {}
        for key in {key: None for keys in by_worker.values() for key in keys}:
            _, headers, nbytes, typenames, frames = pack({key: data[key]})
            packed[key] = (headers[0], frames)
            info[key] = (nbytes[key], typenames[key])
        return info, by_worker, packed, seqs

    @staticmethod
    def _put_failures(failures: dict[str, str]) -> None:
        if failures:
            raise CommClosedError(f"could not scatter to {sorted(failures)}: " + "; ".join(failures.values()))

    async def _put(self, by_worker: dict, packed: dict, info: dict, free_seqs: dict) -> dict[str, str]:
        pool = self._pool
        failures: dict[str, str] = {}

        async def one(worker: str, keys: list[str]) -> None:
            frames: list = []
            headers = []
            for key in keys:
                header, key_frames = packed[key]
                headers.append(header)
                frames.extend(key_frames)
            msg = PutData(0.0, "", pool.next_id(), tuple(keys), tuple(headers), {k: info[k][0] for k in keys},
                          {k: info[k][1] for k in keys}, free_seqs.get(worker, -1))  # fmt: skip
            try:
                reply, _ = await pool.request(worker, msg, frames)
            except Exception as exc:
                failures[worker] = f"{worker}: {exc}"
                return
            if type(reply) is not PutReply or reply.error:
                failures[worker] = f"{worker}: {getattr(reply, 'error', type(reply).__name__)}"

        await asyncio.gather(*(one(worker, keys) for worker, keys in by_worker.items()))
        return failures

    # -- actors ---------------------------------------------------------------------------

    def actor_call(self, worker: str, key: str, kind: str, name: str, args: tuple, kwargs: dict,
                   call: Any) -> None:
        """Straight to the worker (see :mod:`twofold.runtime.actors`): objects handed
        over when it runs in this process, else pickled here and posted in order."""
        if self._closed:
            raise CommClosedError(f"{self._id} is closed")
        actors.post_call(self, worker, key, kind, name, args, kwargs, call)

    # -- pub/sub ---------------------------------------------------------------------------

    def topic_post(self, worker: str, name: str, subs: tuple[str, ...], payloads: tuple[bytes, ...]) -> None:
        """Straight to the worker's data port (see :mod:`twofold.runtime.topics`): into the
        Subs themselves when it runs in this process, else queued and posted in order."""
        if self._closed:
            raise CommClosedError(f"{self._id} is closed")
        topics.post(self, worker, name, subs, payloads)

    def _wake(self) -> None:
        """An actor call was settled, or a Sub of this client took values (any thread): waits look again."""
        with self._cond:
            self._cond.notify_all()
        owner = getattr(self._receiver, "__self__", None)
        if getattr(owner, "_waiters", None):
            owner._wake_waiters()

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop

        async def shut() -> None:
            if self._idle_handle is not None:
                self._idle_handle.cancel()
            self._flush_outbox()
            await self._comm.close("client closed", timeout=2.0)
            await self._pool.close()

        if loops.in_loop_thread(loop):
            loop.create_task(shut())
        else:
            try:
                loops.run_sync(loop, shut(), timeout=5.0)
            except Exception:
                logger.debug("closing %s did not finish cleanly", self._id, exc_info=True)
        cluster = self.cluster
        if self._owns_cluster and cluster is not None:
            cluster.close()


async def _inproc(scheduler: SchedulerServer, name: str):
    return scheduler.connect_inproc("client", name)


def _connect_address(address: str, client: Any, security: Security | None = None) -> RuntimeBackend:
    return RuntimeBackend(address, security=security, timeout=client.timeout)


register_address("tcp://", _connect_address)
register_address("tls://", _connect_address)
