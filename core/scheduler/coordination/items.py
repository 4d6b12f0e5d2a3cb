"""Items in queues and variables: small values (opaque msgpack bytes) or futures.

A future inside a queue or variable is kept alive by a pseudo-client named
after its holder (``"queue:jobs"``): the key stays wanted while the item
waits, however many clients drop their futures of it.  Handing the item to
a client moves the reference: the client gets one (and the key's status)
before the holder lets go, so the data is never unwanted in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.scheduler.coordination.base import Refused

if TYPE_CHECKING:
    from twofold.scheduler.coordination.base import CoordinationExtension

#: the largest value item accepted (bytes): values go through the scheduler
MAX_VALUE_BYTES = 16 * 1024 * 1024


def check_item(item) -> tuple:
    """``item`` if it is well formed, else Refused."""
    if type(item) is tuple and len(item) == 2:
        kind, payload = item
        if kind == "value" and isinstance(payload, bytes):
            if len(payload) > MAX_VALUE_BYTES:
                raise Refused("ValueError", f"a value of {len(payload)} bytes is too large to go through the "
                                            "scheduler; scatter it and pass the future instead")  # fmt: skip
            return item
        if kind == "future" and isinstance(payload, str) and payload:
            return item
    raise Refused("TypeError", f"malformed item {item!r}: expected ('value', bytes) or ('future', key)")


def hold(ext: CoordinationExtension, holder: str, item: tuple) -> None:
    """Keep the item's future alive for ``holder``."""
    if item[0] == "future" and not ext.state.hold_key(holder, item[1]):
        raise Refused("ValueError", f"the scheduler does not know the future {item[1]!r} (was it released?)")


def release(ext: CoordinationExtension, holder: str, item: tuple) -> None:
    """``holder`` lets go of the item's future."""
    if item[0] == "future":
        ext.state.release_key(holder, item[1])


def hand_over(ext: CoordinationExtension, holder: str, client: str, items: list) -> None:
    """After the reply carrying ``items`` went to ``client``: move their references to it."""
    state = ext.state
    for kind, payload in items:
        if kind == "future":
            state.give_key(client, payload)
            state.release_key(holder, payload)


def give(ext: CoordinationExtension, client: str, items: list) -> None:
    """Give ``client`` a reference to each future among ``items`` (the holder keeps its own)."""
    for kind, payload in items:
        if kind == "future":
            ext.state.give_key(client, payload)


def holds(ext: CoordinationExtension, holder: str, item: tuple) -> bool:
    """Does ``holder`` hold the item's future (always True for values)?"""
    if item[0] != "future":
        return True
    ts = ext.state.tasks.get(item[1])
    return ts is not None and ts.who_wants.get(holder, 0) > 0
