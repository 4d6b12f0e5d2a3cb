"""The Client's API, the same tests on every backend.

Each test runs three times, against:

* ``sim``: a fresh validated ``SimCluster`` (2 workers x 1 thread, seed 0);
* ``threads``: a module-scoped ``LocalCluster(processes=False)`` (2 workers x 1 thread);
* ``processes``: a module-scoped ``LocalCluster(processes=True)`` (2 worker processes x 1 thread).

Each test gets a fresh ``Client(cluster, set_as_default=False)``, closed afterwards.
Both runtime clusters give every worker ``resources={"GPU": 2}``, and so does
the simulated one.  Only behaviour that both drivers promise is asserted here:
no virtual times, traces or simulator-only faults (``test_client_sim.py``
has those), no socket-level details (``test_runtime_*.py``).

Things that happen "later" are made deterministic with *gates* rather than
sleeps: ``gated(path, x)`` blocks a worker thread until the test creates the
file ``path`` (on the runtime), while on the simulator it returns at once and
takes ``GATED_SIM_SECONDS`` of virtual time (the simulator runs one function
at a time, so a real wait there would block the whole cluster).  A test's
gates are all opened when it ends, so no worker thread stays blocked.

Every blocking call carries a timeout (virtual on the simulator, real on the
runtime), and a watchdog dumps every thread's stack and exits if a test
still hangs after ``WATCHDOG`` seconds.

Task functions are module-level functions of this module: worker processes
import it (the nanny hands ``sys.path``, which holds ``tests/``, to its child
in ``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import threading
import time
import traceback
from pathlib import Path

import pytest

from twofold import (
    CancelledError,
    Client,
    Future,
    LocalCluster,
    as_completed,
    fire_and_forget,
    get_client,
    rejoin,
    secede,
    wait,
)
from twofold.client.future import ALL_COMPLETED, FIRST_COMPLETED
from twofold.context import current_task
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.sim import SimCluster
from twofold.sim import virtual_time

from client_support import CustomError, add, combine, div, inc, raise_custom, spawner, total

#: the timeout of every blocking call expected to succeed (seconds; virtual on the simulator)
TIMEOUT = 30.0
#: the timeout of a blocking call expected to time out
SHORT = 0.3
#: how long a ``gated`` task takes on the simulator (virtual seconds; well under TIMEOUT)
GATED_SIM_SECONDS = 5.0
#: a gate not opened within this many seconds makes its task fail (never hang)
GATE_LIMIT = 25.0
#: a test still running after this many seconds dumps all stacks and exits the run
WATCHDOG = 90.0

BACKENDS = ("sim", "threads", "processes")
RESOURCES = {"GPU": 2}


# --------------------------------------------------------------------------
# task functions (module level: worker processes import them from here)
# --------------------------------------------------------------------------


def big_bytes(n):
    return b"x" * n


def _on_sim() -> bool:
    ctx = current_task()
    return ctx is not None and type(ctx).__module__.startswith("twofold.sim")


def where(x=None):
    """The address of the worker running this task."""
    return current_task().worker


def stamp(x):
    """When this ran (a clock shared by every process of this machine)."""
    return time.monotonic_ns()


def gated(path, x):
    """``x`` once the file ``path`` exists (at once on the simulator: see the module docstring;
    on a simulator with virtual time, e.g. under ``--twofold-simulate``, it polls as on a real
    cluster, its sleeps and deadline in virtual seconds)."""
    if _on_sim() and virtual_time._sim_here() is None:
        return x
    deadline = time.monotonic() + GATE_LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {path} was never opened")
        time.sleep(0.005)
    return x


def log_call(path, x):
    """Append ``x`` to the file ``path`` (counts runs across processes) and return it."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x


def flaky(path, fail, x):
    """Fail the first ``fail`` calls (counted in the file ``path``), then return ``x * 10``."""
    with open(path, "a") as f:
        f.write("call\n")
    with open(path) as f:
        n = len(f.read().splitlines())
    if n <= fail:
        raise RuntimeError(f"flaky failure {n}")
    return x * 10


def nested_spawner(depth):
    if depth == 0:
        return 1
    c = get_client()
    fut = c.submit(nested_spawner, depth - 1, key=f"depth-{depth - 1}")
    secede()
    r = fut.result(timeout=TIMEOUT)
    rejoin()
    return r + 1


class Point:
    """A user class: results and arguments of this type are pickled by reference to this module."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def make_point(x, y):
    return Point(x, y)


def norm1(p):
    return abs(p.x) + abs(p.y)


class Box:
    """Hides a future from the Client's argument scan (it travels pickled, by key)."""

    def __init__(self, future):
        self.future = future


def unbox(box):
    return box.future.result(timeout=TIMEOUT) + 1


class UnpicklableError(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_unpicklable(msg):
    raise UnpicklableError(msg)


def secede_without_rejoin(n):
    c = get_client()
    secede()
    futs = c.map(inc, range(n))
    wait(futs, timeout=TIMEOUT)
    return sum(c.gather(futs))


def scatter_and_fire_from_a_task(data, path):
    c = get_client()
    fs = c.scatter(data, timeout=TIMEOUT)
    fire_and_forget(c.submit(log_call, path, "from-a-task", pure=False))
    secede()
    r = c.submit(sum, fs).result(timeout=TIMEOUT)
    rejoin()
    return r


def client_address(x=None):
    c = get_client()
    return c.scheduler.address


def secede_outside_a_task():
    secede()


def workers_seen_from_a_task(n):
    """What the task's own client says of the cluster (it waits for ``n`` workers first)."""
    c = get_client()
    c.wait_for_workers(n, timeout=TIMEOUT)
    return sorted(c.nthreads()), sorted(c.scheduler_info()["workers"])


# --------------------------------------------------------------------------
# driver-side helpers
# --------------------------------------------------------------------------


def lines(path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


def is_sim(cluster) -> bool:
    return isinstance(cluster, SimCluster)


def on_loop(cluster, fn):
    """Run ``fn()`` on a LocalCluster's event loop thread (where the scheduler's state lives)."""

    async def call():
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), cluster._loop).result(10)


def scheduler_state(cluster):
    return cluster.scheduler if is_sim(cluster) else cluster.scheduler.state


def scheduler_keys(cluster) -> set[str]:
    if is_sim(cluster):
        return set(cluster.scheduler.tasks)
    return on_loop(cluster, lambda: set(cluster.scheduler.state.tasks))


def task_states(cluster, keys) -> dict[str, str | None]:
    def get():
        tasks = scheduler_state(cluster).tasks
        return {k: (tasks[k].state if k in tasks else None) for k in keys}

    return get() if is_sim(cluster) else on_loop(cluster, get)


def who_wants(cluster, key) -> set[str]:
    """The ids of the clients holding ``key`` on the scheduler."""

    def get():
        ts = scheduler_state(cluster).tasks.get(key)
        return set(ts.who_wants) if ts is not None else set()

    return get() if is_sim(cluster) else on_loop(cluster, get)


def eventually(cluster, predicate, timeout: float = 10.0, what: str = ""):
    """Until ``predicate()`` holds: virtual time passes on the simulator, real time on the runtime."""
    if is_sim(cluster):
        for _ in range(int(timeout * 10)):
            value = predicate()
            if value:
                return value
            cluster.run(cluster.now + 0.1)
    else:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.01)
    value = predicate()
    assert value, f"timed out after {timeout} s waiting for {what or predicate}"
    return value


def let_time_pass(cluster, seconds: float):
    if is_sim(cluster):
        cluster.run(cluster.now + seconds)
    else:
        time.sleep(seconds)


