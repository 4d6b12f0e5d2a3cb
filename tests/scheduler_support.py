"""Shared helpers of the SchedulerState unit tests (test_scheduler_*.py).

``Sched`` feeds a bare SchedulerState one event at a time and validates it
after each; ``X``/``compute`` build expected outputs whose ``now`` and
``stimulus_id`` (and ComputeTask ``run_id``) match anything.
"""

from __future__ import annotations

from twofold.config import SchedulerConfig
from twofold.messages import (
    AddWorker,
    ComputeTask,
    KeyInMemory,
    ReleaseKeys,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
)
from twofold.scheduler import SchedulerState


class _Anything:
    """Equal to everything: stands in for ``now`` / ``stimulus_id`` in expected outputs."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __repr__(self):
        return "ANY"


ANY = _Anything()
BOOM = TaskError("ValueError", "boom", b"pickled-exc", b"pickled-tb", "ValueError: boom")


def X(cls, **fields):
    """An expected output of type ``cls``; ``now`` and ``stimulus_id`` match anything."""
    return cls(now=ANY, stimulus_id=ANY, **fields)


def compute(worker, key, priority, who_has=None, nbytes=None, *, run_spec=b"f", resources=None,
            actor=False, actor_deps=()):
    return X(ComputeTask, worker=worker, key=key, run_spec=run_spec, priority=priority,
             who_has=who_has or {}, nbytes=nbytes or {}, resources=resources, actor=actor,
             actor_deps=actor_deps, run_id=ANY)


def T(key, *deps, **kw):
    """A TaskSpec with an opaque run_spec."""
    return TaskSpec(key, b"f", tuple(deps), **kw)


class Sched:
    """A bare SchedulerState fed one event at a time, validated after each."""

    def __init__(self, policy=None, **config):
        # work stealing off unless a test asks for it: its SetTimer outputs are noise here
        config.setdefault("steal_interval", 0.0)
        self.state = SchedulerState(SchedulerConfig(**config), policy)
        self.now = 0.0
        self._n = 0

    def __call__(self, cls, **fields):
        self._n += 1
        fields.setdefault("now", self.now)
        fields.setdefault("stimulus_id", f"{cls.__name__.lower()}-{self._n}")
        outs = self.state.handle(cls(**fields))
        self.state.validate()
        return outs

    def add_worker(self, worker, nthreads=1, **kw):
        return self(AddWorker, worker=worker, nthreads=nthreads, **kw)

    def submit(self, *specs, wanted=None, client="c"):
        if wanted is None:
            wanted = tuple(spec.key for spec in specs)
        return self(UpdateGraph, client=client, tasks=tuple(specs), wanted=tuple(wanted))

    def finish(self, worker, key, nbytes=8, typename="int", **kw):
        return self(TaskFinished, worker=worker, key=key, nbytes=nbytes, typename=typename, **kw)

    def fail(self, worker, key, error=BOOM):
        return self(TaskErred, worker=worker, key=key, error=error)

    def release(self, *keys, client="c"):
        return self(ReleaseKeys, client=client, keys=keys)

    def states(self):
        return {key: ts.state for key, ts in self.state.tasks.items()}


def in_memory(client, key, nbytes=8, typename="int", inline=None):
    return X(KeyInMemory, client=client, key=key, nbytes=nbytes, typename=typename, inline=inline)
