"""The Client against a fake backend: the exact messages it sends, how it reads replies.

``FakeBackend`` records every message the Client sends; tests play the
scheduler by handing messages to the Client's receiver.  Its ``wait_until``
runs queued hooks (each may inject messages) until the predicate holds, and
fails the test when it would block forever -- or, with a timeout, advances
its clock and reports the timeout.

The last section drives the Client against the real scheduler state machine
(``HandWired``, with invariants checked after every event) to make sure the
two sides agree on the protocol, including reference counts.
"""

from __future__ import annotations

import functools
import gc
import itertools
import pickle
import re
import threading
import traceback
from collections import deque

import pytest

import twofold
from twofold import CancelledError, Client, Future, InvalidGraph, as_completed, fire_and_forget, wait
from twofold.client import client as client_module
from twofold.client.backend import Backend
from twofold.client.spec import Dep, substitute
from twofold.errors import TimeoutError as TwofoldTimeout
from twofold.errors import error_class
from twofold.messages import (
    AddClient,
    CancelKeys,
    DesireKeys,
    ExecuteFailure,
    ExecuteSuccess,
    FireAndForget,
    GraphRefused,
    KeyCancelled,
    KeyErred,
    KeyInMemory,
    KeyLost,
    MissingData,
    ReleaseKeys,
    RemoveClient,
    RetryKeys,
    ScatteredKey,
    ScatterPlan,
    ScatterRequest,
    TaskError,
    TaskSpec,
    UpdateData,
    UpdateGraph,
    WhoHasReply,
    WhoHasRequest,
)

CID = "c1"
TOKEN = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------
# The fake backend
# --------------------------------------------------------------------------


class FakeBackend(Backend):
    scheduler_address = "fake://scheduler"

    def __init__(self, cluster=None):
        self.cluster = cluster
        self.time = 10.0
        self.receiver = None
        self.sent: list = []
        self.sends: list[list] = []  # one entry per send() call
        self.tasks: dict[bytes, tuple] = {}
        self.errors: dict[bytes, BaseException] = {}
        self.store: dict = {}
        self.missing: dict[str, str] = {}  # key -> errant worker, reported by the next fetch
        self.fetches: list = []
        self.puts: list = []
        self.hooks: deque = deque()
        self.waits = 0
        self.inline_loads = 0
        self.closed = False
        self._tokens = itertools.count()
        self._specs = itertools.count()

    # identity and time
    def client_id(self):
        return CID

    def new_token(self):
        return "%032x" % next(self._tokens)

    def now(self):
        return self.time

    # messages
    def set_receiver(self, receiver):
        self.receiver = receiver

    def send(self, msgs):
        msgs = list(msgs)
        self.sends.append(msgs)
        self.sent.extend(msgs)

    def receive(self, msg):
        self.receiver(msg)

    # user objects
    def dump_task(self, func, args, kwargs):
        ref = b"task-%d" % next(self._specs)
        self.tasks[ref] = (func, args, kwargs)
        return ref

    def load_error(self, error):
        if error.exception is not None:
            return self.errors[error.exception]
        return error_class(error.typename)(error.message)

    def load_inline(self, data):
        self.inline_loads += 1
        return pickle.loads(data)

    # blocking
    def wait_until(self, predicate, timeout=None):
        self.waits += 1
        while not predicate():
            if not self.hooks:
                if timeout is not None:
                    self.time += timeout
                    return False
                raise AssertionError("the client would block forever here")
            self.hooks.popleft()(self)
        return True

    # data plane
    def fetch(self, who_has):
        self.fetches.append(dict(who_has))
        missing = {k: who_has[k][-1] for k in who_has if k in self.missing}
        self.missing = {}
        return {k: self.store[k] for k in who_has if k not in missing}, missing

    def put(self, placement, data, free_seqs=None):
        self.puts.append((dict(placement), dict(data)))
        self.store.update(data)
        return {k: (len(pickle.dumps(v)), type(v).__name__) for k, v in data.items()}

    def close(self):
        self.closed = True

    # test helpers
    def last(self, cls):
        return [m for m in self.sent if isinstance(m, cls)][-1]

    def of(self, cls):
        return [m for m in self.sent if isinstance(m, cls)]


class FakeCluster:
    def __init__(self):
        self.backend = FakeBackend(cluster=self)

    def _connect(self, client):
        return self.backend


@pytest.fixture
def cb():
    cluster = FakeCluster()
    client = Client(cluster, set_as_default=False)
    yield client, cluster.backend
    client.close()


def sid_ok(msg, op):
    assert re.fullmatch(rf"{op}-{CID}-\d+", msg.stimulus_id), msg.stimulus_id


# scheduler stand-ins ---------------------------------------------------------


def in_memory(key, value=None, inline=True, typename=None):
    data = pickle.dumps(value) if inline else None
    return KeyInMemory(0.0, "s", CID, key, 8, typename or type(value).__name__, data)


def erred(key, exc_ref=b"e1", typename="ZeroDivisionError", message="division by zero"):
    return KeyErred(0.0, "s", CID, key, TaskError(typename, message, exc_ref, None, ""), key)


def reply_who_has(who_has, nbytes=None):
    """A hook: answer the latest WhoHasRequest."""

    def hook(b):
        req = b.last(WhoHasRequest)
        b.receive(WhoHasReply(0.0, req.stimulus_id, CID, req.request_id, who_has, nbytes or {}))

    return hook


def reply_plan(placement=None, error="", worker="w1"):
    def hook(b):
        req = b.last(ScatterRequest)
        plan = placement if placement is not None else {k: (worker,) for k in req.keys}
        b.receive(ScatterPlan(0.0, req.stimulus_id, CID, req.request_id, plan, error))

    return hook


def deliver(*msgs):
    def hook(b):
        for m in msgs:
            b.receive(m)

    return hook


def inc(x):
    return x + 1


def add(x, y=0):
    return x + y


def raise_zero():
    return 1 / 0


def captured_error():
    try:
        raise_zero()
    except ZeroDivisionError as e:
        return e


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------


