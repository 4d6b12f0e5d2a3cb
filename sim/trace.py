"""The record of a simulated run, its digest, and a task-stream chart.

Records are plain tuples appended as things happen (cheap on the hot
path); :meth:`Trace.records` turns them into dicts for export.  The digest
hashes a canonical text of the records with task keys renamed in order of
first appearance, so it depends on what happened and when, not on hash
values that differ between processes.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: field names of each record kind, after (kind, time)
FIELDS = {
    "task": ("worker", "slot", "key", "start", "stop", "ok"),
    "transfer": ("source", "destination", "keys", "nbytes", "start", "stop"),
    "transition": ("key", "start_state", "finish_state", "stimulus_id"),
    "fault": ("what", "target", "detail"),
    "actor": ("worker", "key", "method", "start", "stop", "ok"),
}


class Trace:
    def __init__(self, transitions: bool = True) -> None:
        self._records: list[tuple] = []
        self.transitions = transitions
        self.clock_now = lambda: 0.0

    # -- recording (hot path: plain tuples) -----------------------------------

    def task_stop(self, worker: str, slot: int, key: str, start: float, stop: float, ok: bool) -> None:
        self._records.append(("task", stop, worker, slot, key, start, stop, ok))

    def transfer(self, source: str, destination: str, keys: tuple, nbytes: int, start: float, stop: float) -> None:
        self._records.append(("transfer", stop, source, destination, keys, nbytes, start, stop))

    def actor_call(self, worker: str, key: str, method: str, start: float, stop: float, ok: bool) -> None:
        """One actor call (method call or attribute read) served by ``worker``."""
        self._records.append(("actor", stop, worker, key, method, start, stop, ok))

    def fault_or_event(self, what: str, target: str, detail: str = "") -> None:
        self._records.append(("fault", self.clock_now(), what, target, detail))

    def append(self, entry: tuple) -> None:
        """Scheduler story entries: (key, start, finish, stimulus_id, now)."""
        if self.transitions:
            key, start, finish, sid, now = entry
            self._records.append(("transition", now, key, start, finish, sid))

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The trace as plain dicts (``kind``, ``time`` and the kind's fields)."""
        out = []
        for rec in self._records:
            if kind is not None and rec[0] != kind:
                continue
            row = {"kind": rec[0], "time": rec[1]}
            row.update(zip(FIELDS[rec[0]], rec[2:]))
            out.append(row)
        return out

    def digest(self) -> str:
        """Hex SHA-256 of the run, stable across processes and hash seeds."""
        names: dict[str, str] = {}

        def canon(key: str) -> str:
            name = names.get(key)
            if name is None:
                name = names[key] = f"k{len(names)}"
            return name

        h = hashlib.sha256()
        for rec in self._records:
            kind = rec[0]
            if kind == "task":
                rec = (kind, rec[1], rec[2], rec[3], canon(rec[4]), rec[5], rec[6], rec[7])
            elif kind == "transfer":
                rec = rec[:4] + (tuple(canon(k) for k in rec[4]),) + rec[5:]
            elif kind == "actor":
                rec = rec[:3] + (canon(rec[3]),) + rec[4:]
            elif kind == "transition":
                rec = (kind, rec[1], canon(rec[2]), rec[3], rec[4])  # stimulus ids embed counters only
            h.update(repr(rec).encode())
            h.update(b"\n")
        return h.hexdigest()

    def plot(self, ax: Any = None, title: str | None = None):
        """Draw the task stream with matplotlib: one lane per worker thread,
        one bar per task run (coloured by key prefix, failed runs black),
        dashed red lines at faults.  Returns the Axes.

        Bars are drawn as one collection per (lane, colour), so charts of
        thousands of tasks stay quick to build.
        """
        try:
            import matplotlib.pyplot as plt
            from matplotlib.patches import Patch
        except ImportError as exc:  # optional extra
            raise ImportError("plotting needs matplotlib: pip install 'twofold[plot]'") from exc
        tasks = self.records("task")
        if ax is None:
            _, ax = plt.subplots(figsize=(10, 4))
        lanes = sorted({(t["worker"], t["slot"]) for t in tasks}, key=lambda lane: (_natural(lane[0]), lane[1]))
        row = {lane: i for i, lane in enumerate(lanes)}
        prefixes: dict[str, int] = {}
        failed = False
        bars: dict[tuple, list] = {}  # (row, colour index or -1 for failed) -> [(start, width)]
        for t in tasks:
            prefix = t["key"].rpartition("-")[0] or t["key"]
            colour = prefixes.setdefault(prefix, len(prefixes)) % 20
            if not t["ok"]:
                colour, failed = -1, True
            bars.setdefault((row[(t["worker"], t["slot"])], colour), []).append(
                (t["start"], max(t["stop"] - t["start"], 1e-9)))
        cmap = plt.get_cmap("tab20")
        for (lane, colour), spans in bars.items():
            ax.broken_barh(spans, (lane - 0.4, 0.8), facecolors="black" if colour < 0 else cmap(colour),
                           edgecolors="white", linewidths=0.5)
        for f in self.records("fault"):
            if f["what"] not in ("worker-start",):
                ax.axvline(f["time"], color="red", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(lanes)))
        ax.set_yticklabels([f"{w}/{s}" for w, s in lanes])
        ax.set_ylim(-0.6, max(len(lanes), 1) - 0.4)
        ax.set_xlabel("virtual time (s)")
        ax.set_title(title or "task stream")
        if len(prefixes) > 1 or failed:
            handles = [Patch(color=cmap(i % 20), label=p) for p, i in list(prefixes.items())[:20]]
            if failed:
                handles.append(Patch(color="black", label="failed"))
            ax.legend(handles=handles, loc="upper right", fontsize="small")
        return ax


def _natural(name: str) -> tuple:
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, 0)
