"""Checks on submitted task graphs: unknown dependencies and cycles.

Pure functions over :class:`~twofold.messages.TaskSpec` tuples, used by the
scheduler before it changes any state, so a refused graph leaves no trace.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from twofold.messages import Key, TaskSpec


def unknown_dependencies(specs: Sequence[TaskSpec], known: Container[Key]) -> list[tuple[Key, Key]]:
    """``(task, dependency)`` pairs whose dependency is neither new nor known."""
    new = {spec.key for spec in specs}
    return [
        (spec.key, dep)
        for spec in specs
        for dep in spec.dependencies
        if dep not in new and dep not in known
    ]


def find_cycle(specs: Sequence[TaskSpec], known: Container[Key] = ()) -> list[Key] | None:
    """A dependency cycle among the new tasks as a key path, or ``None``.

    Tasks whose key is already ``known`` keep their existing definition (the
    submission deduplicates onto them), so only the new ones can close a
    cycle.  Kahn's algorithm in O(tasks + edges); networkx only names the
    cycle for the error message.
    """
    new = {spec.key: spec for spec in specs if spec.key not in known}
    indegree = dict.fromkeys(new, 0)
    dependents: dict[Key, list[Key]] = {}
    for key, spec in new.items():
        for dep in spec.dependencies:
            if dep in new:
                indegree[key] += 1
                dependents.setdefault(dep, []).append(key)
    ready = [key for key, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        key = ready.pop()
        seen += 1
        for child in dependents.get(key, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen == len(new):
        return None
    import networkx as nx  # only to name the cycle; keeps the machines' imports lean

    stuck = nx.DiGraph()
    for key, n in indegree.items():
        if n > 0:
            stuck.add_edges_from((dep, key) for dep in new[key].dependencies if dep in new)
    cycle = nx.find_cycle(stuck)
    return [edge[0] for edge in cycle] + [cycle[-1][1]]
