"""SchedulerState unit tests: submitting graphs.

Dependencies (new and already known), priorities, worker restrictions,
resources, retries, actors, deduplication of keys submitted twice, and
graphs refused with GraphRefused and no change of state.

Each test drives a bare SchedulerState, asserts its exact outputs and calls
``validate()`` after every event.
"""

from __future__ import annotations

import pytest

from twofold.config import SchedulerConfig
from twofold.messages import (
    AddWorker,
    ComputeTask,
    FreeKeys,
    GraphRefused,
    KeyErred,
    KeyInMemory,
    ReleaseKeys,
    SetTimer,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
)
from twofold.scheduler import SchedulerState

# --------------------------------------------------------------------------
# helpers (shared: tests/scheduler_support.py)
# --------------------------------------------------------------------------


from scheduler_support import ANY, BOOM, Sched, T, X, compute, in_memory  # noqa: F401

def snapshot(state: SchedulerState):
    """Everything a refused graph must leave alone."""
    return (
        {
            key: (ts.state, dict(ts.who_wants), [d.key for d in ts.dependencies],
                  [d.key for d in ts.dependents], ts.priority, ts.run_spec,
                  [w.address for w in ts.who_has],
                  ts.processing_on.address if ts.processing_on else None)
            for key, ts in state.tasks.items()
        },
        {name: dict(cs.wants) for name, cs in state.clients.items()},
        {addr: ([t.key for t in ws.processing], ws.occupancy) for addr, ws in state.workers.items()},
        [ts.key for ts in state.queued.values()],
        dict(state.timers),
    )


# --------------------------------------------------------------------------
# dependencies
# --------------------------------------------------------------------------


def test_dependent_waits_for_its_input_then_runs_with_who_has():
    s = Sched()
    s.add_worker("w0")
    outs = s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    assert outs == [compute("w0", "a-1", (0, 1))]
    assert s.states() == {"a-1": "processing", "b-1": "waiting"}
    assert [d.key for d in s.state.tasks["b-1"].waiting_on] == ["a-1"]

    outs = s.finish("w0", "a-1", nbytes=16)
    # a-1 is nobody's: no KeyInMemory, just the dependent's ComputeTask
    assert outs == [compute("w0", "b-1", (0, 2), {"a-1": ("w0",)}, {"a-1": 16})]
    assert s.states() == {"a-1": "memory", "b-1": "processing"}

    outs = s.finish("w0", "b-1", nbytes=4, typename="list")
    # the input is freed once its only dependent holds its result
    assert outs == [
        X(KeyInMemory, client="c", key="b-1", nbytes=4, typename="list", inline=None),
        X(FreeKeys, seq=ANY, worker="w0", keys=("a-1",)),
    ]
    assert s.states() == {"a-1": "released", "b-1": "memory"}


def test_dependency_on_a_known_key_in_memory_runs_at_once():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    s.finish("w0", "x-1", nbytes=32)
    outs = s.submit(T("y-1", "x-1"))
    assert outs == [compute("w0", "y-1", (0, 2), {"x-1": ("w0",)}, {"x-1": 32})]
    assert s.states() == {"x-1": "memory", "y-1": "processing"}
    # the old key is now also an input of the new one
    assert [d.key for d in s.state.tasks["x-1"].dependents] == ["y-1"]


def test_dependency_on_a_known_key_still_processing_waits():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    outs = s.submit(T("y-1", "x-1"), wanted=["y-1"])
    assert outs == []
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    outs = s.finish("w0", "x-1")
    assert outs == [
        X(KeyInMemory, client="c", key="x-1", nbytes=8, typename="int", inline=None),
        compute("w0", "y-1", (0, 2), {"x-1": ("w0",)}, {"x-1": 8}),
    ]


def test_dependency_on_a_known_erred_key_errs_at_once_with_its_blame():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    s.fail("w0", "x-1")
    outs = s.submit(T("y-1", "x-1"), wanted=["y-1"])
    assert outs == [X(KeyErred, client="c", key="y-1", error=BOOM, blamed="x-1")]
    assert s.states() == {"x-1": "erred", "y-1": "erred"}


def test_dependency_on_a_released_known_key_recomputes_it():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    s.finish("w0", "a-1")
    s.finish("w0", "b-1")
    assert s.states() == {"a-1": "released", "b-1": "memory"}
    outs = s.submit(T("c-1", "a-1"), wanted=["c-1"])
    assert outs == [compute("w0", "a-1", (0, 1))]
    assert s.states() == {"a-1": "processing", "b-1": "memory", "c-1": "waiting"}


