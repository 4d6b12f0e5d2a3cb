"""A priority queue of tasks with cheap removal, for the machines' hot paths.

A binary heap (``heapq``) of ``(sort_key, task)`` plus the current members.
Removal only forgets the member; its heap entry is skipped when it surfaces
(lazy deletion).  Sort keys must be unique per push (both machines use
priority tuples ending in a counter), so tasks are never compared.  About
4x cheaper per push/pop than a SortedDict here.

The queue *is* the dict of its members (item -> sort key): truth, ``len``
and ``in`` are then C-level, with no Python call, which matters because the
machines test their queues for emptiness several times per task.  Iterating
yields items in queue order (sorted: for inspection, not hot paths).
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Any, Generic, Iterator, TypeVar

T = TypeVar("T")


class TaskQueue(dict, Generic[T]):
    __slots__ = ("_heap",)

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[Any, T]] = []

    def push(self, item: T, key: Any) -> None:
        self[item] = key
        heappush(self._heap, (key, item))

    def remove(self, item: T) -> None:
        del self[item]
        if not self:
            self._heap.clear()

    def discard(self, item: T) -> None:
        if item in self:
            self.remove(item)

    def _clean_top(self) -> None:
        heap = self._heap
        get = self.get
        while heap:
            key, item = heap[0]
            if get(item, _MISSING) == key:
                return
            heappop(heap)

    def peek(self) -> T | None:
        """The first item, or None if empty."""
        self._clean_top()
        return self._heap[0][1] if self._heap else None

    def pop(self) -> T:  # type: ignore[override]
        """Remove and return the first item (IndexError if empty)."""
        heap = self._heap
        get = self.get
        while True:
            key, item = heappop(heap)
            if get(item, _MISSING) == key:
                del self[item]
                return item

    def key_of(self, item: T) -> Any:
        return self[item]

    def __iter__(self) -> Iterator[T]:
        """Items in queue order (sorts: for inspection, not hot paths)."""
        return iter(sorted(dict.keys(self), key=self.__getitem__))

    def values(self) -> list[T]:  # type: ignore[override]
        return list(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<TaskQueue {len(self)} items>"


_MISSING = object()
