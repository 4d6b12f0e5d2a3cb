"""WorkerState's answer to ``DataLost``: the driver's store lost keys, the process lives on.

The machine, not the driver, decides what follows: each lost key it held in
memory is reported to the scheduler once (``MissingData`` naming this worker
as both reporter and errant holder); a key a pending local task still needs
is fetched again if another holder is known, else waits as ``missing`` for
the scheduler to recompute it; anything else is forgotten.
"""

from __future__ import annotations

from worker_support import ME, W


def test_a_lost_result_nobody_here_needs_is_reported_and_forgotten():
    w = W()
    w.compute("a")
    assert w.succeed("a") == [w.finished("a")]
    assert w.lost("a") == [w.missing("a", ME)]
    assert w.state("a") is None


def test_each_lost_key_is_reported_once_in_the_events_order():
    w = W(nthreads=2)
    for key in ("a", "b"):
        w.compute(key)
        w.succeed(key)
    assert w.lost("b", "a") == [w.missing("b", ME), w.missing("a", ME)]
    assert w.states() == {}


def test_keys_not_in_memory_are_not_reported():
    w = W()
    w.compute("x")  # executing: its result is not in the store yet
    assert w.lost("x", "never-heard-of") == []
    assert w.state("x") == "executing"
    assert w.succeed("x") == [w.finished("x")]  # the run still counts


def test_a_lost_input_of_a_pending_task_with_no_other_holder_waits_missing():
    w = W()
    w.compute("a")
    w.succeed("a")
    w.compute("x")  # holds the only thread
    assert w.compute("b", who_has={"a": [ME]}) == []
    assert w.state("b") == "ready"
    assert w.lost("a") == [w.missing("a", ME)]
    assert w.state("a") == "missing" and w.state("b") == "waiting"
    assert w.path("a")[-2:] == ["released", "missing"]
    # the scheduler recomputes it here: b runs once the thread is free
    assert w.compute("a") == []
    assert w.succeed("x") == [w.finished("x"), w.execute("a")]
    assert w.succeed("a") == [w.finished("a"), w.execute("b", deps=("a",))]


def test_a_lost_input_fetched_from_a_peer_is_fetched_again():
    w = W()
    w.compute("x")  # holds the only thread, so b waits
    assert w.compute("b", who_has={"a": ["p1"]}, nbytes={"a": 100}) == [w.gather("p1", ["a"], 100)]
    assert w.gathered("p1", {"a": 100}) == [w.replicas({"a": 100})]
    assert w.state("a") == "memory" and w.state("b") == "ready"
    assert w.lost("a") == [w.missing("a", ME), w.gather("p1", ["a"], 100)]
    assert w.state("a") == "flight" and w.state("b") == "waiting"


def test_a_task_running_on_a_lost_input_goes_on_while_a_pending_one_waits_for_it():
    """Seeded chaos (lose_data) found it: the executing task was left 'executing with its
    input missing' (the worker's invariants failed); it has the value in hand already."""
    w = W(nthreads=2)
    w.compute("a")
    w.succeed("a")
    assert w.compute("b", who_has={"a": [ME]}) == [w.execute("b", deps=("a",))]
    w.compute("x")  # the second thread
    assert w.compute("c", who_has={"a": [ME]}) == []  # ready behind x and b
    assert w.lost("a") == [w.missing("a", ME)]  # W() validates after every event
    assert w.state("b") == "executing" and w.state("c") == "waiting" and w.state("a") == "missing"
    assert w.succeed("b") == [w.finished("b")]  # its run still counts
