"""SchedulerState unit tests: the life of a task and of the references to it.

released -> waiting -> (queued | no-worker) -> processing -> memory | erred
-> forgotten; error propagation and retry; cancel; releasing unneeded keys;
fire-and-forget; clients leaving; reference counts.

Each test drives a bare SchedulerState, asserts its exact outputs and calls
``validate()`` after every event.
"""

from __future__ import annotations

import pytest

from twofold.config import SchedulerConfig
from twofold.messages import (
    KeyRetried,
    AddReplicas,
    AddWorker,
    CancelKeys,
    ComputeTask,
    DesireKeys,
    FireAndForget,
    FreeKeys,
    KeyCancelled,
    KeyErred,
    KeyInMemory,
    ReleaseKeys,
    RemoveClient,
    RetryKeys,
    SetTimer,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
)
from twofold.scheduler import FIRE_AND_FORGET, SchedulerState

# --------------------------------------------------------------------------
# helpers (shared: tests/scheduler_support.py)
# --------------------------------------------------------------------------


from scheduler_support import ANY, BOOM, Sched, T, X, compute, in_memory  # noqa: F401



# --------------------------------------------------------------------------
# the lifecycle
# --------------------------------------------------------------------------


def test_root_task_goes_released_waiting_processing_memory_forgotten():
    s = Sched(story_length=100)
    s.add_worker("w0")
    outs = s.submit(T("x-1"))
    assert outs == [compute("w0", "x-1", (0, 1))]
    ts = s.state.tasks["x-1"]
    assert ts.state == "processing" and ts.processing_on is s.state.workers["w0"]
    assert list(s.state.workers["w0"].processing) == [ts]

    outs = s.finish("w0", "x-1", nbytes=100, typename="ndarray")
    assert outs == [in_memory("c", "x-1", 100, "ndarray")]
    assert ts.state == "memory" and ts.processing_on is None
    assert [w.address for w in ts.who_has] == ["w0"] and ts.nbytes == 100
    assert s.state.workers["w0"].nbytes == 100 and not s.state.workers["w0"].processing

    outs = s.release("x-1")
    assert outs == [X(FreeKeys, seq=ANY, worker="w0", keys=("x-1",))]
    assert ts.state == "forgotten" and s.state.tasks == {}
    assert s.state.workers["w0"].nbytes == 0 and not s.state.workers["w0"].has_what
    assert [(start, finish) for _, start, finish, _, _ in s.state.story("x-1")] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
        ("memory", "released"),
        ("released", "forgotten"),
    ]


def test_without_workers_roots_queue_and_restricted_tasks_wait_for_a_worker():
    s = Sched()
    outs = s.submit(T("root-1"), T("pinned-1", workers=("w0",)))
    assert outs == []
    assert s.states() == {"root-1": "queued", "pinned-1": "no-worker"}
    assert [ts.key for ts in s.state.queued.values()] == ["root-1"]
    assert [ts.key for ts in s.state.unrunnable] == ["pinned-1"]
    outs = s.add_worker("w0")
    assert outs == [
        X(SetTimer, at=60.0, token="ttl:w0"),
        compute("w0", "root-1", (0, 1)),
        compute("w0", "pinned-1", (0, 2)),
    ]
    assert s.states() == {"root-1": "processing", "pinned-1": "processing"}
    assert not s.state.queued and not s.state.unrunnable


def test_story_records_queued_to_processing():
    s = Sched(story_length=100)
    s.submit(T("root-1"))
    s.add_worker("w0")
    assert s.states() == {"root-1": "processing"}
    assert [(start, finish) for _, start, finish, _, _ in s.state.story("root-1")] == [
        ("released", "waiting"),
        ("waiting", "queued"),
        ("queued", "processing"),
    ]


def test_error_propagates_to_every_dependent_with_the_original_error_and_blame():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), T("c-1", "b-1"), T("d-1", "a-1"), T("e-1"),
             wanted=["b-1", "c-1", "d-1", "e-1"])
    outs = s.fail("w0", "a-1")
    assert sorted(outs, key=lambda m: m.key) == [
        X(KeyErred, client="c", key="b-1", error=BOOM, blamed="a-1"),
        X(KeyErred, client="c", key="c-1", error=BOOM, blamed="a-1"),
        X(KeyErred, client="c", key="d-1", error=BOOM, blamed="a-1"),
    ]
    for key in ("a-1", "b-1", "c-1", "d-1"):
        ts = s.state.tasks[key]
        assert ts.state == "erred" and ts.error is BOOM and ts.blamed == "a-1"
    assert s.states()["e-1"] == "processing"  # unrelated work goes on


