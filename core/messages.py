"""The message vocabulary: every event into and output out of the state machines.

Rules:

* Every message is a frozen, slotted dataclass defined here, once, and
  registered under its class name (its ``op``).
* Every message carries ``now`` (seconds, the sender's clock at emission; a
  driver re-stamps it with the receiver's clock on delivery, see
  :func:`restamp`) and ``stimulus_id`` (what caused it, for tracing).
* Fields hold only msgpack-able values: ``str``, ``int``, ``float``, ``bool``,
  ``None``, ``bytes``, tuples (never lists), dicts, and the nested records
  below (:class:`TaskSpec`, :class:`TaskError`).  :func:`dumps` and
  :func:`loads` round-trip every message exactly.
* User functions, arguments and results are opaque bytes, with a size and a
  type name: the machines never unpickle them.
* An output carries the ``stimulus_id`` of the event that caused it, so a
  reply can be matched to its request (the Client relies on this to tell a
  late ``GraphRefused``/``KeyCancelled`` from one about a newer submission).

Messages flow scheduler -> worker (``worker`` field names the destination),
scheduler -> client (``client`` field), worker -> scheduler (``worker`` field
names the sender), worker -> its own driver, and driver -> machine.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import msgpack

Key = str

#: op name -> class, for decoding.
REGISTRY: dict[str, type] = {}


def _register(cls: type) -> type:
    cls.op = cls.__name__
    cls._field_names = tuple(f.name for f in fields(cls))
    REGISTRY[cls.__name__] = cls
    return cls


def _fast_init(cls: type) -> None:
    """Replace the frozen dataclass ``__init__`` with one twice as fast.

    The generated one sets each field through ``object.__setattr__``; this
    one calls the slot descriptors' ``__set__`` directly.  Same signature,
    same defaults, still frozen afterwards (messages are built per task on
    every hop, so this matters).
    """
    params = []
    body = []
    namespace: dict[str, Any] = {}
    namespace["_UNSET"] = _UNSET
    for f in fields(cls):
        if f.default is not MISSING:
            namespace[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_UNSET")
            body.append(f"    if {f.name} is _UNSET: {f.name} = _f_{f.name}()")
        else:
            params.append(f.name)
        namespace[f"_s_{f.name}"] = getattr(cls, f.name).__set__
        body.append(f"    _s_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # noqa: S102 - generated from our own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init


_UNSET = object()


def message(cls: type) -> type:
    """Decorator: a frozen slotted dataclass, registered for the wire."""
    cls = dataclass(frozen=True, slots=True)(cls)
    _fast_init(cls)
    return _register(cls)


# --------------------------------------------------------------------------
# Nested records
# --------------------------------------------------------------------------


@message
class TaskSpec:
    """One task of a graph as a client submits it.

    ``run_spec`` is the pickled ``(func, args, kwargs)`` (opaque to the
    scheduler); ``None`` for a key that only names data.  ``priority``:
    higher runs first.  ``workers``: allowed worker addresses (``None`` =
    any); with ``allow_other_workers`` they are only a preference.
    """

    key: Key
    run_spec: bytes | None
    dependencies: tuple[Key, ...] = ()
    priority: int = 0
    workers: tuple[str, ...] | None = None
    allow_other_workers: bool = False
    resources: dict[str, float] | None = None
    retries: int = 0
    actor: bool = False


@message
class TaskError:
    """A task's failure, as the client will re-raise it.

    ``exception`` / ``traceback`` are the pickled originals when a worker
    caught a user exception; ``None`` when the scheduler made the error
    itself (``KilledWorker``, a refused graph), in which case the client
    rebuilds it from ``typename`` and ``message``.
    """

    typename: str
    message: str
    exception: bytes | None = None
    traceback: bytes | None = None
    traceback_text: str = ""


@message
class ScatteredKey:
    """A key a client placed in memory on workers itself (scatter)."""

    key: Key
    nbytes: int
    typename: str
    workers: tuple[str, ...]


# --------------------------------------------------------------------------
# Base
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    now: float
    stimulus_id: str

    op: ClassVar[str]
    _field_names: ClassVar[tuple[str, ...]]


# --------------------------------------------------------------------------
# Client -> scheduler
# --------------------------------------------------------------------------


@message
class AddClient(Message):
    client: str


@message
class RemoveClient(Message):
    """The client closed or its connection was lost: release all it wants."""

    client: str


@message
class UpdateGraph(Message):
    """New tasks, and the keys the client now holds futures for."""

    client: str
    tasks: tuple[TaskSpec, ...]
    wanted: tuple[Key, ...]


@message
class DesireKeys(Message):
    """The client holds one more reference to each key."""

    client: str
    keys: tuple[Key, ...]


@message
class ReleaseKeys(Message):
    """The client dropped one reference to each key."""

    client: str
    keys: tuple[Key, ...]


@message
class CancelKeys(Message):
    """Cancel keys (and their dependents) for this client, or all with force."""

    client: str
    keys: tuple[Key, ...]
    force: bool = False


@message
class RetryKeys(Message):
    client: str
    keys: tuple[Key, ...]


@message
class FireAndForget(Message):
    """Keep these keys wanted until they finish, whoever else lets go."""

    client: str
    keys: tuple[Key, ...]


@message
class ScatterRequest(Message):
    """Ask where to put data the client is about to scatter."""

    client: str
    request_id: str
    keys: tuple[Key, ...]
    workers: tuple[str, ...] | None = None
    broadcast: bool = False


@message
class UpdateData(Message):
    """The client has put these keys on these workers (after ScatterPlan).

    Each item adds one reference for the client, also for keys it already
    holds (the client balances that with a ReleaseKeys).
    """

    client: str
    keys: tuple[ScatteredKey, ...]


@message
class WhoHasRequest(Message):
    client: str
    request_id: str
    keys: tuple[Key, ...]


@message
class Replicate(Message):
    """Keep ``n`` copies of each key (``None``: one on every worker in the pool)."""

    client: str
    keys: tuple[Key, ...]
    n: int | None = None
    workers: tuple[str, ...] | None = None


@message
class MissingData(Message):
    """``reporter`` (a client or worker) did not find ``key`` on ``errant_worker``."""

    reporter: str
    key: Key
    errant_worker: str


# --------------------------------------------------------------------------
# Worker -> scheduler
# --------------------------------------------------------------------------


@message
class AddWorker(Message):
    worker: str
    nthreads: int
    resources: dict[str, float] | None = None
    memory_limit: int | None = None
    name: str | None = None


@message
class RemoveWorker(Message):
    """The connection to the worker was lost, or it is retiring."""

    worker: str
    reason: str = "connection lost"


@message
class WorkerHeartbeat(Message):
    worker: str
    memory: int = 0
    executing: int = 0


@message
class TaskFinished(Message):
    """A task ran on ``worker``; small results may ride along in ``inline``."""

    worker: str
    key: Key
    nbytes: int
    typename: str
    start: float = 0.0
    stop: float = 0.0
    inline: bytes | None = None
    #: the ComputeTask's run_id: tells this run's result from an abandoned one's
    run_id: int = -1


@message
class TaskErred(Message):
    worker: str
    key: Key
    error: TaskError
    start: float = 0.0
    stop: float = 0.0
    run_id: int = -1


@message
class AddReplicas(Message):
    """The worker now holds these keys too (it fetched them)."""

    worker: str
    nbytes: dict[Key, int]


@message
class StealResponse(Message):
    """Answer to StealRequest: ``released`` is True if the worker gave it up."""

    worker: str
    key: Key
    released: bool


@message
class LongRunning(Message):
    """The task seceded: it no longer holds a thread slot."""

    worker: str
    key: Key


@message
class RescheduleTask(Message):
    """The task asked to be run again elsewhere (``Reschedule``)."""

    worker: str
    key: Key


# --------------------------------------------------------------------------
# Driver -> machine
# --------------------------------------------------------------------------


@message
class TimerFired(Message):
    token: str


# --------------------------------------------------------------------------
# Scheduler -> worker
# --------------------------------------------------------------------------


@message
class ComputeTask(Message):
    """Run ``key`` on ``worker``; inputs are where ``who_has`` says."""

    worker: str
    key: Key
    run_spec: bytes | None
    priority: tuple[int, ...]
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]
    resources: dict[str, float] | None = None
    actor: bool = False
    #: inputs that are actors: passed as handles, never fetched
    actor_deps: tuple[Key, ...] = ()
    #: this assignment's number; the worker echoes it in TaskFinished/TaskErred
    run_id: int = -1


@message
class FreeKeys(Message):
    """Forget these keys: drop their data, cancel their computation.

    ``seq`` numbers the FreeKeys sent to this worker (1, 2, ...): data a
    client scattered under a plan made after this one (DataPut.after >= seq)
    is not freed by it.
    """

    worker: str
    keys: tuple[Key, ...]
    seq: int = -1


@message
class StealRequest(Message):
    worker: str
    key: Key


@message
class AcquireReplicas(Message):
    """Fetch copies of these keys from where ``who_has`` says."""

    worker: str
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]


@message
class RemoveReplicas(Message):
    """Drop these copies (other workers keep the data); ``seq`` as in FreeKeys."""

    worker: str
    keys: tuple[Key, ...]
    seq: int = -1


@message
class RefreshWhoHas(Message):
    """New holders for keys the worker reported missing."""

    worker: str
    who_has: dict[Key, tuple[str, ...]]


@message
class CloseWorker(Message):
    """The scheduler considers this worker gone; the driver closes it."""

    worker: str
    reason: str


# --------------------------------------------------------------------------
# Scheduler -> client
# --------------------------------------------------------------------------


@message
class KeyInMemory(Message):
    client: str
    key: Key
    nbytes: int
    typename: str
    inline: bytes | None = None


@message
class KeyErred(Message):
    """``key`` failed; ``blamed`` is the task whose failure caused it."""

    client: str
    key: Key
    error: TaskError
    blamed: Key


@message
class KeyCancelled(Message):
    client: str
    key: Key
    reason: str = "cancelled"


@message
class KeyLost(Message):
    """The key's data was lost; it is being recomputed (future pending again)."""

    client: str
    key: Key


