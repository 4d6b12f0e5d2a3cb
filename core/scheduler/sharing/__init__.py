"""What clients share through the scheduler: datasets, metadata, events; and what they
may ask of its records (introspection).  One extension each."""

from __future__ import annotations

from twofold.scheduler.sharing.datasets import Datasets
from twofold.scheduler.sharing.events import EventLog
from twofold.scheduler.sharing.inspect import Inspect
from twofold.scheduler.sharing.metadata import Metadata
from twofold.scheduler.sharing.plugins import WorkerPluginStore
from twofold.scheduler.sharing.remote import Remote
from twofold.scheduler.sharing.taskstream import TaskStream


def sharing_extensions() -> list:
    """Fresh instances of every sharing extension, for one scheduler."""
    return [Datasets(), Metadata(), EventLog(), Inspect(), Remote(), TaskStream(), WorkerPluginStore()]


__all__ = ["Datasets", "EventLog", "Inspect", "Metadata", "Remote", "TaskStream", "WorkerPluginStore", "sharing_extensions"]