# --------------------------------------------------------------------------
# priority
# --------------------------------------------------------------------------


def test_priority_is_negated_user_priority_then_submission_order():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0", nthreads=4)
    outs = s.submit(T("lo-1", priority=-3), T("hi-1", priority=7))
    # sent in priority order; the tuple is (-priority, submission number)
    assert outs == [compute("w0", "hi-1", (-7, 2)), compute("w0", "lo-1", (3, 1))]
    # the submission counter runs on across graphs
    outs = s.submit(T("later-1"))
    assert outs == [compute("w0", "later-1", (0, 3))]
    assert s.state.tasks["hi-1"].priority < s.state.tasks["lo-1"].priority


def test_each_task_keeps_its_own_priority_and_submission_number():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0", nthreads=4)
    s.submit(T("a-1"), T("b-1", "a-1", priority=100))
    ts = s.state.tasks
    assert ts["b-1"].priority == (-100, 2)
    assert ts["a-1"].priority == (0, 1)


def test_highest_priority_root_gets_the_first_free_slot():
    s = Sched()  # default worker_saturation=2: a 1-thread worker takes 2 root tasks
    s.add_worker("w0", nthreads=1)
    outs = s.submit(T("a-1"), T("b-1"), T("c-1", priority=10))
    started = [m.key for m in outs if isinstance(m, ComputeTask)]
    assert "c-1" in started
    assert s.states()["c-1"] == "processing"


def test_equal_priority_roots_start_in_submission_order():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    roots = [T(f"r-{i}") for i in range(5)]
    outs = s.submit(*roots, T("z-1", *[r.key for r in roots]), wanted=["z-1"])
    assert [m.key for m in outs] == ["r-0", "r-1"]
    assert [ts.key for ts in s.state.queued.values()] == ["r-2", "r-3", "r-4"]


# --------------------------------------------------------------------------
# restrictions and resources
# --------------------------------------------------------------------------


def test_workers_restriction_by_address():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    outs = s.submit(T("x-1", workers=("w1",)))
    assert outs == [compute("w1", "x-1", (0, 1))]
    assert s.state.tasks["x-1"].processing_on.address == "w1"


def test_workers_restriction_by_name_waits_for_that_worker():
    s = Sched()
    s.add_worker("tcp://10.0.0.1:1", name="alice")
    outs = s.submit(T("x-1", workers=("bob",)))
    assert outs == []
    assert s.states() == {"x-1": "no-worker"}
    assert list(s.state.unrunnable) == [s.state.tasks["x-1"]]
    outs = s.add_worker("tcp://10.0.0.2:1", name="bob")
    assert outs == [
        X(SetTimer, at=60.0, token="ttl:tcp://10.0.0.2:1"),
        compute("tcp://10.0.0.2:1", "x-1", (0, 1)),
    ]
    assert s.states() == {"x-1": "processing"}
    assert not s.state.unrunnable


def test_restricted_task_is_not_queued_even_when_workers_are_saturated():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.submit(T("r-1"), T("r-2"), T("r-3"))
    assert s.states() == {"r-1": "processing", "r-2": "processing", "r-3": "queued"}
    outs = s.submit(T("pinned-1", workers=("w0",)))
    assert outs == [compute("w0", "pinned-1", (0, 4))]


def test_allow_other_workers_runs_elsewhere_when_the_named_one_is_absent():
    s = Sched()
    s.add_worker("w0")
    outs = s.submit(T("strict-1", workers=("ghost",)),
                    T("loose-1", workers=("ghost",), allow_other_workers=True))
    assert outs == [compute("w0", "loose-1", (0, 2))]
    assert s.states() == {"strict-1": "no-worker", "loose-1": "processing"}


def test_allow_other_workers_still_prefers_the_named_worker():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    outs = s.submit(T("x-1", workers=("w1",), allow_other_workers=True))
    assert outs == [compute("w1", "x-1", (0, 1))]


def test_resources_restrict_to_workers_that_have_them():
    s = Sched()
    s.add_worker("cpu")
    outs = s.submit(T("g-1", resources={"GPU": 1}))
    assert outs == []
    assert s.states() == {"g-1": "no-worker"}
    s.add_worker("small-gpu", resources={"GPU": 0.5})
    assert s.states() == {"g-1": "no-worker"}
    outs = s.add_worker("gpu", resources={"GPU": 2, "MEM": 10})
    assert outs == [
        X(SetTimer, at=60.0, token="ttl:gpu"),
        compute("gpu", "g-1", (0, 1), resources={"GPU": 1}),
    ]