class Gates:
    """Files that ``gated`` tasks wait for."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.issued: list[str] = []

    def new(self, name: str = "gate") -> str:
        path = str(self.folder / f"{name}-{len(self.issued)}")
        self.issued.append(path)
        return path

    def open(self, path: str) -> None:
        Path(path).touch()

    def open_later(self, path: str, seconds: float) -> threading.Timer:
        t = threading.Timer(seconds, self.open, (path,))
        t.daemon = True
        t.start()
        return t

    def open_all(self) -> None:
        for path in self.issued:
            self.open(path)


def known_bug(*backends: str, reason: str):
    """Mark a test xfail(strict=True) on the given backends only (applied by the ``client`` fixture)."""

    def mark(fn):
        bugs = dict(getattr(fn, "_known_bugs", {}))
        bugs.update({b: reason for b in backends})
        fn._known_bugs = bugs
        return fn

    return mark


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def backend_cluster(request):
    """(name, module-scoped LocalCluster or None for the simulator); tests are grouped by backend."""
    name = request.param
    if name == "sim":
        yield name, None
        return
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=(name == "processes"), resources=RESOURCES)
    try:
        yield name, cluster
    finally:
        cluster.close()


@pytest.fixture
def backend(backend_cluster, request):
    name = backend_cluster[0]
    reason = getattr(request.function, "_known_bugs", {}).get(name)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return name


@pytest.fixture
def cluster(backend, backend_cluster):
    if backend == "sim":
        c = SimCluster(n_workers=2, threads_per_worker=1, seed=0, validate=True, resources=RESOURCES,
                       durations={"gated": GATED_SIM_SECONDS})
        try:
            yield c
        finally:
            c.close()
    else:
        c = backend_cluster[1]
        assert len(c.workers) == 2, f"{c!r} lost workers in an earlier test"
        yield c


@pytest.fixture
def gates(tmp_path):
    g = Gates(tmp_path)
    yield g
    g.open_all()


@pytest.fixture
def client(cluster, gates):
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    c = Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        gates.open_all()
        c.close()
        if not is_sim(cluster):
            # let what this test left behind (blocked tasks, fire-and-forget) drain before the next
            deadline = time.monotonic() + 10
            while scheduler_keys(cluster) and time.monotonic() < deadline:
                time.sleep(0.01)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def workers(cluster):
    return sorted(cluster.workers)


# --------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------


def test_submit_args_and_kwargs(client):
    assert client.submit(combine, 1).result(timeout=TIMEOUT) == (1, 0, 0)
    assert client.submit(combine, 1, 2, z=3).result(timeout=TIMEOUT) == (1, 2, 3)
    assert client.submit(combine, 1, y=5).result(timeout=TIMEOUT) == (1, 5, 0)
    assert client.submit(lambda: "no args").result(timeout=TIMEOUT) == "no args"


def test_submit_explicit_key(client):
    f = client.submit(inc, 1, key="my-key")
    assert f.key == "my-key"
    assert f.result(timeout=TIMEOUT) == 2
    assert client.who_has(f)["my-key"]


def test_submit_pure_calls_share_a_key_and_run_once(client, tmp_path):
    log = str(tmp_path / "log")
    a = client.submit(log_call, log, 5)
    b = client.submit(log_call, log, 5)
    assert a.key == b.key and a == b
    assert a.key.startswith("log_call-")
    c = client.submit(log_call, log, 6)
    assert c.key != a.key
    wait([a, b, c], timeout=TIMEOUT)
    assert client.gather([a, b, c]) == [5, 5, 6]
    assert sorted(lines(log)) == ["5", "6"]


def test_submit_impure_runs_every_time(client, tmp_path):
    log = str(tmp_path / "log")
    a = client.submit(log_call, log, 5, pure=False)
    b = client.submit(log_call, log, 5, pure=False)
    assert a.key != b.key and a != b
    assert a.key.startswith("log_call-") and b.key.startswith("log_call-")
    wait([a, b], timeout=TIMEOUT)
    assert client.gather([a, b]) == [5, 5]
    assert lines(log) == ["5", "5"]


def test_pure_key_is_the_same_across_clients_and_computed_once(client, cluster, tmp_path):
    log = str(tmp_path / "log")
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        assert c2.id != client.id
        a = client.submit(log_call, log, 41)
        b = c2.submit(log_call, log, 41)
        assert a.key == b.key
        assert a.result(timeout=TIMEOUT) == 41 and b.result(timeout=TIMEOUT) == 41
        assert lines(log) == ["41"]


def _run_order(client, cluster, gates, workers, priorities, prefix):
    """Start times of tasks of the given priorities, submitted to a worker busy with a gated task."""
    w = workers[0]
    gate = gates.new("blocker")
    blocker = client.submit(gated, gate, 0, workers=[w], key=f"{prefix}-blocker")
    eventually(cluster, lambda: task_states(cluster, [blocker.key])[blocker.key] == "processing", what="blocker runs")
    fs = [client.submit(stamp, i, priority=p, workers=[w], key=f"{prefix}-{i}") for i, p in enumerate(priorities)]
    keys = [f.key for f in fs]
    eventually(cluster, lambda: set(task_states(cluster, keys).values()) == {"processing"}, what="all sent to w")
    # the worker must hold them all before the blocker ends
    if is_sim(cluster):
        cluster.run(cluster.now + 0.1)
    elif cluster.processes:
        time.sleep(0.5)  # (a worker process's state cannot be looked at from here)
    else:
        [server] = [ws for ws in cluster.worker_servers if ws.address == w]
        eventually(cluster, lambda: on_loop(cluster, lambda: set(keys) <= set(server.state.tasks)), what="w has them")
    gates.open(gate)
    wait([blocker] + fs, timeout=TIMEOUT)
    stamps = client.gather(fs)
    return [i for _, i in sorted(zip(stamps, range(len(fs))))]


def test_submit_priority_orders_the_tasks_waiting_for_a_worker(client, cluster, gates, workers):
    priorities = [0, 5, -3, 10, 2]
    order = _run_order(client, cluster, gates, workers, priorities, "prio")
    assert [priorities[i] for i in order] == [10, 5, 2, 0, -3]


def test_equal_priority_runs_in_submission_order(client, cluster, gates, workers):
    assert _run_order(client, cluster, gates, workers, [0] * 5, "fifo") == [0, 1, 2, 3, 4]


def test_submit_workers_restriction(client, workers):
    w0, w1 = workers
    fs = [client.submit(where, i, workers=[w1], key=f"on-w1-{i}") for i in range(4)]
    g = client.submit(where, 100, workers=w0, key="on-w0")  # one address as a str
    wait(fs + [g], timeout=TIMEOUT)
    assert client.gather(fs) == [w1] * 4
    assert g.result(timeout=TIMEOUT) == w0
    assert client.who_has(g)["on-w0"] == [w0]


def test_restriction_to_an_unknown_worker_waits_unless_allow_other_workers(client, workers):
    nowhere = "tcp://127.0.0.1:9"
    loose = client.submit(where, 1, workers=[nowhere], allow_other_workers=True, key="loose")
    assert loose.result(timeout=TIMEOUT) in workers
    strict = client.submit(where, 2, workers=[nowhere], key="strict")
    with pytest.raises(TwofoldTimeoutError):
        strict.result(timeout=SHORT)
    assert strict.status == "pending" and not strict.done()


def test_allow_other_workers_still_runs_on_the_named_worker_when_free(client, workers):
    w0, w1 = workers
    f = client.submit(where, 1, workers=[w1], allow_other_workers=True, key="prefers-w1")
    assert f.result(timeout=TIMEOUT) in (w0, w1)


def test_retries_succeed_after_failures(client, tmp_path):
    calls = str(tmp_path / "calls")
    f = client.submit(flaky, calls, 2, 4, retries=2, key="flaky-ok")
    assert f.result(timeout=TIMEOUT) == 40
    assert len(lines(calls)) == 3
    assert f.status == "finished"


def test_retries_exhausted_raise_the_last_error(client, tmp_path):
    calls = str(tmp_path / "calls")
    f = client.submit(flaky, calls, 3, 4, retries=1, key="flaky-bad")
    with pytest.raises(RuntimeError, match="flaky failure 2"):
        f.result(timeout=TIMEOUT)
    assert len(lines(calls)) == 2
    assert f.status == "error"


def test_resources_run_on_workers_that_have_them(client, workers):
    fs = [client.submit(where, i, resources={"GPU": 1}, key=f"gpu1-{i}") for i in range(3)]
    g = client.submit(where, 9, resources={"GPU": 2}, key="gpu2")
    wait(fs + [g], timeout=TIMEOUT)
    assert set(client.gather(fs)) <= set(workers)
    assert g.result(timeout=TIMEOUT) in workers


def test_resources_no_worker_has_are_not_run(client, tmp_path):
    log = str(tmp_path / "log")
    too_many = client.submit(log_call, log, 1, resources={"GPU": 3})
    unknown = client.submit(log_call, log, 2, resources={"TPU": 1})
    with pytest.raises(TwofoldTimeoutError):
        wait([too_many, unknown], timeout=SHORT, return_when=FIRST_COMPLETED)
    assert too_many.status == unknown.status == "pending"
    assert lines(log) == []


def test_submit_checks_its_arguments_before_sending(client):
    with pytest.raises(TypeError):
        client.submit(3)
    with pytest.raises(TypeError):
        client.submit(inc, 1, workers=3)
    with pytest.raises(TypeError):
        client.submit(inc, 1, resources=["GPU"])
    with pytest.raises((TypeError, ValueError)):
        client.submit(inc, 1, key="")
    assert client.submit(inc, 1).result(timeout=TIMEOUT) == 2  # nothing broke


# --------------------------------------------------------------------------
# map
# --------------------------------------------------------------------------


def test_map_several_iterables_and_kwargs(client):
    fs = client.map(add, [1, 2, 3], [10, 20, 30])
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [11, 22, 33]
    assert all(f.key.startswith("add-") for f in fs)
    short = client.map(add, [1, 2, 3], [10])  # zip semantics: the shortest iterable wins
    kw = client.map(combine, [1, 2], z=7)
    wait(short + kw, timeout=TIMEOUT)
    assert client.gather(short) == [11]
    assert client.gather(kw) == [(1, 0, 7), (2, 0, 7)]


def test_map_key_prefix_and_key_list(client):
    fs = client.map(inc, range(3), key="pre")
    assert all(f.key.startswith("pre-") for f in fs)
    assert len({f.key for f in fs}) == 3
    gs = client.map(inc, range(3), key=["ka", "kb", "kc"])
    assert [g.key for g in gs] == ["ka", "kb", "kc"]
    wait(fs + gs, timeout=TIMEOUT)
    assert client.gather(fs) == client.gather(gs) == [1, 2, 3]
    with pytest.raises(ValueError):
        client.map(inc, range(3), key=["only-one"])


def test_map_pure_dedups_equal_calls(client, tmp_path):
    log = str(tmp_path / "log")
    fs = client.map(log_call, [log] * 3, [1, 1, 2])
    assert fs[0].key == fs[1].key != fs[2].key
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [1, 1, 2]
    assert sorted(lines(log)) == ["1", "2"]


def test_map_impure_runs_every_call(client, tmp_path):
    log = str(tmp_path / "log")
    fs = client.map(log_call, [log] * 3, [1, 1, 1], pure=False)
    assert len({f.key for f in fs}) == 3
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [1, 1, 1]
    assert lines(log) == ["1", "1", "1"]


def test_map_batch_size(client):
    fs = client.map(inc, range(10), batch_size=3, key=[f"b{i}" for i in range(10)])
    assert [f.key for f in fs] == [f"b{i}" for i in range(10)]
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == list(range(1, 11))
    with pytest.raises(ValueError):
        client.map(inc, range(3), batch_size=0)


def test_map_over_futures_and_empty_iterables(client):
    xs = client.map(inc, range(4))
    ys = client.map(inc, xs)
    wait(ys, timeout=TIMEOUT)
    assert client.gather(ys) == [2, 3, 4, 5]
    assert client.map(inc, []) == []
    with pytest.raises(TypeError):
        client.map(inc)


def test_map_with_retries_and_restrictions(client, workers, tmp_path):
    calls = str(tmp_path / "calls")
    fs = client.map(flaky, [calls], [1], [7], retries=1, workers=[workers[1]], priority=3)
    assert fs[0].result(timeout=TIMEOUT) == 70
    assert len(lines(calls)) == 2
    gs = client.map(where, range(3), workers=[workers[0]])
    wait(gs, timeout=TIMEOUT)
    assert client.gather(gs) == [workers[0]] * 3


# --------------------------------------------------------------------------
# gather
# --------------------------------------------------------------------------


def test_gather_nested_containers(client):
    a, b, c, d = client.map(inc, range(4))
    wait([a, b, c, d], timeout=TIMEOUT)
    out = client.gather([a, (b, [c]), {"d": d, "plain": 7}, {a, b}, "text"])
    assert out == [1, (2, [3]), {"d": 4, "plain": 7}, {1, 2}, "text"]
    assert type(out[1]) is tuple
    assert client.gather({"x": a, "y": [b, c]}) == {"x": 1, "y": [2, 3]}
    assert client.gather(a) == 1
    assert client.gather([a, a, (a,)]) == [1, 1, (1,)]
    assert list(client.gather(iter([a, b]))) == [1, 2]


def test_gather_errors_raise_and_skip(client):
    good = client.submit(inc, 1)
    bad = client.submit(div, 1, 0)
    wait([good, bad], timeout=TIMEOUT)
    with pytest.raises(ZeroDivisionError):
        client.gather([good, bad])
    assert client.gather([good, bad], errors="skip") == [2]
    assert client.gather({"g": good, "b": bad}, errors="skip") == {"g": 2}
    assert client.gather((bad, good, bad), errors="skip") == (2,)
    assert client.gather(bad, errors="skip") is None
    with pytest.raises(ValueError):
        client.gather([good], errors="ignore")


def test_gather_a_large_result_from_its_worker(client):
    f = client.submit(big_bytes, 2_000_000)
    g = client.submit(len, f)
    assert g.result(timeout=TIMEOUT) == 2_000_000
    data = f.result(timeout=TIMEOUT)
    assert type(data) is bytes and len(data) == 2_000_000 and data[:3] == b"xxx"
    assert f.type == "bytes"


# --------------------------------------------------------------------------
# scatter
# --------------------------------------------------------------------------


def test_scatter_single_object(client, workers):
    f = client.scatter(123, timeout=TIMEOUT)
    assert isinstance(f, Future) and f.status == "finished" and f.done()
    assert f.key.startswith("int-")
    assert f.result(timeout=TIMEOUT) == 123
    assert client.submit(inc, f).result(timeout=TIMEOUT) == 124
    holders = client.who_has(f)[f.key]
    assert len(holders) == 1 and holders[0] in workers


def test_scatter_list_spreads_round_robin(client, workers):
    fs = client.scatter([10, 20, 30, 40], timeout=TIMEOUT)
    assert isinstance(fs, list) and len(fs) == 4
    assert client.gather(fs) == [10, 20, 30, 40]
    who = client.who_has(fs)
    per_worker = {}
    for f in fs:
        [w] = who[f.key]
        per_worker[w] = per_worker.get(w, 0) + 1
    assert per_worker == {workers[0]: 2, workers[1]: 2}
    t = client.scatter((1, 2), timeout=TIMEOUT)
    assert isinstance(t, tuple) and client.gather(t) == (1, 2)


def test_scatter_dict_uses_its_keys(client):
    fs = client.scatter({"sx": 1, "sy": [2, 3]}, timeout=TIMEOUT)
    assert set(fs) == {"sx", "sy"}
    assert fs["sx"].key == "sx" and fs["sy"].key == "sy"
    assert client.gather(fs) == {"sx": 1, "sy": [2, 3]}
    assert client.submit(add, fs["sx"], 5).result(timeout=TIMEOUT) == 6


def test_scatter_broadcast_puts_data_on_every_worker(client, workers):
    f = client.scatter("payload", broadcast=True, timeout=TIMEOUT)
    assert sorted(client.who_has(f)[f.key]) == workers
    fs = [client.submit(len, f, workers=[w], key=f"len-{i}") for i, w in enumerate(workers)]
    wait(fs, timeout=TIMEOUT)
    assert client.gather(fs) == [7, 7]


def test_scatter_to_chosen_workers(client, workers):
    w0, w1 = workers
    fs = client.scatter([1, 2, 3], workers=[w1], timeout=TIMEOUT)
    assert {w for ws in client.who_has(fs).values() for w in ws} == {w1}
    g = client.scatter([7, 8], workers=[w0, w1], broadcast=True, timeout=TIMEOUT)
    for ws in client.who_has(g).values():
        assert sorted(ws) == [w0, w1]
    assert client.gather(fs + g) == [1, 2, 3, 7, 8]


def test_scatter_hash_names_by_content(client):
    dup = client.scatter([1, 1, 2], timeout=TIMEOUT)
    assert dup[0].key == dup[1].key != dup[2].key
    assert client.gather(dup) == [1, 1, 2]
    a = client.scatter([1, 2, 3], timeout=TIMEOUT)
    b = client.scatter([1, 2, 3], timeout=TIMEOUT)
    assert [f.key for f in a] == [f.key for f in b]
    big = bytearray(b"x" * 200_000)  # big buffers are hashed in place
    other = bytearray(b"x" * 199_999 + b"y")
    e, f, g = client.scatter([big, bytearray(big), other], timeout=TIMEOUT)
    assert e.key == f.key != g.key
    assert client.gather(g) == other
    c = client.scatter(5, hash=False, timeout=TIMEOUT)
    d = client.scatter(5, hash=False, timeout=TIMEOUT)
    assert c.key != d.key
    assert client.gather([c, d]) == [5, 5]


def test_scatter_large_data_and_compute_on_it(client):
    data = bytes(range(256)) * 8_000  # 2 MB
    [f] = client.scatter([data], timeout=TIMEOUT)
    assert client.submit(len, f).result(timeout=TIMEOUT) == len(data)
    assert client.gather(f) == data
    assert client.scatter([], timeout=TIMEOUT) == []
    with pytest.raises(TypeError):
        client.scatter(iter([1, 2]))


# --------------------------------------------------------------------------
# cancel and retry
# --------------------------------------------------------------------------


def test_cancel_a_running_task_and_its_dependents(client, cluster, gates):
    gate = gates.new()
    f = client.submit(gated, gate, 1, key="long")
    dep = client.submit(inc, f, key="after-long")
    eventually(cluster, lambda: task_states(cluster, ["long"])["long"] == "processing", what="long runs")
    client.cancel(f)
    assert f.cancelled() and f.done() and f.status == "cancelled"
    with pytest.raises(CancelledError):
        f.result(timeout=TIMEOUT)
    with pytest.raises(CancelledError):  # a dependent of a cancelled future is cancelled too (dask)
        dep.result(timeout=TIMEOUT)
    assert dep.cancelled()
    eventually(cluster, lambda: not {"long", "after-long"} & scheduler_keys(cluster), what="both forgotten")
    gates.open(gate)  # the running call is not interrupted: it ends, its result is thrown away
    assert client.submit(inc, 5, key="next").result(timeout=TIMEOUT) == 6
    eventually(cluster, lambda: "long" not in scheduler_keys(cluster))


def test_future_cancel_method_and_exception_after_cancel(client, gates):
    f = client.submit(gated, gates.new(), 1)
    f.cancel()
    assert f.cancelled() and f.status == "cancelled"
    assert f.exception(timeout=TIMEOUT) is None  # dask: only erred futures have an exception
    assert f.traceback(timeout=TIMEOUT) is None
    with pytest.raises(CancelledError):
        client.gather([f])


def test_cancel_by_one_client_leaves_another_clients_future_unless_forced(client, cluster, gates):
    gate = gates.new()
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        a = client.submit(gated, gate, 2, key="shared")
        eventually(cluster, lambda: "shared" in scheduler_keys(cluster), what="shared submitted")
        b = Future("shared", c2)
        b.cancel()
        assert b.cancelled() and a.status == "pending"
        gates.open(gate)
        assert a.result(timeout=TIMEOUT) == 2
        gate = gates.new()
        d = client.submit(gated, gate, 3, key="shared-forced")
        eventually(cluster, lambda: "shared-forced" in scheduler_keys(cluster), what="shared-forced submitted")
        e = Future("shared-forced", c2)
        c2.cancel([e], force=True)
        with pytest.raises(CancelledError):
            d.result(timeout=TIMEOUT)
        assert d.cancelled()
        # (a cancelled task still running keeps its thread, as in dask: let it end)
        gates.open(gate)
        # closing c2 while it holds a key the first client also holds leaves that future alone
        k = client.submit(inc, 1000, key="held-by-both")
        wait([k], timeout=TIMEOUT)
        Future("held-by-both", c2).result(timeout=TIMEOUT)
    let_time_pass(cluster, 0.2)
    assert k.result(timeout=TIMEOUT) == 1001 and "held-by-both" in scheduler_keys(cluster)


def test_submitting_on_a_future_cancelled_meanwhile_gives_cancelled_error(client, gates):
    a = client.submit(gated, gates.new(), 1, key="cm-a")
    b = client.submit(inc, a, key="cm-b")
    a.cancel()
    c = client.submit(inc, b, key="cm-c")
    with pytest.raises(CancelledError):
        b.result(timeout=TIMEOUT)
    with pytest.raises(CancelledError):
        c.result(timeout=TIMEOUT)


def test_resubmitting_a_cancelled_key_computes_it_afresh(client, cluster, gates):
    gate = gates.new()
    f = client.submit(gated, gate, 3, key="again")
    f.cancel()
    g = client.submit(gated, gate, 3, key="again")  # a key names one computation: the same call
    assert f.cancelled() and g.status == "pending"
    gates.open(gate)
    assert g.result(timeout=TIMEOUT) == 3
    assert f.cancelled()  # the old future stays cancelled
    # cancelling a finished future drops it too
    h = client.submit(inc, 10, key="cancel-finished")
    assert h.result(timeout=TIMEOUT) == 11
    h.cancel()
    assert h.status == "cancelled"
    with pytest.raises(CancelledError):
        h.result(timeout=TIMEOUT)
    eventually(cluster, lambda: "cancel-finished" not in scheduler_keys(cluster))


def test_cancelling_a_dependent_leaves_its_input(client, gates):
    a = client.submit(inc, 1, key="dep-base")
    b = client.submit(gated, gates.new(), a, key="dep-top")
    b.cancel()
    assert b.cancelled()
    assert a.result(timeout=TIMEOUT) == 2 and a.status == "finished"


def test_another_clients_future_keeps_a_dropped_key_alive(client, cluster, gates):
    gate = gates.new()
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        a = client.submit(gated, gate, 5, key="kept")
        eventually(cluster, lambda: "kept" in scheduler_keys(cluster), what="kept submitted")
        b = Future("kept", c2)
        # (two clients' messages travel on different connections: let c2's reach the scheduler first)
        eventually(cluster, lambda: c2.id in who_wants(cluster, "kept"), what="c2 wants kept")
        del a
        gc.collect()
        assert client.submit(inc, 0).result(timeout=TIMEOUT) == 1  # the release goes out
        let_time_pass(cluster, 0.2)
        gates.open(gate)
        assert b.result(timeout=TIMEOUT) == 5
        assert "kept" in scheduler_keys(cluster)


def test_a_key_of_a_closed_client_can_be_submitted_again(client, cluster, gates):
    gate = gates.new()
    c3 = Client(cluster, set_as_default=False)
    f = c3.submit(gated, gate, 1, key="reused")
    c3.close()
    assert f.cancelled()
    gates.open(gate)
    assert client.submit(gated, gate, 1, key="reused").result(timeout=TIMEOUT) == 1


def test_retry_an_erred_future(client, tmp_path):
    calls = str(tmp_path / "calls")
    f = client.submit(flaky, calls, 1, 2, key="flaky-retry")
    with pytest.raises(RuntimeError, match="flaky failure 1"):
        f.result(timeout=TIMEOUT)
    f.retry()
    assert f.result(timeout=TIMEOUT) == 20
    assert len(lines(calls)) == 2
    calls2 = str(tmp_path / "calls2")
    g = client.submit(flaky, calls2, 1, 3, key="flaky-retry-2")
    h = client.submit(inc, g, key="after-flaky")
    with pytest.raises(RuntimeError):
        h.result(timeout=TIMEOUT)
    client.retry([h])  # retries the erred dependency too
    assert h.result(timeout=TIMEOUT) == 31
    assert len(lines(calls2)) == 2


def test_retrying_a_dependency_reruns_its_erred_dependents(client, tmp_path):
    calls = str(tmp_path / "calls")
    g = client.submit(flaky, calls, 1, 3, key="flaky-dep")
    h = client.submit(inc, g, key="flaky-dependent")
    with pytest.raises(RuntimeError):
        h.result(timeout=TIMEOUT)
    g.retry()
    assert g.result(timeout=TIMEOUT) == 30
    assert h.result(timeout=TIMEOUT) == 31


def test_retry_of_a_finished_future_does_nothing(client, tmp_path):
    log = str(tmp_path / "log")
    f = client.submit(log_call, log, 1)
    assert f.result(timeout=TIMEOUT) == 1
    f.retry()
    assert f.status == "finished" and f.result(timeout=TIMEOUT) == 1
    assert lines(log) == ["1"]


# --------------------------------------------------------------------------
# futures as arguments
# --------------------------------------------------------------------------


def test_futures_nested_in_args_and_kwargs(client):
    a, b, c, d = client.map(inc, range(4))
    f = client.submit(total, [[a, b], (c,)], extra={"d": d, "k": 100})
    assert f.result(timeout=TIMEOUT) == 1 + 2 + 3 + 4 + 100
    g = client.submit(combine, a, y={"inner": [b]}, z=(c, d))
    assert g.result(timeout=TIMEOUT) == (1, {"inner": [2]}, (3, 4))


def test_dependency_moves_between_workers(client, workers):
    w0, w1 = workers
    a = client.submit(inc, 1, workers=[w0], key="on-w0")
    b = client.submit(add, a, 10, workers=[w1], key="on-w1")
    assert b.result(timeout=TIMEOUT) == 12
    assert client.who_has(b)["on-w1"] == [w1]
    assert w0 in client.who_has(a)["on-w0"]


def test_a_chain_and_a_tree_of_dependencies(client):
    x = client.submit(inc, 0)
    for _ in range(5):
        x = client.submit(inc, x)
    assert x.result(timeout=TIMEOUT) == 6
    layer = client.map(inc, range(8))
    while len(layer) > 1:
        layer = [client.submit(add, p, q) for p, q in zip(layer[::2], layer[1::2])]
    assert layer[0].result(timeout=TIMEOUT) == sum(range(1, 9))


def test_futures_of_another_client_cannot_be_arguments(client, cluster):
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        f = c2.submit(inc, 1)
        with pytest.raises(ValueError):
            client.submit(inc, f)
        with pytest.raises(ValueError):
            client.gather([f])
        assert f.result(timeout=TIMEOUT) == 2


def test_user_classes_as_results_and_arguments(client, workers):
    w0, w1 = workers
    p = client.submit(make_point, 3, -4, workers=[w0])
    n = client.submit(norm1, p, workers=[w1])
    assert n.result(timeout=TIMEOUT) == 7
    assert p.result(timeout=TIMEOUT) == Point(3, -4)
    assert p.type == "Point"
    [s] = client.scatter([Point(1, 1)], timeout=TIMEOUT)
    assert client.submit(norm1, s).result(timeout=TIMEOUT) == 2


def test_a_large_result_moves_between_workers(client, workers):
    w0, w1 = workers
    a = client.submit(big_bytes, 3_000_000, workers=[w0], key="big-on-w0")
    b = client.submit(len, a, workers=[w1], key="len-on-w1")
    assert b.result(timeout=TIMEOUT) == 3_000_000
    assert sorted(client.who_has(a)["big-on-w0"]) == [w0, w1]


def test_a_future_hidden_in_an_object_is_rebuilt_in_the_task(client):
    """A future the argument scan does not see travels by key and re-attaches to the task's client."""
    f = client.submit(inc, 1)
    wait([f], timeout=TIMEOUT)
    assert client.submit(unbox, Box(f)).result(timeout=TIMEOUT) == 3


