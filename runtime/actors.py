"""Actors on the socket runtime: a worker's instances, the thread that runs their
calls, and the caller's side of a call.

Worker side (:class:`WorkerActors`, one per :class:`~twofold.runtime.worker.WorkerServer`):
the instances by key, and one *actor thread* that runs every call to this
worker's actors, one at a time, in arrival order (dask's one-thread actor
executor).  A call comes from a connection to the data port
(:class:`~twofold.runtime.protocol.ActorRequest`, answered on that
connection) or from a caller in this process (:meth:`WorkerActors.local_call`:
the objects are handed over, nothing is pickled).  As in dask, a method that
waits on another call to an actor of the same worker waits forever: they
share the one thread.

Caller side (:func:`post_call`, for ``RuntimeBackend.actor_call``): the
arguments are pickled in the caller's thread, the request is posted on the
backend's connection pool (``ConnectionPool.post`` keeps the order of one
caller's calls) and the :class:`~twofold.client.actor.PendingCall` is
settled when the reply comes; the reply is unpickled by the thread that
reads the result.  A connection that fails or breaks before the reply
settles it with :class:`~twofold.errors.ActorLost`.
"""

from __future__ import annotations

import logging
import threading
from queue import SimpleQueue
from typing import Any, Callable

from twofold.client.actor import CALL, GETATTR, Actor, PendingCall, input_handles, missing_attribute, names_of
from twofold.errors import CommClosedError, ProtocolError
from twofold.runtime import execution
from twofold.runtime.payload import pack, unpack
from twofold.runtime.protocol import ActorReply, ActorRequest
from twofold.serialize import SerializationError

logger = logging.getLogger("twofold.runtime.actors")

_GONE = "the worker does not hold it (it restarted, or the actor was released)"


def local_server(address: str) -> Any:
    """The worker at ``address`` if it runs in this process (any loop) and is not closing."""
    from twofold.runtime.worker import _LOCAL

    server = _LOCAL.get(address)
    return server if server is not None and not server._closing else None


# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------


class WorkerActors:
    """A worker's actor instances and the one thread that runs calls to them."""

    def __init__(self, server: Any):
        self.server = server
        self.instances: dict[str, Any] = {}
        self._queue: SimpleQueue = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def born(self, key: str, instance: Any) -> Actor:
        """An actor task made ``instance`` (in its task thread): keep it, return its handle (the key's data)."""
        self.instances[key] = instance
        return Actor(type(instance).__name__, key, self.server.address, *names_of(instance))

    def with_handles(self, keys: tuple, deps: dict | None) -> dict:
        """A task's input data plus handles for its actor inputs (looked up on first use if held elsewhere)."""
        deps = dict(deps) if deps else {}
        deps.update(input_handles(self.server.data, keys))
        return deps

    def forget(self, keys: tuple) -> None:
        for key in keys:
            self.instances.pop(key, None)

    def close(self) -> None:
        """No new calls; those queued still run (their callers get an answer or a broken connection)."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)

    # -- calls ---------------------------------------------------------------------

    def local_call(self, key: str, kind: str, name: str, args: tuple, kwargs: dict,
                   finish: Callable[[bool, Any], None], lost: Callable[[str], None]) -> None:  # fmt: skip
        """From a caller in this process (any thread): ``finish(ok, value)`` or
        ``lost(why)`` runs on the actor thread (or at once, if closed)."""
        if not self._submit((key, kind, name, False, args, kwargs, finish, lost)):
            lost("its worker is closing")

    def remote_call(self, comm: Any, msg: ActorRequest, frames: list) -> None:
        """From the data port (on the loop): answered on ``comm``."""
        loop = self.server._loop
        rid = msg.request_id

        def answer(reply: ActorReply, out: list = ()) -> None:
            try:
                loop.call_soon_threadsafe(_send, comm, reply, out)
            except RuntimeError:  # the loop closed: the worker is gone, and so is the connection
                pass

        def finish(ok: bool, value: Any) -> None:
            if ok:
                try:
                    _, headers, _, _, out = pack({"value": value})
                except Exception as exc:
                    ok, value = False, SerializationError(f"the result of {msg.name}() on actor {msg.key!r} "
                                                          f"cannot be sent: {type(exc).__name__}: {exc}")  # fmt: skip
                else:
                    answer(ActorReply(0.0, "", rid, headers), out)
                    return
            answer(ActorReply(0.0, "", rid, (), execution.task_error(value)))

        def lost(why: str) -> None:
            answer(ActorReply(0.0, "", rid, (), None, why))

        if not self._submit((msg.key, msg.kind, msg.name, True, msg.headers, frames, finish, lost)):
            lost("its worker is closing")

    def _submit(self, item: tuple) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                name = f"twofold-actors-{self.server.name or self.server.address}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
            self._queue.put(item)
        return True

    def _run(self) -> None:
        """The actor thread: one call at a time, in arrival order."""
        queue = self._queue
        while True:
            item = queue.get()
            if item is None:
                return
            try:
                self._serve(*item)
            except Exception:  # a bug here must not stop the actors' thread
                logger.exception("worker %s: serving an actor call failed", self.server.address)

    def _serve(self, key: str, kind: str, name: str, wire: bool, a: Any, b: Any, finish: Callable,
               lost: Callable) -> None:  # fmt: skip
        """Run one call; ``a, b`` are ``args, kwargs``, or (``wire``) their headers and frames."""
        instance = self.instances.get(key)
        if instance is None:
            lost(_GONE)
            return
        server = self.server
        execution.set_current(server, key)  # get_client() works inside a method
        try:
            args, kwargs = _arguments(a, b) if wire else (a, b)
            if kind == CALL:
                method = getattr(instance, name, None)
                if method is None:
                    raise missing_attribute(type(instance).__name__, key, name)
                value = method(*args, **kwargs)
            elif kind == GETATTR:
                try:
                    value = getattr(instance, name)
                except AttributeError:
                    raise missing_attribute(type(instance).__name__, key, name) from None
            else:
                raise ProtocolError(f"an actor request must be {CALL!r} or {GETATTR!r}, not {kind!r}")
        except BaseException as exc:  # the user's error goes back to the caller
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is WorkerActors._serve.__code__:
                exc = exc.with_traceback(tb.tb_next)  # this frame is not the user's business
            ok, value = False, exc
        else:
            ok = True
        finally:
            execution.set_current(server, None)
        finish(ok, value)


def _arguments(headers: tuple, frames: list) -> tuple[tuple, dict]:
    """A request's ``(args, kwargs)`` from its payload (none for a read)."""
    if not headers:
        return (), {}
    loaded = unpack(("args",), headers, frames)["args"]
    if type(loaded) is not tuple or len(loaded) != 2 or type(loaded[0]) is not tuple or type(loaded[1]) is not dict:
        raise TypeError("an actor request's payload must be (args tuple, kwargs dict)")
    return loaded


