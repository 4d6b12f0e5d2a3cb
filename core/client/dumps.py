"""``client.dump_cluster_state``: the scheduler's and every worker's state, in one file, for post-mortems.

What each part knows, as plain data: the scheduler's tasks (state, holders,
where they run, sizes, dependencies), workers, clients and every
extension's statistics; each worker's task states and the keys it holds;
the versions of everything.  Written as gzipped msgpack (or YAML, with
PyYAML installed).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def scheduler_state(dask_scheduler: Any = None) -> dict[str, Any]:
    """(Runs on the scheduler) the state machine's records as plain data."""
    s = dask_scheduler
    tasks = {
        key: {
            "state": ts.state, "priority": list(ts.priority), "who_has": [w.address for w in ts.who_has],
            "processing_on": ts.processing_on.address if ts.processing_on is not None else None,
            "nbytes": ts.nbytes, "type": ts.typename, "dependencies": [d.key for d in ts.dependencies],
            "who_wants": dict(ts.who_wants), "suspicious": ts.suspicious,
            "error": ts.error.typename if ts.error is not None else None,
        }
        for key, ts in s.tasks.items()
    }  # fmt: skip
    workers = {
        address: {"name": ws.name, "nthreads": ws.nthreads, "memory_limit": ws.memory_limit,
                  "processing": [t.key for t in ws.processing], "has_what": [t.key for t in ws.has_what],
                  "nbytes": ws.nbytes, "occupancy": ws.occupancy, "last_seen": ws.last_seen}
        for address, ws in s.workers.items()
    }  # fmt: skip
    statistics = {name: _plain(stats) for name, stats in s.statistics().items()}
    return {"tasks": tasks, "workers": workers, "clients": {n: dict(c.wants) for n, c in s.clients.items()},
            "queued": [t.key for t in s.queued], "statistics": statistics}  # fmt: skip


def worker_state(dask_worker: Any = None) -> dict[str, Any]:
    """(Runs on a worker) its state machine's task states and the keys it holds."""
    state = dask_worker.state
    tasks = {key: {"state": ts.state} for key, ts in state.tasks.items()} if state is not None else {}
    return {"address": dask_worker.address, "nthreads": dask_worker.nthreads, "tasks": tasks,
            "data": sorted(dask_worker.data)}  # fmt: skip


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def write(state: dict, filename: str, format: str) -> str:  # noqa: A002 - dask's name
    """Write ``state`` to ``filename`` (+ its suffix); the path written."""
    if format == "msgpack":
        import gzip

        import msgpack

        path = filename if filename.endswith(".msgpack.gz") else f"{filename}.msgpack.gz"
        with gzip.open(path, "wb") as f:
            f.write(msgpack.packb(state, use_bin_type=True, default=repr))
        return path
    if format == "yaml":
        try:
            import yaml
        except ImportError as exc:
            raise ImportError("dump_cluster_state(format='yaml') needs PyYAML: pip install pyyaml") from exc
        path = filename if filename.endswith(".yaml") else f"{filename}.yaml"
        with open(path, "w") as f:
            yaml.safe_dump(state, f)
        return path
    raise ValueError(f"format= must be 'msgpack' or 'yaml', got {format!r}")
