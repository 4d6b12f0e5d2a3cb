"""Task arguments: futures inside them become dependencies.

The client replaces every Future found anywhere inside ``args`` and
``kwargs`` (through lists, tuples, dicts, sets and frozensets) by a
:class:`Dep` placeholder and lists its key as a dependency; the worker side
puts the dependency's data back in with :func:`substitute`.  Containers
without futures are passed through untouched (no copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

_CONTAINERS = (list, tuple, dict, set, frozenset)


@dataclass(frozen=True, slots=True)
class Dep:
    """Placeholder for the data of ``key`` inside a task's arguments."""

    key: str


def replace_futures(obj: Any, is_future: Callable[[Any], bool], found: dict[str, None]) -> Any:
    """``obj`` with futures replaced by :class:`Dep`; their keys added to ``found``."""
    if is_future(obj):
        found[obj.key] = None
        return Dep(obj.key)
    typ = type(obj)
    if typ not in _CONTAINERS or not obj:
        return obj
    if typ is dict:
        items = [(k, replace_futures(v, is_future, found)) for k, v in obj.items()]
        if all(v is obj[k] for k, v in items):
            return obj
        return dict(items)
    values = [replace_futures(v, is_future, found) for v in obj]
    if all(a is b for a, b in zip(values, obj)) and typ is not set and typ is not frozenset:
        return obj
    return typ(values)


def substitute(obj: Any, data: Mapping[str, Any]) -> Any:
    """Inverse of :func:`replace_futures` on the worker: Dep -> the key's data."""
    typ = type(obj)
    if typ is Dep:
        return data[obj.key]
    if typ not in _CONTAINERS or not obj:
        return obj
    if typ is dict:
        return {k: substitute(v, data) for k, v in obj.items()}
    return typ(substitute(v, data) for v in obj)


def has_deps(obj: Any) -> bool:
    typ = type(obj)
    if typ is Dep:
        return True
    if typ not in _CONTAINERS or not obj:
        return False
    if typ is dict:
        return any(has_deps(v) for v in obj.values())
    return any(has_deps(v) for v in obj)
