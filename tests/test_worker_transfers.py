"""WorkerState unit tests: fetching inputs from peers.

Batching per peer, the byte and peer-count limits, priority order, peers that
lack keys or cannot be reached, missing data, replicas (acquire / remove).
Each test asserts the exact instructions returned; ``validate()`` runs after
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
    ExecuteSuccess,
    FreeKeys,
    GatherDeps,
    GatherFailure,
    GatherSuccess,
    MissingData,
    RefreshWhoHas,
    RemoveReplicas,
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

def who_has(w, key):
    return list(w.ws.tasks[key].who_has)


# --------------------------------------------------------------------------
# Batching per peer
# --------------------------------------------------------------------------


def test_inputs_on_the_same_peer_come_in_one_gather():
    w = W()
    outs = w.compute("y", {"a": ("p1",), "b": ("p1",), "c": ("p1",)}, {"a": 1, "b": 2, "c": 3})
    assert outs == [w.gather("p1", ["a", "b", "c"], 6)]
    assert w.states() == {"y": "waiting", "a": "flight", "b": "flight", "c": "flight"}
    outs = w.gathered("p1", {"a": 1, "b": 2, "c": 3})
    assert outs == [w.replicas({"a": 1, "b": 2, "c": 3}), w.execute("y", ["a", "b", "c"])]


def test_inputs_on_different_peers_one_gather_each():
    w = W()
    outs = w.compute("y", {"a": ("p1",), "b": ("p2",), "c": ("p1",)}, {"a": 1, "b": 2, "c": 3})
    assert outs == [w.gather("p1", ["a", "c"], 4), w.gather("p2", ["b"], 2)]
    assert w.gathered("p2", {"b": 2}) == [w.replicas({"b": 2})]
    assert w.state("y") == "waiting"
    assert w.gathered("p1", {"a": 1, "c": 3}) == [w.replicas({"a": 1, "c": 3}), w.execute("y", ["a", "b", "c"])]


def test_input_shared_by_two_tasks_is_fetched_once():
    w = W(nthreads=2)
    assert w.compute("y1", {"x": ("p1",)}, {"x": 5}) == [w.gather("p1", ["x"], 5)]
    assert w.compute("y2", {"x": ("p1",)}, {"x": 5}) == []
    assert w.gathered("p1", {"x": 5}) == [w.replicas({"x": 5}), w.execute("y1", ["x"]), w.execute("y2", ["x"])]


def test_gather_from_one_peer_is_split_over_the_byte_limit():
    w = W(transfer_message_bytes_limit=100)
    outs = w.compute("y", {"a": ("p1",), "b": ("p1",), "c": ("p1",)}, {"a": 60, "b": 30, "c": 50})
    assert outs == [w.gather("p1", ["a", "b"], 90)]
    assert w.states() == {"y": "waiting", "a": "flight", "b": "flight", "c": "fetch"}
    # one transfer per peer at a time: c goes when the first batch is back
    assert w.gathered("p1", {"a": 60, "b": 30}) == [w.replicas({"a": 60, "b": 30}), w.gather("p1", ["c"], 50)]
    assert w.gathered("p1", {"c": 50}) == [w.replicas({"c": 50}), w.execute("y", ["a", "b", "c"])]


def test_key_larger_than_the_byte_limit_is_still_fetched_alone():
    w = W(transfer_message_bytes_limit=100)
    outs = w.compute("y", {"big": ("p1",), "small": ("p1",)}, {"big": 500, "small": 1})
    assert outs == [w.gather("p1", ["big"], 500)]
    assert w.gathered("p1", {"big": 500}) == [w.replicas({"big": 500}), w.gather("p1", ["small"], 1)]


def test_at_most_count_limit_peers_in_flight_next_starts_when_one_finishes():
    w = W(transfer_incoming_count_limit=2)
    outs = w.compute("y", {"a": ("p1",), "b": ("p2",), "c": ("p3",)}, {"a": 1, "b": 2, "c": 3})
    assert outs == [w.gather("p1", ["a"], 1), w.gather("p2", ["b"], 2)]
    assert w.state("c") == "fetch"
    assert set(w.ws.in_flight) == {"p1", "p2"}
    assert w.gathered("p2", {"b": 2}) == [w.replicas({"b": 2}), w.gather("p3", ["c"], 3)]
    assert set(w.ws.in_flight) == {"p1", "p3"}
    assert w.gathered("p3", {"c": 3}) == [w.replicas({"c": 3})]
    assert w.gathered("p1", {"a": 1}) == [w.replicas({"a": 1}), w.execute("y", ["a", "b", "c"])]


def test_fetch_holder_not_busy_is_preferred():
    w = W()
    w.compute("y1", {"a": ("p1",)}, {"a": 1})
    # b is on p1 (busy with a) and p2 (idle): fetch from p2 now
    assert w.compute("y2", {"b": ("p1", "p2")}, {"b": 2}) == [w.gather("p2", ["b"], 2)]


def test_fetch_order_follows_priority_across_peers():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y0", {"z": ("p0",)}, {"z": 1})  # occupies the only slot
    w.compute("low", {"a": ("p1",)}, {"a": 1}, priority=(5,))
    w.compute("high", {"b": ("p2",)}, {"b": 1}, priority=(1,))
    assert w.states()["a"] == w.states()["b"] == "fetch"
    assert w.gathered("p0", {"z": 1}) == [w.replicas({"z": 1}), w.gather("p2", ["b"], 1), w.execute("y0", ["z"])]
    assert w.gathered("p2", {"b": 1}) == [w.replicas({"b": 1}), w.gather("p1", ["a"], 1)]


def test_keys_in_one_gather_are_ordered_by_priority():
    w = W()
    w.compute("y0", {"z": ("p1",)}, {"z": 1})  # p1 busy
    w.compute("low", {"a": ("p1",)}, {"a": 1}, priority=(5,))
    w.compute("high", {"b": ("p1",)}, {"b": 1}, priority=(1,))
    outs = w.gathered("p1", {"z": 1})
    assert outs == [w.replicas({"z": 1}), w.gather("p1", ["b", "a"], 2), w.execute("y0", ["z"])]


def test_byte_limit_keeps_the_highest_priority_keys():
    w = W(transfer_message_bytes_limit=10)
    w.compute("y0", {"z": ("p1",)}, {"z": 1})  # p1 busy
    w.compute("low", {"a": ("p1",)}, {"a": 8}, priority=(5,))
    w.compute("high", {"b": ("p1",)}, {"b": 8}, priority=(1,))
    assert w.gathered("p1", {"z": 1})[1] == w.gather("p1", ["b"], 8)


# --------------------------------------------------------------------------
# Peers lacking data, missing keys
# --------------------------------------------------------------------------


def test_peer_missing_a_key_then_fetch_from_another_holder():
    w = W()
    w.compute("y", {"a": ("p1",), "b": ("p1", "p2")}, {"a": 1, "b": 2})
    outs = w.gathered("p1", {"a": 1}, missing=["b"])
    assert outs == [w.replicas({"a": 1}), w.gather("p2", ["b"], 2)]
    assert who_has(w, "b") == ["p2"]
    assert w.gathered("p2", {"b": 2}) == [w.replicas({"b": 2}), w.execute("y", ["a", "b"])]


def test_peer_missing_a_key_no_other_holder_reports_missing_data():
    w = W()
    w.compute("y", {"a": ("p1",), "b": ("p1",)}, {"a": 1, "b": 2})
    outs = w.gathered("p1", {"a": 1}, missing=["b"])
    assert outs == [w.missing("b", "p1"), w.replicas({"a": 1})]
    assert w.states() == {"y": "waiting", "a": "memory", "b": "missing"}
    assert w.ws.data_needed == {}


def test_refresh_who_has_brings_missing_back_to_fetch():
    w = W()
    w.compute("y", {"b": ("p1",)}, {"b": 2})
    w.gathered("p1", {}, missing=["b"])
    assert w.state("b") == "missing"
    assert w.send(RefreshWhoHas, ME, {"b": ("p3",)}) == [w.gather("p3", ["b"], 2)]
    assert w.state("b") == "flight"
    assert w.gathered("p3", {"b": 2}) == [w.replicas({"b": 2}), w.execute("y", ["b"])]


def test_refresh_who_has_with_only_ourselves_stays_missing():
    w = W()
    w.compute("y", {"b": ("p1",)}, {"b": 2})
    w.gathered("p1", {}, missing=["b"])
    assert w.send(RefreshWhoHas, ME, {"b": (ME,)}) == []
    assert w.state("b") == "missing"


def test_gather_failure_retries_another_holder():
    w = W()
    w.compute("y", {"a": ("p1", "p2")}, {"a": 3})
    assert w.gather_failed("p1", ["a"]) == [w.gather("p2", ["a"], 3)]
    assert who_has(w, "a") == ["p2"]
    assert w.gathered("p2", {"a": 3}) == [w.replicas({"a": 3}), w.execute("y", ["a"])]


def test_gather_failure_without_other_holder_reports_missing_data():
    w = W()
    w.compute("y", {"a": ("p1",)}, {"a": 3})
    assert w.gather_failed("p1", ["a"]) == [w.missing("a", "p1")]
    assert w.states() == {"y": "waiting", "a": "missing"}


def test_gather_failure_drops_peer_from_queued_fetches():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y", {"a": ("p1",)}, {"a": 1})  # in flight from p1, the only slot
    w.compute("y2", {"b": ("p1", "p2"), "c": ("p1",)}, {"b": 2, "c": 3})
    assert w.states()["b"] == w.states()["c"] == "fetch"
    outs = w.gather_failed("p1", ["a"])
    # c had no other holder: missing; a had none either; b goes to p2
    assert outs == [w.missing("c", "p1"), w.missing("a", "p1"), w.gather("p2", ["b"], 2)]
    assert w.states() == {"y": "waiting", "a": "missing", "y2": "waiting", "b": "flight", "c": "missing"}
    assert "p1" not in w.ws.data_needed_per_peer
    assert who_has(w, "b") == ["p2"]


def test_gather_failure_drops_peer_from_tasks_in_flight_elsewhere():
    w = W()
    outs = w.compute("y", {"a": ("p1", "p2"), "b": ("p2",)}, {"a": 5, "b": 5})
    assert outs == [w.gather("p1", ["a"], 5), w.gather("p2", ["b"], 5)]
    assert w.gather_failed("p2", ["b"]) == [w.missing("b", "p2")]
    # a's transfer fails too: p2 is known to be gone, so nobody else holds it
    # (not: GatherDeps(p2, ["a"]) to the peer that just failed)
    assert w.gather_failed("p1", ["a"]) == [w.missing("a", "p1")]
    assert w.state("a") == "missing"


def test_gather_success_from_a_peer_we_did_not_ask_deletes_the_data():
    w = W()
    assert w.gathered("stranger", {"q": 4}) == [w.delete("q")]
    assert w.states() == {}


def test_gather_success_nbytes_replace_the_estimate():
    w = W()
    w.compute("y", {"a": ("p1",)}, {"a": 1000})
    w.gathered("p1", {"a": 7})
    assert w.ws.tasks["a"].nbytes == 7


# --------------------------------------------------------------------------
# Replicas
# --------------------------------------------------------------------------


def test_acquire_replicas_fetches_and_reports_add_replicas():
    w = W()
    outs = w.send(AcquireReplicas, ME, {"r1": ("p1",), "r2": ("p1",)}, {"r1": 3, "r2": 4})
    assert outs == [w.gather("p1", ["r1", "r2"], 7)]
    assert w.states() == {"r1": "flight", "r2": "flight"}
    assert w.gathered("p1", {"r1": 3, "r2": 4}) == [w.replicas({"r1": 3, "r2": 4})]
    assert w.states() == {"r1": "memory", "r2": "memory"}


def test_acquire_replicas_of_key_already_here_does_nothing():
    w = W()
    w.send(DataPut, {"r": 3})
    assert w.send(AcquireReplicas, ME, {"r": ("p1",)}, {"r": 3}) == []
    assert w.states() == {"r": "memory"}


def test_acquire_replicas_are_fetched_after_compute_inputs():
    w = W(transfer_incoming_count_limit=1)
    w.compute("y0", {"z": ("p0",)}, {"z": 1})  # occupies the only slot
    w.send(AcquireReplicas, ME, {"r": ("p1",)}, {"r": 1})
    w.compute("y", {"x": ("p2",)}, {"x": 1}, priority=(7,))
    assert w.gathered("p0", {"z": 1})[1] == w.gather("p2", ["x"], 1)


def test_remove_replicas_drops_the_data():
    w = W()
    w.send(AcquireReplicas, ME, {"r": ("p1",)}, {"r": 3})
    w.gathered("p1", {"r": 3})
    assert w.send(RemoveReplicas, ME, ("r",)) == [w.delete("r")]
    assert w.states() == {}


def test_remove_replicas_keeps_data_a_local_task_still_needs():
    w = W()
    w.compute("y", {"a": ("p1",), "b": ("p2",)}, {"a": 1, "b": 2})
    w.gathered("p1", {"a": 1})
    assert w.send(RemoveReplicas, ME, ("a",)) == []
    assert w.state("a") == "memory"
    assert w.gathered("p2", {"b": 2}) == [w.replicas({"b": 2}), w.execute("y", ["a", "b"])]
    # once y is done nothing needs a, which the scheduler no longer lists here
    assert w.succeed("y") == [w.finished("y"), w.delete("a")]
    assert w.states() == {"y": "memory", "b": "memory"}


def test_remove_replicas_of_unknown_or_busy_key_does_nothing():
    w = W()
    w.compute("x")
    assert w.send(RemoveReplicas, ME, ("x", "nope")) == []
    assert w.states() == {"x": "executing"}
