"""Raw dask graphs: ``client.get(dsk, keys)``.

A dask graph is a dict from keys (str, or tuples such as ``("x", 0)``) to
values; a *task* is a tuple whose first item is callable, ``(func, *args)``,
and its args may be keys of the graph (references), nested tasks, lists of
them, or literals.  Each key becomes one twofold task: its value, with the
keys it references replaced by their futures, is evaluated on the worker by
:func:`evaluate` (nested tasks run there, inside the one task).  Keys that
are not str get a str name (``repr`` of the key), the same every time, so
submitting the same graph twice computes it once.

Newer dask gives graphs of ``dask._task_spec`` nodes (``Task``, ``Alias``,
``DataNode``; collections' graphs mix them with tuples), as a
``HighLevelGraph`` or an expression (``dask.compute`` hands ``get`` an
``Expr``).  Such a graph is converted with dask's own
``convert_legacy_graph`` and each node runs on the worker as
``node({dependency: value})``.  A ``DataNode`` holding one of the client's
futures (a persisted collection's graph) is that future, and a dependency
outside the graph that the client holds (by its str name) is a future of it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Hashable

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


def order(dsk: dict, wanted: list, references: Callable[[Any], dict] | None = None) -> list:
    """The keys ``wanted`` needs, each after its references (InvalidGraph on a cycle).

    ``references(key)`` gives a key's references in the graph (an ordered
    dict); by default those of a legacy task."""
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
            if references is None:
                refs: dict = {}
                _references(dsk[key], dsk, refs)
            else:
                refs = references(key)
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


def _task_spec_module() -> Any:
    """``dask._task_spec`` if dask is imported (a graph of its nodes needs it), else None."""
    return sys.modules.get("dask._task_spec")


def _materialize(dsk: Any) -> Any:
    """A dask expression or HighLevelGraph as a plain dict (anything else as it is)."""
    if not isinstance(dsk, Mapping) and hasattr(dsk, "__dask_graph__") and _task_spec_module() is not None:
        dsk = dsk.__dask_graph__()
    if isinstance(dsk, Mapping) and not isinstance(dsk, dict):
        dsk = dict(dsk)
    return dsk


def run_node(node: Any, values: dict) -> Any:
    """Run one ``dask._task_spec`` node on the worker, its dependencies' values given."""
    return node(values)


def _submit_nodes(client: Client, dsk: dict, keys: Any, wanted: list, ts: Any, options: dict) -> Any:
    from twofold.client.future import Future

    nodes = ts.convert_legacy_graph(dsk)
    for key in wanted:  # convert_legacy_graph drops self-aliases: a wanted one is a literal
        if key not in nodes:
            nodes[key] = ts.DataNode(key, dsk[key])

    def external(dep: Hashable) -> Future:
        if name_of(dep) in client._states:
            return Future(name_of(dep), client)
        raise KeyError(f"the graph refers to {dep!r}, which is neither in it nor held by this client")

    def references(key: Hashable) -> dict:
        deps = sorted(nodes[key].dependencies, key=name_of)  # not hash order: deterministic
        return {d: None for d in deps if d in nodes}

    futures: dict = {}
    with client._one_graph():
        for key in order(nodes, wanted, references):
            node = nodes[key]
            value = getattr(node, "value", None)
            if isinstance(node, ts.DataNode) and isinstance(value, Future):
                client._own_future(value)
                futures[key] = value
                continue
            deps = {d: futures[d] if d in futures else external(d) for d in sorted(node.dependencies, key=name_of)}
            futures[key] = client.submit(run_node, node, deps, key=name_of(key), **options)
    return pack_like(keys, futures)


def submit_graph(client: Client, dsk: dict, keys: Any, **options: Any) -> Any:
    """Futures for ``keys`` (a key or nested lists of keys), in the same shape."""
    dsk = _materialize(dsk)
    if not isinstance(dsk, dict):
        raise TypeError(f"get() takes a dask graph (a dict of key -> task), got {type(dsk).__name__}")
    wanted = flatten_keys(keys)
    missing = [k for k in wanted if not _is_key(k, dsk)]
    if missing:
        raise KeyError(f"keys not in the graph: {missing[:5]!r}")
    ts = _task_spec_module()
    if ts is not None and any(isinstance(v, ts.GraphNode) for v in dsk.values()):
        return _submit_nodes(client, dsk, keys, wanted, ts, options)
    futures: dict = {}
    with client._one_graph():
        for key in order(dsk, wanted):
            value = _replace(dsk[key], dsk, futures)
            futures[key] = client.submit(evaluate, value, key=name_of(key), **options)
    return pack_like(keys, futures)