def test_connect_sends_add_client_and_exposes_identity(cb):
    c, b = cb
    assert b.sent[0] == AddClient(10.0, b.sent[0].stimulus_id, CID)
    assert b.receiver == c._receive
    assert c.id == CID and c.status == "running"
    assert c.scheduler.address == "fake://scheduler"
    assert c.cluster is b.cluster
    assert repr(c) == "<Client: scheduler='fake://scheduler' id='c1' status='running' keys=0>"


def test_string_addresses_go_through_registered_factories(monkeypatch):
    import twofold.runtime.backend  # noqa: F401 - registered now, so not again into the empty table below

    monkeypatch.setattr(client_module, "_FACTORIES", {})
    made = []

    def factory(address, client):
        made.append((address, client))
        return FakeBackend()

    with pytest.raises(ValueError, match="none registered"):
        Client("fake://x", set_as_default=False)
    client_module.register_address("fake://", factory)
    c = Client("fake://x", set_as_default=False)
    assert made == [("fake://x", c)] and c.status == "running"
    with pytest.raises(ValueError, match=r"cannot connect to 'tcp://1.2.3.4:8786'.*'fake://'"):
        Client("tcp://1.2.3.4:8786")
    with pytest.raises(TypeError, match="address str or a cluster"):
        Client(42)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        Client("fake://x", n_workers=2)
    with pytest.raises(TypeError):
        client_module.register_address("", factory)


def test_connect_rejects_non_backends():
    class Bad:
        def _connect(self, client):
            return object()

    with pytest.raises(TypeError, match="not a twofold Backend"):
        Client(Bad())


# --------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------


def test_submit_sends_one_update_graph(cb):
    c, b = cb
    b.time = 12.5
    f = c.submit(inc, 1)
    msg = b.sent[-1]
    assert f.key.startswith("inc-") and TOKEN.match(f.key[4:])
    spec = TaskSpec(f.key, b"task-0", (), 0, None, False, None, 0, False)
    assert msg == UpdateGraph(12.5, msg.stimulus_id, CID, (spec,), (f.key,))
    sid_ok(msg, "submit")
    assert b.tasks[b"task-0"] == (inc, (1,), {})
    assert f.status == "pending" and not f.done()
    assert repr(f) == f"<Future: pending, key: {f.key}>"


def test_pure_keys_are_content_hashes(cb):
    c, b = cb
    assert c.submit(add, 1, y=2).key == c.submit(add, 1, y=2).key
    assert c.submit(add, 1, y=2).key != c.submit(add, 2, y=2).key
    assert c.submit(add, x=1, y=2).key == c.submit(add, y=2, x=1).key  # kwargs order does not matter
    assert c.submit(inc, 1).key != c.submit(add, 1).key.replace("add", "inc")
    assert c.submit(inc, {"b", "a", "c"}).key == c.submit(inc, {"c", "a", "b"}).key
    assert c.submit(inc, 1, pure=False).key == "inc-%032x" % 0
    assert c.submit(inc, 1, pure=False).key == "inc-%032x" % 1
    assert c.submit(inc, 1, key="mine").key == "mine"
    assert c.submit(lambda x: x, 1).key.startswith("lambda-")
    assert c.submit(functools.partial(add, y=1), 1).key.startswith("add-")

    class Callable:
        def __call__(self, x):
            return x

    assert c.submit(Callable(), 1).key.startswith("Callable-")


def test_unpicklable_arguments_get_fresh_tokens(cb):
    c, b = cb
    lock = threading.Lock()  # cloudpickle cannot pickle it; the fake dump_task does not care
    assert c.submit(inc, lock).key == "inc-%032x" % 0


def test_same_key_twice_sends_once_and_shares_state(cb):
    c, b = cb
    f1 = c.submit(inc, 1)
    n = len(b.sent)
    f2 = c.submit(inc, 1)
    assert len(b.sent) == n
    assert f1 == f2 and f1 is not f2 and hash(f1) == hash(f2) and len({f1, f2}) == 1
    assert f1._state is f2._state and f1._state.refs == 2


def test_submit_options_become_task_spec_fields(cb):
    c, b = cb
    c.submit(inc, 1, priority=5, workers="w1", retries=2, resources={"GPU": 1}, actor=True)
    spec = b.last(UpdateGraph).tasks[0]
    assert (spec.priority, spec.workers, spec.retries, spec.resources, spec.actor) == (5, ("w1",), 2, {"GPU": 1}, True)
    assert not spec.allow_other_workers
    c.submit(inc, 2, workers=["w1", "w2", "w1"], allow_other_workers=True, actors=True)
    spec = b.last(UpdateGraph).tasks[0]
    assert (spec.workers, spec.allow_other_workers, spec.actor) == (("w1", "w2"), True, True)
    f = c.submit(inc, 3, workers=[], resources={})
    spec = b.last(UpdateGraph).tasks[0]
    assert (spec.workers, spec.resources) == (None, None)
    # actors are stateful: never deduplicated by content
    assert c.submit(inc, 1, actor=True).key != c.submit(inc, 1, actor=True).key
    assert f.key.startswith("inc-")


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c: c.submit(42), TypeError, "callable"),
        (lambda c: c.submit(inc, 1, retries=-1), ValueError, "retries"),
        (lambda c: c.submit(inc, 1, retries="2"), TypeError, "retries"),
        (lambda c: c.submit(inc, 1, priority=1.5), TypeError, "priority"),
        (lambda c: c.submit(inc, 1, workers=3), TypeError, "workers"),
        (lambda c: c.submit(inc, 1, workers=["w1", 2]), TypeError, "workers"),
        (lambda c: c.submit(inc, 1, resources=["GPU"]), TypeError, "resources"),
        (lambda c: c.submit(inc, 1, resources={"GPU": -1}), ValueError, "resources"),
        (lambda c: c.submit(inc, 1, allow_other_workers=True), ValueError, "workers="),
        (lambda c: c.submit(inc, 1, key=3), TypeError, "key"),
        (lambda c: c.submit(inc, 1, key=""), ValueError, "key"),
        (lambda c: c.map(42, [1]), TypeError, "callable"),
        (lambda c: c.map(inc), TypeError, "at least one iterable"),
        (lambda c: c.map(inc, 5), TypeError, "iterables"),
        (lambda c: c.map(inc, [1, 2], key=["a"]), ValueError, "1 keys for 2 calls"),
        (lambda c: c.map(inc, [1], key=[1]), TypeError, "key"),
        (lambda c: c.map(inc, [1], batch_size=0), ValueError, "batch_size"),
        (lambda c: c.map(inc, [1], batch_size=1.0), TypeError, "batch_size"),
        (lambda c: c.map(inc, [1], retries=-2), ValueError, "retries"),
        (lambda c: c.gather([], errors="ignore"), ValueError, "errors="),
        (lambda c: c.scatter(iter([1])), TypeError, "iterator"),
        (lambda c: c.scatter({1: 2}), TypeError, "dict key"),
        (lambda c: c.scatter(1, workers=5), TypeError, "workers"),
        (lambda c: c.scatter(1, broadcast="yes"), TypeError, "broadcast"),
        (lambda c: c.scatter(1, timeout=-1), ValueError, "timeout"),
        (lambda c: c.cancel([], force="yes"), TypeError, "force"),
    ],
)
def test_bad_input_raises_before_anything_is_sent(cb, call, exc, match):
    c, b = cb
    n = len(b.sent)
    with pytest.raises(exc, match=match):
        call(c)
    assert len(b.sent) == n