def _send(comm: Any, msg: ActorReply, frames: list) -> None:
    if not comm.closed:
        try:
            comm.send(msg, frames)
        except CommClosedError:
            pass


# --------------------------------------------------------------------------
# Caller side
# --------------------------------------------------------------------------


def post_call(backend: Any, worker: str, key: str, kind: str, name: str, args: tuple, kwargs: dict,
              call: PendingCall) -> None:  # fmt: skip
    """Send one call from ``backend`` (a RuntimeBackend) to ``worker`` without waiting."""
    local = local_server(worker)
    if local is not None:  # this process: hand the objects over (the worker's data plane does the same)
        def finish(ok: bool, value: Any) -> None:
            call.settle(ok, value)
            backend._wake()

        def lost(why: str) -> None:
            call.settle(False, call.lost(why))
            backend._wake()

        local.actors.local_call(key, kind, name, args, kwargs, finish, lost)
        return
    if args or kwargs:
        _, headers, _, _, frames = pack({"args": (args, kwargs)})
    else:
        headers, frames = (), []
    pool = backend._pool
    msg = ActorRequest(0.0, "", pool.next_id(), key, kind, name, headers)
    load_error = backend.load_error

    def load(ok: bool, payload: tuple) -> tuple[bool, Any]:
        reply, reply_frames = payload
        if ok:
            return True, unpack(("value",), reply.headers, reply_frames)["value"]
        return False, load_error(reply.error)

    def done(result: tuple | None, error: BaseException | None) -> None:  # on the loop
        if error is not None:
            call.settle(False, call.lost(f"its worker is gone or unreachable ({type(error).__name__}: {error})"))
        else:
            reply = result[0]
            if type(reply) is not ActorReply:
                call.settle(False, call.lost(f"its worker answered {type(reply).__name__}"))
            elif reply.lost:
                call.settle(False, call.lost(reply.lost))
            else:
                call.settle(reply.error is None, result, load)
        backend._wake()

    backend._loop.call_soon_threadsafe(pool.post, worker, msg, frames, done)
