"""SchedulerState unit tests: workers joining, beating, leaving and dying, and data.

Membership and heartbeats, the TTL timer, timers that are stale or early,
what happens to tasks and results when a worker goes, and the data paths
(scatter, UpdateData, who-has, scheduler info, missing data, replicas).

Each test drives a bare SchedulerState, asserts its exact outputs and calls
``validate()`` after every event.
"""

from __future__ import annotations

import pytest

from twofold.config import SchedulerConfig
from twofold.messages import (
    AddReplicas,
    AddWorker,
    CloseWorker,
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    KeyLost,
    KeyRetried,
    MissingData,
    RefreshWhoHas,
    ReleaseKeys,
    RemoveClient,
    RemoveReplicas,
    RemoveWorker,
    RescheduleTask,
    RetryKeys,
    ScatteredKey,
    ScatterPlan,
    ScatterRequest,
    SchedulerInfoReply,
    SchedulerInfoRequest,
    SetTimer,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    TimerFired,
    UpdateData,
    UpdateGraph,
    WhoHasReply,
    WhoHasRequest,
    WorkerHeartbeat,
)
from twofold.scheduler import SchedulerState

# --------------------------------------------------------------------------
# helpers (shared: tests/scheduler_support.py)
# --------------------------------------------------------------------------


from scheduler_support import ANY, BOOM, Sched, T, X, compute, in_memory  # noqa: F401



def ttl(worker, at):
    return X(SetTimer, at=at, token=f"ttl:{worker}")


# --------------------------------------------------------------------------
# membership and heartbeats
# --------------------------------------------------------------------------


def test_add_worker_records_threads_resources_memory_limit_and_name():
    s = Sched()
    s.now = 5.0
    outs = s.add_worker("tcp://10.0.0.1:7", nthreads=4, resources={"GPU": 2}, memory_limit=2**30,
                        name="alice")
    assert outs == [ttl("tcp://10.0.0.1:7", 65.0)]
    ws = s.state.workers["tcp://10.0.0.1:7"]
    assert (ws.nthreads, ws.resources, ws.memory_limit, ws.name, ws.last_seen) == (
        4, {"GPU": 2}, 2**30, "alice", 5.0)
    assert s.state.workers_by_name == {"alice": ws}
    assert s.state.timers == {"ttl:tcp://10.0.0.1:7": 65.0}
    # a worker without a name is known by its address
    s.add_worker("w1")
    assert s.state.workers["w1"].name == "w1" and s.state.workers["w1"].resources == {}


def test_add_worker_without_threads_is_closed():
    s = Sched()
    outs = s.add_worker("w0", nthreads=0)
    assert outs == [X(CloseWorker, worker="w0", reason="nthreads must be >= 1, got 0")]
    assert s.state.workers == {} and s.state.timers == {}


def test_heartbeat_updates_last_seen_and_memory():
    s = Sched()
    s.add_worker("w0")
    s.now = 7.0
    assert s(WorkerHeartbeat, worker="w0", memory=1234, executing=1) == []
    ws = s.state.workers["w0"]
    assert (ws.last_seen, ws.memory) == (7.0, 1234)


def test_heartbeat_from_an_unknown_worker_closes_it():
    s = Sched()
    outs = s(WorkerHeartbeat, worker="stranger")
    assert outs == [X(CloseWorker, worker="stranger", reason="unknown worker: register again")]
    assert s.state.workers == {}


def test_remove_worker_forgets_it_its_name_and_its_timer():
    s = Sched()
    s.add_worker("tcp://a", name="alice")
    assert s(RemoveWorker, worker="tcp://a", reason="retiring") == []
    assert s.state.workers == {} and s.state.workers_by_name == {} and s.state.timers == {}
    assert not s.state.room
    assert s(RemoveWorker, worker="tcp://a") == []  # twice is harmless


def test_silent_worker_is_removed_after_worker_ttl():
    s = Sched(worker_ttl=30.0)
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    assert s.state.tasks["x-1"].processing_on.address == "w0"
    s(WorkerHeartbeat, worker="w1", now=20.0)
    s.now = 30.0
    outs = s(TimerFired, token="ttl:w0")
    assert outs == [compute("w1", "x-1", (0, 1)),
                    X(CloseWorker, worker="w0", reason="no heartbeat for 30 seconds")]
    assert list(s.state.workers) == ["w1"]
    # w1 beat in time: its timer moves to last_seen + ttl instead
    outs = s(TimerFired, token="ttl:w1")
    assert outs == [ttl("w1", 50.0)]
    assert list(s.state.workers) == ["w1"]


