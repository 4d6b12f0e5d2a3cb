"""The worker's record of one key.

States (``WTask.state``):

=============  ==============================================================
waiting        the scheduler asked us to compute it; some input is not here
ready          inputs here; waits for a thread (``constrained``: also for resources)
executing      a thread runs it (``long-running`` once it seceded)
memory         its data is in the driver's store
fetch          an input we must get from a peer; queued for a transfer
flight         a transfer from ``coming_from`` is under way
missing        an input no known peer holds; the scheduler was told
cancelled      the scheduler let go while it was executing or in flight;
               ``previous`` says which.  The result is dropped on arrival
resumed        cancelled, then wanted again (``next``: fetch or waiting);
               the running execution / transfer is kept
released       known, nothing under way (only transiently)
=============  ==============================================================
"""

from __future__ import annotations

from twofold.messages import Key

#: states that hold a thread (or a seceded thread) and so the task's resources
RUNNING = frozenset({"executing", "long-running"})


class WTask:
    __slots__ = (
        "key",
        "state",
        "priority",
        "order",
        "run_spec",
        "dependencies",
        "dependents",
        "waiting_on",
        "actor_deps",
        "who_has",
        "nbytes",
        "resources",
        "actor",
        "coming_from",
        "previous",
        "next",
        "unowned",
        "run_id",
        "put_after",
    )

    def __init__(self, key: Key):
        self.key = key
        self.state = "released"
        self.priority: tuple[int, ...] = ()
        #: (priority, arrival number): the unique sort key in queues
        self.order: tuple = ()
        self.run_spec: bytes | None = None
        self.dependencies: dict[WTask, None] = {}
        self.dependents: dict[WTask, None] = {}
        self.waiting_on: dict[WTask, None] = {}
        self.actor_deps: tuple[Key, ...] = ()
        #: peers that hold the data, in the scheduler's order
        self.who_has: dict[str, None] = {}
        self.nbytes = 0
        self.resources: dict[str, float] | None = None
        self.actor = False
        self.coming_from: str | None = None
        #: for cancelled / resumed: the state whose work is still under way
        self.previous: str | None = None
        #: for resumed: where to go if that work does not deliver
        self.next: str | None = None
        #: in memory only for local dependents: the scheduler does not list us
        self.unowned = False
        #: the scheduler's number for the current assignment (echoed back)
        self.run_id = -1
        #: for scattered data: FreeKeys with seq <= this predate it (DataPut.after)
        self.put_after = -1

    def __repr__(self) -> str:
        return f"<WTask {self.key!r} {self.state}>"
