"""What clients share through the scheduler: datasets, metadata, events (one extension each)."""

from __future__ import annotations

from twofold.scheduler.sharing.datasets import Datasets
from twofold.scheduler.sharing.events import EventLog
from twofold.scheduler.sharing.metadata import Metadata


def sharing_extensions() -> list:
    """Fresh instances of every sharing extension, for one scheduler."""
    return [Datasets(), Metadata(), EventLog()]


__all__ = ["Datasets", "EventLog", "Metadata", "sharing_extensions"]
