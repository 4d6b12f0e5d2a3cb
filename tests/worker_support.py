"""Shared helpers of the WorkerState unit tests (test_worker_*.py).

``W`` feeds a bare WorkerState one event at a time (fresh ``now`` and
``stimulus_id`` each), validates it after each, and builds the outputs
it should give.
"""

from __future__ import annotations

from twofold.config import WorkerConfig
from twofold.messages import (
    AddReplicas,
    ComputeTask,
    DataLost,
    DeleteData,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeys,
    GatherDeps,
    GatherFailure,
    GatherSuccess,
    MissingData,
    TaskError,
    TaskFinished,
)
from twofold.worker import WorkerState


ME = "w"
ERR = TaskError("ZeroDivisionError", "division by zero", b"exc", b"tb", "Traceback ...")


def spec(key):
    return b"run:" + key.encode()


class W:
    def __init__(self, nthreads=1, resources=None, **config):
        cfg = WorkerConfig(story_length=1000, **config)
        self.ws = WorkerState(ME, nthreads, resources, cfg)
        self.now = 0.0
        self.sid = ""
        self.n = 0

    def send(self, cls, *args, **kwargs):
        self.n += 1
        self.now = float(self.n)
        self.sid = f"{cls.__name__.lower()}-{self.n}"
        outs = self.ws.handle(cls(self.now, self.sid, *args, **kwargs))
        self.ws.validate()
        return outs

    def out(self, cls, *args):
        """An output as the last event should have stamped it."""
        return cls(self.now, self.sid, *args)

    # -- inspection
    def state(self, key):
        ts = self.ws.tasks.get(key)
        return None if ts is None else ts.state

    def states(self):
        return {key: ts.state for key, ts in self.ws.tasks.items()}

    def path(self, key):
        """The states ``key`` went through, from the story log."""
        return [entry[2] for entry in self.ws.story(key)]

    # -- events
    def compute(self, key, who_has=None, nbytes=None, priority=(0,), resources=None, actor=False, actor_deps=()):
        return self.send(ComputeTask, ME, key, spec(key), priority, dict(who_has or {}), dict(nbytes or {}),
                         resources, actor, tuple(actor_deps))

    def free(self, *keys):
        return self.send(FreeKeys, ME, keys)

    def succeed(self, key, nbytes=8):
        return self.send(ExecuteSuccess, key, nbytes, "int", 100.0, 101.0)

    def fail(self, key, error=ERR):
        return self.send(ExecuteFailure, key, error, 100.0, 101.0)

    def gathered(self, peer, nbytes, missing=()):
        return self.send(GatherSuccess, peer, dict(nbytes), tuple(missing))

    def gather_failed(self, peer, keys):
        return self.send(GatherFailure, peer, tuple(keys))

    def lost(self, *keys):
        """The driver's store lost ``keys`` (``DataLost``)."""
        return self.send(DataLost, keys)

    # -- expected outputs
    def execute(self, key, deps=(), actor=False, actor_deps=()):
        return self.out(Execute, key, spec(key), tuple(deps), actor, tuple(actor_deps))

    def gather(self, peer, keys, total):
        return self.out(GatherDeps, peer, tuple(keys), total)

    def delete(self, *keys):
        return self.out(DeleteData, keys)

    def finished(self, key, nbytes=8):
        return self.out(TaskFinished, ME, key, nbytes, "int", 100.0, 101.0, None)

    def replicas(self, nbytes):
        return self.out(AddReplicas, ME, dict(nbytes))

    def missing(self, key, peer):
        return self.out(MissingData, ME, key, peer)