# --------------------------------------------------------------------------
# Future API
# --------------------------------------------------------------------------


def test_future_api_on_success(client, gates):
    gate = gates.new()
    f = client.submit(gated, gate, 2, key="api-ok")
    assert f.key == "api-ok"
    assert f.status == "pending" and not f.done() and not f.cancelled()
    assert repr(f) == "<Future: pending, key: api-ok>"
    seen = []
    f.add_done_callback(lambda fut: seen.append((fut.key, fut.status)))
    gates.open(gate)
    assert f.result(timeout=TIMEOUT) == 2
    assert f.done() and f.status == "finished" and not f.cancelled()
    assert seen == [("api-ok", "finished")]
    assert f.exception(timeout=TIMEOUT) is None and f.traceback(timeout=TIMEOUT) is None
    assert f.type == "int"
    assert repr(f) == "<Future: finished, type: int, key: api-ok>"
    late = []
    f.add_done_callback(late.append)  # already done: called at once
    assert late == [f]
    with pytest.raises(TypeError):
        f.add_done_callback(3)


def test_future_result_timeout(client, gates):
    gate = gates.new()
    f = client.submit(gated, gate, 1)
    with pytest.raises(TwofoldTimeoutError):
        f.result(timeout=SHORT)
    with pytest.raises(TimeoutError):  # also a builtin TimeoutError
        f.result(timeout=SHORT)
    with pytest.raises(TwofoldTimeoutError):
        f.exception(timeout=SHORT)
    assert f.status == "pending"
    gates.open(gate)
    assert f.result(timeout=TIMEOUT) == 1


