"""User objects to payload frames and back, several keys to one message.

Used on both ends of the data plane (worker <-> worker, client <-> worker):
:func:`pack` serializes each object once (``twofold.serialize``: large
buffers out of band, not copied); :func:`unpack` checks each header's frame
count against what arrived before anything is unpickled.
"""

from __future__ import annotations

import pickle
from typing import Any, Mapping

from twofold import serialize
from twofold.errors import ProtocolError


def pack(objects: Mapping[str, Any]) -> tuple[tuple, tuple, dict, dict, list]:
    """``(keys, headers, nbytes, typenames, frames)`` for ``objects``."""
    keys = tuple(objects)
    headers = []
    nbytes: dict[str, int] = {}
    typenames: dict[str, str] = {}
    frames: list = []
    for key in keys:
        obj = objects[key]
        header, obj_frames = serialize.dumps(obj)
        headers.append(header)
        frames.extend(obj_frames)
        nbytes[key] = serialize.nbytes_of(obj, obj_frames)
        typenames[key] = type(obj).__name__
    return keys, tuple(headers), nbytes, typenames, frames


def unpack(keys: tuple, headers: tuple, frames: list) -> dict[str, Any]:
    """Inverse of :func:`pack`; :class:`ProtocolError` if the frames do not add up."""
    if len(keys) != len(headers):
        raise ProtocolError(f"{len(keys)} keys but {len(headers)} serialization headers")
    out: dict[str, Any] = {}
    offset = 0
    for key, header in zip(keys, headers):
        count = header.get("count") if isinstance(header, dict) else None
        if type(count) is not int or count < 0 or offset + count > len(frames):
            raise ProtocolError(f"serialization header of {key!r} does not match the frames that arrived")
        out[key] = serialize.loads(header, frames[offset:offset + count])
        offset += count
    if offset != len(frames):
        raise ProtocolError(f"{len(frames) - offset} payload frames left over")
    return out


def dumps_small(obj: Any) -> bytes:
    """An object as one pickle, buffers in band (run specs, inline results, errors): cloudpickle if pickle cannot."""
    header, frames = serialize.dumps(obj, min_out_of_band=1 << 62)
    if header["serializer"] == "raw":
        return pickle.dumps(obj, protocol=5)
    return bytes(frames[0]) if type(frames[0]) is not bytes else frames[0]