def test_erred_keys_are_forgotten_once_released():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    s.fail("w0", "a-1")
    assert s.states() == {"a-1": "erred", "b-1": "erred"}
    assert s.release("b-1") == []  # nothing held on any worker
    assert s.state.tasks == {}


def test_retry_keys_on_a_dependent_reruns_the_blamed_task():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    s.fail("w0", "a-1")
    outs = s(RetryKeys, client="c", keys=("b-1",))
    assert outs == [X(KeyRetried, client="c", key="b-1"), compute("w0", "a-1", (0, 1))]
    assert s.states() == {"a-1": "processing", "b-1": "waiting"}
    assert s.state.tasks["b-1"].error is None and s.state.tasks["b-1"].blamed is None
    assert s.finish("w0", "a-1") == [compute("w0", "b-1", (0, 2), {"a-1": ("w0",)}, {"a-1": 8})]
    assert s.finish("w0", "b-1") == [in_memory("c", "b-1"), X(FreeKeys, seq=ANY, worker="w0", keys=("a-1",))]


def test_retry_keys_on_a_key_that_did_not_err_does_nothing():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"))
    assert s(RetryKeys, client="c", keys=("a-1", "unknown-1")) == []
    assert s.states() == {"a-1": "processing"}


# --------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------


def _two_clients():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"), T("y-1", "x-1"), wanted=["x-1", "y-1"], client="c")
    s.submit(T("x-1"), client="d")
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    return s


def test_cancel_releases_the_key_and_its_dependents_for_that_client_only():
    s = _two_clients()
    outs = s(CancelKeys, client="c", keys=("x-1",))
    assert outs == [
        X(KeyCancelled, client="c", key="x-1", reason="cancelled"),
        X(KeyCancelled, client="c", key="y-1", reason="cancelled"),
    ]
    # d still wants x-1: it keeps computing, no FreeKeys
    assert s.states() == {"x-1": "processing"}
    assert s.state.tasks["x-1"].who_wants == {"d": 1}
    assert s.state.clients["c"].wants == {}


def test_cancel_with_force_cancels_for_every_client():
    s = _two_clients()
    outs = s(CancelKeys, client="c", keys=("x-1",), force=True)
    assert outs == [
        X(KeyCancelled, client="c", key="x-1", reason="cancelled"),
        X(KeyCancelled, client="d", key="x-1", reason="cancelled"),
        X(KeyCancelled, client="c", key="y-1", reason="cancelled"),
        X(FreeKeys, seq=ANY, worker="w0", keys=("x-1",)),
    ]
    assert s.state.tasks == {}
    assert not s.state.workers["w0"].processing


def test_cancel_of_a_queued_task_takes_it_off_the_queue():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("r-1"), T("r-2"), T("r-3"))
    assert s.states()["r-3"] == "queued"
    outs = s(CancelKeys, client="c", keys=("r-3",))
    assert outs == [X(KeyCancelled, client="c", key="r-3", reason="cancelled")]
    assert "r-3" not in s.state.tasks and not s.state.queued


# --------------------------------------------------------------------------
# releasing
# --------------------------------------------------------------------------


def test_unneeded_key_is_released_and_every_holder_told_to_free_it():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    s.finish("w0", "x-1")
    assert s(AddReplicas, worker="w1", nbytes={"x-1": 8}) == []
    outs = s.release("x-1")
    assert outs == [X(FreeKeys, seq=ANY, worker="w0", keys=("x-1",)), X(FreeKeys, seq=ANY, worker="w1", keys=("x-1",))]
    assert s.state.tasks == {}
    assert all(ws.nbytes == 0 and not ws.has_what for ws in s.state.workers.values())


def test_releasing_a_processing_task_frees_it_and_feeds_the_queue():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("r-1"), T("r-2"), T("r-3"))
    outs = s.release("r-1")
    # the free goes first: a FreeKeys must never overtake a ComputeTask to the same worker
    assert outs == [X(FreeKeys, seq=ANY, worker="w0", keys=("r-1",)), compute("w0", "r-3", (0, 3))]
    assert s.states() == {"r-2": "processing", "r-3": "processing"}


def test_inputs_stay_while_another_dependent_needs_them():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), T("c-1", "a-1"), wanted=["b-1", "c-1"])
    s.finish("w0", "a-1")
    assert s.finish("w0", "b-1") == [in_memory("c", "b-1")]
    assert s.states()["a-1"] == "memory"
    assert s.finish("w0", "c-1") == [in_memory("c", "c-1"), X(FreeKeys, seq=ANY, worker="w0", keys=("a-1",))]
    assert s.states() == {"a-1": "released", "b-1": "memory", "c-1": "memory"}
    # letting go of both dependents forgets the input too
    outs = s.release("b-1", "c-1")
    assert outs == [X(FreeKeys, seq=ANY, worker="w0", keys=("b-1", "c-1"))]
    assert s.state.tasks == {}