def test_remote_exception_keeps_type_and_message(client):
    f = client.submit(raise_custom, "custom message")
    with pytest.raises(CustomError, match="custom message"):
        f.result(timeout=TIMEOUT)
    exc = f.exception(timeout=TIMEOUT)
    assert type(exc) is CustomError and str(exc) == "custom message"
    assert f.status == "error" and f.done()
    assert repr(f) == f"<Future: error, key: {f.key}>"
    # dependents err with the same exception
    g = client.submit(inc, f)
    with pytest.raises(CustomError, match="custom message"):
        g.result(timeout=TIMEOUT)
    assert type(g.exception(timeout=TIMEOUT)) is CustomError
    z = client.submit(div, 1, 0)
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        z.result(timeout=TIMEOUT)


def test_remote_exception_shows_the_remote_traceback(client):
    """dask raises the remote exception with its remote traceback, in result() and traceback()."""
    f = client.submit(raise_custom, "where did it happen")
    with pytest.raises(CustomError) as info:
        f.result(timeout=TIMEOUT)
    assert "raise_custom" in "".join(traceback.format_exception(info.value))
    z = client.submit(div, 1, 0)
    with pytest.raises(ZeroDivisionError) as info:
        z.result(timeout=TIMEOUT)
    assert "in div" in "".join(traceback.format_exception(info.value))


