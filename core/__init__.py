"""twofold: futures on a cluster, on real machines or in a deterministic simulator."""

from twofold.config import SchedulerConfig, WorkerConfig
from twofold.errors import CancelledError, FutureLost, InvalidGraph, KilledWorker
from twofold.scheduler import SchedulerState
from twofold.worker import WorkerState

__version__ = "0.1.0.dev0"

__all__ = [
    "CancelledError",
    "FutureLost",
    "InvalidGraph",
    "KilledWorker",
    "SchedulerConfig",
    "SchedulerState",
    "WorkerConfig",
    "WorkerState",
]