def test_heartbeat_in_time_rearms_the_ttl_timer_until_silence():
    s = Sched(worker_ttl=60.0)
    s.add_worker("w0")
    s(WorkerHeartbeat, worker="w0", now=30.0)
    s.now = 60.0
    assert s(TimerFired, token="ttl:w0") == [ttl("w0", 90.0)]
    assert s.state.timers == {"ttl:w0": 90.0}
    s.now = 90.0
    assert s(TimerFired, token="ttl:w0") == [
        X(CloseWorker, worker="w0", reason="no heartbeat for 60 seconds")]
    assert s.state.workers == {}


def test_timer_fired_before_it_is_due_does_nothing():
    s = Sched(worker_ttl=60.0)
    s.add_worker("w0")
    s.now = 59.5
    assert s(TimerFired, token="ttl:w0") == []
    assert "w0" in s.state.workers and s.state.timers == {"ttl:w0": 60.0}
    s.now = 60.0
    assert [type(m) for m in s(TimerFired, token="ttl:w0")] == [CloseWorker]


def test_superseded_or_unknown_timer_token_does_nothing():
    s = Sched(worker_ttl=60.0)
    s.add_worker("w0")
    s(WorkerHeartbeat, worker="w0", now=50.0)
    s.now = 60.0
    assert s(TimerFired, token="ttl:w0") == [ttl("w0", 110.0)]
    # the same (superseded) firing delivered again, and tokens nobody set
    assert s(TimerFired, token="ttl:w0") == []
    assert s(TimerFired, token="ttl:nobody") == []
    assert s(TimerFired, token="steal") == []
    assert "w0" in s.state.workers and s.state.timers == {"ttl:w0": 110.0}


def test_ttl_timer_of_a_removed_worker_does_nothing():
    s = Sched()
    s.add_worker("w0")
    s(RemoveWorker, worker="w0")
    s.add_worker("w1")
    s.now = 1000.0
    assert s(TimerFired, token="ttl:w0") == []
    assert list(s.state.workers) == ["w1"]


# --------------------------------------------------------------------------
# losing workers
# --------------------------------------------------------------------------


def test_processing_task_of_a_lost_worker_runs_elsewhere_and_counts_a_failure():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    outs = s(RemoveWorker, worker="w0")
    assert outs == [compute("w1", "x-1", (0, 1))]
    ts = s.state.tasks["x-1"]
    assert ts.suspicious == 1 and ts.processing_on is s.state.workers["w1"]
    assert list(s.state.workers) == ["w1"]


def test_processing_task_of_the_last_worker_waits_for_a_new_one():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"), T("y-1", workers=("w0",)))
    assert s(RemoveWorker, worker="w0") == []
    assert s.states() == {"x-1": "queued", "y-1": "no-worker"}
    assert {k: ts.suspicious for k, ts in s.state.tasks.items()} == {"x-1": 1, "y-1": 1}
    assert s.add_worker("w0") == [ttl("w0", 60.0), compute("w0", "x-1", (0, 1)),
                                  compute("w0", "y-1", (0, 2))]


def test_task_errs_with_killed_worker_on_the_fourth_death():
    s = Sched()
    for i in range(5):
        s.add_worker(f"w{i}")
    s.submit(T("x-1"))
    for i in range(3):
        assert s(RemoveWorker, worker=f"w{i}") == [compute(f"w{i + 1}", "x-1", (0, 1))]
    assert s.state.tasks["x-1"].suspicious == 3
    outs = s(RemoveWorker, worker="w3")
    assert len(outs) == 1 and isinstance(outs[0], KeyErred)
    err = outs[0]
    assert (err.client, err.key, err.blamed) == ("c", "x-1", "x-1")
    assert err.error.typename == "KilledWorker" and err.error.exception is None
    assert "'x-1'" in err.error.message and "4 different workers" in err.error.message
    assert "w3" in err.error.message
    assert s.states() == {"x-1": "erred"}
    assert not s.state.workers["w4"].processing


def test_allowed_failures_comes_from_the_config():
    s = Sched(allowed_failures=1)
    for i in range(3):
        s.add_worker(f"w{i}")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    assert s(RemoveWorker, worker="w0") == [compute("w1", "a-1", (0, 1))]
    outs = s(RemoveWorker, worker="w1")
    assert [(type(m), m.key, m.blamed, m.error.typename) for m in outs] == [
        (KeyErred, "b-1", "a-1", "KilledWorker")]
    assert s.states() == {"a-1": "erred", "b-1": "erred"}


