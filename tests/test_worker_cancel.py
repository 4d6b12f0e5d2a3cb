"""WorkerState unit tests: the scheduler changing its mind.

FreeKeys in every state, and the cancelled / resumed dance: work already
under way (an execution, a transfer) is kept when the key is wanted again,
never started twice, and its result is dropped when nobody wants it.  Each
test asserts the exact instructions returned; ``validate()`` runs after
every event.
"""

import pytest

from twofold.config import WorkerConfig
from twofold.messages import (
    AcquireReplicas,
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
    MissingData,
    Secede,
    TaskError,
    TaskErred,
    TaskFinished,
)
from twofold.worker import WorkerState

# --------------------------------------------------------------------------
# A tiny driver: builds events with ``now``/``stimulus_id``, feeds them to a
# bare WorkerState, validates after every event, and builds the outputs we
# expect stamped with the same ``now``/``stimulus_id``.
# --------------------------------------------------------------------------

from worker_support import ERR, ME, W, spec  # noqa: F401

def only_finished(outs, key, nbytes):
    """``outs`` is exactly one TaskFinished for ``key`` (fields we can know)."""
    assert [type(o) for o in outs] == [TaskFinished], outs
    msg = outs[0]
    assert (msg.worker, msg.key, msg.nbytes) == (ME, key, nbytes)


# --------------------------------------------------------------------------
# FreeKeys in each state
# --------------------------------------------------------------------------


def test_free_waiting_task_drops_its_unneeded_fetch_inputs():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y0", {"z": ("p0",)}, {"z": 1})  # occupies the only transfer slot
    w.compute("y", {"a": ("p1",), "s": ("p1",)}, {"a": 1, "s": 2})
    w.compute("y2", {"s": ("p1",)}, {"s": 2})
    assert w.states()["a"] == w.states()["s"] == "fetch"
    assert w.free("y") == []
    # a was only y's: forgotten; s is still y2's
    assert w.states() == {"y0": "waiting", "z": "flight", "s": "fetch", "y2": "waiting"}
    assert w.gathered("p0", {"z": 1}) == [w.replicas({"z": 1}), w.gather("p1", ["s"], 2), w.execute("y0", ["z"])]


def test_free_waiting_task_with_missing_input_forgets_both():
    w = W()
    w.compute("y", {"x": ()}, {"x": 1})
    assert w.free("y") == []
    assert w.states() == {}


def test_free_ready_task():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.free("b") == []
    assert w.states() == {"a": "executing"}
    assert w.succeed("a") == [w.finished("a")]  # b does not start


def test_free_executing_task_cancels_it_and_its_result_is_deleted():
    w = W()
    w.compute("x")
    assert w.free("x") == []
    assert w.states() == {"x": "cancelled"}
    assert w.succeed("x") == [w.delete("x")]  # and no TaskFinished
    assert w.states() == {}


def test_cancelled_execution_keeps_its_thread_until_it_ends():
    w = W()
    w.compute("a")
    w.compute("b")
    assert w.free("a") == []  # the thread is still busy running a
    assert w.state("b") == "ready"
    assert w.succeed("a") == [w.delete("a"), w.execute("b")]


def test_cancelled_execution_failure_is_not_reported():
    w = W()
    w.compute("x")
    w.free("x")
    assert w.fail("x") == []
    assert w.states() == {}


def test_cancelled_execution_reschedule_is_not_reported():
    w = W()
    w.compute("x")
    w.free("x")
    assert w.send(ExecuteReschedule, "x") == []
    assert w.states() == {}


def test_cancelled_seceded_task_result_is_deleted():
    w = W()
    w.compute("x")
    w.send(Secede, "x")
    assert w.free("x") == []
    assert w.state("x") == "cancelled"
    assert w.succeed("x") == [w.delete("x")]
    assert w.states() == {}


def test_free_dependent_cancels_its_in_flight_input_and_arrival_is_deleted():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    assert w.free("y") == []
    assert w.states() == {"x": "cancelled"}
    assert w.gathered("p1", {"x": 5}) == [w.delete("x")]  # and no AddReplicas
    assert w.states() == {}


def test_cancelled_in_flight_input_whose_transfer_fails_is_forgotten_quietly():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    w.free("y")
    assert w.gather_failed("p1", ["x"]) == []  # no MissingData for a key nobody wants
    assert w.states() == {}


def test_free_in_flight_replica_then_arrival_is_deleted():
    w = W()
    w.send(AcquireReplicas, ME, {"r": ("p1",)}, {"r": 3})
    assert w.free("r") == []
    assert w.states() == {"r": "cancelled"}
    assert w.gathered("p1", {"r": 3}) == [w.delete("r")]
    assert w.states() == {}


def test_free_memory_key_deletes_data():
    w = W()
    w.compute("x")
    w.succeed("x")
    assert w.free("x") == [w.delete("x")]
    assert w.states() == {}


def test_free_several_keys_deletes_in_one_instruction():
    w = W()
    w.send(DataPut, {"a": 1, "b": 2, "c": 3})
    assert w.free("a", "c", "unknown") == [w.delete("a", "c")]
    assert w.states() == {"b": "memory"}


def test_free_unknown_key_does_nothing():
    w = W()
    assert w.free("nope") == []


