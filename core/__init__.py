"""twofold: futures on a cluster, on real machines or in a deterministic simulator."""

from twofold.client import Client, Future, as_completed, default_client, fire_and_forget, get_client, wait
from twofold.config import SchedulerConfig, WorkerConfig
from twofold.context import rejoin, secede
from twofold.errors import CancelledError, FutureLost, InvalidGraph, KilledWorker
from twofold.scheduler import SchedulerState
from twofold.worker import WorkerState

__version__ = "0.1.0.dev0"

__all__ = [
    "CancelledError",
    "Client",
    "Future",
    "FutureLost",
    "InvalidGraph",
    "KilledWorker",
    "SchedulerConfig",
    "SchedulerState",
    "WorkerConfig",
    "WorkerState",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "get_client",
    "rejoin",
    "secede",
    "wait",
    "LocalCluster",
    "Security",
]

_RUNTIME = {"LocalCluster": "twofold.runtime.local", "Security": "twofold.runtime.security"}


def __getattr__(name: str):
    """``LocalCluster`` and ``Security`` load the socket runtime (asyncio, ssl) on first use only."""
    module = _RUNTIME.get(name)
    if module is None:
        raise AttributeError(f"module 'twofold' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