# --------------------------------------------------------------------------
# retries
# --------------------------------------------------------------------------


def test_retries_resubmit_the_task_then_it_errs():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1", retries=2))
    for left in (1, 0):
        outs = s.fail("w0", "x-1")
        assert compute("w0", "x-1", (0, 1)) in outs
        assert not [m for m in outs if isinstance(m, KeyErred)]
        assert s.state.tasks["x-1"].state == "processing"
        assert s.state.tasks["x-1"].retries == left
    outs = s.fail("w0", "x-1")
    assert outs == [X(KeyErred, client="c", key="x-1", error=BOOM, blamed="x-1")]
    assert s.states() == {"x-1": "erred"}


def test_retry_resubmission_is_not_cancelled_by_a_later_free():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1", retries=1))
    outs = s.fail("w0", "x-1")
    where = outs.index(compute("w0", "x-1", (0, 1)))
    assert not [m for m in outs[where:] if isinstance(m, FreeKeys) and "x-1" in m.keys]


# --------------------------------------------------------------------------
# actors
# --------------------------------------------------------------------------


def test_actor_flag_and_actor_deps_reach_the_compute_tasks():
    s = Sched()
    s.add_worker("w0")
    outs = s.submit(T("counter-1", actor=True))
    assert outs == [compute("w0", "counter-1", (0, 1), actor=True)]
    assert s.states() == {"counter-1": "processing"}  # an actor is never queued
    s.finish("w0", "counter-1", nbytes=0, typename="Counter")
    s.submit(T("plain-1"))
    s.finish("w0", "plain-1", nbytes=8)
    # inputs are all in who_has; only the actor is named in actor_deps
    outs = s.submit(T("use-1", "counter-1", "plain-1"))
    assert outs == [compute("w0", "use-1", (0, 3), {"counter-1": ("w0",), "plain-1": ("w0",)},
                            {"counter-1": 0, "plain-1": 8}, actor_deps=("counter-1",))]


# --------------------------------------------------------------------------
# a key submitted twice
# --------------------------------------------------------------------------


def test_key_submitted_twice_is_computed_once_and_counted_twice():
    s = Sched()
    s.add_worker("w0")
    assert s.submit(T("x-1")) == [compute("w0", "x-1", (0, 1))]
    # a different definition of the same key changes nothing but the reference count
    outs = s.submit(TaskSpec("x-1", b"other", (), priority=50))
    assert outs == []
    ts = s.state.tasks["x-1"]
    assert ts.who_wants == {"c": 2} and ts.run_spec == b"f" and ts.priority == (0, 1)
    assert s.state.clients["c"].wants == {"x-1": 2}
    outs = s.finish("w0", "x-1")
    assert outs == [X(KeyInMemory, client="c", key="x-1", nbytes=8, typename="int", inline=None)]
    s.release("x-1")
    assert s.states() == {"x-1": "memory"}
    assert s.release("x-1") == [X(FreeKeys, seq=ANY, worker="w0", keys=("x-1",))]
    assert s.states() == {}


def test_key_submitted_again_by_another_client_when_in_memory_is_reported_at_once():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    s.finish("w0", "x-1", nbytes=24, typename="bytes")
    outs = s.submit(T("x-1"), client="d")
    assert outs == [X(KeyInMemory, client="d", key="x-1", nbytes=24, typename="bytes", inline=None)]
    assert s.state.tasks["x-1"].who_wants == {"c": 1, "d": 1}


def test_unwanted_new_tasks_that_nothing_depends_on_are_forgotten():
    s = Sched()
    s.add_worker("w0")
    outs = s.submit(T("a-1"), T("b-1"), wanted=["a-1"])
    assert outs == [compute("w0", "a-1", (0, 1))]
    assert s.states() == {"a-1": "processing"}


# --------------------------------------------------------------------------
# refused graphs
# --------------------------------------------------------------------------


def _busy_scheduler():
    """A scheduler with some state worth protecting."""
    s = Sched()
    s.add_worker("w0")
    s.submit(T("m-1"), T("p-1"), T("q-1"))
    s.finish("w0", "m-1")
    assert s.states() == {"m-1": "memory", "p-1": "processing", "q-1": "processing"}
    s.submit(T("r-1"), client="other")
    assert s.states()["r-1"] == "queued"
    return s


