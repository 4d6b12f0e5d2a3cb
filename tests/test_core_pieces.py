"""Small building blocks: cycle detection, the task queue, replication."""

import random

import pytest
from hypothesis import given, strategies as st

from twofold.graph import find_cycle, unknown_dependencies
from twofold.handwired import HandWired
from twofold.messages import Replicate, TaskSpec, UpdateGraph
from twofold.taskqueue import TaskQueue


def spec(key, *deps):
    return TaskSpec(key, b"f", tuple(deps))


def test_find_cycle_names_the_cycle():
    specs = [spec("a", "c"), spec("b", "a"), spec("c", "b"), spec("d")]
    cycle = find_cycle(specs)
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_find_cycle_none_for_dag_and_ignores_known_keys():
    assert find_cycle([spec("a"), spec("b", "a"), spec("c", "a", "b")]) is None
    # "a" is known: its new definition (which would close a cycle) is ignored
    assert find_cycle([spec("a", "b"), spec("b", "a")], known={"a"}) is None


def test_unknown_dependencies():
    assert unknown_dependencies([spec("a", "x"), spec("b", "a", "y")], known={"y"}) == [("a", "x")]


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=200))
def test_task_queue_matches_sorted_model(ops):
    q: TaskQueue = TaskQueue()
    model: dict = {}
    counter = 0
    for value, remove in ops:
        if remove and model:
            item = sorted(model)[value % len(model)]
            q.remove(item)
            del model[item]
        else:
            counter += 1
            item = f"t{counter}"
            q.push(item, (value, counter))
            model[item] = (value, counter)
        assert len(q) == len(model)
        expected = min(model, key=model.__getitem__) if model else None
        assert q.peek() == expected
    order = sorted(model, key=model.__getitem__)
    assert list(q) == order
    assert [q.pop() for _ in range(len(order))] == order
    assert not q
    with pytest.raises(IndexError):
        q.pop()


def test_task_queue_requeue_with_new_key():
    q: TaskQueue = TaskQueue()
    q.push("a", (5, 1))
    q.push("b", (3, 2))
    q.remove("a")
    q.push("a", (1, 3))
    assert [q.pop(), q.pop()] == ["a", "b"]


@given(st.lists(st.tuples(st.sampled_from(["push-next", "push-any", "pop", "remove", "requeue"]),
                          st.integers(0, 1000)), max_size=300))
def test_task_queue_in_order_and_out_of_order_pushes_match_a_sorted_model(ops):
    """Pushes in ascending order go to the O(1) run, the others to the heap;
    pops, removals and re-pushes with new keys interleave with both."""
    q: TaskQueue = TaskQueue()
    model: dict = {}
    counter = 0
    top = 0
    for op, value in ops:
        if op in ("push-next", "push-any"):
            counter += 1
            top += 1
            key = (top, counter) if op == "push-next" else (value, counter)
            q.push(f"t{counter}", key)
            model[f"t{counter}"] = key
        elif op == "pop":
            if model:
                first = min(model, key=model.__getitem__)
                assert q.pop() == first
                del model[first]
            else:
                with pytest.raises(IndexError):
                    q.pop()
        elif model:
            item = sorted(model)[value % len(model)]
            q.remove(item)
            if op == "requeue":
                counter += 1
                q.push(item, (value, counter))
                model[item] = (value, counter)
            else:
                del model[item]
        assert len(q) == len(model)
        assert q.peek() == (min(model, key=model.__getitem__) if model else None)
    assert [q.pop() for _ in range(len(model))] == sorted(model, key=model.__getitem__)


def test_replicate_adds_and_removes_copies():
    c = HandWired(n_workers=3)
    c.to_scheduler(UpdateGraph(c.now, "s", "c", (spec("a-1"),), ("a-1",)))
    c.drain()
    c.to_scheduler(Replicate(c.now, "r", "c", ("a-1",), None))
    c.drain()
    ts = c.scheduler.tasks["a-1"]
    assert {ws.address for ws in ts.who_has} == {"w0", "w1", "w2"}
    assert all("a-1" in store for store in c.stores.values())
    c.to_scheduler(Replicate(c.now, "r", "c", ("a-1",), 1))
    c.drain()
    assert len(ts.who_has) == 1
    assert sum("a-1" in store for store in c.stores.values()) == 1
