"""Metadata: a nested dict of small values on the scheduler, set and read by key paths.

``set(["a", "b"], v)`` creates the inner dicts it needs; ``get`` of a path
that is not there is a ``KeyError`` (the client turns it into its default).
Values are msgpack bytes the clients made, kept as they came.
"""

from __future__ import annotations

from dataclasses import dataclass

from twofold.messages_sharing import MetadataRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused


@dataclass(frozen=True, slots=True)
class MetadataStatistics:
    name: str
    entries: int


def _check_path(path) -> tuple:
    if not isinstance(path, tuple) or not path:
        raise Refused("TypeError", "a metadata key is a str (or int) or a non-empty list of them")
    for part in path:
        if isinstance(part, bool) or not isinstance(part, (str, int)):
            raise Refused("TypeError", f"metadata keys are str or int, got {type(part).__name__} {part!r}")
    return path


class Metadata(CoordinationExtension):
    name = "metadata"
    request_type = MetadataRequest
    actions = {"set": "_set", "get": "_get"}

    def __init__(self) -> None:
        super().__init__()
        #: nested dicts; leaves are ("leaf", msgpack bytes) so a leaf is never mistaken for a branch
        self.root: dict = {}

    def _set(self, event: MetadataRequest) -> None:
        path = _check_path(event.path)
        if not isinstance(event.value, bytes):
            raise Refused("TypeError", "a metadata value must be msgpack bytes")
        node = self.root
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}  # a leaf on the way is replaced by a branch, as dask does
            node = child
        node[path[-1]] = ("leaf", event.value)
        self.reply(event, True)

    def _get(self, event: MetadataRequest) -> None:
        node = self.root
        for part in _check_path(event.path):
            if not isinstance(node, dict) or part not in node:
                raise Refused("KeyError", f"no metadata at {list(event.path)!r}")
            node = node[part]
        self.reply(event, _export(node))

    def statistics(self) -> MetadataStatistics:
        def count(node) -> int:
            return sum(count(v) if isinstance(v, dict) else 1 for v in node.values())

        return MetadataStatistics(self.name, count(self.root))


def _export(node):
    """A leaf's bytes, or a branch as {key: exported} (the client unpacks the leaves)."""
    if isinstance(node, dict):
        return {k: _export(v) for k, v in node.items()}
    return node[1]