def test_future_traceback_is_the_remote_traceback(client):
    """dask: traceback() "returns a traceback object", which also "accompanies" the exception result() raises."""
    f = client.submit(raise_custom, "tb")
    tb = f.traceback(timeout=TIMEOUT)
    assert tb is not None
    assert "raise_custom" in "".join(traceback.format_tb(tb))
    with pytest.raises(CustomError) as info:
        f.result(timeout=TIMEOUT)
    assert "raise_custom" in "".join(traceback.format_tb(info.value.__traceback__))


def test_done_callback_on_error_and_cancel(client, gates):
    seen = []
    e = client.submit(div, 1, 0)
    e.add_done_callback(lambda f: seen.append(("e", f.status)))
    c = client.submit(gated, gates.new(), 1)
    c.add_done_callback(lambda f: seen.append(("c", f.status)))
    c.cancel()
    assert seen[:1] == [("c", "cancelled")] or seen == [("e", "error"), ("c", "cancelled")]
    wait([e], timeout=TIMEOUT)
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:  # the runtime runs callbacks on its reader thread
        time.sleep(0.01)
    assert sorted(seen) == [("c", "cancelled"), ("e", "error")]


def test_a_done_callback_may_submit_more_work(client):
    follow_ups = []
    f = client.submit(inc, 1)
    f.add_done_callback(lambda fut: follow_ups.append(client.submit(inc, 100)))
    assert f.result(timeout=TIMEOUT) == 2
    deadline = time.monotonic() + 5
    while not follow_ups and time.monotonic() < deadline:
        time.sleep(0.01)
    assert follow_ups[0].result(timeout=TIMEOUT) == 101


