"""User objects as bytes for the socket runtime: pickle protocol 5, big buffers out of band.

Drivers (the runtime's servers and the client) call this; the state machines
never do — to them a function, an argument or a result is opaque bytes with a
size and a type name (``tests/test_purity.py`` keeps ``pickle`` and
``cloudpickle`` out of the machines' modules).

Why the shape ``dumps(obj) -> (header, frames)``:

* A large numpy array or bytes-like must cross the wire without being copied
  into a pickle stream.  Pickle protocol 5 hands such buffers to a callback
  instead of writing them inline; each becomes its own *frame*, a memoryview
  of the object's own memory.  The framing layer (``twofold.runtime.framing``)
  writes frames as they are (no concatenation) and reads each into its own
  preallocated buffer, which ``loads`` gives back to pickle: a received numpy
  array is a view on the buffer its frame was read into (no copy after the
  read; the read's own copies are counted in ``twofold.runtime.framing``),
  and it is writable.
* ``header`` is a small msgpack-able dict (serializer, frame count and
  lengths) that travels inside a message; ``frames`` travel as payload frames
  after it.  A receiver can check what it got against the header before it
  unpickles anything.

Buffers under :data:`OUT_OF_BAND_MIN` bytes stay in the pickle stream: a
frame costs a length entry and a read, more than copying a few kilobytes.

Exact ``bytes``/``bytearray``/``memoryview`` at the top level skip pickle
entirely (``"raw"``: the object *is* the frame; a memoryview comes back as
a flat byte view).  Nested inside a container
they are pickled inline: the C pickler takes its fast path for exact
``bytes``/``bytearray`` before any hook can intercept them.  (What goes out of
band when nested is what reduces to a ``pickle.PickleBuffer``: numpy arrays,
and anything else written for protocol 5.)

Functions and classes: the C pickler is tried first (10x faster on plain data
and importable functions); cloudpickle takes over when that fails (lambdas,
closures), when the stream refers to ``__main__`` (which is a different module
in the process that loads it), or when modules are registered with
``cloudpickle.register_pickle_by_value``.  Loading is plain ``pickle.loads``:
cloudpickle output is ordinary pickle data.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import cloudpickle

from twofold.errors import TwofoldError

__all__ = [
    "OUT_OF_BAND_MIN",
    "DeserializationError",
    "SerializationError",
    "dumps",
    "frames_nbytes",
    "loads",
    "nbytes_of",
]

#: Buffers at least this large (bytes) become separate frames.
OUT_OF_BAND_MIN = 16 * 1024

_PROTOCOL = 5
_RAW_TYPES = {bytes: "bytes", bytearray: "bytearray", memoryview: "memoryview"}


class SerializationError(TwofoldError, TypeError):
    """An object could not be pickled (the message names its type and why)."""


class DeserializationError(TwofoldError, ValueError):
    """Frames could not be turned back into an object (bad header, bad data, missing module)."""


def _nbytes(frame: Any) -> int:
    return frame.nbytes if type(frame) is memoryview else len(frame)


def frames_nbytes(frames: list) -> int:
    """Total size of ``frames`` in bytes."""
    return sum(_nbytes(f) for f in frames)


class _Collector(list):
    """The ``buffer_callback``: keeps big contiguous buffers, sends small ones in band."""

    __slots__ = ("min_oob",)

    def __call__(self, buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: in band, and pickle says why it cannot
            return True
        if raw.nbytes < self.min_oob:
            return True
        self.append(raw)
        return False


def _pickle(obj: Any, buffers: _Collector) -> bytes:
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            stream = pickle.dumps(obj, protocol=_PROTOCOL, buffer_callback=buffers)
        except Exception:
            stream = None
        # ``__main__`` objects pickle by reference, which the loading process cannot resolve
        if stream is not None and stream.find(b"__main__") < 0:  # (find: 3x faster than `in` here)
            return stream
        buffers.clear()
    return cloudpickle.dumps(obj, protocol=_PROTOCOL, buffer_callback=buffers)


def dumps(obj: Any, *, min_out_of_band: int = OUT_OF_BAND_MIN) -> tuple[dict, list]:
    """``obj`` as ``(header, frames)``; frames are ``bytes`` or memoryviews of ``obj``'s memory.

    The frames share memory with ``obj``: do not mutate it until they are
    written.  Raises :class:`SerializationError` when ``obj`` cannot be pickled.
    """
    raw_type = _RAW_TYPES.get(type(obj))
    if raw_type is not None:
        frame = obj
        if raw_type == "memoryview":
            if not obj.c_contiguous:
                frame = obj.tobytes()  # the one copy: a frame must be contiguous
            elif obj.ndim != 1 or obj.format != "B":
                frame = obj.cast("B")  # same memory, flat bytes
        return {"serializer": "raw", "type": raw_type, "count": 1, "lengths": [_nbytes(frame)]}, [frame]
    buffers = _Collector()
    buffers.min_oob = min_out_of_band
    try:
        stream = _pickle(obj, buffers)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize an object of type {type(obj).__qualname__!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not buffers:
        return {"serializer": "pickle", "count": 1, "lengths": [len(stream)]}, [stream]
    frames = [stream, *buffers]
    return {"serializer": "pickle", "count": len(frames), "lengths": [_nbytes(f) for f in frames]}, frames


def loads(header: dict, frames: list) -> Any:
    """Inverse of :func:`dumps`.

    Out-of-band buffers are handed to pickle as they are (no copy): a numpy
    array comes back as a view on its frame.  A ``"raw"`` ``bytes`` object is
    copied once if its frame is not already ``bytes`` (type fidelity).
    Raises :class:`DeserializationError` on a header that does not match the
    frames or data that does not unpickle.
    """
    try:
        serializer = header["serializer"]
        count = header["count"]
        lengths = header["lengths"]
    except (TypeError, KeyError) as exc:
        raise DeserializationError(f"malformed serialization header {header!r}") from exc
    if count != len(frames) or len(lengths) != count:
        raise DeserializationError(f"serialization header announces {count!r} frames, got {len(frames)}")
    for length, frame in zip(lengths, frames):
        if length != _nbytes(frame):
            raise DeserializationError(
                f"frame lengths {[_nbytes(f) for f in frames]} do not match the header's {list(lengths)}"
            )
    if serializer == "pickle":
        try:
            return pickle.loads(frames[0], buffers=frames[1:])
        except Exception as exc:
            raise DeserializationError(f"cannot deserialize: {type(exc).__name__}: {exc}") from exc
    if serializer == "raw":
        frame = frames[0]
        kind = header.get("type")
        if kind == "bytes":
            return frame if type(frame) is bytes else bytes(frame)
        if kind == "bytearray":
            return frame if type(frame) is bytearray else bytearray(frame)
        if kind == "memoryview":
            return memoryview(frame)
        raise DeserializationError(f"unknown raw type {kind!r}")
    raise DeserializationError(f"unknown serializer {serializer!r}")


def nbytes_of(obj: Any, frames: list | None = None) -> int:
    """The in-memory size of ``obj`` the scheduler plans with (transfers, memory).

    ``obj.nbytes`` when it is an int (numpy, pandas-like, memoryview); else the
    length of a bytes-like; else the size of its serialized frames (pass
    ``frames`` when they exist already, to avoid pickling twice); for an
    object that cannot be pickled, ``sys.getsizeof``.
    """
    n = getattr(obj, "nbytes", None)
    if type(n) is int and n >= 0:
        return n
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if frames is None:
        try:
            frames = dumps(obj)[1]
        except SerializationError:
            return sys.getsizeof(obj)
    return frames_nbytes(frames)