def test_lost_result_still_wanted_is_recomputed_and_the_client_told():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    s.finish("w0", "x-1")
    outs = s(RemoveWorker, worker="w0")
    assert outs == [X(KeyLost, client="c", key="x-1"), compute("w1", "x-1", (0, 1))]
    assert s.states() == {"x-1": "processing"}
    assert s.state.tasks["x-1"].suspicious == 0  # it was not running there
    assert s.finish("w1", "x-1") == [in_memory("c", "x-1")]


def test_result_with_another_holder_survives_the_loss():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    s.finish("w0", "x-1")
    s(AddReplicas, worker="w1", nbytes={"x-1": 8})
    assert s(RemoveWorker, worker="w0") == []
    ts = s.state.tasks["x-1"]
    assert ts.state == "memory" and [w.address for w in ts.who_has] == ["w1"]


_ERRED_TO_WAITING = (
    "BUG (uncommitted _remove_worker rewrite in core/scheduler/workers.py): a lost input "
    "recommends its processing dependent 'waiting' before the dependent is failed with "
    "KilledWorker, then the stale recommendation raises InvalidTransition erred -> waiting"
)


def test_lost_result_nobody_needs_any_more_is_not_recomputed():
    # allowed_failures=0: the dependent dies with the worker, so its input is needed by nobody
    s = Sched(allowed_failures=0)
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("a-1"), T("b-1", "a-1"), wanted=["b-1"])
    s.finish("w0", "a-1")
    assert s.state.tasks["b-1"].processing_on.address == "w0"
    outs = s(RemoveWorker, worker="w0")
    assert [(type(m), m.key) for m in outs] == [(KeyErred, "b-1")]
    assert s.states() == {"a-1": "released", "b-1": "erred"}
    assert s.release("b-1") == []
    assert s.state.tasks == {}


def test_task_that_kills_its_workers_next_to_its_input_errs_on_the_fourth_death():
    s = Sched()
    for i in range(5):
        s.add_worker(f"w{i}")
    s.submit(T("x-1"), T("y-1", "x-1"), wanted=["y-1"])
    for i in range(4):
        s.finish(f"w{i}", "x-1")
        assert s.state.tasks["y-1"].processing_on.address == f"w{i}"
        outs = s(RemoveWorker, worker=f"w{i}")
        assert not [m for m in outs if getattr(m, "worker", None) == f"w{i}"]
        if i < 3:
            assert outs == [compute(f"w{i + 1}", "x-1", (0, 1))]
    assert [(type(m), m.key, m.error.typename) for m in outs] == [(KeyErred, "y-1", "KilledWorker")]
    assert s.states() == {"x-1": "released", "y-1": "erred"}


def test_no_output_is_addressed_to_the_dead_worker():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("y-1", "x-1"), wanted=["y-1"])
    s.finish("w0", "x-1")
    assert s.state.tasks["y-1"].processing_on.address == "w0"
    outs = s(RemoveWorker, worker="w0")
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    assert [m for m in outs if getattr(m, "worker", None) == "w0"] == []
    assert not any(isinstance(m, ComputeTask) and "w0" in sum(m.who_has.values(), ())
                   for m in outs)


def test_reports_from_a_removed_worker_are_ignored():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("y-1"))
    s(RemoveWorker, worker="w0")
    assert s.states() == {"x-1": "processing", "y-1": "processing"}
    assert s.finish("w0", "x-1") == []
    assert s.fail("w0", "y-1") == []
    assert s.states() == {"x-1": "processing", "y-1": "processing"}
    assert all(ts.processing_on.address == "w1" for ts in s.state.tasks.values())


def test_lost_input_is_recomputed_then_the_dependent_runs():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("y-1", "x-1", workers=("w1",)), wanted=["y-1"])
    assert s.finish("w0", "x-1") == [compute("w1", "y-1", (0, 2), {"x-1": ("w0",)}, {"x-1": 8})]
    outs = s(RemoveWorker, worker="w0")
    # y-1 cannot get its input any more: it starts over, x-1 is computed again
    assert outs == [compute("w1", "x-1", (0, 1)), X(FreeKeys, seq=ANY, worker="w1", keys=("y-1",))]
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    assert s.state.tasks["y-1"].suspicious == 0
    assert s.finish("w1", "x-1") == [compute("w1", "y-1", (0, 2), {"x-1": ("w1",)}, {"x-1": 8})]
    assert s.finish("w1", "y-1") == [in_memory("c", "y-1"), X(FreeKeys, seq=ANY, worker="w1", keys=("x-1",))]


