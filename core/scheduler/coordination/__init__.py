"""The coordination primitives' scheduler side: one small pure machine per primitive.

Each is an :class:`~twofold.scheduler.extension.Extension` with one
request message type (``twofold.messages_coordination``); the client side
is ``twofold.client.coordination``.
"""

from __future__ import annotations

from twofold.scheduler.coordination.events import Events
from twofold.scheduler.coordination.locks import Locks
from twofold.scheduler.coordination.pubsub import PubSub
from twofold.scheduler.coordination.queues import Queues
from twofold.scheduler.coordination.semaphores import Semaphores
from twofold.scheduler.coordination.variables import Variables


def coordination_extensions() -> list:
    """Fresh instances of every coordination extension, for one scheduler."""
    return [Locks(), Semaphores(), Events(), Queues(), Variables(), PubSub()]


__all__ = ["Events", "Locks", "PubSub", "Queues", "Semaphores", "Variables", "coordination_extensions"]
