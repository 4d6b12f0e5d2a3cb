"""WorkerState unit tests: execution, thread slots, priorities, resources,
errors, secede/rejoin, stealing, actors and scattered data.

Each test drives a bare ``WorkerState`` with hand-built events and asserts the
exact instructions it returns; ``validate()`` runs after every event.
"""

import pytest

from twofold.config import WorkerConfig
from twofold.messages import (
    AddReplicas,
    ComputeTask,
    DataPut,
    DeleteData,
    Execute,
    ExecuteFailure,
    ExecuteReschedule,
    ExecuteSuccess,
    FreeKeys,
    GatherDeps,
    GatherFailure,
    GatherSuccess,
    LongRunning,
    MissingData,
    Rejoin,
    RejoinGranted,
    RescheduleTask,
    Secede,
    StealRequest,
    StealResponse,
    TaskErred,
    TaskError,
    TaskFinished,
)
from twofold.worker import WorkerState

# --------------------------------------------------------------------------
# A tiny driver: builds events with ``now``/``stimulus_id``, feeds them to a
# bare WorkerState, validates after every event, and builds the outputs we
# expect stamped with the same ``now``/``stimulus_id``.
# --------------------------------------------------------------------------

from worker_support import ERR, ME, W, spec  # noqa: F401

def subsequence(needle, haystack):
    it = iter(haystack)
    return all(item in it for item in needle)


# --------------------------------------------------------------------------
# The basic lifecycle
# --------------------------------------------------------------------------


def test_task_without_inputs_executes_and_finishes():
    w = W()
    assert w.compute("x") == [w.execute("x")]
    assert w.state("x") == "executing"
    assert w.succeed("x", nbytes=24) == [w.finished("x", 24)]
    assert w.states() == {"x": "memory"}
    assert w.ws.tasks["x"].nbytes == 24


def test_input_on_peer_goes_waiting_fetch_flight_ready_executing_memory():
    w = W()
    assert w.compute("y", {"x": ("p1",)}, {"x": 10}) == [w.gather("p1", ["x"], 10)]
    assert w.states() == {"y": "waiting", "x": "flight"}
    assert subsequence(["fetch", "flight"], w.path("x"))
    # the data arrives: the worker tells the scheduler it holds a replica, then runs y
    assert w.gathered("p1", {"x": 11}) == [w.replicas({"x": 11}), w.execute("y", ["x"])]
    assert w.states() == {"y": "executing", "x": "memory"}
    assert w.succeed("y") == [w.finished("y")]
    assert w.states() == {"y": "memory", "x": "memory"}
    assert w.path("y") == ["waiting", "ready", "executing", "memory"]
    assert subsequence(["fetch", "flight", "memory"], w.path("x"))


def test_input_already_in_memory_here_is_not_fetched():
    w = W()
    w.compute("x")
    w.succeed("x")
    # the scheduler lists us (and a peer) as holders: no transfer, run at once
    assert w.compute("y", {"x": (ME, "p1")}, {"x": 8}) == [w.execute("y", ["x"])]
    assert w.ws.tasks["x"].who_has == {}  # never lists itself


def test_input_computing_here_is_waited_for_not_fetched():
    w = W(nthreads=2)
    w.compute("x")
    assert w.compute("y", {"x": (ME,)}, {"x": 8}) == []
    assert w.states() == {"x": "executing", "y": "waiting"}
    assert w.succeed("x") == [w.finished("x"), w.execute("y", ["x"])]


def test_repeated_compute_task_is_ignored_while_running():
    w = W()
    w.compute("x")
    assert w.compute("x") == []
    assert w.states() == {"x": "executing"}
    assert w.succeed("x") == [w.finished("x")]


def test_compute_task_for_key_in_memory_finishes_at_once():
    w = W()
    w.compute("x")
    w.succeed("x", nbytes=40)
    outs = w.compute("x")
    assert [type(o) for o in outs] == [TaskFinished]  # no Execute
    [msg] = outs
    assert (msg.worker, msg.key, msg.nbytes, msg.now, msg.stimulus_id) == (ME, "x", 40, w.now, w.sid)
    assert w.states() == {"x": "memory"}


