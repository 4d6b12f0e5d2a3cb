"""``client.profile``: where the workers' task threads spend their time, as dask's profile tree.

A tree node is ``{"identifier", "description": {"filename", "name",
"line_number", "line"}, "children": {identifier: node}, "count"}``, the root
``"root"``; ``count`` is the number of samples that passed through a node.
On the runtime each worker process samples its task threads' stacks every
``INTERVAL`` seconds (``twofold.runtime.profiler``); on the simulator the
tree is built from the trace, one child of the root per task prefix, with a
count per ``INTERVAL`` of virtual time the tasks ran.
"""

from __future__ import annotations

from typing import Any, Iterable

#: the sampling interval (seconds; dask's ``distributed.worker.profile.interval``)
INTERVAL = 0.01


def root() -> dict[str, Any]:
    return {"identifier": "root", "description": {"filename": "", "name": "", "line_number": 0, "line": ""},
            "children": {}, "count": 0}  # fmt: skip


def add(tree: dict, stack: Iterable[tuple[str, str, int]], count: int = 1) -> None:
    """Count one sample of ``stack`` (outermost frame first: (filename, name, line number))."""
    tree["count"] += count
    node = tree
    for filename, name, lineno in stack:
        ident = f"{name};{filename};{lineno}"
        child = node["children"].get(ident)
        if child is None:
            child = node["children"][ident] = {
                "identifier": ident, "count": 0, "children": {},
                "description": {"filename": filename, "name": name, "line_number": lineno, "line": ""},
            }  # fmt: skip
        child["count"] += count
        node = child


def merge(trees: Iterable[dict]) -> dict:
    """One tree of several (the workers')."""
    out = root()

    def fold(into: dict, node: dict) -> None:
        into["count"] += node["count"]
        for ident, child in node["children"].items():
            mine = into["children"].get(ident)
            if mine is None:
                mine = into["children"][ident] = {**child, "children": {}, "count": 0}
            fold(mine, child)

    for tree in trees:
        fold(out, tree)
    return out


def from_trace(records: list[dict], prefix: str | None, start: float | None, stop: float | None,
               workers: Any) -> dict[str, dict]:  # fmt: skip
    """(Simulator) per worker, a tree of the task runs in the trace: root -> key prefix."""
    trees: dict[str, dict] = {}
    for r in records:
        task_prefix = r["key"].rpartition("-")[0] or r["key"]
        if prefix is not None and task_prefix != prefix:
            continue
        if (start is not None and r["stop"] < start) or (stop is not None and r["start"] > stop):
            continue
        if workers is not None and r["worker"] not in workers:
            continue
        samples = max(1, round((r["stop"] - r["start"]) / INTERVAL))
        add(trees.setdefault(r["worker"], root()), [("<simulated>", task_prefix, 0)], samples)
    return trees
