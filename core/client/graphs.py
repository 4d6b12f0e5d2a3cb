"""Raw dask graphs: ``client.get(dsk, keys)``.

A dask graph is a dict from keys (str, or tuples such as ``("x", 0)``) to
values; a *task* is a tuple whose first item is callable, ``(func, *args)``,
and its args may be keys of the graph (references), nested tasks, lists of
them, or literals.  Each key becomes one twofold task: its value, with the
keys it references replaced by their futures, is evaluated on the worker by
:func:`evaluate` (nested tasks run there, inside the one task).  Keys that
are not str get a str name (``repr`` of the key), the same every time, so
submitting the same graph twice computes it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable

from twofold.errors import InvalidGraph

if TYPE_CHECKING:
    from twofold.client.client import Client


def is_task(value: Any) -> bool:
    return type(value) is tuple and bool(value) and callable(value[0])


def evaluate(value: Any) -> Any:
    """Run a dask task (and the tasks nested in it); literals come back as they are."""
    if is_task(value):
        func, *args = value
        return func(*[evaluate(arg) for arg in args])
    if type(value) is list:
        return [evaluate(item) for item in value]
    return value


def _references(value: Any, dsk: dict, found: dict) -> None:
    """The graph's keys that ``value`` refers to, into ``found`` (an ordered set)."""
    if is_task(value):
        for arg in value[1:]:
            _references(arg, dsk, found)
    elif type(value) is list:
        for item in value:
            _references(item, dsk, found)
    elif _is_key(value, dsk):
        found[value] = None


def _is_key(value: Any, dsk: dict) -> bool:
    try:
        return value in dsk
    except TypeError:  # unhashable: not a key
        return False


def _replace(value: Any, dsk: dict, futures: dict) -> Any:
    if is_task(value):
        return (value[0], *[_replace(arg, dsk, futures) for arg in value[1:]])
    if type(value) is list:
        return [_replace(item, dsk, futures) for item in value]
    if _is_key(value, dsk):
        return futures[value]
    return value


def name_of(key: Hashable) -> str:
    return key if isinstance(key, str) else repr(key)


def order(dsk: dict, wanted: list) -> list:
    """The keys ``wanted`` needs, each after its references (InvalidGraph on a cycle)."""
    done: dict[Hashable, None] = {}
    visiting: set = set()
    for root in wanted:
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            if expanded:
                visiting.discard(key)
                done[key] = None
                continue
            if key in visiting:
                raise InvalidGraph(f"the graph has a cycle through {key!r}")
            visiting.add(key)
            stack.append((key, True))
            refs: dict = {}
            _references(dsk[key], dsk, refs)
            for ref in reversed(refs):
                if ref not in done:
                    if ref in visiting:
                        raise InvalidGraph(f"the graph has a cycle through {ref!r}")
                    stack.append((ref, False))
    return list(done)


def flatten_keys(keys: Any) -> list:
    if isinstance(keys, list):
        return [k for item in keys for k in flatten_keys(item)]
    return [keys]


def pack_like(keys: Any, values: dict) -> Any:
    if isinstance(keys, list):
        return [pack_like(item, values) for item in keys]
    return values[keys]


def submit_graph(client: Client, dsk: dict, keys: Any, **options: Any) -> Any:
    """Futures for ``keys`` (a key or nested lists of keys), in the same shape."""
    if not isinstance(dsk, dict):
        raise TypeError(f"get() takes a dask graph (a dict of key -> task), got {type(dsk).__name__}")
    wanted = flatten_keys(keys)
    missing = [k for k in wanted if not _is_key(k, dsk)]
    if missing:
        raise KeyError(f"keys not in the graph: {missing[:5]!r}")
    futures: dict = {}
    for key in order(dsk, wanted):
        value = _replace(dsk[key], dsk, futures)
        futures[key] = client.submit(evaluate, value, key=name_of(key), **options)
    return pack_like(keys, futures)