# --------------------------------------------------------------------------
# fire and forget
# --------------------------------------------------------------------------


def test_fire_and_forget_keeps_computing_after_release_then_lets_go():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"), T("y-1", "x-1"), wanted=["y-1"])
    assert s(FireAndForget, client="c", keys=("y-1",)) == []
    assert s.release("y-1") == []
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    assert s.state.tasks["y-1"].who_wants == {FIRE_AND_FORGET: 1}
    assert s.finish("w0", "x-1") == [compute("w0", "y-1", (0, 2), {"x-1": ("w0",)}, {"x-1": 8})]
    outs = s.finish("w0", "y-1")
    # no client hears of it; both results are dropped at once
    assert [type(m) for m in outs] == [FreeKeys]
    assert outs[0].worker == "w0" and sorted(outs[0].keys) == ["x-1", "y-1"]
    assert s.state.tasks == {}
    assert s.state.clients[FIRE_AND_FORGET].wants == {}


def test_fire_and_forget_task_that_errs_is_forgotten_silently():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    s(FireAndForget, client="c", keys=("x-1",))
    s.release("x-1")
    assert s.fail("w0", "x-1") == []
    assert s.state.tasks == {}


# --------------------------------------------------------------------------
# clients and reference counts
# --------------------------------------------------------------------------


def test_remove_client_releases_its_keys_but_not_other_clients_keys():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("shared-1"), T("mine-1"), client="c")
    s.submit(T("shared-1"), client="d")
    s.finish("w0", "shared-1")
    outs = s(RemoveClient, client="c")
    assert outs == [X(FreeKeys, seq=ANY, worker="w0", keys=("mine-1",))]
    assert s.states() == {"shared-1": "memory"}
    assert "c" not in s.state.clients
    assert s.state.tasks["shared-1"].who_wants == {"d": 1}
    assert s(RemoveClient, client="nobody") == []


def test_reference_counts_desire_twice_release_once_keeps_the_key():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    s.finish("w0", "x-1")
    assert s(DesireKeys, client="d", keys=("x-1",)) == [in_memory("d", "x-1")]
    assert s(DesireKeys, client="d", keys=("x-1",)) == [in_memory("d", "x-1")]
    assert s.state.tasks["x-1"].who_wants == {"c": 1, "d": 2}
    assert s.release("x-1", client="c") == []
    assert s.release("x-1", client="d") == []
    assert s.states() == {"x-1": "memory"}
    assert s.state.clients["d"].wants == {"x-1": 1}
    assert s.release("x-1", client="d") == [X(FreeKeys, seq=ANY, worker="w0", keys=("x-1",))]
    assert s.state.tasks == {}


def test_releasing_a_key_the_client_does_not_hold_changes_nothing():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    assert s.release("x-1", "ghost-1", client="d") == []
    assert s.states() == {"x-1": "processing"}
    assert s.state.tasks["x-1"].who_wants == {"c": 1}


def test_desiring_an_unknown_key_answers_cancelled():
    s = Sched()
    outs = s(DesireKeys, client="c", keys=("gone-1",))
    assert outs == [X(KeyCancelled, client="c", key="gone-1",
                      reason="the scheduler no longer knows this key")]
    assert s.state.tasks == {}


def test_desiring_a_released_input_recomputes_it():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    s.finish("w0", "a-1")
    s.finish("w0", "b-1")
    assert s.states()["a-1"] == "released"
    assert s(DesireKeys, client="c", keys=("a-1",)) == [compute("w0", "a-1", (0, 1))]
    assert s.finish("w0", "a-1") == [in_memory("c", "a-1")]


def test_small_results_ride_inline_up_to_the_limit():
    s = Sched(inline_result_limit=4)
    s.add_worker("w0")
    s.submit(T("small-1"), T("big-1"))
    assert s.finish("w0", "small-1", inline=b"1234") == [in_memory("c", "small-1", inline=b"1234")]
    assert s.finish("w0", "big-1", inline=b"12345") == [in_memory("c", "big-1", inline=None)]


def test_outputs_carry_the_events_now_and_stimulus_id():
    s = Sched()
    s.now = 12.5
    outs = s(AddWorker, worker="w0", nthreads=1, stimulus_id="hello")
    assert outs == [SetTimer(12.5, "hello", 72.5, "ttl:w0")]
    outs = s(UpdateGraph, client="c", tasks=(T("x-1"),), wanted=("x-1",), stimulus_id="submit-9",
             now=13.0)
    assert [(m.now, m.stimulus_id) for m in outs] == [(13.0, "submit-9")]
