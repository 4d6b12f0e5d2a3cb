"""Published datasets: named values that any client can get, whose futures stay alive.

A dataset is what its client packed (opaque bytes: the structure, with
futures as placeholders) plus the keys of those futures, which the
scheduler holds for it (pseudo-client ``"dataset:<name>"``) until it is
unpublished.  Getting it gives the asking client its own reference to each
key (and their status), so the futures it rebuilds work at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_sharing import DatasetRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


@dataclass(frozen=True, slots=True)
class DatasetStatistics:
    name: str
    datasets: int
    keys: int


def holder_of(name: str) -> str:
    return f"dataset:{name}"


class Datasets(CoordinationExtension):
    name = "datasets"
    request_type = DatasetRequest
    actions = {"publish": "_publish", "get": "_get", "list": "_list", "unpublish": "_unpublish"}

    def __init__(self) -> None:
        super().__init__()
        #: name -> (data, keys)
        self.datasets: dict[str, tuple[bytes, tuple[str, ...]]] = {}

    def _publish(self, event: DatasetRequest) -> None:
        if not isinstance(event.data, bytes):
            raise Refused("TypeError", "a dataset's data must be bytes")
        keys = event.keys
        if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
            raise Refused("TypeError", "a dataset's keys must be a tuple of str")
        if event.name in self.datasets and not event.override:
            raise Refused("KeyError", f"Dataset {event.name!r} already exists (override=True replaces it)")
        unknown = [k for k in keys if k not in self.state.tasks]
        if unknown:
            raise Refused("ValueError", f"dataset {event.name!r}: the scheduler does not know the futures "
                                        f"{unknown[:5]!r} (were they released?)")  # fmt: skip
        holder = holder_of(event.name)
        for key in keys:  # first: republishing the same futures must not drop them
            self.state.hold_key(holder, key)
        old = self.datasets.get(event.name)
        self.datasets[event.name] = (event.data, keys)
        if old is not None:
            for key in old[1]:
                self.state.release_key(holder, key)
        self.reply(event, True)

    def _get(self, event: DatasetRequest) -> None:
        found = self.datasets.get(event.name)
        if found is None:
            raise Refused("KeyError", f"Dataset {event.name!r} not found; published: {sorted(self.datasets)[:10]}")
        data, keys = found
        self.reply(event, (data, keys))
        for key in keys:
            self.state.give_key(event.client, key)

    def _list(self, event: DatasetRequest) -> None:
        self.reply(event, tuple(self.datasets))

    def _unpublish(self, event: DatasetRequest) -> None:
        found = self.datasets.pop(event.name, None)
        if found is not None:
            for key in found[1]:
                self.state.release_key(holder_of(event.name), key)
        self.reply(event, found is not None)

    def validate(self) -> None:
        tasks = self.state.tasks
        for name, (_, keys) in self.datasets.items():
            for key in keys:
                ts = tasks.get(key)
                assert ts is not None and ts.who_wants.get(holder_of(name), 0) > 0, \
                    f"dataset {name!r}: its future {key!r} is not held"

    def statistics(self) -> DatasetStatistics:
        return DatasetStatistics(self.name, len(self.datasets), sum(len(k) for _, k in self.datasets.values()))
