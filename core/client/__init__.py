"""The user-facing side: ``Client``, ``Future`` and the functions that wait on futures.

The Client speaks the message vocabulary to a scheduler through a
:class:`~twofold.client.backend.Backend` (the simulator's or the socket
runtime's); nothing here knows which one.
"""

from twofold.lazy import lazy_attributes

_LAZY = {
    "Actor": "twofold.client.actor",
    "ActorFuture": "twofold.client.actor",
    "Client": "twofold.client.client",
    "default_client": "twofold.client.client",
    "get_client": "twofold.client.client",
    "register_address": "twofold.client.client",
    "DoneAndNotDoneFutures": "twofold.client.future",
    "Future": "twofold.client.future",
    "as_completed": "twofold.client.future",
    "fire_and_forget": "twofold.client.future",
    "wait": "twofold.client.future",
}

#: loaded on first use: ``twofold.client.spec`` alone (a worker's need) stays cheap to import
__getattr__, __dir__ = lazy_attributes("twofold.client", globals(), _LAZY)

__all__ = [
    "Actor",
    "ActorFuture",
    "Client",
    "DoneAndNotDoneFutures",
    "Future",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "get_client",
    "register_address",
    "wait",
]
