"""SchedulerState unit tests: where tasks go.

The default placement policy (EarliestStart), queuing of root tasks on the
scheduler once workers are saturated, custom policies, work stealing, and
seceded (long-running) tasks giving their slot back.

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
    KeyInMemory,
    LongRunning,
    ReleaseKeys,
    RemoveWorker,
    SetTimer,
    StealRequest,
    StealResponse,
    TaskErred,
    TaskError,
    TaskFinished,
    TaskSpec,
    TimerFired,
    UpdateGraph,
)
from twofold.scheduler import SchedulerState

# --------------------------------------------------------------------------
# helpers (shared: tests/scheduler_support.py)
# --------------------------------------------------------------------------


from scheduler_support import ANY, BOOM, Sched, T, X, compute, in_memory  # noqa: F401

def queued_keys(s):
    return [ts.key for ts in s.state.queued.values()]


# --------------------------------------------------------------------------
# the default policy
# --------------------------------------------------------------------------


@pytest.mark.parametrize("big_on, small_on", [("w0", "w1"), ("w1", "w0")])
def test_earliest_start_prefers_the_worker_holding_the_larger_input(big_on, small_on):
    s = Sched()
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("big-1", workers=(big_on,)), T("small-1", workers=(small_on,)))
    s.finish(big_on, "big-1", nbytes=10_000_000)
    s.finish(small_on, "small-1", nbytes=1_000_000)
    outs = s.submit(T("z-1", "small-1", "big-1"), wanted=["z-1"])
    assert outs == [compute(big_on, "z-1", (0, 3), {"small-1": (small_on,), "big-1": (big_on,)},
                            {"small-1": 1_000_000, "big-1": 10_000_000})]


def test_earliest_start_spreads_independent_tasks_by_load_then_arrival():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0")
    s.add_worker("w1")
    outs = s.submit(*[T(f"r-{i}") for i in range(4)])
    assert [(m.worker, m.key) for m in outs] == [("w0", "r-0"), ("w1", "r-1"), ("w0", "r-2"),
                                                 ("w1", "r-3")]


def test_small_inputs_let_an_idle_worker_win_over_a_busy_holder():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1", workers=("w0",)))
    s.finish("w0", "x-1", nbytes=8)
    s.submit(T("busy-1", workers=("w0",)), T("busy-2", workers=("w0",)))
    outs = s.submit(T("y-1", "x-1"))
    assert outs == [compute("w1", "y-1", (0, 4), {"x-1": ("w0",)}, {"x-1": 8})]


def test_large_inputs_keep_the_task_on_a_holder_even_when_it_is_busy():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1", workers=("w0",)))
    s.finish("w0", "x-1", nbytes=10_000_000)
    s.submit(T("busy-1", workers=("w0",)), T("busy-2", workers=("w0",)))
    outs = s.submit(T("y-1", "x-1"))
    assert outs == [compute("w0", "y-1", (0, 4), {"x-1": ("w0",)}, {"x-1": 10_000_000})]


# --------------------------------------------------------------------------
# queuing root tasks
# --------------------------------------------------------------------------


def test_root_tasks_are_queued_once_workers_are_saturated():
    s = Sched()  # worker_saturation=2.0: ceil(2 threads * 2.0) = 4 root tasks per worker
    s.add_worker("w0", nthreads=2)
    outs = s.submit(*[T(f"r-{i}") for i in range(6)])
    assert outs == [compute("w0", f"r-{i}", (0, i + 1)) for i in range(4)]
    assert queued_keys(s) == ["r-4", "r-5"]
    assert {k: v for k, v in s.states().items() if v == "queued"} == {"r-4": "queued",
                                                                       "r-5": "queued"}
    assert not s.state.room


def test_queued_roots_are_handed_out_one_by_one_highest_priority_first():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.submit(T("a-1"), T("b-1"))
    outs = s.submit(T("c-1"), T("d-1", priority=5), T("e-1"), T("f-1", priority=5))
    assert outs == []
    assert queued_keys(s) == ["d-1", "f-1", "c-1", "e-1"]
    assert s.finish("w0", "a-1")[-1] == compute("w0", "d-1", (-5, 4))
    assert s.finish("w0", "b-1")[-1] == compute("w0", "f-1", (-5, 6))
    assert s.finish("w0", "d-1")[-1] == compute("w0", "c-1", (0, 3))
    outs = s.finish("w0", "f-1")
    assert outs == [X(KeyInMemory, client="c", key="f-1", nbytes=8, typename="int", inline=None),
                    compute("w0", "e-1", (0, 5))]
    assert not s.state.queued


def test_a_new_worker_takes_queued_roots_up_to_its_slots():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.submit(*[T(f"r-{i}") for i in range(6)])
    assert queued_keys(s) == ["r-2", "r-3", "r-4", "r-5"]
    outs = s.add_worker("w1", nthreads=1)
    assert outs == [X(SetTimer, at=60.0, token="ttl:w1"), compute("w1", "r-2", (0, 3)),
                    compute("w1", "r-3", (0, 4))]
    assert queued_keys(s) == ["r-4", "r-5"]


def test_infinite_worker_saturation_queues_nothing():
    s = Sched(worker_saturation=float("inf"))
    s.add_worker("w0", nthreads=1)
    outs = s.submit(*[T(f"r-{i}") for i in range(10)])
    assert outs == [compute("w0", f"r-{i}", (0, i + 1)) for i in range(10)]
    assert not s.state.queued
    assert set(s.states().values()) == {"processing"}


def test_short_tasks_keep_a_worker_fed_past_its_slots():
    s = Sched(pipeline_seconds=0.05)
    s.add_worker("w0", nthreads=1)
    s.submit(T("r-0"))
    s.finish("w0", "r-0", start=1.0, stop=1.001)  # the prefix "r" takes about 1 ms
    s.release("r-0")
    outs = s.submit(*[T(f"r-{i}") for i in range(1, 11)])
    assert len(outs) == 10 and not s.state.queued
    # one task of an unknown prefix (0.5 s assumed) fills the pipeline: the rest queue
    outs = s.submit(*[T(f"q-{i}") for i in range(3)])
    assert outs == [compute("w0", "q-0", (0, 12))]
    assert queued_keys(s) == ["q-1", "q-2"]


def test_releasing_a_queued_task_takes_it_off_the_queue():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.submit(*[T(f"r-{i}") for i in range(4)])
    assert s.release("r-2") == []
    assert queued_keys(s) == ["r-3"]
    assert "r-2" not in s.state.tasks


# --------------------------------------------------------------------------
# custom policies
# --------------------------------------------------------------------------


class LastCandidate:
    """Picks the last candidate offered; records what it was asked."""

    def __init__(self):
        self.calls = []

    def decide_worker(self, state, ts, candidates):
        offered = list(candidates)
        self.calls.append((ts.key, [ws.address for ws in offered]))
        return offered[-1] if offered else None


class Never:
    def decide_worker(self, state, ts, candidates):
        return None


def test_custom_policy_object_decides_placement():
    policy = LastCandidate()
    s = Sched(policy=policy)
    assert s.state.policy is policy
    for w in ("w0", "w1", "w2"):
        s.add_worker(w)
    assert s.submit(T("r-1")) == [compute("w2", "r-1", (0, 1))]
    assert policy.calls == [("r-1", ["w0", "w1", "w2"])]
    s.finish("w2", "r-1")
    outs = s.submit(T("z-1", "r-1"))
    (key, offered), = policy.calls[1:]
    assert key == "z-1" and set(offered) == {"w0", "w1", "w2"}
    assert outs == [compute(offered[-1], "z-1", (0, 2), {"r-1": ("w2",)}, {"r-1": 8})]


def test_custom_policy_may_decline_a_restricted_task():
    s = Sched(policy=Never())
    s.add_worker("w0")
    assert s.submit(T("pinned-1", workers=("w0",)), T("pinned-2", workers=("w0",))) == []
    assert s.states() == {"pinned-1": "no-worker", "pinned-2": "no-worker"}
    assert s.add_worker("w1") == [X(SetTimer, at=60.0, token="ttl:w1")]  # asked again, declined
    assert s.states() == {"pinned-1": "no-worker", "pinned-2": "no-worker"}


def test_custom_policy_may_decline_a_root_task():
    s = Sched(policy=Never())
    s.add_worker("w0")
    assert s.submit(T("root-1")) == []
    assert s.states()["root-1"] in ("queued", "no-worker")


# --------------------------------------------------------------------------
# work stealing
# --------------------------------------------------------------------------


def overloaded(x_nbytes=200_000, actor_last=False):
    """w0 holds x-1 and runs its four dependents (inputs too big to place elsewhere); w1 idles."""
    s = Sched(steal_interval=0.1)
    s.add_worker("w0")
    s.add_worker("w1")
    assert s.submit(T("x-1")) == [compute("w0", "x-1", (0, 1)), X(SetTimer, at=0.1, token="steal", background=True)]
    s.now = 0.05
    s.finish("w0", "x-1", nbytes=x_nbytes)
    specs = [T(f"y-{i}", "x-1", actor=actor_last and i == 3) for i in range(4)]
    outs = s.submit(*specs)
    assert [(m.worker, m.key) for m in outs] == [("w0", f"y-{i}") for i in range(4)]
    s.now = 0.1
    return s


def test_steal_timer_asks_the_overloaded_worker_for_its_last_task():
    s = overloaded()
    outs = s(TimerFired, token="steal")
    assert outs == [X(StealRequest, worker="w0", key="y-3"), X(SetTimer, at=0.2, token="steal", background=True)]
    assert s.state.tasks["y-3"].steal_to is s.state.workers["w1"]
    # still processing on the victim until it answers
    assert s.state.tasks["y-3"].processing_on.address == "w0"


def test_steal_released_moves_the_task_to_the_thief():
    s = overloaded()
    s(TimerFired, token="steal")
    outs = s(StealResponse, worker="w0", key="y-3", released=True)
    assert outs == [compute("w1", "y-3", (0, 5), {"x-1": ("w0",)}, {"x-1": 200_000})]
    ts = s.state.tasks["y-3"]
    assert ts.processing_on.address == "w1" and ts.steal_to is None
    assert [t.key for t in s.state.workers["w0"].processing] == ["y-0", "y-1", "y-2"]


def test_steal_refused_leaves_the_task_where_it_is():
    s = overloaded()
    s(TimerFired, token="steal")
    assert s(StealResponse, worker="w0", key="y-3", released=False) == []
    ts = s.state.tasks["y-3"]
    assert ts.processing_on.address == "w0" and ts.steal_to is None
    # and the next tick may ask again
    s.now = 0.2
    assert s(TimerFired, token="steal") == [X(StealRequest, worker="w0", key="y-3"),
                                            X(SetTimer, at=0.30000000000000004, token="steal", background=True)]


def test_steal_released_after_the_thief_left_is_not_cancelled_by_a_later_free():
    s = overloaded()
    s(TimerFired, token="steal")
    s(RemoveWorker, worker="w1")
    outs = s(StealResponse, worker="w0", key="y-3", released=True)
    assert compute("w0", "y-3", (0, 5), {"x-1": ("w0",)}, {"x-1": 200_000}) in outs
    assert not [m for m in outs if isinstance(m, FreeKeys)]


def test_actor_is_never_stolen():
    s = overloaded(actor_last=True)
    outs = s(TimerFired, token="steal")
    assert outs == [X(StealRequest, worker="w0", key="y-2"), X(SetTimer, at=0.2, token="steal", background=True)]


def test_task_with_costly_inputs_is_not_stolen():
    s = overloaded(x_nbytes=200_000_000)  # 2 s to move > 2 x 0.5 s expected run time
    assert s(TimerFired, token="steal") == [X(SetTimer, at=0.2, token="steal", background=True)]


def test_no_steal_timer_with_a_single_worker():
    s = Sched(steal_interval=0.1)
    s.add_worker("w0")
    assert s.submit(T("x-1"), T("x-2"), T("x-3")) == [compute("w0", f"x-{i}", (0, i))
                                                      for i in (1, 2)]
    assert "steal" not in s.state.timers


def test_steal_timer_lapses_when_nothing_is_processing():
    s = Sched(steal_interval=0.1)
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"))
    s.now = 0.05
    s.finish("w0", "x-1")
    s.now = 0.1
    assert s(TimerFired, token="steal") == []
    assert "steal" not in s.state.timers
    # the next task arms it again
    s.now = 0.5
    outs = s.submit(T("y-1"))
    assert outs == [compute("w0", "y-1", (0, 2)), X(SetTimer, at=0.6, token="steal", background=True)]


def test_steal_timer_is_rearmed_while_work_is_balanced():
    s = Sched(steal_interval=0.1)
    s.add_worker("w0")
    s.add_worker("w1")
    s.submit(T("x-1"), T("x-2"))
    s.now = 0.1
    assert s(TimerFired, token="steal") == [X(SetTimer, at=0.2, token="steal", background=True)]


# --------------------------------------------------------------------------
# secede
# --------------------------------------------------------------------------


def test_long_running_task_frees_its_slot_for_a_queued_root_task():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.submit(*[T(f"r-{i}") for i in range(4)])
    assert queued_keys(s) == ["r-2", "r-3"]
    outs = s(LongRunning, worker="w0", key="r-0")
    assert outs == [compute("w0", "r-2", (0, 3))]
    ws = s.state.workers["w0"]
    assert [t.key for t in ws.long_running] == ["r-0"] and ws.busy_count == 2
    assert queued_keys(s) == ["r-3"]
    assert s(LongRunning, worker="w0", key="r-0") == []  # once is enough
    # the seceded task still finishes normally
    outs = s.finish("w0", "r-0")
    assert outs == [X(KeyInMemory, client="c", key="r-0", nbytes=8, typename="int", inline=None)]
    assert queued_keys(s) == ["r-3"] and not ws.long_running


def test_long_running_from_a_worker_that_does_not_run_the_task_is_ignored():
    s = Sched()
    s.add_worker("w0", nthreads=1)
    s.add_worker("w1", nthreads=1)
    s.submit(T("r-0"))
    assert s(LongRunning, worker="w1", key="r-0") == []
    assert s(LongRunning, worker="w0", key="ghost") == []
    assert not s.state.workers["w0"].long_running