@message
class KeyRetried(Message):
    """The erred key is being computed again (it, or what it inherited its error from, was retried)."""

    client: str
    key: Key


@message
class GraphRefused(Message):
    """The whole UpdateGraph was refused; nothing changed."""

    client: str
    keys: tuple[Key, ...]
    error: TaskError


@message
class WhoHasReply(Message):
    client: str
    request_id: str
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]


@message
class ScatterPlan(Message):
    """Where to put each scattered key; empty ``error`` means success."""

    client: str
    request_id: str
    placement: dict[Key, tuple[str, ...]]
    error: str = ""
    #: per worker, the seq of the last FreeKeys sent to it when this plan was made
    free_seqs: dict[str, int] | None = None


# --------------------------------------------------------------------------
# Scheduler -> driver
# --------------------------------------------------------------------------


@message
class SetTimer(Message):
    """Deliver ``TimerFired(token)`` at time ``at`` (replaces a pending one)."""

    at: float
    token: str


# --------------------------------------------------------------------------
# Driver -> worker (results of instructions)
# --------------------------------------------------------------------------


@message
class DataPut(Message):
    """A client stored these keys on this worker (scatter); driver holds data."""

    nbytes: dict[Key, int]
    #: ScatterPlan.free_seqs of this worker: older FreeKeys must not drop this data
    after: int = -1


