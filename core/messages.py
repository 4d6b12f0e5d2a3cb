"""The message vocabulary: every event into and output out of the state machines.

Rules:

* Every message is a frozen, slotted dataclass defined here, once, and
  registered under its class name (its ``op``).
* Every message carries ``now`` (seconds, the sender's clock at emission; a
  driver re-stamps it with the receiver's clock on delivery, see
  :func:`restamp`) and ``stimulus_id`` (what caused it, for tracing).
* Fields hold only msgpack-able values: ``str``, ``int``, ``float``, ``bool``,
  ``None``, ``bytes``, tuples (never lists), dicts, and the nested records
  below (:class:`TaskSpec`, :class:`TaskError`, :class:`ScatteredKey`), only
  in fields annotated ``R``, ``R | None`` or ``tuple[R, ...]`` (the wire
  format relies on it).  :func:`dumps` and :func:`loads` round-trip every
  message exactly.
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

import re
import types
import typing
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields
from typing import Any, ClassVar

import msgpack

Key = str

#: op name -> class, for decoding.
REGISTRY: dict[str, type] = {}


def _register(cls: type) -> type:
    cls.op = cls.__name__
    cls._field_names = tuple(f.name for f in fields(cls))
    _plan_wire(cls)  # first: a class the codec cannot plan is not registered
    REGISTRY[cls.__name__] = cls
    return cls


def _fast_init(cls: type) -> None:
    """Give ``cls`` an ``__init__`` twice as fast and a ``build`` three times as fast.

    The generated dataclass ``__init__`` sets each field through
    ``object.__setattr__``; ours calls the slot descriptors' ``__set__``
    directly.  Same signature, same defaults, still frozen afterwards.

    ``cls.build(...)`` (same signature) is for the hot paths, where a message
    is built per task on every hop: it fills an instance of a *twin* class
    (a subclass that adds no slots and keeps the plain ``__setattr__``, so
    the interpreter's specialised slot stores apply) and then makes it a
    ``cls`` by assigning ``__class__`` (same layout).  What it returns is
    exactly what ``cls(...)`` returns: a frozen ``cls`` instance.
    """
    params = []
    body = []
    stores = []
    twin = type(cls.__name__, (cls,), {
        "__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__,
        "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.<twin>",
    })
    namespace: dict[str, Any] = {"_UNSET": _UNSET, "_new": object.__new__, "_osa": object.__setattr__,
                                 "_cls": cls, "_twin": twin}
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
        stores.append(f"    self.{f.name} = {f.name}")
    defaults = [line for line in body if line.startswith("    if ")]
    source = (
        f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
        f"def build({', '.join(params)}):\n" + "".join(line + "\n" for line in defaults)
        + "    self = _new(_twin)\n" + "".join(line + "\n" for line in stores)
        + "    _osa(self, '__class__', _cls)\n    return self\n"
    )
    exec(source, namespace)  # noqa: S102 - generated from our own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    build = namespace["build"]
    build.__qualname__ = f"{cls.__qualname__}.build"
    cls.build = staticmethod(build)
    cls._twin = twin


_UNSET = object()


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _frozen_getstate(self: Any) -> tuple:
    return tuple([getattr(self, name) for name in self._field_names])


def _frozen_setstate(self: Any, state: tuple) -> None:
    """Unpickling and ``copy``: fill the slots past the frozen ``__setattr__``
    (the default goes through it, and raised)."""
    for name, value in zip(self._field_names, state):
        object.__setattr__(self, name, value)


def _hash(self: Any) -> int:
    return hash(tuple([getattr(self, name) for name in self._field_names]))


def frozen(cls: type) -> type:
    """A slotted dataclass, frozen through shared ``__setattr__``/``__delattr__``.

    ``dataclass(frozen=True)`` generates (compiles) those two and ``__hash__``
    for every class; sharing them made importing this module, which every
    worker process pays at start-up, a quarter cheaper.  ``__init__`` is our
    own (``_fast_init``): it sets slots through their descriptors.
    """
    cls = dataclass(slots=True, init=False)(cls)
    cls._field_names = tuple(f.name for f in fields(cls))
    cls.__setattr__ = _frozen_setattr
    cls.__delattr__ = _frozen_delattr
    cls.__getstate__ = _frozen_getstate
    cls.__setstate__ = _frozen_setstate
    cls.__hash__ = _hash
    _fast_init(cls)
    return cls


#: peer kinds that may send messages to the scheduler
PEER_KINDS = ("client", "worker")
#: where the scheduler's drivers deliver one of its outputs
DESTINATIONS = ("worker", "client", "timer", "close", "driver", "")


def message(cls: type | None = None, *, by: str | tuple[str, ...] = (), field: str | None = None, to: str = ""):
    """Decorator: a frozen slotted dataclass (:func:`frozen`), registered for the wire.

    It also declares, once, how drivers treat the message, so neither the
    runtime's allow-list nor either driver's output routing keeps a list of
    its own:

    * ``by``: the peer kinds (``"client"``, ``"worker"``) that may send it to
      the scheduler; ``field`` names the field in which the sender names
      itself (default: the kind's own name).  Read as ``cls.senders``, a
      ``{kind: field}`` dict (empty: no peer may send it).
    * ``to``: where a scheduler output goes: ``"worker"`` or ``"client"``
      (the one its field of that name names), ``"timer"`` (the driver's
      clock), ``"close"`` (close the named worker's connection), ``"driver"``
      (the driver itself acts on it: user code to run in the scheduler's
      process).  Read as ``cls.destination`` (``""``: not a scheduler output).
    """

    def decorate(cls: type) -> type:
        kinds = (by,) if isinstance(by, str) else tuple(by)
        for kind in kinds:
            if kind not in PEER_KINDS:
                raise ValueError(f"{cls.__name__}: by= takes {PEER_KINDS}, got {kind!r}")
        if to not in DESTINATIONS:
            raise ValueError(f"{cls.__name__}: to= takes {DESTINATIONS}, got {to!r}")
        cls = frozen(cls)
        senders = {kind: field or kind for kind in kinds}
        for name in (*senders.values(), *((to,) if to in ("worker", "client") else ())):
            if name not in cls._field_names:
                raise TypeError(f"{cls.__name__} declares a field {name!r} it does not have")
        if to == "close" and "worker" not in cls._field_names:
            raise TypeError(f"{cls.__name__}: to='close' needs a worker field")
        cls.senders = senders
        cls.destination = to
        return _register(cls)

    return decorate(cls) if cls is not None else decorate


# --------------------------------------------------------------------------
# Wire plans: per class, generated at registration (the format: see "Encoding")
# --------------------------------------------------------------------------

#: class -> instance as ``(op, *fields)``: the dispatch of dumps.
_ENCODE: dict[type, Any] = {}
#: op -> ``(op, *fields)`` as an instance: the dispatch of loads.
_DECODE: dict[str, Any] = {}
#: class -> (encoder, decoder) of its untagged form ``(*fields)``, made when a field is annotated with it.
_NESTED: dict[type, tuple[Any, Any]] = {}


def _record_field(tp: Any, where: str) -> tuple[str, type] | None:
    """How a field annotated ``tp`` holds records: ("one" | "optional" | "many", class), or None."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _ENCODE:
        return "one", tp
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        if other in _ENCODE:
            return "optional", other
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _ENCODE:
        return "many", args[0]

    def mentions(t: Any) -> bool:
        return t in _ENCODE or any(mentions(a) for a in typing.get_args(t))

    if mentions(tp):
        raise TypeError(f"{where}: a record can only be a field as R, R | None or tuple[R, ...], not {tp!r}")
    return None


def _malformed(cls: type, t: Any, tagged: bool) -> None:
    n = len(cls._field_names)
    if tagged and type(t) is tuple:
        raise ValueError(f"{cls.__name__} takes {n} fields, got {len(t) - 1}")
    got = f"{len(t)} items" if type(t) is tuple else f"a {type(t).__name__}"
    raise ValueError(f"malformed {cls.__name__} record: expected an array of its {n} fields, got {got}")


def _not_a(cls: type, value: Any) -> None:
    raise TypeError(f"cannot encode a {type(value).__name__} where a {cls.__name__} record belongs")


def _nested(cls: type) -> tuple[Any, Any]:
    """(encoder, decoder) of a ``cls`` field."""
    if cls not in _NESTED:
        _NESTED[cls] = _codec(cls, tagged=False)
    return _NESTED[cls]


def _many(cls: type) -> tuple[Any, Any]:
    """(encoder, decoder) of a ``tuple[cls, ...]`` field."""
    encode, decode = _nested(cls)

    def encode_many(v: Any) -> list:
        if type(v) is not tuple and type(v) is not list:
            raise TypeError(f"cannot encode a {type(v).__name__} where a tuple of {cls.__name__} records belongs")
        return [*map(encode, v)]

    def decode_many(v: Any) -> tuple:
        if type(v) is not tuple:
            raise ValueError(f"malformed field: a {type(v).__name__}, expected an array of {cls.__name__} records")
        return tuple(map(decode, v))

    return encode_many, decode_many


_WORD = re.compile(r"[A-Za-z_]\w*")


def _hints(cls: type) -> dict[str, Any] | None:
    """The resolved field annotations, or None when none can name a record.

    Resolving annotations (``typing.get_type_hints``: an ``eval`` each) was a
    third of importing this module; a string annotation that mentions no
    registered class cannot hold a record, so most classes skip it.
    """
    raw: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        raw.update(getattr(klass, "__annotations__", {}))
    records = {c.__name__ for c in _ENCODE}
    if all(type(raw.get(name)) is str and records.isdisjoint(_WORD.findall(raw[name])) for name in cls._field_names):
        return None
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:
        raise TypeError(f"cannot resolve the field annotations of {cls.__name__}: {exc}") from exc


def _codec(cls: type, tagged: bool) -> tuple[Any, Any]:
    """Generate ``cls``'s (encoder, decoder), of ``(op, *fields)`` if ``tagged`` else ``(*fields)``.

    A plain field is copied as it is (the packer checks it); a field holding
    records goes through its record class's untagged codec.  The decoder
    checks the array's type and length, then fills an instance the way
    ``cls.build`` does (no ``__init__``; see :func:`_fast_init`).  The untagged encoder checks the instance's class (the
    tagged one is dispatched on it).
    """
    hints = _hints(cls)
    ns: dict[str, Any] = {"_cls": cls, "_twin": cls._twin, "_new": object.__new__, "_osa": object.__setattr__,
                          "_tuple": tuple}
    ns.update(_malformed=_malformed, _not_a=_not_a)
    first = 1 if tagged else 0  # index of the first field in the array
    values, setters = [repr(cls.__name__)] if tagged else [], []
    for i, name in enumerate(cls._field_names):
        j = i + first
        how = _record_field(hints[name], f"{cls.__name__}.{name}") if hints is not None else None
        if how is None:
            values.append(f"m.{name}")
            setters.append(f"m.{name} = t[{j}]")
            continue
        kind, record = how
        ns[f"_e{i}"], ns[f"_d{i}"] = _many(record) if kind == "many" else _nested(record)
        if kind == "optional":
            values.append(f"(None if (v := m.{name}) is None else _e{i}(v))")
            setters.append(f"m.{name} = None if (v := t[{j}]) is None else _d{i}(v)")
        else:
            values.append(f"_e{i}(m.{name})")
            setters.append(f"m.{name} = _d{i}(t[{j}])")
    check = "" if tagged else "    if m.__class__ is not _cls: _not_a(_cls, m)\n"
    exec(  # noqa: S102 - generated from our own field names
        f"def encode(m):\n{check}    return ({''.join(v + ', ' for v in values)})\n"
        f"def decode(t):\n    if t.__class__ is not _tuple or len(t) != {len(values)}: _malformed(_cls, t, {tagged})\n"
        f"    m = _new(_twin)\n" + "".join(f"    {line}\n" for line in setters)
        + "    _osa(m, '__class__', _cls)\n    return m\n",
        ns,
    )
    return ns["encode"], ns["decode"]


def _plan_wire(cls: type) -> None:
    encode, decode = _codec(cls, tagged=True)
    replaced = REGISTRY.get(cls.__name__)  # a class registered again under the same op: only the new one encodes
    _ENCODE.pop(replaced, None)
    _NESTED.pop(replaced, None)
    _ENCODE[cls], _DECODE[cls.__name__] = encode, decode


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


@frozen
class Message:
    now: float
    stimulus_id: str

    op: ClassVar[str]
    _field_names: ClassVar[tuple[str, ...]]
    #: peer kind -> the field naming the sender (see :func:`message`)
    senders: ClassVar[dict[str, str]] = {}
    #: where a scheduler output goes (see :func:`message`)
    destination: ClassVar[str] = ""


# --------------------------------------------------------------------------
# Client -> scheduler
# --------------------------------------------------------------------------


@message(by="client")
class AddClient(Message):
    client: str


@message(by="client")
class RemoveClient(Message):
    """The client closed or its connection was lost: release all it wants."""

    client: str


@message(by="client")
class UpdateGraph(Message):
    """New tasks, and the keys the client now holds futures for."""

    client: str
    tasks: tuple[TaskSpec, ...]
    wanted: tuple[Key, ...]


@message(by="client")
class DesireKeys(Message):
    """The client holds one more reference to each key."""

    client: str
    keys: tuple[Key, ...]


@message(by="client")
class ReleaseKeys(Message):
    """The client dropped one reference to each key."""

    client: str
    keys: tuple[Key, ...]


@message(by="client")
class CancelKeys(Message):
    """Cancel keys (and their dependents) for this client, or all with force."""

    client: str
    keys: tuple[Key, ...]
    force: bool = False


@message(by="client")
class RetryKeys(Message):
    client: str
    keys: tuple[Key, ...]


@message(by="client")
class FireAndForget(Message):
    """Keep these keys wanted until they finish, whoever else lets go."""

    client: str
    keys: tuple[Key, ...]


@message(by="client")
class ScatterRequest(Message):
    """Ask where to put data the client is about to scatter."""

    client: str
    request_id: str
    keys: tuple[Key, ...]
    workers: tuple[str, ...] | None = None
    broadcast: bool = False


@message(by="client")
class UpdateData(Message):
    """The client has put these keys on these workers (after ScatterPlan).

    Each item adds one reference for the client, also for keys it already
    holds (the client balances that with a ReleaseKeys).
    """

    client: str
    keys: tuple[ScatteredKey, ...]


@message(by="client")
class WhoHasRequest(Message):
    client: str
    request_id: str
    keys: tuple[Key, ...]


@message(by="client")
class SchedulerInfoRequest(Message):
    """Ask what the scheduler knows of its workers (answered by SchedulerInfoReply).

    The answer waits until the scheduler has at least ``n_workers`` workers
    (``wait_for_workers``); with 0 it comes at once.  A waiting request is
    dropped with its client (RemoveClient).
    """

    client: str
    request_id: str
    n_workers: int = 0


@message(by="client")
class Replicate(Message):
    """Keep ``n`` copies of each key (``None``: one on every worker in the pool)."""

    client: str
    keys: tuple[Key, ...]
    n: int | None = None
    workers: tuple[str, ...] | None = None


@message(by=("client", "worker"), field="reporter")
class MissingData(Message):
    """``reporter`` (a client or worker) did not find ``key`` on ``errant_worker``."""

    reporter: str
    key: Key
    errant_worker: str


# --------------------------------------------------------------------------
# Worker -> scheduler
# --------------------------------------------------------------------------


@message(by="worker")
class AddWorker(Message):
    worker: str
    nthreads: int
    resources: dict[str, float] | None = None
    memory_limit: int | None = None
    name: str | None = None


@message(by="worker")
class RemoveWorker(Message):
    """The connection to the worker was lost, or it is retiring."""

    worker: str
    reason: str = "connection lost"


@message(by="worker")
class WorkerHeartbeat(Message):
    worker: str
    memory: int = 0
    executing: int = 0


@message(by="worker")
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


@message(by="worker")
class TaskErred(Message):
    worker: str
    key: Key
    error: TaskError
    start: float = 0.0
    stop: float = 0.0
    run_id: int = -1


@message(by="worker")
class AddReplicas(Message):
    """The worker now holds these keys too (it fetched them)."""

    worker: str
    nbytes: dict[Key, int]


@message(by="worker")
class StealResponse(Message):
    """Answer to StealRequest: ``released`` is True if the worker gave it up."""

    worker: str
    key: Key
    released: bool


@message(by="worker")
class LongRunning(Message):
    """The task seceded: it no longer holds a thread slot."""

    worker: str
    key: Key


@message(by="worker")
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


@message(to="worker")
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


@message(to="worker")
class FreeKeys(Message):
    """Forget these keys: drop their data, cancel their computation.

    ``seq`` numbers the FreeKeys sent to this worker (1, 2, ...): data a
    client scattered under a plan made after this one (DataPut.after >= seq)
    is not freed by it.
    """

    worker: str
    keys: tuple[Key, ...]
    seq: int = -1


@message(to="worker")
class StealRequest(Message):
    worker: str
    key: Key


@message(to="worker")
class AcquireReplicas(Message):
    """Fetch copies of these keys from where ``who_has`` says."""

    worker: str
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]


@message(to="worker")
class RemoveReplicas(Message):
    """Drop these copies (other workers keep the data); ``seq`` as in FreeKeys."""

    worker: str
    keys: tuple[Key, ...]
    seq: int = -1


@message(to="worker")
class RefreshWhoHas(Message):
    """New holders for keys the worker reported missing."""

    worker: str
    who_has: dict[Key, tuple[str, ...]]


@message(to="close")
class CloseWorker(Message):
    """The scheduler considers this worker gone; the driver closes it."""

    worker: str
    reason: str


# --------------------------------------------------------------------------
# Scheduler -> client
# --------------------------------------------------------------------------


@message(to="client")
class KeyInMemory(Message):
    client: str
    key: Key
    nbytes: int
    typename: str
    inline: bytes | None = None


@message(to="client")
class KeyErred(Message):
    """``key`` failed; ``blamed`` is the task whose failure caused it."""

    client: str
    key: Key
    error: TaskError
    blamed: Key


@message(to="client")
class KeyCancelled(Message):
    client: str
    key: Key
    reason: str = "cancelled"


@message(to="client")
class KeyLost(Message):
    """The key's data was lost; it is being recomputed (future pending again)."""

    client: str
    key: Key


@message(to="client")
class KeyRetried(Message):
    """The erred key is being computed again (it, or what it inherited its error from, was retried)."""

    client: str
    key: Key


@message(to="client")
class GraphRefused(Message):
    """The whole UpdateGraph was refused; nothing changed."""

    client: str
    keys: tuple[Key, ...]
    error: TaskError


@message(to="client")
class WhoHasReply(Message):
    client: str
    request_id: str
    who_has: dict[Key, tuple[str, ...]]
    nbytes: dict[Key, int]


@message(to="client")
class SchedulerInfoReply(Message):
    """Answer to SchedulerInfoRequest: per worker address, in arrival order, a dict of
    ``name``, ``nthreads``, ``memory_limit``, ``resources``, ``active`` (tasks
    processing there), ``stored`` (keys in memory there), ``nbytes`` (bytes
    stored) and ``last_seen`` (the scheduler's clock when the worker joined or last sent a
    heartbeat)."""

    client: str
    request_id: str
    workers: dict[str, dict]


@message(to="client")
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


@message(to="timer")
class SetTimer(Message):
    """Deliver ``TimerFired(token)`` at time ``at`` (replaces a pending one)."""

    at: float
    token: str
    #: the simulator may let a stalled run end although this timer is pending (keep-alive checks)
    background: bool = False


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

# The format.  A message, at the top level or as an item of a batch, is one
# flat array: its op (class name), then its fields in dataclass order.  A
# batch is an array of messages.  A record in a field annotated with its
# class (``TaskError``, ``R | None``, ``tuple[TaskSpec, ...]``) is the array of
# its fields alone: the annotation names the class.  Other field values are
# plain msgpack (sequences come back as tuples).  loads reads an array whose
# first item is a str as a message, any other array as a batch (its array
# items messages, its other items left as they are, for the caller to refuse),
# anything else as it is.  An unknown op, a wrong number of fields or a record
# field that is not an array of the record's fields raises ValueError.

_unpackb = msgpack.unpackb

#: Idle Packers: dumps pops one (or makes one) and puts it back, so no two
#: threads share one (list.pop/append are atomic).  One that packed more than
#: _PACKER_KEEP bytes is dropped: a Packer's buffer never shrinks.
_PACKERS: list = []
_PACKER_KEEP = 1 << 20


def _encode_item(item: Any) -> Any:
    """An item of a batch, slowly: a registered instance, or a plain value that loads gives back."""
    encode = _ENCODE.get(item.__class__)
    if encode is not None:
        return encode(item)
    if isinstance(item, (str, list, tuple)) and not isinstance(item, msgpack.ExtType):
        raise TypeError(f"cannot encode a {type(item).__name__} as an item of a batch: loads would read a message")
    return item  # the packer refuses what it cannot encode (unregistered classes among them)


def dumps(msg: Any) -> bytes:
    """A message, or a list or tuple of messages (a batch), as bytes.

    TypeError for an unregistered object where a message or record belongs,
    or a field value msgpack cannot encode.
    """
    encode = _ENCODE.get(msg.__class__)
    if encode is not None:
        obj = encode(msg)
    elif msg.__class__ is list or msg.__class__ is tuple:
        try:
            obj = [_ENCODE[m.__class__](m) for m in msg]
        except KeyError:  # not all messages: say what, or pass plain values
            obj = [_encode_item(m) for m in msg]
    else:
        obj = msg
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    try:
        data = packer.pack(obj)
    except (TypeError, OverflowError) as exc:  # an object msgpack does not know, an int over 64 bits
        raise TypeError(f"cannot encode in a twofold message: {exc}") from None
    if len(data) <= _PACKER_KEEP:
        _PACKERS.append(packer)
    return data


def _decode(record: tuple) -> Any:
    """One message from its array, slowly, with a precise error."""
    op = record[0] if record else None
    decode = _DECODE.get(op) if op.__class__ is str else None
    if decode is None:
        raise ValueError(f"unknown message op {op!r}" if record else "malformed message: an empty array")
    return decode(record)


def _ext_hook(code: int, data: bytes) -> Any:
    raise ValueError(f"unknown msgpack extension type {code}: extension types are not part of the twofold vocabulary")


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`: a message, or a tuple of messages (see the format above).

    Raises ValueError (or a msgpack error) on what is not in the vocabulary.
    Field *types* are not checked beyond the records' shape: the runtime
    validates what peers send.
    """
    obj = _unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False, strict_map_key=False)
    if obj.__class__ is tuple:
        if obj and obj[0].__class__ is str:
            return _decode(obj)
        try:
            return tuple([_DECODE[m[0]](m) for m in obj])
        except (KeyError, TypeError, IndexError):  # not all messages: say which, or pass other items
            return tuple([_decode(m) if m.__class__ is tuple else m for m in obj])
    if obj.__class__ is msgpack.Timestamp:
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


# The coordination primitives' messages live in a module of their own (same
# vocabulary, same registry); importing them here registers them for loads.
from twofold.messages_coordination import (  # noqa: E402,F401
    CoordinationReply,
    EventRequest,
    LockRequest,
    PubSubRequest,
    QueueRequest,
    SemaphoreRequest,
    TopicMessages,
    TopicPeers,
    VariableRequest,
)
from twofold.messages_sharing import (  # noqa: E402,F401
    DatasetRequest,
    EventLogRequest,
    InspectRequest,
    MetadataRequest,
    RunOnScheduler,
    RunUserCode,
    TaskStreamRequest,
    TopicEvent,
)
from twofold.messages_ops import ClusterOpRequest  # noqa: E402,F401
from twofold.messages_plugins import WorkerPluginRequest, WorkerPlugins  # noqa: E402,F401