def test_compute_task_for_fetched_key_finishes_at_once():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 10})
    w.gathered("p1", {"x": 12})
    w.succeed("y")
    [msg] = w.compute("x")
    assert (type(msg), msg.key, msg.nbytes) == (TaskFinished, "x", 12)


# --------------------------------------------------------------------------
# Thread slots and priorities
# --------------------------------------------------------------------------


def test_execution_slots_equal_nthreads():
    w = W(nthreads=2)
    assert w.compute("a") == [w.execute("a")]
    assert w.compute("b") == [w.execute("b")]
    assert w.compute("c") == []
    assert w.states() == {"a": "executing", "b": "executing", "c": "ready"}
    assert w.succeed("b") == [w.finished("b"), w.execute("c")]
    assert w.succeed("a") == [w.finished("a")]
    assert w.succeed("c") == [w.finished("c")]


def test_ready_tasks_run_in_priority_order():
    w = W()
    w.compute("busy")
    w.compute("low", priority=(5, 0))
    w.compute("high", priority=(1, 0))
    w.compute("mid", priority=(3, 0))
    assert w.succeed("busy") == [w.finished("busy"), w.execute("high")]
    assert w.succeed("high") == [w.finished("high"), w.execute("mid")]
    assert w.succeed("mid") == [w.finished("mid"), w.execute("low")]


def test_equal_priority_runs_in_arrival_order():
    w = W()
    w.compute("busy")
    for key in ("k3", "k1", "k2"):
        w.compute(key, priority=(2,))
    assert w.succeed("busy")[-1] == w.execute("k3")
    assert w.succeed("k3")[-1] == w.execute("k1")
    assert w.succeed("k1")[-1] == w.execute("k2")


# --------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------


def test_resource_tasks_run_one_at_a_time_while_plain_tasks_run():
    w = W(nthreads=3, resources={"GPU": 1})
    assert w.compute("g1", resources={"GPU": 1}) == [w.execute("g1")]
    assert w.compute("g2", resources={"GPU": 1}) == []
    assert w.state("g2") == "constrained"
    # a third thread is free, but only one GPU: a plain task can use a thread meanwhile
    assert w.compute("cpu") == [w.execute("cpu")]
    assert w.ws.available_resources == {"GPU": 0}
    assert w.succeed("cpu") == [w.finished("cpu")]
    assert w.state("g2") == "constrained"
    assert w.succeed("g1") == [w.finished("g1"), w.execute("g2")]
    assert w.succeed("g2") == [w.finished("g2")]
    assert w.ws.available_resources == {"GPU": 1}


def test_plain_ready_task_overtakes_a_blocked_constrained_task():
    w = W(nthreads=2, resources={"GPU": 1})
    assert w.compute("g1", resources={"GPU": 1}, priority=(0,)) == [w.execute("g1")]
    assert w.compute("busy") == [w.execute("busy")]
    w.compute("g2", resources={"GPU": 1}, priority=(0,))
    w.compute("cpu", priority=(9,))
    assert w.states()["g2"] == "constrained" and w.states()["cpu"] == "ready"
    # a thread frees: g2 comes first by priority but has no GPU, so cpu runs
    assert w.succeed("busy") == [w.finished("busy"), w.execute("cpu")]
    assert w.succeed("g1") == [w.finished("g1"), w.execute("g2")]


def test_constrained_task_runs_by_priority_when_resources_free():
    w = W(nthreads=1, resources={"GPU": 1})
    w.compute("busy")  # holds the only thread
    w.compute("g1", resources={"GPU": 1}, priority=(0,))
    w.compute("cpu", priority=(2,))
    w.compute("g2", resources={"GPU": 1}, priority=(1,))
    assert w.succeed("busy") == [w.finished("busy"), w.execute("g1")]
    assert w.succeed("g1") == [w.finished("g1"), w.execute("g2")]
    assert w.succeed("g2") == [w.finished("g2"), w.execute("cpu")]