def test_future_from_key_on_a_second_client(client, cluster, tmp_path):
    log = str(tmp_path / "log")
    a = client.submit(log_call, log, 2, key="by-key")
    assert a.result(timeout=TIMEOUT) == 2
    c2 = Client(cluster.scheduler_address, set_as_default=False)
    try:
        assert c2.scheduler.address == client.scheduler.address == cluster.scheduler_address
        assert c2.id != client.id
        f = Future("by-key", c2)
        assert f.result(timeout=TIMEOUT) == 2
        assert c2.submit(add, f, 1).result(timeout=TIMEOUT) == 3
        assert lines(log) == ["2"]  # not computed again
    finally:
        c2.close()
    assert c2.status == "closed"
    assert a.result(timeout=TIMEOUT) == 2  # the first client's reference is untouched


def test_future_for_an_unknown_key_is_cancelled(client):
    f = Future("nobody-made-this", client)
    with pytest.raises(CancelledError):
        f.result(timeout=TIMEOUT)
    assert f.cancelled()


def test_future_equality_and_hash(client, cluster):
    a = client.submit(inc, 1, key="eq")
    b = Future("eq", client)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert b.result(timeout=TIMEOUT) == 2
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        c = Future("eq", c2)
        assert c != a
        assert c.result(timeout=TIMEOUT) == 2


def test_cancel_takes_collections_of_futures(client, gates):
    fs = [client.submit(gated, gates.new(), i) for i in range(2)]
    d = {"x": client.submit(gated, gates.new(), 9)}
    client.cancel([fs, d])
    assert all(f.cancelled() for f in fs + list(d.values()))
    done, not_done = wait(fs + list(d.values()), timeout=TIMEOUT)
    assert not not_done


def test_who_has_every_key_of_the_client(client, workers):
    fs = client.map(inc, range(3), key=["wh-0", "wh-1", "wh-2"])
    wait(fs, timeout=TIMEOUT)
    who = client.who_has()
    assert set(who) == {"wh-0", "wh-1", "wh-2"}
    assert all(ws and set(ws) <= set(workers) for ws in who.values())


def test_a_failing_done_callback_is_logged_not_raised(client, caplog):
    def bad_callback(fut):
        raise RuntimeError("callback failed")

    seen = []
    f = client.submit(inc, 1)
    f.add_done_callback(bad_callback)
    f.add_done_callback(seen.append)
    assert f.result(timeout=TIMEOUT) == 2
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [f]
    f.add_done_callback(bad_callback)  # already done: called at once, still not raised
    logged = [r for r in caplog.records if r.exc_info and str(r.exc_info[1]) == "callback failed"]
    assert len(logged) == 2


def test_an_exception_that_cannot_be_pickled_still_reports_its_message(client):
    f = client.submit(raise_unpicklable, "no pickle for me")
    with pytest.raises(Exception, match="no pickle for me"):
        f.result(timeout=TIMEOUT)
    assert f.status == "error"
    assert "no pickle for me" in str(f.exception(timeout=TIMEOUT))


# --------------------------------------------------------------------------
# wait
# --------------------------------------------------------------------------


def test_wait_all_and_first_completed(client, gates):
    gate = gates.new()
    slow = client.submit(gated, gate, 1, key="wait-slow")
    fast = client.submit(inc, 1, key="wait-fast")
    done, not_done = wait([slow, fast], return_when=FIRST_COMPLETED, timeout=TIMEOUT)
    assert done == {fast} and not_done == {slow}
    gates.open(gate)
    res = wait([slow, fast], return_when=ALL_COMPLETED, timeout=TIMEOUT)
    assert res.done == {slow, fast} and res.not_done == set()
    assert wait([slow, fast], return_when="FIRST_COMPLETED", timeout=TIMEOUT).done == {slow, fast}
    assert wait(fast, timeout=TIMEOUT).done == {fast}
    assert wait([], timeout=TIMEOUT) == (set(), set())
    with pytest.raises(ValueError):
        wait([fast], return_when="SOME")
    with pytest.raises(TypeError):
        wait([fast, 3])


def test_wait_timeout(client, gates):
    fs = [client.submit(gated, gates.new(), i) for i in range(2)]
    with pytest.raises(TwofoldTimeoutError):
        wait(fs, timeout=SHORT)
    with pytest.raises(TimeoutError):
        wait(fs, timeout=SHORT, return_when=FIRST_COMPLETED)
    gates.open_all()
    done, not_done = wait(fs, timeout=TIMEOUT)
    assert done == set(fs) and not not_done


def test_wait_counts_errors_and_cancellations_as_done(client, gates):
    e = client.submit(div, 1, 0)
    c = client.submit(gated, gates.new(), 1, pure=False)
    c.cancel()
    done, not_done = wait([e, c], timeout=TIMEOUT)
    assert done == {e, c} and not not_done


def test_wait_and_as_completed_over_two_clients(client, cluster):
    with Client(cluster.scheduler_address, set_as_default=False) as c2:
        a = client.submit(inc, 1, key="two-a")
        b = c2.submit(inc, 2, key="two-b")
        done, not_done = wait([a, b], timeout=TIMEOUT)
        assert done == {a, b} and not not_done
        assert sorted(v for _, v in as_completed([a, b], with_results=True)) == [2, 3]


# --------------------------------------------------------------------------
# as_completed
# --------------------------------------------------------------------------


def test_as_completed_yields_in_completion_order(client, gates):
    gate_a, gate_c = gates.new("a"), gates.new("c")
    a = client.submit(gated, gate_a, 1, key="ac-a")
    b = client.submit(inc, 2, key="ac-b")
    seq = as_completed([a, b])
    assert seq.count() == 2 and not seq.is_empty()
    wait([b], timeout=TIMEOUT)
    assert next(seq) is b
    c = client.submit(gated, gate_c, 3, key="ac-c")
    seq.add(c)
    gates.open(gate_a)
    wait([a], timeout=TIMEOUT)
    assert next(seq) is a
    gates.open(gate_c)
    wait([c], timeout=TIMEOUT)
    assert list(seq) == [c]
    assert seq.is_empty() and seq.count() == 0