def _refused(s, specs, wanted, message=None, client="newcomer"):
    before = snapshot(s.state)
    outs = s.submit(*specs, wanted=wanted, client=client)
    assert len(outs) == 1 and isinstance(outs[0], GraphRefused), outs
    refusal = outs[0]
    assert refusal.client == client
    assert refusal.keys == (tuple(spec.key for spec in specs) or tuple(wanted))
    assert refusal.error.typename == "InvalidGraph"
    assert refusal.error.exception is None
    if message is not None:
        assert refusal.error.message == message
    assert snapshot(s.state) == before
    return refusal.error.message


def test_cycle_is_refused_without_state_change():
    s = _busy_scheduler()
    message = _refused(s, [T("a-1", "c-1"), T("b-1", "a-1"), T("c-1", "b-1"), T("d-1", "m-1")],
                       ["d-1"])
    prefix = "dependency cycle: "
    assert message.startswith(prefix)
    path = [part.strip("'") for part in message[len(prefix):].split(" -> ")]
    assert path[0] == path[-1] and sorted(path[:-1]) == ["a-1", "b-1", "c-1"]
    # the refused graph used no submission number: the next task gets the next one
    assert s.submit(T("n-1", "m-1"), client="newcomer") == [
        compute("w0", "n-1", (0, 5), {"m-1": ("w0",)}, {"m-1": 8})
    ]


def test_self_dependency_is_refused():
    s = _busy_scheduler()
    _refused(s, [T("a-1", "a-1")], ["a-1"], "'a-1' depends on itself")


def test_self_dependency_of_a_known_key_is_refused():
    s = _busy_scheduler()
    _refused(s, [T("m-1", "m-1")], ["m-1"], "'m-1' depends on itself", client="c")


def test_unknown_dependency_is_refused():
    s = _busy_scheduler()
    _refused(s, [T("a-1", "m-1", "nowhere-1")], ["a-1"],
             "unknown dependencies: 'nowhere-1' (needed by 'a-1')")


def test_wanted_key_neither_submitted_nor_known_is_refused():
    s = _busy_scheduler()
    _refused(s, [T("a-1")], ["a-1", "ghost-1"],
             "wanted keys are neither submitted nor known: ['ghost-1']")


@pytest.mark.parametrize(
    "spec, message",
    [
        (T("a-1", priority=1.5), "'a-1': priority must be an int, got 1.5"),
        (T("a-1", priority="high"), "'a-1': priority must be an int, got 'high'"),
        (T("a-1", priority=True), "'a-1': priority must be an int, got True"),
        (T("a-1", retries=-1), "'a-1': retries must be an int >= 0, got -1"),
        (T("a-1", retries="3"), "'a-1': retries must be an int >= 0, got '3'"),
        (T("a-1", resources={"GPU": -1}),
         "'a-1': resources must map names to numbers >= 0, got {'GPU': -1}"),
        (T("a-1", resources={"GPU": "one"}),
         "'a-1': resources must map names to numbers >= 0, got {'GPU': 'one'}"),
        (T("a-1", resources=("GPU",)),
         "'a-1': resources must map names to numbers >= 0, got ('GPU',)"),
        (T("a-1", workers="w0"), "'a-1': workers must be a tuple of worker addresses or names"),
        (T("a-1", workers=("w0", 3)), "'a-1': workers must be a tuple of worker addresses or names"),
        (TaskSpec("", b"f"), "task key must be a non-empty str, got ''"),
        (TaskSpec("a-1", "not bytes"), "'a-1': run_spec must be bytes or None"),
    ],
    ids=["priority-float", "priority-str", "priority-bool", "retries-negative", "retries-str",
         "resources-negative", "resources-str", "resources-tuple", "workers-str",
         "workers-non-str", "empty-key", "run-spec-str"],
)
def test_malformed_spec_refuses_the_whole_graph(spec, message):
    s = _busy_scheduler()
    # a good task in the same graph is refused with it
    _refused(s, [T("good-1", "m-1"), spec], ["good-1"], message)


@pytest.mark.parametrize(
    "spec",
    [TaskSpec("a-1", b"f", None), TaskSpec("a-1", b"f", ["m-1"]), TaskSpec("a-1", b"f", ("m-1", 3))],
    ids=["dependencies-none", "dependencies-list", "dependencies-non-str"],
)
def test_malformed_dependencies_are_refused(spec):
    s = _busy_scheduler()
    _refused(s, [spec], ["a-1"])


def test_graph_entries_that_are_not_taskspecs_are_refused():
    s = _busy_scheduler()
    before = snapshot(s.state)
    outs = s(UpdateGraph, client="newcomer", tasks=("a-1",), wanted=())
    assert [(type(m), m.client, m.error.typename) for m in outs] == [
        (GraphRefused, "newcomer", "InvalidGraph")]
    assert snapshot(s.state) == before