def test_retry_after_the_dependencys_worker_died():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("y-1", "x-1", workers=("w1",)))
    s.finish("w0", "x-1")
    assert s.fail("w1", "y-1") == [X(KeyErred, client="c", key="y-1", error=BOOM, blamed="y-1")]
    assert s(RemoveWorker, worker="w0") == [X(KeyLost, client="c", key="x-1"),
                                            compute("w1", "x-1", (0, 1))]
    assert s(RetryKeys, client="c", keys=("y-1",)) == [X(KeyRetried, client="c", key="y-1")]
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    assert s.finish("w1", "x-1") == [
        in_memory("c", "x-1"), compute("w1", "y-1", (0, 2), {"x-1": ("w1",)}, {"x-1": 8})]


def test_rescheduled_task_is_not_cancelled_by_a_later_free():
    s = Sched()
    s.add_worker("w0")
    s.submit(T("x-1"))
    outs = s(RescheduleTask, worker="w0", key="x-1")
    assert compute("w0", "x-1", (0, 1)) in outs
    where = outs.index(compute("w0", "x-1", (0, 1)))
    assert not [m for m in outs[where:] if isinstance(m, FreeKeys) and "x-1" in m.keys]


# --------------------------------------------------------------------------
# scatter and data
# --------------------------------------------------------------------------


def plan(placement, request_id="r1", client="c", error=""):
    return X(ScatterPlan, free_seqs=ANY, client=client, request_id=request_id, placement=placement, error=error)


def test_scatter_places_keys_round_robin_across_requests():
    s = Sched()
    for w in ("w0", "w1", "w2"):
        s.add_worker(w)
    outs = s(ScatterRequest, client="c", request_id="r1", keys=("a", "b", "c", "d"))
    assert outs == [plan({"a": ("w0",), "b": ("w1",), "c": ("w2",), "d": ("w0",)})]
    outs = s(ScatterRequest, client="c", request_id="r2", keys=("e",))
    assert outs == [plan({"e": ("w1",)}, "r2")]
    assert s.state.tasks == {}  # a plan is not data yet


def test_scatter_broadcast_puts_every_key_everywhere():
    s = Sched()
    for w in ("w0", "w1"):
        s.add_worker(w)
    outs = s(ScatterRequest, client="c", request_id="r1", keys=("a", "b"), broadcast=True)
    assert outs == [plan({"a": ("w0", "w1"), "b": ("w0", "w1")})]


def test_scatter_to_chosen_workers_by_address_or_name():
    s = Sched()
    s.add_worker("tcp://1", name="alice")
    s.add_worker("tcp://2", name="bob")
    s.add_worker("tcp://3")
    outs = s(ScatterRequest, client="c", request_id="r1", keys=("a", "b", "c"),
             workers=("bob", "tcp://3", "ghost"))
    assert outs == [plan({"a": ("tcp://2",), "b": ("tcp://3",), "c": ("tcp://2",)})]


def test_scatter_to_workers_none_of_which_is_connected_errs():
    s = Sched()
    s.add_worker("w0")
    outs = s(ScatterRequest, client="c", request_id="r1", keys=("a",), workers=("ghost",))
    assert outs == [plan({}, error="none of the workers ['ghost'] is connected")]


def test_scatter_waits_for_a_worker_when_there_is_none():
    s = Sched()
    assert s(ScatterRequest, client="c", request_id="r1", keys=("a", "b")) == []
    outs = s.add_worker("w0")
    assert outs == [ttl("w0", 60.0), plan({"a": ("w0",), "b": ("w0",)})]
    assert s.add_worker("w1") == [ttl("w1", 60.0)]  # answered once only