def test_as_completed_with_results_and_errors(client):
    good = client.submit(inc, 1, key="good")
    bad = client.submit(div, 1, 0, key="bad")
    wait([good, bad], timeout=TIMEOUT)
    out = dict(as_completed([good, bad], with_results=True, raise_errors=False))
    assert out[good] == 2 and isinstance(out[bad], ZeroDivisionError)
    items = []
    with pytest.raises(ZeroDivisionError):
        for item in as_completed([bad], with_results=True):
            items.append(item)
    assert items == []
    assert list(as_completed([good], with_results=True)) == [(good, 2)]


def test_as_completed_add_and_update_while_iterating(client):
    seq = as_completed()
    assert seq.is_empty() and len(seq) == 0
    f1 = client.submit(inc, 1, key="t1")
    seq.add(f1)
    f3 = client.submit(inc, 3, key="t3")
    seq.update([f3])
    assert seq.count() == 2
    added = [f1, f3]
    wait(added, timeout=TIMEOUT)
    got = []
    for f in seq:  # (as_completed takes no timeout: each next() is preceded by a bounded wait)
        got.append(f.key)
        if f.key == "t1":
            added.append(client.submit(inc, 2, key="t2"))
            seq.add(added[-1])
        wait(added, timeout=TIMEOUT)
    assert sorted(got) == ["t1", "t2", "t3"] and got.index("t1") < got.index("t2")
    with pytest.raises(TypeError):
        seq.add("not a future")


def test_as_completed_batches(client, gates):
    gate = gates.new()
    fs = client.map(inc, [4, 5], key=["t4", "t5"])
    last = client.submit(gated, gate, 7, key="t6")
    wait(fs, timeout=TIMEOUT)
    seq = as_completed(fs + [last])
    first = next(seq.batches())
    assert sorted(f.key for f in first) == ["t4", "t5"]
    gates.open(gate)
    wait([last], timeout=TIMEOUT)
    assert [sorted(f.key for f in b) for b in seq.batches()] == [["t6"]]
    rb = list(as_completed(fs + [last], with_results=True).batches())
    assert [sorted(v for _, v in b) for b in rb] == [[5, 6, 7]]
    assert seq.next_batch(block=False) == []


def test_as_completed_with_a_cancelled_future(client, gates):
    f = client.submit(gated, gates.new(), 99)
    f.cancel()
    [(g, exc)] = list(as_completed([f], with_results=True, raise_errors=False))
    assert g is f and isinstance(exc, CancelledError)
    with pytest.raises(CancelledError):
        list(as_completed([f], with_results=True))
    assert list(as_completed([f])) == [f]


def test_as_completed_same_future_twice_and_clear(client):
    f = client.submit(inc, 1)
    wait([f], timeout=TIMEOUT)
    seq = as_completed([f, f])
    assert seq.count() == 2
    assert list(seq) == [f, f]
    seq = as_completed([f, client.submit(inc, 2)])
    seq.clear()
    assert seq.is_empty() and list(seq) == []


# --------------------------------------------------------------------------
# fire_and_forget, references, close
# --------------------------------------------------------------------------


def test_fire_and_forget_runs_after_the_future_is_dropped(client, cluster, gates, workers, tmp_path):
    log = str(tmp_path / "log")
    gate = gates.new()
    blockers = [client.submit(gated, gate, i, workers=[w]) for i, w in enumerate(workers)]
    f = client.submit(log_call, log, "fired", pure=False)
    key = f.key
    fire_and_forget(f)
    del f
    gc.collect()
    let_time_pass(cluster, 0.1)
    gates.open(gate)
    wait(blockers, timeout=TIMEOUT)
    eventually(cluster, lambda: lines(log) == ["fired"], what="the fire-and-forget task ran")
    eventually(cluster, lambda: key not in scheduler_keys(cluster), what="nobody wants it: forgotten")
    fire_and_forget([client.submit(log_call, log, "nested", pure=False)])
    eventually(cluster, lambda: lines(log) == ["fired", "nested"], what="the nested one ran")


def test_dropped_future_without_fire_and_forget_is_not_run(client, cluster, gates, workers, tmp_path):
    log = str(tmp_path / "log")
    gate = gates.new()
    blockers = [client.submit(gated, gate, i, workers=[w]) for i, w in enumerate(workers)]
    f = client.submit(log_call, log, "dropped", pure=False)
    key = f.key
    eventually(cluster, lambda: key in scheduler_keys(cluster))
    del f
    gc.collect()
    eventually(cluster, lambda: key not in scheduler_keys(cluster), what="the dropped key released")
    gates.open(gate)
    wait(blockers, timeout=TIMEOUT)
    let_time_pass(cluster, 0.2)
    assert lines(log) == []


def test_fire_and_forget_keeps_the_inputs_it_needs(client, cluster, gates, tmp_path):
    log = str(tmp_path / "log")
    gate = gates.new()
    a = client.submit(gated, gate, "from-a", key="ff-input")
    b = client.submit(log_call, log, a, key="ff-output")
    fire_and_forget(b)
    del a, b
    gc.collect()
    let_time_pass(cluster, 0.1)
    gates.open(gate)
    eventually(cluster, lambda: lines(log) == ["from-a"], what="the fire-and-forget task ran on its input")
    eventually(cluster, lambda: not {"ff-input", "ff-output"} & scheduler_keys(cluster), what="both forgotten")


def test_resubmitting_a_key_right_after_dropping_it(client, cluster, tmp_path):
    log = str(tmp_path / "log")
    f = client.submit(log_call, log, 1, key="resub")
    assert f.result(timeout=TIMEOUT) == 1
    del f
    gc.collect()
    g = client.submit(log_call, log, 1, key="resub")  # the drop and the new hold cancel out
    assert g.result(timeout=TIMEOUT) == 1
    assert lines(log) == ["1"]
    del g
    gc.collect()
    eventually(cluster, lambda: "resub" not in scheduler_keys(cluster), what="released")
    h = client.submit(log_call, log, 1, key="resub")  # released: computed again
    assert h.result(timeout=TIMEOUT) == 1
    assert lines(log) == ["1", "1"]


def test_scattering_the_same_data_again_after_dropping_it(client, cluster):
    for round_ in range(3):
        fs = client.scatter([1, 2, 3], timeout=TIMEOUT)
        assert client.gather(fs) == [1, 2, 3], round_
        assert client.submit(sum, fs).result(timeout=TIMEOUT) == 6
        keys = {f.key for f in fs}
        del fs
        gc.collect()
    eventually(cluster, lambda: not keys & scheduler_keys(cluster), what="released")
    fs = client.scatter([1, 2, 3], timeout=TIMEOUT)
    assert client.gather(fs) == [1, 2, 3]


def test_garbage_collected_futures_release_their_keys(client, cluster):
    fs = client.map(inc, range(6))
    s = client.scatter([1, 2, 3], timeout=TIMEOUT)
    total_f = client.submit(sum, fs)
    assert total_f.result(timeout=TIMEOUT) == 21
    keys = {f.key for f in fs} | {f.key for f in s} | {total_f.key}
    assert keys <= scheduler_keys(cluster)
    assert len(keys) == 10
    del fs, s, total_f
    gc.collect()
    probe = client.submit(inc, 0, key="probe")  # the batched releases ride with this
    assert probe.result(timeout=TIMEOUT) == 1
    eventually(cluster, lambda: not keys & scheduler_keys(cluster), what="the dropped keys released")
    assert "probe" in scheduler_keys(cluster)
    del probe
    gc.collect()
    eventually(cluster, lambda: "probe" not in scheduler_keys(cluster), what="probe released")


def test_dropped_futures_are_released_without_another_client_call(client, cluster):
    f = client.submit(inc, 1, key="dropped-idle")
    assert f.result(timeout=TIMEOUT) == 2
    del f
    gc.collect()
    eventually(cluster, lambda: "dropped-idle" not in scheduler_keys(cluster), what="released while idle")