def test_free_in_flight_input_still_needed_locally_is_kept():
    w = W()
    w.compute("y", {"a": ("p1",)}, {"a": 5})
    w.free("a")  # the scheduler forgot a, but y (asked of us) still needs it
    assert w.gathered("p1", {"a": 5}) == [w.replicas({"a": 5}), w.execute("y", ["a"])]


# --------------------------------------------------------------------------
# Cancelled, then wanted again
# --------------------------------------------------------------------------


def test_cancelled_execution_wanted_again_is_not_run_twice():
    w = W()
    w.compute("x")
    w.free("x")
    assert w.compute("x") == []  # no second Execute
    assert w.states() == {"x": "executing"}
    assert w.succeed("x") == [w.finished("x")]  # exactly one TaskFinished
    assert w.states() == {"x": "memory"}


def test_cancelled_execution_wanted_again_then_fails_reports_error():
    w = W()
    w.compute("x")
    w.free("x")
    w.compute("x")
    assert w.fail("x") == [w.out(TaskErred, ME, "x", ERR, 100.0, 101.0)]


def test_cancelled_in_flight_input_needed_again_is_not_fetched_twice():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    w.free("y")
    assert w.compute("y2", {"x": ("p1",)}, {"x": 5}) == []  # no second GatherDeps
    assert w.states() == {"x": "flight", "y2": "waiting"}
    assert w.gathered("p1", {"x": 5}) == [w.replicas({"x": 5}), w.execute("y2", ["x"])]


def test_cancelled_in_flight_input_needed_again_learns_new_holders():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    w.free("y")
    w.compute("y2", {"x": ("p1", "p2")}, {"x": 5})
    assert w.gather_failed("p1", ["x"]) == [w.gather("p2", ["x"], 5)]


# --------------------------------------------------------------------------
# In flight as an input, then asked to compute: resumed
# --------------------------------------------------------------------------


def flight_then_compute():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    assert w.compute("x") == []  # keep the transfer; do not execute yet
    assert w.states() == {"y": "waiting", "x": "resumed"}
    return w


def test_flight_then_compute_data_arrives_memory_and_task_finished():
    w = flight_then_compute()
    outs = w.gathered("p1", {"x": 6})
    only_finished(outs[:1], "x", 6)
    assert outs[1:] == [w.execute("y", ["x"])]  # and x itself is never executed
    assert w.states() == {"y": "executing", "x": "memory"}


def test_flight_then_compute_transfer_fails_computes_here():
    w = flight_then_compute()
    assert w.gather_failed("p1", ["x"]) == [w.execute("x")]  # no MissingData: we make it
    assert w.states() == {"y": "waiting", "x": "executing"}
    assert w.succeed("x") == [w.finished("x"), w.execute("y", ["x"])]


def test_flight_then_compute_peer_lacks_key_computes_here():
    w = flight_then_compute()
    assert w.gathered("p1", {}, missing=["x"]) == [w.execute("x")]
    assert w.states() == {"y": "waiting", "x": "executing"}


def test_flight_then_compute_with_own_inputs_fetches_them_if_transfer_fails():
    w = W()
    w.compute("y", {"x": ("p1",)}, {"x": 5})
    assert w.compute("x", {"i": ("p2",)}, {"i": 2}) == []  # i is not fetched while x may still arrive
    assert w.state("x") == "resumed"
    assert w.gather_failed("p1", ["x"]) == [w.gather("p2", ["i"], 2)]
    assert w.gathered("p2", {"i": 2}) == [w.replicas({"i": 2}), w.execute("x", ["i"])]


def test_flight_then_compute_then_freed_arrival_is_deleted():
    w = flight_then_compute()
    w.free("y")
    w.free("x")
    assert w.state("x") == "cancelled"
    assert w.gathered("p1", {"x": 5}) == [w.delete("x")]
    assert w.states() == {}


# --------------------------------------------------------------------------
# Cancelled while executing, then needed as an input: resumed (next=fetch)
# --------------------------------------------------------------------------


def executing_cancelled_then_input():
    w = W()
    w.compute("x")
    w.free("x")
    assert w.compute("z", {"x": ("p1",)}, {"x": 5}) == []  # the execution may still deliver: no fetch
    assert w.states() == {"x": "resumed", "z": "waiting"}
    assert w.ws.tasks["x"].next == "fetch"
    return w


def test_cancelled_execution_needed_as_input_success_adds_replica():
    w = executing_cancelled_then_input()
    # memory, as a replica (the scheduler no longer expects a TaskFinished); z runs
    assert w.succeed("x", 9) == [w.replicas({"x": 9}), w.execute("z", ["x"])]
    assert w.states() == {"x": "memory", "z": "executing"}


def test_cancelled_execution_needed_as_input_failure_fetches():
    w = executing_cancelled_then_input()
    assert w.fail("x") == [w.gather("p1", ["x"], 5)]  # no TaskErred: fetch it instead
    assert w.states() == {"x": "flight", "z": "waiting"}


def test_cancelled_execution_needed_as_input_then_asked_to_compute():
    w = executing_cancelled_then_input()
    assert w.compute("x") == []
    assert w.state("x") == "executing"
    assert w.succeed("x") == [w.finished("x"), w.execute("z", ["x"])]


def test_resumed_input_freed_again_result_deleted():
    w = executing_cancelled_then_input()
    w.free("z")
    assert w.state("x") == "cancelled"
    assert w.succeed("x") == [w.delete("x")]
    assert w.states() == {}