def test_failed_resource_task_gives_its_resources_back():
    w = W(nthreads=2, resources={"GPU": 1})
    w.compute("g1", resources={"GPU": 1})
    w.compute("g2", resources={"GPU": 1})
    outs = w.fail("g1")
    assert outs == [w.out(TaskErred, ME, "g1", ERR, 100.0, 101.0), w.execute("g2")]


# --------------------------------------------------------------------------
# Errors and reschedule
# --------------------------------------------------------------------------


def test_execute_failure_sends_task_erred_and_forgets_the_task():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 4})
    w.gathered("p1", {"x": 4})
    assert w.fail("y") == [w.out(TaskErred, ME, "y", ERR, 100.0, 101.0)]
    assert "y" not in w.ws.tasks
    assert w.state("x") == "memory"  # the fetched input stays until freed


def test_execute_failure_frees_the_thread_for_the_next_task():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.fail("a") == [w.out(TaskErred, ME, "a", ERR, 100.0, 101.0), w.execute("b")]
    assert w.states() == {"b": "executing"}


def test_execute_reschedule_sends_reschedule_task_and_forgets():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.send(ExecuteReschedule, "a") == [w.out(RescheduleTask, ME, "a"), w.execute("b")]
    assert w.states() == {"b": "executing"}


def test_execute_failure_with_local_dependent_keeps_state_consistent():
    w = W(nthreads=2)
    w.compute("x")
    w.compute("y", {"x": (ME,)}, {"x": 8})
    assert w.fail("x") == [w.out(TaskErred, ME, "x", ERR, 100.0, 101.0)]  # validate() runs inside


# --------------------------------------------------------------------------
# Secede / rejoin
# --------------------------------------------------------------------------


def test_secede_frees_the_thread_and_starts_a_ready_task():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.send(Secede, "a") == [w.out(LongRunning, ME, "a"), w.execute("b")]
    assert w.states() == {"a": "long-running", "b": "executing"}


def test_rejoin_granted_at_once_when_a_thread_is_free():
    w = W()
    w.compute("a")
    assert w.send(Secede, "a") == [w.out(LongRunning, ME, "a")]
    assert w.send(Rejoin, "a") == [w.out(RejoinGranted, "a")]
    assert w.state("a") == "executing"
    # it holds the thread again
    assert w.compute("b") == []
    assert w.succeed("a") == [w.finished("a"), w.execute("b")]


def test_rejoin_waits_for_a_thread_and_goes_before_ready_tasks():
    w = W()
    w.compute("a")
    w.compute("b")
    w.send(Secede, "a")  # b runs
    w.compute("c", priority=(-100,))  # even a very urgent ready task
    assert w.send(Rejoin, "a") == []
    assert w.state("a") == "long-running"
    assert w.succeed("b") == [w.finished("b"), w.out(RejoinGranted, "a")]
    assert w.states() == {"a": "executing", "b": "memory", "c": "ready"}
    assert w.succeed("a") == [w.finished("a"), w.execute("c")]


def test_seceded_task_success_goes_to_memory():
    w = W()
    w.compute("a")
    w.compute("b")
    w.compute("c")
    w.send(Secede, "a")  # b runs; c waits for a thread
    # a finishes while seceded: it held no thread, so c must not start yet
    assert w.succeed("a") == [w.finished("a")]
    assert w.states() == {"a": "memory", "b": "executing", "c": "ready"}
    assert w.ws.long_running == {}
    assert w.succeed("b") == [w.finished("b"), w.execute("c")]


# --------------------------------------------------------------------------
# Work stealing
# --------------------------------------------------------------------------


def test_steal_ready_task_is_released_and_forgotten():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.send(StealRequest, ME, "b") == [w.out(StealResponse, ME, "b", True)]
    assert w.states() == {"a": "executing"}
    assert w.succeed("a") == [w.finished("a")]  # b does not run


def test_steal_waiting_task_is_released_and_its_fetch_inputs_dropped():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y0", {"z": ("p0",)}, {"z": 1})  # occupies the only transfer slot
    w.compute("y", {"x": ("p1",)}, {"x": 1})
    assert w.state("x") == "fetch"
    assert w.send(StealRequest, ME, "y") == [w.out(StealResponse, ME, "y", True)]
    assert w.states() == {"y0": "waiting", "z": "flight"}
    assert w.ws.data_needed_per_peer == {}
    # the slot frees: nothing else to fetch
    assert w.gathered("p0", {"z": 1}) == [w.replicas({"z": 1}), w.execute("y0", ["z"])]