def test_a_temporary_future_is_not_released_while_waited_on(client, cluster, gates):
    gate = gates.new()
    if not is_sim(cluster):
        gates.open_later(gate, 1.0)  # past the runtime's idle flush of releases (0.5 s)
    elif cluster._sim.virtual_time:
        gates.open(gate)  # a gate polls on virtual time there (a real timer would come too late)
    assert client.submit(gated, gate, 7).result(timeout=TIMEOUT) == 7


def test_client_context_manager_and_close(cluster, gates):
    with Client(cluster, set_as_default=False) as client:
        assert client.status == "running"
        done = client.submit(inc, 1, key="cm-done")
        assert done.result(timeout=TIMEOUT) == 2
        pending = client.submit(gated, gates.new(), 1, key="cm-pending")
        assert "Client" in repr(client) and client.id in repr(client)
    assert client.status == "closed"
    assert pending.cancelled()
    with pytest.raises(CancelledError):
        pending.result(timeout=TIMEOUT)
    with pytest.raises(RuntimeError):
        client.submit(inc, 2)
    client.close()  # twice is harmless
    gates.open_all()
    eventually(cluster, lambda: not {"cm-done", "cm-pending"} & scheduler_keys(cluster), what="keys released")
    with Client(cluster, set_as_default=False) as again:  # a new client on the same cluster works
        assert again.submit(inc, 5).result(timeout=TIMEOUT) == 6


def test_clients_have_distinct_ids_and_a_repr(client, cluster):
    with Client(cluster, set_as_default=False, name="second") as c2:
        assert c2.id != client.id
        assert c2.name == "second"
        assert client.scheduler.address == c2.scheduler.address == cluster.scheduler_address
        assert f"id={client.id!r}" in repr(client) and "status='running'" in repr(client)
        assert client.cluster is cluster


def test_get_client_outside_a_task_is_the_current_client(client, cluster):
    with client.as_current():
        assert get_client() is client
        assert Client.current() is client
        assert get_client(cluster.scheduler_address) is client


# --------------------------------------------------------------------------
# scheduler_info, nthreads, wait_for_workers
# --------------------------------------------------------------------------

INFO_FIELDS = {"name", "nthreads", "memory_limit", "resources", "active", "stored", "nbytes", "last_seen"}


def test_scheduler_info_describes_the_scheduler_and_each_worker(client, cluster, workers):
    info = client.scheduler_info()
    assert info["type"] == "Scheduler"
    assert info["address"] == client.scheduler.address == cluster.scheduler_address
    assert isinstance(info["id"], str) and info["id"]
    assert sorted(info["workers"]) == workers
    for address, w in info["workers"].items():
        assert set(w) == INFO_FIELDS, address
        assert isinstance(w["name"], str) and w["name"]
        assert w["nthreads"] == 1
        assert w["resources"] == RESOURCES
        assert w["memory_limit"] is None or isinstance(w["memory_limit"], int)
        assert (w["active"], w["stored"], w["nbytes"]) == (0, 0, 0)
        assert isinstance(w["last_seen"], float)


def test_scheduler_info_counts_tasks_processing_and_keys_stored(client, gates, workers):
    x = client.submit(big_bytes, 1000, key="info-stored", workers=[workers[0]])
    assert len(x.result(timeout=TIMEOUT)) == 1000
    running = client.submit(gated, gates.new(), 1, key="info-active", workers=[workers[1]])
    info = client.scheduler_info()["workers"]
    assert (info[workers[0]]["stored"], info[workers[0]]["active"]) == (1, 0)
    assert info[workers[0]]["nbytes"] >= 1000
    assert (info[workers[1]]["stored"], info[workers[1]]["active"]) == (0, 1)
    gates.open_all()
    assert running.result(timeout=TIMEOUT) == 1


def test_scheduler_info_is_a_fresh_copy(client, workers):
    info = client.scheduler_info()
    info["workers"][workers[0]]["resources"]["GPU"] = 99
    info["workers"].clear()
    again = client.scheduler_info()
    assert sorted(again["workers"]) == workers
    assert again["workers"][workers[0]]["resources"] == RESOURCES


def test_nthreads_and_ncores_of_all_or_some_workers(client, workers):
    assert client.nthreads() == {w: 1 for w in workers}
    assert client.ncores() == client.nthreads()
    assert client.nthreads(workers=[workers[1]]) == {workers[1]: 1}
    assert client.ncores(workers[0]) == {workers[0]: 1}
    # by name too; workers the scheduler does not know are left out
    name = client.scheduler_info()["workers"][workers[1]]["name"]
    assert client.nthreads([name, "tcp://nowhere:1"]) == {workers[1]: 1}
    with pytest.raises(TypeError, match="workers="):
        client.nthreads(workers=42)


def test_wait_for_workers_returns_once_enough_are_connected(client, workers):
    client.wait_for_workers(0)
    client.wait_for_workers(1, timeout=TIMEOUT)
    client.wait_for_workers(len(workers), timeout=TIMEOUT)
    client.wait_for_workers(n_workers=2)  # no timeout: already true


def test_wait_for_workers_times_out_with_a_clear_error(client, workers):
    with pytest.raises(TwofoldTimeoutError, match=r"fewer than 3 worker\(s\) after 0.3 s"):
        client.wait_for_workers(3, timeout=SHORT)
    # the client is still usable, and the abandoned wait does not answer a later question
    assert client.nthreads() == {w: 1 for w in workers}
    assert client.submit(inc, 1).result(timeout=TIMEOUT) == 2


def test_wait_for_workers_checks_its_arguments(client):
    with pytest.raises(TypeError, match="n_workers="):
        client.wait_for_workers("2")
    with pytest.raises(TypeError, match="n_workers="):
        client.wait_for_workers(True)
    with pytest.raises(ValueError, match="n_workers="):
        client.wait_for_workers(-1)
    with pytest.raises(TypeError, match="timeout="):
        client.wait_for_workers(1, timeout="soon")


def test_info_methods_of_a_closed_client_raise(cluster):
    c = Client(cluster, set_as_default=False)
    c.close()
    for call in (c.scheduler_info, c.nthreads, lambda: c.wait_for_workers(1, timeout=TIMEOUT)):
        with pytest.raises(RuntimeError, match="closed"):
            call()


def test_a_task_asks_about_the_cluster_through_its_client(client, workers):
    assert client.submit(workers_seen_from_a_task, 2).result(timeout=TIMEOUT) == (workers, workers)


# --------------------------------------------------------------------------
# tasks that submit tasks
# --------------------------------------------------------------------------


def test_get_client_in_a_task_with_secede_and_rejoin(client):
    # 2 threads in all: the children run while the parent has seceded
    f = client.submit(spawner, 4, key="parent")
    assert f.result(timeout=TIMEOUT) == 1 + 2 + 3 + 4


def test_tasks_submitting_tasks_recursively(client):
    # depth 3 needs 4 running tasks at once on 2 threads: only possible because each secedes
    assert client.submit(nested_spawner, 3, key="depth-3").result(timeout=TIMEOUT) == 4


def test_the_task_client_talks_to_the_same_scheduler(client):
    assert client.submit(client_address, 1).result(timeout=TIMEOUT) == client.scheduler.address


def test_secede_and_rejoin_outside_a_task_raise(client):
    with pytest.raises(RuntimeError):
        secede()
    with pytest.raises(RuntimeError):
        rejoin()
    assert client.submit(inc, 1).result(timeout=TIMEOUT) == 2


def test_a_task_may_secede_without_rejoining(client):
    assert client.submit(secede_without_rejoin, 3).result(timeout=TIMEOUT) == 1 + 2 + 3


def test_a_task_scatters_and_fires_and_forgets(client, cluster, tmp_path):
    log = str(tmp_path / "log")
    assert client.submit(scatter_and_fire_from_a_task, [1, 2, 3], log).result(timeout=TIMEOUT) == 6
    eventually(cluster, lambda: lines(log) == ["from-a-task"], what="the task's fire-and-forget ran")
