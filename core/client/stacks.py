"""``client.call_stack``: the Python stacks of the tasks executing right now.

The function here runs on each worker (through ``client.run``).  On the
runtime it reads the task threads' frames (``sys._current_frames``, the
threads known from ``twofold.runtime.execution.RUNNING``); on the simulator
it reads the frames of task greenlets suspended in a blocking call (a
simulated task is "executing" in virtual time after its function returned,
and then has no stack).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any


def task_stacks(keys: tuple = (), dask_worker: Any = None) -> dict[str, list[str]]:
    """(Runs on a worker) key -> formatted stack lines, for the tasks running there."""
    wanted = set(keys)
    sim = getattr(dask_worker, "sim", None)
    if sim is not None:  # a simulated worker: its suspended task greenlets
        out = {}
        for entry in list(sim.clock._blocked):
            task = getattr(entry[0], "twofold_task", None)
            frame = entry[0].gr_frame
            if task is not None and task[0] is dask_worker and frame is not None and (not wanted or task[1] in wanted):
                out[task[1]] = traceback.format_stack(frame)
        return out
    from twofold.runtime.execution import RUNNING

    frames = sys._current_frames()
    out = {}
    for ident, (server, key) in list(RUNNING.items()):
        if server is dask_worker and ident in frames and (not wanted or key in wanted):
            out[key] = traceback.format_stack(frames[ident])
    return out