def test_steal_constrained_task_is_released():
    w = W(resources={"GPU": 1})
    w.compute("g1", resources={"GPU": 1})
    w.compute("g2", resources={"GPU": 1})
    assert w.send(StealRequest, ME, "g2") == [w.out(StealResponse, ME, "g2", True)]
    assert w.states() == {"g1": "executing"}


def test_steal_executing_task_is_refused():
    w = W()
    w.compute("a")
    assert w.send(StealRequest, ME, "a") == [w.out(StealResponse, ME, "a", False)]
    assert w.states() == {"a": "executing"}
    assert w.succeed("a") == [w.finished("a")]


def test_steal_unknown_task_is_refused():
    w = W()
    assert w.send(StealRequest, ME, "nope") == [w.out(StealResponse, ME, "nope", False)]
    assert w.states() == {}


# --------------------------------------------------------------------------
# Actors
# --------------------------------------------------------------------------


def test_actor_task_executes_with_actor_flag():
    w = W()
    assert w.compute("counter", actor=True) == [w.execute("counter", actor=True)]
    assert w.succeed("counter") == [w.finished("counter")]


def test_actor_deps_are_passed_through_and_never_fetched():
    w = W()
    outs = w.compute("call", {"act": ("p1",), "x": ("p2",)}, {"act": 100, "x": 4}, actor_deps=("act",))
    assert outs == [w.gather("p2", ["x"], 4)]  # only the plain input is fetched
    assert "act" not in w.ws.tasks
    assert w.gathered("p2", {"x": 4}) == [w.replicas({"x": 4}), w.execute("call", ["x"], actor_deps=["act"])]


def test_task_with_only_actor_deps_is_ready_at_once():
    w = W()
    outs = w.compute("call", {"act": ("p1",)}, {"act": 100}, actor_deps=("act",))
    assert outs == [w.execute("call", actor_deps=["act"])]


# --------------------------------------------------------------------------
# Scattered data (DataPut)
# --------------------------------------------------------------------------


def test_data_put_stores_keys_in_memory():
    w = W()
    assert w.send(DataPut, {"s1": 5, "s2": 7}) == []
    assert w.states() == {"s1": "memory", "s2": "memory"}
    [msg] = w.compute("s2")  # asked to compute a scattered key: already done
    assert (type(msg), msg.key, msg.nbytes) == (TaskFinished, "s2", 7)


def test_data_put_wakes_a_task_waiting_on_a_missing_input():
    w = W()
    assert w.compute("y", {"x": ()}, {"x": 5}) == []
    assert w.states() == {"y": "waiting", "x": "missing"}
    assert w.send(DataPut, {"x": 5}) == [w.execute("y", ["x"])]
    assert w.states() == {"y": "executing", "x": "memory"}


def test_data_put_of_a_queued_fetch_cancels_the_fetch_and_wakes_the_task():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y0", {"z": ("p0",)}, {"z": 1})  # occupies the only transfer slot
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    assert w.state("x") == "fetch"
    assert w.send(DataPut, {"x": 5}) == [w.execute("y", ["x"])]
    assert w.ws.data_needed_per_peer == {}
    # when the slot frees nothing more is fetched (and y still holds the only thread)
    assert w.gathered("p0", {"z": 1}) == [w.replicas({"z": 1})]
    assert w.states() == {"y0": "ready", "z": "memory", "y": "executing", "x": "memory"}


def test_data_put_of_a_key_whose_cancelled_execution_still_runs():
    w = W()
    w.compute("x")
    w.free("x")
    # the thread still runs x: the scattered copy is kept, and so is the
    # execution's result when it ends (reported as a replica, not computed)
    assert w.send(DataPut, {"x": 3}) == []  # validate() runs inside
    assert w.state("x") == "resumed"
    assert w.succeed("x") == [w.out(AddReplicas, ME, {"x": 8})]
    assert w.state("x") == "memory"