def test_update_data_puts_scattered_keys_in_memory():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    outs = s(UpdateData, client="c", keys=(ScatteredKey("a", 100, "DataFrame", ("w0",)),
                                           ScatteredKey("b", 5, "int", ("w0", "w1"))))
    assert outs == [in_memory("c", "a", 100, "DataFrame"), in_memory("c", "b", 5, "int")]
    a, b = s.state.tasks["a"], s.state.tasks["b"]
    assert (a.state, a.run_spec, [w.address for w in a.who_has]) == ("memory", None, ["w0"])
    assert [w.address for w in b.who_has] == ["w0", "w1"]
    assert (s.state.workers["w0"].nbytes, s.state.workers["w1"].nbytes) == (105, 5)
    assert a.who_wants == {"c": 1}
    # scattered data feeds tasks like any result
    outs = s.submit(T("f-1", "a"), wanted=["f-1"])
    assert outs == [compute("w0", "f-1", a.priority[:1] + (a.priority[1] + 1,),
                            {"a": ("w0",)}, {"a": 100})]
    s.finish("w0", "f-1")
    assert s(ReleaseKeys, client="c", keys=("a", "b")) == [
        X(FreeKeys, seq=ANY, worker="w0", keys=("a", "b")), X(FreeKeys, seq=ANY, worker="w1", keys=("b",))]
    # the scattered input stays known (released) while its dependent is held
    assert s.states() == {"a": "released", "f-1": "memory"}


def test_who_has_reports_holders_of_keys_in_memory_only():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s(UpdateData, client="c", keys=(ScatteredKey("a", 10, "int", ("w0", "w1")),))
    s.submit(T("p-1"))
    outs = s(WhoHasRequest, client="c", request_id="q1", keys=("a", "p-1", "ghost"))
    assert outs == [X(WhoHasReply, client="c", request_id="q1",
                      who_has={"a": ("w0", "w1"), "p-1": (), "ghost": ()}, nbytes={"a": 10})]


def info(name, nthreads=1, memory_limit=None, resources=None, active=0, stored=0, nbytes=0, last_seen=0.0):
    return {"name": name, "nthreads": nthreads, "memory_limit": memory_limit, "resources": resources or {},
            "active": active, "stored": stored, "nbytes": nbytes, "last_seen": last_seen}


def test_scheduler_info_reports_each_worker_in_arrival_order():
    s = Sched()
    s.now = 1.0
    s.add_worker("w1", nthreads=2, resources={"GPU": 1}, memory_limit=2**30, name="bob")
    s.add_worker("w0")
    s(UpdateData, client="c", keys=(ScatteredKey("a", 10, "int", ("w1",)),))
    s.submit(T("p-1", workers=("w0",)))
    s.now = 3.0
    s(WorkerHeartbeat, worker="w0", memory=5)
    s.now = 4.0
    outs = s(SchedulerInfoRequest, client="c", request_id="q1")
    assert outs == [X(SchedulerInfoReply, client="c", request_id="q1", workers={
        "w1": info("bob", 2, 2**30, {"GPU": 1}, stored=1, nbytes=10, last_seen=1.0),
        "w0": info("w0", active=1, last_seen=3.0)})]
    assert list(outs[0].workers) == ["w1", "w0"]
    # the reply shares nothing with the scheduler's records
    outs[0].workers["w1"]["resources"]["GPU"] = 5
    assert s.state.workers["w1"].resources == {"GPU": 1}


def test_scheduler_info_with_n_workers_waits_until_that_many_joined():
    s = Sched()
    assert s(SchedulerInfoRequest, client="c", request_id="q0") == [
        X(SchedulerInfoReply, client="c", request_id="q0", workers={})]
    s.add_worker("w0")
    assert s(SchedulerInfoRequest, client="c", request_id="q2", n_workers=2) == []
    assert s(SchedulerInfoRequest, client="c", request_id="q3", n_workers=3) == []
    assert s(SchedulerInfoRequest, client="d", request_id="d2", n_workers=2) == []
    # already true: answered at once
    assert s(SchedulerInfoRequest, client="d", request_id="d1", n_workers=1) == [
        X(SchedulerInfoReply, client="d", request_id="d1", workers={"w0": info("w0")})]
    s.now = 5.0
    outs = s.add_worker("w1", stimulus_id="join-w1")
    both = {"w0": info("w0"), "w1": info("w1", last_seen=5.0)}
    assert outs == [ttl("w1", 65.0), X(SchedulerInfoReply, client="c", request_id="q2", workers=both),
                    X(SchedulerInfoReply, client="d", request_id="d2", workers=both)]
    assert {out.stimulus_id for out in outs} == {"join-w1"}  # answered because of the AddWorker
    # q3 still waits; it leaves with its client, so a third worker answers nobody
    assert [r.request_id for r in s.state._info_waiters] == ["q3"]
    assert s(RemoveClient, client="c") == []
    assert s.state._info_waiters == []
    assert s.add_worker("w2") == [ttl("w2", 65.0)]


