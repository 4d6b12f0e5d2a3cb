"""The user-facing side: ``Client``, ``Future`` and the functions that wait on futures.

The Client speaks the message vocabulary to a scheduler through a
:class:`~twofold.client.backend.Backend` (the simulator's or the socket
runtime's); nothing here knows which one.
"""

from twofold.client.client import Client, default_client, get_client, register_address
from twofold.client.future import DoneAndNotDoneFutures, Future, as_completed, fire_and_forget, wait

__all__ = [
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
