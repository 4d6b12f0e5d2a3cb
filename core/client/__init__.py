"""The user-facing side: ``Client``, ``Future`` and the functions that wait on futures.

The Client speaks the message vocabulary to a scheduler through a
:class:`~twofold.client.backend.Backend` (the simulator's or the socket
runtime's); nothing here knows which one.
"""

_LAZY = {
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


def __getattr__(name: str):
    """Loaded on first use: ``twofold.client.spec`` alone (a worker's need) stays cheap to import."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'twofold.client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

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