@message
class DataLost(Message):
    """The driver's store lost these keys (disk or memory fault); the process lives on."""

    keys: tuple[Key, ...]


@message
class ExecuteSuccess(Message):
    key: Key
    nbytes: int
    typename: str
    start: float
    stop: float
    inline: bytes | None = None


@message
class ExecuteFailure(Message):
    key: Key
    error: TaskError
    start: float
    stop: float


@message
class ExecuteReschedule(Message):
    key: Key


@message
class GatherSuccess(Message):
    """Data from ``peer`` arrived: ``nbytes`` of what came, ``missing`` what it lacked."""

    peer: str
    nbytes: dict[Key, int]
    missing: tuple[Key, ...] = ()


@message
class GatherFailure(Message):
    """``peer`` could not be reached; none of ``keys`` arrived."""

    peer: str
    keys: tuple[Key, ...]


@message
class Secede(Message):
    key: Key


@message
class Rejoin(Message):
    key: Key


# --------------------------------------------------------------------------
# Worker -> its driver
# --------------------------------------------------------------------------


@message
class Execute(Message):
    """Run the task: deserialize ``run_spec``, substitute dependencies' data."""

    key: Key
    run_spec: bytes | None
    dependencies: tuple[Key, ...]
    actor: bool = False
    #: inputs that are actors: the driver passes handles to them
    actor_deps: tuple[Key, ...] = ()


@message
class GatherDeps(Message):
    """Fetch ``keys`` from ``peer`` in one transfer, then report Gather*."""

    peer: str
    keys: tuple[Key, ...]
    total_nbytes: int


@message
class DeleteData(Message):
    """Drop these keys from the driver's data store."""

    keys: tuple[Key, ...]


@message
class RejoinGranted(Message):
    """The seceded task has a thread slot again; let its thread continue."""

    key: Key


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

_EXT_RECORD = 1


def _default(obj: Any) -> Any:
    cls = type(obj)
    names = getattr(cls, "_field_names", None)
    if names is None or REGISTRY.get(getattr(cls, "op", None)) is not cls:
        raise TypeError(f"cannot encode {cls.__name__!r} in a twofold message")
    payload = [cls.op]
    payload.extend(getattr(obj, name) for name in names)
    return msgpack.ExtType(_EXT_RECORD, msgpack.packb(payload, default=_default, use_bin_type=True))


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _EXT_RECORD:
        raise ValueError(f"unknown msgpack extension type {code}")
    record = msgpack.unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False, strict_map_key=False)
    if not isinstance(record, tuple) or not record:
        raise ValueError("malformed message record: expected [op, *fields]")
    op = record[0]
    cls = REGISTRY.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ValueError(f"unknown message op {op!r}")
    if len(record) - 1 != len(cls._field_names):
        raise ValueError(f"{op} takes {len(cls._field_names)} fields, got {len(record) - 1}")
    return cls(*record[1:])


def dumps(msg: Any) -> bytes:
    """A message (or any msgpack-able structure of messages) as bytes."""
    return msgpack.packb(msg, default=_default, use_bin_type=True)


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`: sequences come back as tuples.

    Raises ValueError on records that are not in the vocabulary.  (Field
    *types* are not checked here: the runtime validates what peers send.)
    """
    obj = msgpack.unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False, strict_map_key=False)
    if isinstance(obj, msgpack.Timestamp):
        raise ValueError("msgpack timestamps are not part of the twofold vocabulary")
    return obj


_setattr = object.__setattr__


def restamp(msg: Message, now: float) -> Message:
    """Set ``now`` to the receiver's clock on delivery, in place.

    Only a driver may call this, on a message it owns (just decoded, or just
    taken from the sender's outputs): messages are otherwise immutable.  It
    avoids copying every message on every hop.
    """
    _setattr(msg, "now", now)
    return msg
