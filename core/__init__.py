"""twofold: futures on a cluster, on real machines or in a deterministic simulator."""

from twofold.config import SchedulerConfig, WorkerConfig
from twofold.context import get_worker, rejoin, secede
from twofold.errors import CancelledError, FutureLost, InvalidGraph, KilledWorker, TimeoutError
from twofold.lazy import lazy_attributes
from twofold.scheduler import SchedulerState
from twofold.worker import WorkerState

__version__ = "0.1.0.dev0"

__all__ = [
    "Actor",
    "ActorFuture",
    "ActorLost",
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
    "get_worker",
    "get_task_stream",
    "worker_client",
    "rejoin",
    "secede",
    "wait",
    "LocalCluster",
    "Security",
    "TimeoutError",
    "Event",
    "Lock",
    "Pub",
    "Queue",
    "Semaphore",
    "Sub",
    "Variable",
    "WorkerPlugin",
    "SchedulerPlugin",
]

#: names loaded on first use: a worker process needs the machines, not the Client
#: (nor the socket runtime in a simulator-only program): start-up stays short
_LAZY = {
    "Actor": "twofold.client.actor",
    "ActorFuture": "twofold.client.actor",
    "ActorLost": "twofold.errors",
    "Client": "twofold.client",
    "Future": "twofold.client",
    "as_completed": "twofold.client",
    "default_client": "twofold.client",
    "fire_and_forget": "twofold.client",
    "get_client": "twofold.client",
    "worker_client": "twofold.client.client",
    "get_task_stream": "twofold.client.taskstream",
    "wait": "twofold.client",
    "LocalCluster": "twofold.runtime.local",
    "Security": "twofold.runtime.security",
    "Event": "twofold.client.coordination",
    "Lock": "twofold.client.coordination",
    "Semaphore": "twofold.client.coordination",
    "Queue": "twofold.client.queues",
    "Variable": "twofold.client.queues",
    "Pub": "twofold.client.pubsub",
    "Sub": "twofold.client.pubsub",
    "WorkerPlugin": "twofold.plugins",
    "SchedulerPlugin": "twofold.plugins",
}


__getattr__, __dir__ = lazy_attributes("twofold", globals(), _LAZY)