def test_serialization_failure_sends_nothing(cb):
    c, b = cb

    def boom(func, args, kwargs):
        raise pickle.PicklingError("cannot pickle")

    b.dump_task = boom
    n = len(b.sent)
    with pytest.raises(pickle.PicklingError):
        c.submit(inc, 1)
    with pytest.raises(pickle.PicklingError):
        c.map(inc, [1, 2])
    assert len(b.sent) == n and not c._states


def test_futures_in_arguments_become_dependencies(cb):
    c, b = cb
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    z = c.submit(add, x, y=[y, {"k": x}, 3])
    spec = b.last(UpdateGraph).tasks[0]
    assert spec.dependencies == (x.key, y.key)
    func, args, kwargs = b.tasks[spec.run_spec]
    assert func is add and args == (Dep(x.key),) and kwargs == {"y": [Dep(y.key), {"k": Dep(x.key)}, 3]}
    assert substitute(kwargs, {x.key: 2, y.key: 3}) == {"y": [3, {"k": 2}, 3]}
    # the key depends on the futures' keys, not on the Future objects
    assert c.submit(add, x, y=[y, {"k": x}, 3]).key == z.key


def test_futures_of_another_client_are_refused(cb):
    c, b = cb
    other_cluster = FakeCluster()
    other = Client(other_cluster, set_as_default=False)
    f = other.submit(inc, 1)
    n = len(b.sent)
    with pytest.raises(ValueError, match="belongs to another client|cannot be an argument"):
        c.submit(inc, f)
    with pytest.raises(ValueError, match="another client"):
        c.gather([f])
    with pytest.raises(ValueError, match="another client"):
        c.cancel(f)
    assert len(b.sent) == n
    other.close()


# --------------------------------------------------------------------------
# map
# --------------------------------------------------------------------------


def test_map_sends_one_graph_with_zip_semantics(cb):
    c, b = cb
    before = len(b.sends)
    fs = c.map(add, [1, 2, 3], [10, 20])
    assert len(fs) == 2 and len(b.sends) == before + 1
    msg = b.last(UpdateGraph)
    sid_ok(msg, "map")
    assert msg.wanted == tuple(f.key for f in fs) == tuple(s.key for s in msg.tasks)
    assert [b.tasks[s.run_spec][1] for s in msg.tasks] == [(1, 10), (2, 20)]
    assert fs[0].key == c.submit(add, 1, 10).key  # map and submit name the same call alike


def test_map_keys_prefix_list_and_duplicates(cb):
    c, b = cb
    fs1 = c.map(inc, [1, 2], key="step")
    assert all(f.key.startswith("step-") for f in fs1)
    fs2 = c.map(inc, [1, 2], key=["a", "b"])
    assert [f.key for f in fs2] == ["a", "b"]
    fs3 = c.map(inc, [7, 7, 8])
    msg = b.last(UpdateGraph)
    assert fs3[0] == fs3[1] and len(msg.tasks) == 2 and msg.wanted == (fs3[0].key, fs3[2].key)
    fs4 = c.map(inc, [1, 2], pure=False)
    assert [f.key for f in fs4] == ["inc-%032x" % 0, "inc-%032x" % 1]
    n = len(b.sent)
    assert c.map(inc, []) == [] and len(b.sent) == n
    assert not b.of(ReleaseKeys)


def test_map_batches_are_separate_graphs_in_one_send(cb):
    c, b = cb
    x = c.submit(inc, 0)
    before = len(b.sends)
    fs = c.map(add, range(5), y=x, batch_size=2, priority=3)
    assert len(b.sends) == before + 1
    graphs = b.sends[-1]
    assert [len(g.tasks) for g in graphs] == [2, 2, 1]
    assert [k for g in graphs for k in g.wanted] == [f.key for f in fs]
    assert len({g.stimulus_id for g in graphs}) == 3
    assert all(s.dependencies == (x.key,) and s.priority == 3 for g in graphs for s in g.tasks)


# --------------------------------------------------------------------------
# Receiving statuses
# --------------------------------------------------------------------------


def test_key_in_memory_finishes_and_inline_results_need_no_round_trip(cb):
    c, b = cb
    f = c.submit(inc, 1)
    seen = []
    f.add_done_callback(seen.append)
    b.receive(in_memory(f.key, 2))
    assert f.status == "finished" and f.done() and seen == [f]
    assert repr(f) == f"<Future: finished, type: int, key: {f.key}>"
    n = len(b.sent)
    assert b.inline_loads == 0  # decoded lazily
    assert f.result() == 2 and f.result() == 2
    assert b.inline_loads == 1 and len(b.sent) == n and b.waits == 0
    later = []
    f.add_done_callback(later.append)  # already done: runs at once
    assert later == [f]
    b.receive(in_memory(f.key, 2))  # a repeat does not call callbacks again
    assert seen == [f] and later == [f]


