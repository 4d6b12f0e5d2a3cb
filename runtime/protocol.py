"""The runtime's own messages: the data plane between clients and workers.

The state machines' vocabulary (``twofold.messages``) covers control; moving
user data is the drivers' business, so its messages live here.  They are
registered like any other message (same codec, same frames).  Each data
request carries a ``request_id`` chosen by the asking side, echoed in the
reply, so one connection carries many requests at once.

Serialized objects travel as payload frames after the batch header: a reply
lists, per key, the serialization header (``twofold.serialize``), whose
``count`` says how many of the following frames belong to that key.
"""

from __future__ import annotations

from twofold.messages import Key, Message, TaskError, message


@message
class GetData(Message):
    """Ask a worker for the data of ``keys`` (a peer gathering, or a client)."""

    request_id: int
    keys: tuple[Key, ...]


@message
class DataReply(Message):
    """The keys held (``headers`` aligned with ``keys``; frames follow) and those not."""

    request_id: int
    keys: tuple[Key, ...]
    headers: tuple[dict, ...]
    nbytes: dict[Key, int]
    missing: tuple[Key, ...] = ()
    #: keys held but that could not be serialized, and why
    errors: dict[Key, str] | None = None


@message
class PutData(Message):
    """A client scatters data to a worker (frames follow, as in :class:`DataReply`)."""

    request_id: int
    keys: tuple[Key, ...]
    headers: tuple[dict, ...]
    nbytes: dict[Key, int]
    typenames: dict[Key, str]
    after: int = -1


@message
class PutReply(Message):
    """The worker stored the scattered keys."""

    request_id: int
    error: str = ""



@message
class ActorRequest(Message):
    """Call ``name`` (``kind="call"``) or read it (``"getattr"``) on the actor ``key``.

    One frame group follows: the serialized ``(args, kwargs)`` (``headers``
    has its one header; empty for a read).
    """

    request_id: int
    key: Key
    kind: str
    name: str
    headers: tuple[dict, ...] = ()


@message
class ActorReply(Message):
    """The outcome of an :class:`ActorRequest`: the value (``headers``, frames follow)
    or the error (``error``; ``lost`` when the worker does not hold the actor)."""

    request_id: int
    headers: tuple[dict, ...] = ()
    error: TaskError | None = None
    lost: str = ""


@message
class TopicPost(Message):
    """Values published on topic ``name`` (msgpack bytes, in order), sent by a Pub on a
    worker straight to its subscribers ``subs`` that live in this worker's process
    (:mod:`twofold.runtime.topics`).  Nothing answers it."""

    name: str
    subs: tuple[str, ...]
    payloads: tuple[bytes, ...]


@message
class RunRequest(Message):
    """Run ``function``, the pickled ``(func, args, kwargs)``, in this worker's process
    (``client.run``); answered by :class:`RunReply`."""

    request_id: int
    function: bytes


@message
class RunReply(Message):
    """What a :class:`RunRequest`'s function returned (``ok``: pickled value) or raised
    (pickled exception, or None if it could not be pickled; ``error``: its text)."""

    request_id: int
    ok: bool
    value: bytes | None = None
    error: str = ""