def test_scheduler_info_with_a_bad_n_workers_raises_and_changes_nothing():
    s = Sched()
    for bad in (-1, "2", True, None, 1.5):
        with pytest.raises(ValueError, match="n_workers must be an int >= 0"):
            s(SchedulerInfoRequest, client="c", request_id="q", n_workers=bad)
    assert s.state._info_waiters == []
    assert s.add_worker("w0") == [ttl("w0", 60.0)]


def test_missing_data_with_other_holders_refreshes_the_reporters_who_has():
    s = Sched()
    for w in ("w0", "w1", "w2"):
        s.add_worker(w)
    s(UpdateData, client="c", keys=(ScatteredKey("a", 10, "int", ("w0", "w1")),))
    outs = s(MissingData, reporter="w2", key="a", errant_worker="w0")
    assert outs == [X(RefreshWhoHas, worker="w2", who_has={"a": ("w1",)})]
    assert [w.address for w in s.state.tasks["a"].who_has] == ["w1"]
    assert s.state.workers["w0"].nbytes == 0 and not s.state.workers["w0"].has_what
    # a stale report (the errant worker is no holder) only refreshes
    outs = s(MissingData, reporter="w2", key="a", errant_worker="w0")
    assert outs == [X(RefreshWhoHas, worker="w2", who_has={"a": ("w1",)})]


def test_missing_data_of_a_computed_key_recomputes_it():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("y-1", "x-1", workers=("w1",)))
    s.finish("w0", "x-1")
    outs = s(MissingData, reporter="w1", key="x-1", errant_worker="w0")
    assert outs == [X(KeyLost, client="c", key="x-1"), compute("w0", "x-1", (0, 1)),
                    X(FreeKeys, seq=ANY, worker="w1", keys=("y-1",))]
    assert s.states() == {"x-1": "processing", "y-1": "waiting"}
    assert not s.state.workers["w0"].has_what


def test_missing_data_of_a_scattered_key_errs_with_future_lost():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s(UpdateData, client="c", keys=(ScatteredKey("d", 10, "int", ("w0",)),))
    s.submit(T("z-1", "d"))
    assert s.state.tasks["z-1"].processing_on.address == "w0"
    outs = s(MissingData, reporter="w1", key="d", errant_worker="w0")
    erred = [m for m in outs if isinstance(m, KeyErred)]
    assert [(m.key, m.blamed, m.error.typename) for m in erred] == [
        ("d", "d", "FutureLost"), ("z-1", "d", "FutureLost")]
    assert erred[0].error is erred[1].error
    assert "it was scattered, not computed" in erred[0].error.message
    assert not [m for m in outs if isinstance(m, ComputeTask)]
    assert s.states() == {"d": "erred", "z-1": "erred"}


def test_processing_dependent_of_lost_scattered_data_is_freed_on_its_worker():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s(UpdateData, client="c", keys=(ScatteredKey("d", 10, "int", ("w0",)),))
    s.submit(T("z-1", "d", workers=("w1",)))
    assert s.state.tasks["z-1"].processing_on.address == "w1"
    outs = s(MissingData, reporter="w1", key="d", errant_worker="w0")
    assert s.states() == {"d": "erred", "z-1": "erred"}
    assert X(FreeKeys, seq=ANY, worker="w1", keys=("z-1",)) in outs


def test_add_replicas_adds_holders_and_stale_ones_are_removed():
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("p-1"), T("act-1", actor=True))
    s.finish("w0", "x-1", nbytes=50)
    s.finish("w0", "act-1", nbytes=0)
    outs = s(AddReplicas, worker="w1", nbytes={"x-1": 50, "gone-1": 3, "p-1": 8, "act-1": 0})
    # p-1 is processing on w1 itself: w1 answers that ComputeTask from memory, so it keeps the copy
    assert outs == [X(RemoveReplicas, seq=ANY, worker="w1", keys=("gone-1", "act-1"))]
    assert [w.address for w in s.state.tasks["x-1"].who_has] == ["w0", "w1"]
    assert s.state.workers["w1"].nbytes == 50
    assert [w.address for w in s.state.tasks["act-1"].who_has] == ["w0"]
    assert s(AddReplicas, worker="ghost", nbytes={"x-1": 50}) == []