def test_messages_for_other_clients_or_unknown_keys_are_ignored(cb):
    c, b = cb
    f = c.submit(inc, 1)
    b.receive(KeyInMemory(0.0, "s", "someone-else", f.key, 8, "int", None))
    b.receive(in_memory("unknown-key", 1))
    b.receive(WhoHasReply(0.0, "s", CID, "no-such-request", {}, {}))
    assert f.status == "pending"


def test_result_fetches_from_workers_through_who_has(cb):
    c, b = cb
    f = c.submit(inc, 1)
    b.receive(in_memory(f.key, inline=False, typename="int"))
    b.store[f.key] = 2
    b.hooks.append(reply_who_has({f.key: ("w1", "w2")}, {f.key: 8}))
    assert f.result() == 2
    req = b.last(WhoHasRequest)
    assert req == WhoHasRequest(req.now, req.stimulus_id, CID, req.request_id, (f.key,))
    assert req.request_id == req.stimulus_id
    assert b.fetches == [{f.key: ("w1", "w2")}]
    assert not c._requests


def test_missing_data_is_reported_and_the_key_awaited_again(cb):
    c, b = cb
    f = c.submit(inc, 1)
    b.receive(in_memory(f.key, inline=False, typename="int"))
    b.store[f.key] = 2
    b.missing = {f.key: "w2"}
    b.hooks.extend(
        [
            reply_who_has({f.key: ("w2",)}),  # the holder has lost it
            reply_who_has({f.key: ()}),  # ... and it was the last one
            deliver(KeyLost(0.0, "s", CID, f.key)),
            deliver(in_memory(f.key, inline=False, typename="int")),  # recomputed
            reply_who_has({f.key: ("w3",)}),
        ]
    )
    assert f.result() == 2
    report = b.last(MissingData)
    assert report == MissingData(report.now, report.stimulus_id, CID, f.key, "w2")
    assert len(b.of(WhoHasRequest)) == 3
    assert b.fetches == [{f.key: ("w2",)}, {f.key: ("w3",)}]


def test_errors_reraise_with_type_message_and_traceback(cb):
    c, b = cb
    f = c.submit(raise_zero)
    g = c.submit(inc, f)
    seen = []
    g.add_done_callback(seen.append)
    original = captured_error()
    b.errors[b"e1"] = original
    b.receive(erred(f.key))
    b.receive(erred(g.key))
    assert f.status == g.status == "error" and seen == [g]
    assert f.exception() is original
    assert f.traceback() is original.__traceback__
    for _ in range(2):  # raising again does not grow the traceback
        with pytest.raises(ZeroDivisionError, match="division by zero") as info:
            g.result()
        assert info.value is original
        frames = [fr.name for fr in traceback.extract_tb(info.value.__traceback__)]
        assert frames[-2:] == ["captured_error", "raise_zero"]
        assert len(frames) <= 5  # the caller, two frames of ours, the task's
        assert info.value.__context__ is None
    assert repr(f) == f"<Future: error, key: {f.key}>"


def test_a_raised_error_does_not_keep_its_futures_alive(cb):
    c, b = cb
    f = c.submit(raise_zero)
    g = c.submit(inc, 1)
    b.errors[b"e1"] = captured_error()
    b.receive(erred(f.key))
    b.receive(in_memory(g.key, 2))
    with pytest.raises(ZeroDivisionError):
        f.result()
    with pytest.raises(ZeroDivisionError):
        c.gather([g, [f]])
    keys = (f.key, g.key)
    del f, g
    gc.collect()
    c.submit(inc, 3)
    assert b.of(ReleaseKeys)[-1].keys == keys  # b.errors still holds the exception


def test_pure_keys_do_not_depend_on_the_hash_seed():
    import subprocess
    import sys

    code = (
        "import operator; from twofold.client.options import CallHasher, data_token;"
        "print(CallHasher(operator.add).token(({'x', 'y', 'z'}, [frozenset('abc')]), {'k': {'p', 'q'}}),"
        " data_token({'u', 'v', 'w'}))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, capture_output=True,
                       text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1 and len(outs.pop().split()) == 2


def test_scheduler_made_errors_are_rebuilt_from_their_type_name(cb):
    c, b = cb
    f = c.submit(inc, 1)
    b.receive(erred(f.key, exc_ref=None, typename="KilledWorker", message="died 4 times"))
    with pytest.raises(twofold.KilledWorker, match="died 4 times"):
        f.result()
    assert f.traceback() is None


def test_cancelled_and_lost_statuses(cb):
    c, b = cb
    f = c.submit(inc, 1)
    b.receive(in_memory(f.key, 2))
    b.receive(KeyLost(0.0, "s", CID, f.key))
    assert f.status == "lost" and not f.done() and f._state.inline is None
    b.receive(in_memory(f.key, 2))
    assert f.status == "finished"
    g = c.submit(inc, 2)
    b.receive(KeyCancelled(0.0, "s", CID, g.key, "no longer known"))
    assert g.status == "cancelled" and g.cancelled() and g.done()
    with pytest.raises(CancelledError, match="no longer known"):
        g.result()
    assert g.exception() is None
    # the scheduler dropped our reference: a new future for the key asks again
    h = Future(g.key, c)
    assert b.sent[-1] == DesireKeys(b.sent[-1].now, b.sent[-1].stimulus_id, CID, (g.key,))
    assert h.status == "pending" and g.status == "cancelled"


def test_refused_graph_errs_its_futures_and_takes_no_reference(cb):
    c, b = cb
    f = c.submit(inc, 1)
    msg = b.last(UpdateGraph)
    b.receive(GraphRefused(0.0, msg.stimulus_id, CID, (f.key,), TaskError("InvalidGraph", "dependency cycle")))
    assert f.status == "error"
    with pytest.raises(InvalidGraph, match="dependency cycle"):
        f.result()
    assert f.key not in c._states
    g = c.submit(inc, 1)  # submitting again sends the graph again
    again = b.last(UpdateGraph)
    assert again is not msg and again.wanted == (g.key,)
    # a late refusal of the first graph does not touch the new incarnation
    b.receive(GraphRefused(0.0, msg.stimulus_id, CID, (f.key,), TaskError("InvalidGraph", "old")))
    assert g.status == "pending"


# --------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------


def test_temporary_future_argument_is_not_released_before_its_dependent_arrives(cb):
    c, b = cb
    outer = c.submit(inc, c.submit(inc, 1))  # the inner future is dropped while submitting
    gc.collect()
    c._flush()
    msgs = [m for batch in b.sends for m in batch]
    graph_at = max(i for i, m in enumerate(msgs) if isinstance(m, UpdateGraph) and outer.key in m.wanted)
    dep = next(m for m in msgs if isinstance(m, UpdateGraph) and outer.key in m.wanted).tasks[-1].dependencies[0]
    releases = [i for i, m in enumerate(msgs) if isinstance(m, ReleaseKeys) and dep in m.keys]
    assert releases and all(i > graph_at for i in releases)


def test_release_on_garbage_collection_rides_with_the_next_send(cb):
    c, b = cb
    f = c.submit(inc, 1)
    f2 = c.submit(inc, 1)
    key = f.key
    n = len(b.sent)
    del f
    gc.collect()
    assert len(b.sent) == n  # nothing from __del__
    keep = c.submit(inc, 99)
    assert not any(isinstance(m, ReleaseKeys) for m in b.sent)  # f2 still holds it
    del f2
    gc.collect()
    g = c.submit(inc, 100)
    # the release follows the new graph: a dropped future may be its dependency
    graph, release = b.sends[-1]
    assert release == ReleaseKeys(release.now, release.stimulus_id, CID, (key,))
    sid_ok(release, "release")
    assert graph.wanted == (g.key,)
    assert key not in c._states and keep.key in c._states


def test_release_is_flushed_before_blocking(cb):
    c, b = cb
    f = c.submit(inc, 1)
    g = c.submit(inc, 2)
    key = f.key
    del f
    gc.collect()

    def check(b):
        assert b.last(ReleaseKeys).keys == (key,)
        b.receive(in_memory(g.key, 3))

    b.hooks.append(check)
    assert wait([g]).done == {g}


def test_a_driver_can_flush_releases_when_idle(cb):
    c, b = cb
    f = c.submit(inc, 1)
    key = f.key
    c._flush()
    assert not b.of(ReleaseKeys)
    del f
    gc.collect()
    c._flush()
    assert b.sent[-1].keys == (key,) and isinstance(b.sent[-1], ReleaseKeys)


def test_resubmitting_a_dropped_key_before_the_flush_keeps_the_reference(cb):
    c, b = cb
    f = c.submit(inc, 1)
    key = f.key
    del f
    gc.collect()
    f = c.submit(inc, 1)  # counted before the drop is settled: no release, no new graph
    assert f.key == key and not b.of(ReleaseKeys) and len(b.of(UpdateGraph)) == 1
    assert c._states[key].refs == 1


def test_future_constructor_desires_unknown_keys_only(cb):
    c, b = cb
    f = c.submit(inc, 1)
    n = len(b.sent)
    g = Future(f.key, c)
    assert len(b.sent) == n and g == f and f._state.refs == 2
    h = Future("x-1", c)
    msg = b.sent[-1]
    assert msg == DesireKeys(msg.now, msg.stimulus_id, CID, ("x-1",))
    sid_ok(msg, "desire")
    b.receive(in_memory("x-1", 5))
    assert h.result() == 5
    with pytest.raises(TypeError):
        Future(3, c)


def test_futures_dropped_in_another_thread_are_released_later(cb):
    c, b = cb
    box = [c.submit(inc, 1)]
    key = box[0].key
    t = threading.Thread(target=box.clear)
    t.start()
    t.join()
    c.submit(inc, 2)
    assert b.of(ReleaseKeys)[-1].keys == (key,)


def test_results_delivered_by_another_thread(cb):
    c, b = cb
    fs = c.map(inc, range(50))
    cond = threading.Condition()

    def wait_until(predicate, timeout=None):  # like the runtime: block until notified
        with cond:
            return cond.wait_for(predicate, timeout=10)

    def scheduler():
        for i, f in enumerate(reversed(fs)):
            b.receive(in_memory(f.key, 50 - i))
            with cond:
                cond.notify_all()

    b.wait_until = wait_until
    seen = []
    for f in fs:
        f.add_done_callback(lambda f: seen.append(f.key))
    t = threading.Thread(target=scheduler)
    t.start()
    assert c.gather(fs) == list(range(1, 51))
    t.join()
    assert seen == [f.key for f in reversed(fs)]


# --------------------------------------------------------------------------
# cancel, retry, fire_and_forget
# --------------------------------------------------------------------------


def test_cancel_sends_cancel_keys_and_cancels_at_once(cb):
    c, b = cb
    x = c.submit(inc, 1)
    y = c.submit(inc, 2)
    seen = []
    x.add_done_callback(seen.append)
    c.cancel([x, y, x], force=True)
    msg = b.last(CancelKeys)
    assert msg == CancelKeys(msg.now, msg.stimulus_id, CID, (x.key, y.key), True)
    sid_ok(msg, "cancel")
    assert x.cancelled() and y.cancelled() and seen == [x]
    n = len(b.sent)
    x.cancel()  # already let go of: nothing to send
    assert len(b.sent) == n
    with pytest.raises(CancelledError):
        x.result()
    del x, y
    gc.collect()
    c.submit(inc, 3)
    assert not b.of(ReleaseKeys)  # the cancel already dropped the references


def test_cancel_echoes_spare_a_resubmitted_key_but_reach_dependents(cb):
    c, b = cb
    x = c.submit(inc, 1)
    dep = c.submit(inc, x)
    x.cancel()
    cancel = b.last(CancelKeys)
    assert cancel.keys == (x.key,) and cancel.force is False
    x2 = c.submit(inc, 1)  # same key again, before the scheduler's answer arrives
    b.receive(KeyCancelled(0.0, cancel.stimulus_id, CID, x.key))
    b.receive(KeyCancelled(0.0, cancel.stimulus_id, CID, dep.key))
    assert x2.status == "pending" and dep.status == "cancelled"
    # someone else's forced cancel does reach it
    b.receive(KeyCancelled(0.0, "cancel-c2-7", CID, x2.key))
    assert x2.status == "cancelled"


def test_retry_resends_erred_keys_only(cb):
    c, b = cb
    f = c.submit(raise_zero)
    g = c.submit(inc, 1)
    b.errors[b"e1"] = captured_error()
    b.receive(erred(f.key))
    n = len(b.sent)
    g.retry()
    assert len(b.sent) == n
    c.retry([f, g])
    msg = b.last(RetryKeys)
    assert msg == RetryKeys(msg.now, msg.stimulus_id, CID, (f.key,))
    assert f.status == "pending" and f._state.error is None
    b.receive(in_memory(f.key, 1))
    assert f.result() == 1


def test_fire_and_forget_finds_futures_in_containers(cb):
    c, b = cb
    x, y, z = c.map(inc, [1, 2, 3])
    fire_and_forget([x, (y, {"k": z}), 5, "text", {x}])
    msg = b.last(FireAndForget)
    assert msg == FireAndForget(msg.now, msg.stimulus_id, CID, (x.key, y.key, z.key))
    assert len(b.of(FireAndForget)) == 1


# --------------------------------------------------------------------------
# gather
# --------------------------------------------------------------------------


def test_gather_keeps_nested_structures(cb):
    c, b = cb
    x, y = c.map(inc, [1, 2])
    b.receive(in_memory(x.key, 2))
    b.receive(in_memory(y.key, 3))
    assert c.gather(x) == 2
    data = [x, (y, 7), {"a": x, "b": [y, "s"]}, {x}, frozenset([y]), None]
    assert c.gather(data) == [2, (3, 7), {"a": 2, "b": [3, "s"]}, {2}, frozenset([3]), None]
    assert list(c.gather(iter([x, y]))) == [2, 3]


def test_gather_waits_then_raises_or_skips(cb):
    c, b = cb
    x, y, z = c.map(inc, [1, 2, 3])
    b.errors[b"e1"] = captured_error()
    b.hooks.append(deliver(in_memory(x.key, 2), erred(y.key)))
    with pytest.raises(ZeroDivisionError):
        c.gather([x, y, z])  # raises without waiting for z
    b.hooks.append(deliver(KeyCancelled(0.0, "s", CID, z.key)))
    assert c.gather([x, y, z, (y, x), {"y": y, "x": x}], errors="skip") == [2, (2,), {"x": 2}]
    assert c.gather(y, errors="skip") is None
    with pytest.raises(CancelledError):
        c.gather({"z": z})


def test_gather_of_the_same_key_fetches_once(cb):
    c, b = cb
    x = c.submit(inc, 1)
    b.receive(in_memory(x.key, inline=False, typename="int"))
    b.store[x.key] = 2
    b.hooks.append(reply_who_has({x.key: ("w1",)}))
    assert c.gather([x, x, Future(x.key, c)]) == [2, 2, 2]
    assert len(b.fetches) == 1


def test_result_timeout(cb):
    c, b = cb
    f = c.submit(inc, 1)
    with pytest.raises(TwofoldTimeout, match="within 2.5 s"):
        f.result(timeout=2.5)
    assert b.time == 12.5
    with pytest.raises(TimeoutError):  # the builtin catches it too
        f.exception(timeout=1)
    with pytest.raises(TwofoldTimeout):
        f.traceback(timeout=0)


def test_who_has(cb):
    c, b = cb
    x, y = c.map(inc, [1, 2])
    b.hooks.append(reply_who_has({x.key: ("w1",), y.key: ()}))
    assert c.who_has() == {x.key: ["w1"], y.key: []}
    b.hooks.append(reply_who_has({x.key: ("w1", "w2")}))
    assert c.who_has([x]) == {x.key: ["w1", "w2"]}
    assert b.last(WhoHasRequest).keys == (x.key,)


# --------------------------------------------------------------------------
# scatter
# --------------------------------------------------------------------------


def test_scatter_one_object(cb):
    c, b = cb
    b.hooks.append(reply_plan(worker="w2"))
    f = c.scatter(42)
    req = b.last(ScatterRequest)
    key = req.keys[0]
    assert key.startswith("int-") and TOKEN.match(key[4:])
    assert req == ScatterRequest(req.now, req.stimulus_id, CID, req.request_id, (key,), None, False)
    assert b.puts == [({key: ("w2",)}, {key: 42})]
    upd = b.last(UpdateData)
    assert upd == UpdateData(upd.now, upd.stimulus_id, CID, (ScatteredKey(key, len(pickle.dumps(42)), "int", ("w2",)),))
    sid_ok(upd, "scatter")
    assert f.key == key and f.status == "finished" and f.type == "int"
    b.hooks.append(reply_who_has({key: ("w2",)}))
    assert f.result() == 42


def test_scatter_shapes_and_keys(cb):
    c, b = cb
    b.hooks.extend(reply_plan() for _ in range(6))
    fs = c.scatter([1, 2, 1])
    assert isinstance(fs, list) and fs[0] == fs[2] and fs[0] != fs[1]
    assert b.last(ScatterRequest).keys == (fs[0].key, fs[1].key)  # equal data, one key
    t = c.scatter((1, "a"))
    assert isinstance(t, tuple) and t[0] == fs[0]
    d = c.scatter({"x": 1, "y": [2]}, workers=["w1"], broadcast=True)
    req = b.last(ScatterRequest)
    assert (req.keys, req.workers, req.broadcast) == (("x", "y"), ("w1",), True)
    assert set(d) == {"x", "y"} and d["x"].key == "x" and d["y"].type == "list"
    u = c.scatter([1, 1], hash=False)
    assert [f.key for f in u] == ["int-%032x" % 0, "int-%032x" % 1]
    assert c.scatter([]) == [] and c.scatter({}) == {}


def test_scatter_refused_or_unanswered(cb):
    c, b = cb
    b.hooks.append(reply_plan(placement={}, error="none of the workers ['w9'] is connected"))
    with pytest.raises(ValueError, match="w9"):
        c.scatter(1, workers="w9")
    assert not b.puts and not b.of(UpdateData) and not c._states
    with pytest.raises(TwofoldTimeout):
        c.scatter(1, timeout=5)


def test_scattering_a_held_key_again_keeps_one_reference(cb):
    c, b = cb
    b.hooks.extend([reply_plan(), reply_plan()])
    f = c.scatter(7)
    g = c.scatter(7)
    upd, rel = b.sends[-1]
    assert isinstance(upd, UpdateData) and rel == ReleaseKeys(rel.now, rel.stimulus_id, CID, (f.key,))
    assert f == g and f._state.refs == 2


# --------------------------------------------------------------------------
# wait and as_completed
# --------------------------------------------------------------------------


def test_wait_all_and_first_completed(cb):
    c, b = cb
    x, y, z = c.map(inc, [1, 2, 3])
    b.hooks.append(deliver(in_memory(y.key, 3)))
    done, not_done = wait([x, y, z], return_when="FIRST_COMPLETED")
    assert done == {y} and not_done == {x, z}
    b.hooks.append(deliver(in_memory(x.key, 2), KeyCancelled(0.0, "s", CID, z.key)))
    result = wait([x, y, z])
    assert result.done == {x, y, z} and result.not_done == set()
    assert wait(x).done == {x}
    with pytest.raises(ValueError, match="return_when"):
        wait([x], return_when="SOMETIMES")
    with pytest.raises(TypeError):
        wait([x, 3])


def test_wait_timeout(cb):
    c, b = cb
    x, y = c.map(inc, [1, 2])
    b.receive(in_memory(x.key, 2))
    with pytest.raises(TwofoldTimeout, match="1 of 2 futures not done after 3 s"):
        wait([x, y], timeout=3)
    with pytest.raises(TwofoldTimeout):
        wait([y], timeout=3, return_when="FIRST_COMPLETED")
    assert wait([x, y], timeout=3, return_when="FIRST_COMPLETED").done == {x}


def test_as_completed_yields_in_completion_order_and_accepts_more(cb):
    c, b = cb
    x, y, z = c.map(inc, [1, 2, 3])
    b.receive(in_memory(z.key, 4))
    ac = as_completed([x, y])
    ac.add(z)
    assert ac.count() == len(ac) == 3 and not ac.is_empty()
    b.hooks.extend([deliver(in_memory(y.key, 3)), deliver(in_memory(x.key, 2))])
    out = []
    for f in ac:
        out.append(f)
        if f is z:
            w = c.submit(inc, 10)
            ac.update([w])
            b.hooks.append(deliver(in_memory(w.key, 11)))
    assert out == [z, y, x, w]
    assert ac.is_empty() and list(ac) == []


def test_as_completed_with_results_batches_and_errors(cb):
    c, b = cb
    x, y, z = c.map(inc, [1, 2, 3])
    b.errors[b"e1"] = captured_error()
    b.receive(in_memory(x.key, 2))
    b.receive(in_memory(y.key, 3))
    ac = as_completed([x, y, z, x], with_results=True)
    assert ac.count() == 4
    b.hooks.append(deliver(erred(z.key)))
    batches = ac.batches()
    assert next(batches) == [(x, 2), (y, 3), (x, 2)]
    with pytest.raises(ZeroDivisionError):
        next(batches)
    ac = as_completed([x, z], with_results=True, raise_errors=False)
    (f1, r1), (f2, r2) = list(ac)
    assert (f1, r1) == (x, 2) and f2 is z and isinstance(r2, ZeroDivisionError)


# --------------------------------------------------------------------------
# Default client, close, pickling
# --------------------------------------------------------------------------


def test_current_default_and_get_client(monkeypatch):
    monkeypatch.setattr(client_module, "_defaults", [])
    with pytest.raises(ValueError, match="No clients found"):
        Client.current()
    with pytest.raises(ValueError):
        twofold.default_client()
    a = Client(FakeCluster())
    b = Client(FakeCluster())
    quiet = Client(FakeCluster(), set_as_default=False)
    assert Client.current() is b and twofold.default_client() is b and twofold.get_client() is b
    assert twofold.default_client(quiet) is quiet
    with quiet.as_current():
        assert Client.current() is quiet and Client.current(allow_global=False) is quiet
    with pytest.raises(ValueError):
        Client.current(allow_global=False)
    b.close()
    assert Client.current() is a
    assert Future("k-1").client is a
    monkeypatch.setattr(client_module, "_task_client_hook", lambda: quiet)
    assert twofold.get_client() is quiet and Client.current() is quiet
    monkeypatch.setattr(client_module, "_task_client_hook", lambda: None)
    assert twofold.get_client() is a
    a.close()
    with pytest.raises(ValueError, match="No global client"):
        twofold.get_client()
    quiet.close()


def test_close_releases_everything_and_cancels_pending(cb):
    c, b = cb
    x, y = c.map(inc, [1, 2])
    b.receive(in_memory(x.key, 2))
    seen = []
    y.add_done_callback(seen.append)
    with c:
        pass
    msg = b.sent[-1]
    assert msg == RemoveClient(msg.now, msg.stimulus_id, CID) and b.closed
    assert c.status == "closed" and y.cancelled() and seen == [y] and x.status == "finished"
    assert x.result() == 2  # an inline copy is still here
    with pytest.raises(RuntimeError, match="closed"):
        c.submit(inc, 1)
    with pytest.raises(RuntimeError, match="closed"):
        Future("k", c)
    n = len(b.sent)
    c.close()
    del x, y
    gc.collect()
    assert len(b.sent) == n


def test_futures_pickle_by_key_and_reattach_to_the_task_client(cb, monkeypatch):
    c, b = cb
    f = c.submit(inc, 1)
    monkeypatch.setattr(client_module, "_task_client_hook", lambda: c)
    g = pickle.loads(pickle.dumps(f))
    assert g == f and g is not f and g._state is f._state


def test_callback_errors_are_logged_not_raised(cb, caplog):
    c, b = cb
    f = c.submit(inc, 1)

    def bad(fut):
        raise RuntimeError("callback bug")

    f.add_done_callback(bad)
    b.receive(in_memory(f.key, 2))
    assert f.status == "finished" and "callback bug" in caplog.text
    with pytest.raises(TypeError):
        f.add_done_callback(5)


# --------------------------------------------------------------------------
# Against the real scheduler (HandWired)
# --------------------------------------------------------------------------


class WiredBackend(Backend):
    """Runs tasks for real on a HandWired cluster; scheduler invariants checked per event."""

    scheduler_address = "wired://scheduler"

    def __init__(self):
        from twofold.handwired import HandWired

        self.hw = HandWired(n_workers=2)
        self.objects: dict = {}
        self.data: dict = {}
        self.counter = itertools.count()
        self.delivered = 0
        self.receiver = None

    def client_id(self):
        return CID

    def new_token(self):
        return "%032x" % next(self.counter)

    def now(self):
        return self.hw.now

    def set_receiver(self, receiver):
        self.receiver = receiver

    def send(self, msgs):
        for m in msgs:
            self.hw.to_scheduler(m)

    def dump_task(self, func, args, kwargs):
        ref = b"%d" % next(self.counter)
        self.objects[ref] = (func, args, kwargs)
        return ref

    def load_error(self, error):
        if error.exception is not None:
            return self.objects[error.exception]
        return error_class(error.typename)(error.message)

    def load_inline(self, data):
        return pickle.loads(data)

    def _pump(self):
        inbox = self.hw.inbox.get(CID, [])
        while self.delivered < len(inbox):
            self.delivered += 1
            self.receiver(inbox[self.delivered - 1])

    def _step(self):
        hw = self.hw
        if hw.links:
            hw.deliver(next(iter(hw.links)))
        elif hw.executions:
            (address, key), ex = next(iter(hw.executions.items()))
            del hw.executions[(address, key)]
            func, args, kwargs = self.objects[ex.run_spec]
            deps = {d: self.data[d] for d in ex.dependencies}
            try:
                value = func(*substitute(args, deps), **substitute(kwargs, deps))
            except Exception as e:
                ref = b"%d" % next(self.counter)
                self.objects[ref] = e
                err = TaskError(type(e).__name__, str(e), ref)
                hw.to_worker(address, ExecuteFailure(hw.now, hw.stimulus("x"), key, err, 0.0, 0.0))
            else:
                self.data[key] = value
                hw.stores[address][key] = 8
                inline = pickle.dumps(value) if isinstance(value, int) else None
                hw.to_worker(address, ExecuteSuccess(hw.now, hw.stimulus("x"), key, 8, type(value).__name__, 0.0, 0.0, inline))
        elif hw.gathers:
            hw.complete_gather(*next(iter(hw.gathers)))
        else:
            return False
        return True

    def wait_until(self, predicate, timeout=None):
        while True:
            self._pump()
            if predicate():
                return True
            if not self._step():
                self._pump()
                return predicate()

    def fetch(self, who_has):
        return {k: self.data[k] for k in who_has}, {}

    def put(self, placement, data, free_seqs=None):
        for key, value in data.items():
            self.data[key] = value
            for w in placement[key]:
                self.hw.scatter(w, {key: 8}, after=(free_seqs or {}).get(w, -1))
        return {key: (8, type(value).__name__) for key, value in data.items()}

    def close(self):
        pass


class WiredCluster:
    def _connect(self, client):
        self.backend = WiredBackend()
        return self.backend


def wants(backend):
    info = backend.hw.scheduler.clients.get(CID)
    return dict(info.wants) if info is not None else {}


def test_wired_round_trip_with_reference_counts():
    cluster = WiredCluster()
    c = Client(cluster, set_as_default=False)
    b = cluster.backend
    x = c.submit(inc, 1)
    y = c.submit(add, x, y=x)
    zs = c.map(add, range(3), [x] * 3)
    assert c.gather([y, zs]) == [4, [2, 3, 4]]
    assert wants(b) == {k: 1 for k in c._states}
    bad = c.submit(raise_zero)
    after = c.submit(inc, bad)
    with pytest.raises(ZeroDivisionError):
        after.result()
    assert c.gather([bad, after, y], errors="skip") == [4]
    s = c.scatter({"data": [1, 2, 3]})
    total = c.submit(sum, s["data"])
    assert total.result() == 6 and s["data"].result() == [1, 2, 3]
    del zs, bad, after
    gc.collect()
    x.cancel()
    assert y.status == "finished"  # cancelled by the scheduler only when the echo arrives
    assert b.wait_until(lambda: y.status == "cancelled")
    assert wants(b) == {k: 1 for k in c._states} and set(c._states) == {"data", total.key}
    fresh = c.submit(inc, 1)  # the cancelled key again
    assert fresh.result() == 2 and fresh.key == x.key
    c.close()
    assert not b.hw.scheduler.tasks


def test_wired_refused_graph_and_desired_keys():
    cluster = WiredCluster()
    c = Client(cluster, set_as_default=False)
    f = Future("never-submitted", c)
    assert wait([f]).done == {f} and f.cancelled()
    g = c.submit(inc, 1)
    g.result()
    h = Future(g.key, c)
    del g
    gc.collect()
    assert h.result() == 2
    c.close()
