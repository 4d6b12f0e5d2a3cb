"""Hypothesis drives one scheduler and several workers through random interleavings.

The machine below plays the clients and the network of a :class:`HandWired`
cluster: it submits small random graphs from two clients, takes and drops
references, cancels, retries, fires and forgets, and, independently, decides
which pending message is delivered next (any link, each link FIFO), which
execution finishes (with success or error) and which transfer completes;
workers die and join; timers (work stealing, worker TTL) fire.

After every step it checks the cross-machine invariants that neither machine's
own validator can see (the harness runs those after every event), against a
model of what each client holds.  At the end it lets the cluster settle and
checks that every held key finished, then releases everything and checks that
nothing leaked on the scheduler, the workers or their data stores.

Settings: the default profile runs ``TWOFOLD_STATEFUL_EXAMPLES`` examples
(150) of ``TWOFOLD_STATEFUL_STEPS`` steps (40); ``-m slow`` runs a soak test
with many more.
"""

from __future__ import annotations

import os
from collections import deque

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from twofold.config import SchedulerConfig
from twofold.handwired import HandWired
from twofold.messages import (
    CancelKeys,
    DesireKeys,
    FireAndForget,
    ReleaseKeys,
    RemoveClient,
    RetryKeys,
    TaskSpec,
    UpdateGraph,
    WorkerHeartbeat,
)
from twofold.scheduler.transitions import FIRE_AND_FORGET

# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------

settings.register_profile(
    "twofold-stateful",
    max_examples=int(os.environ.get("TWOFOLD_STATEFUL_EXAMPLES", "150")),
    stateful_step_count=int(os.environ.get("TWOFOLD_STATEFUL_STEPS", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "twofold-stateful-soak",
    parent=settings.get_profile("twofold-stateful"),
    max_examples=int(os.environ.get("TWOFOLD_SOAK_EXAMPLES", "2000")),
)

CLIENTS = ("c0", "c1")
STATUS_OPS = frozenset({"KeyInMemory", "KeyErred", "KeyCancelled", "KeyLost"})
#: how many rounds of (drain, fire the steal timer) teardown allows before calling it a livelock
SETTLE_ROUNDS = 200
NBYTES = st.sampled_from([0, 8, 8, 1000, 10**6])


def _mentions(msg, key: str) -> bool:
    """Does this wire message talk about ``key``?"""
    if getattr(msg, "key", None) == key:
        return True
    if key in (getattr(msg, "keys", None) or ()):
        return True
    for name in ("who_has", "nbytes"):
        value = getattr(msg, name, None)
        if isinstance(value, dict) and key in value:
            return True
    return False


class ClusterMachine(RuleBasedStateMachine):
    """Clients ``c0``/``c1`` and the network of a hand-wired cluster, played by hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.c: HandWired | None = None
        #: the model: client -> {key: references held}
        self.held: dict[str, dict[str, int]] = {c: {} for c in CLIENTS}
        #: key -> dependencies, as submitted, for every key this test created
        self.deps: dict[str, tuple[str, ...]] = {}
        #: key -> (workers, allow_other_workers) for restricted keys
        self.restricted: dict[str, tuple[tuple[str, ...], bool]] = {}
        #: (client, key) -> op of the last status message the client got for key
        self.last_status: dict[tuple[str, str], str] = {}
        self._seen: dict[str, int] = {}
        self._closed_seen = 0
        self._next_key = 0
        self._next_worker = 0
        self.all_workers: list[str] = []

    # -- helpers -------------------------------------------------------------

    def fresh_key(self) -> str:
        self._next_key += 1
        return f"t-{self._next_key}"

    def held_keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for client in CLIENTS:
            keys.update(dict.fromkeys(self.held[client]))
        return sorted(keys)

    def hold(self, client: str, key: str, n: int = 1) -> None:
        self.held[client][key] = self.held[client].get(key, 0) + n

    def send(self, event) -> list:
        outs = self.c.to_scheduler(event)
        self.after_event()
        return outs

    def after_event(self) -> None:
        """Read new client messages; make workers the scheduler closed really go."""
        c = self.c
        for client, msgs in c.inbox.items():
            start = self._seen.get(client, 0)
            for msg in msgs[start:]:
                if msg.op in STATUS_OPS:
                    self.last_status[(client, msg.key)] = msg.op
            self._seen[client] = len(msgs)
        while self._closed_seen < len(c.closed):
            msg = c.closed[self._closed_seen]
            self._closed_seen += 1
            if msg.worker in c.workers:
                # the scheduler already removed it (TTL): the process goes too
                c.kill(msg.worker)

    def new_worker_name(self) -> str:
        name = f"w{self._next_worker}"
        self._next_worker += 1
        self.all_workers.append(name)
        return name

    def pending_on_links(self, worker: str, key: str) -> bool:
        for link in ((("scheduler", worker)), (worker, "scheduler")):
            for msg in self.c.links.get(link, ()):
                if _mentions(msg, key):
                    return True
        return False

    # -- setup -------------------------------------------------------------

    @initialize(
        n_workers=st.integers(1, 3),
        nthreads=st.integers(1, 2),
        worker_ttl=st.sampled_from([1e9, 1e9, 0.5, 2.0]),
        allowed_failures=st.sampled_from([0, 1, 3]),
        steal_interval=st.sampled_from([0.1, 0.1, 0.0]),
    )
    def setup(self, n_workers, nthreads, worker_ttl, allowed_failures, steal_interval):
        config = SchedulerConfig(
            worker_ttl=worker_ttl, allowed_failures=allowed_failures, steal_interval=steal_interval
        )
        self.c = HandWired(n_workers=0, nthreads=nthreads, scheduler_config=config, validate=True)
        for _ in range(n_workers):
            self.c.add_worker(self.new_worker_name())

    # -- clients -----------------------------------------------------------

    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def submit(self, data, client):
        """A small graph of new tasks, with inputs among new and already-known keys."""
        c = self.c
        known = self.held_keys()
        extra = sorted(k for k in c.scheduler.tasks if k not in known)
        pool = known + extra
        n_new = data.draw(st.integers(1, 4), label="n_new")
        specs = []
        new_keys: list[str] = []
        for _ in range(n_new):
            key = self.fresh_key()
            candidates = new_keys + pool
            deps = ()
            if candidates:
                deps = tuple(
                    data.draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True), label="deps")
                )
            priority = data.draw(st.integers(-2, 2), label="priority")
            workers = None
            allow_other = False
            if data.draw(st.integers(0, 9), label="restrict?") == 0:
                names = self.all_workers + [f"w{self._next_worker}"]
                workers = tuple(
                    data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True), label="workers")
                )
                allow_other = data.draw(st.booleans(), label="allow_other_workers")
                self.restricted[key] = (workers, allow_other)
            retries = data.draw(st.sampled_from([0, 0, 0, 1, 2]), label="retries")
            specs.append(TaskSpec(key, b"f", deps, priority, workers, allow_other, None, retries))
            new_keys.append(key)
            self.deps[key] = deps
        # sometimes resubmit a key that already exists (deduplicated onto it)
        if known and data.draw(st.integers(0, 4), label="dedup?") == 0:
            old = data.draw(st.sampled_from(known), label="dup")
            specs.insert(data.draw(st.integers(0, len(specs)), label="at"), TaskSpec(old, b"g", (), 5))
        wanted = data.draw(
            st.lists(st.sampled_from(new_keys + known), min_size=1, max_size=4), label="wanted"
        ) if new_keys else []
        outs = self.send(UpdateGraph(c.now, c.stimulus("submit"), client, tuple(specs), tuple(wanted)))
        refused = [m for m in outs if m.op == "GraphRefused"]
        assert not refused, f"valid graph refused: {refused[0].error.message}"
        for key in wanted:
            self.hold(client, key)

    @rule(client=st.sampled_from(CLIENTS), kind=st.sampled_from(["unknown", "cycle", "self"]))
    def submit_bad_graph(self, client, kind):
        """A graph the scheduler must refuse, changing nothing."""
        c = self.c
        a, b = self.fresh_key(), self.fresh_key()
        if kind == "unknown":
            specs = (TaskSpec(a, b"f", ("never-submitted-1",)),)
        elif kind == "cycle":
            specs = (TaskSpec(a, b"f", (b,)), TaskSpec(b, b"f", (a,)))
        else:
            specs = (TaskSpec(a, b"f", (a,)),)
        before = sorted(c.scheduler.tasks)
        outs = self.send(UpdateGraph(c.now, c.stimulus("bad"), client, specs, (a,)))
        assert [m.op for m in outs] == ["GraphRefused"], outs
        assert sorted(c.scheduler.tasks) == before

    @precondition(lambda self: any(self.held[c] for c in CLIENTS))
    @rule(data=st.data())
    def release(self, data):
        client = data.draw(st.sampled_from([c for c in CLIENTS if self.held[c]]), label="client")
        keys = sorted(self.held[client])
        key = data.draw(st.sampled_from(keys), label="key")
        self.send(ReleaseKeys(self.c.now, self.c.stimulus("release"), client, (key,)))
        self.held[client][key] -= 1
        if not self.held[client][key]:
            del self.held[client][key]

    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def desire(self, data, client):
        """One more reference to a key the scheduler knows (or, sometimes, forgot)."""
        c = self.c
        choices = sorted(c.scheduler.tasks) + [k for k in self.deps if k not in c.scheduler.tasks][:2]
        if not choices:
            return
        key = data.draw(st.sampled_from(choices), label="key")
        known = key in c.scheduler.tasks
        outs = self.send(DesireKeys(c.now, c.stimulus("desire"), client, (key,)))
        if known:
            self.hold(client, key)
        else:
            assert [(m.op, m.key) for m in outs] == [("KeyCancelled", key)], outs

    @precondition(lambda self: self.c is not None and self.c.scheduler.tasks)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), force=st.booleans())
    def cancel(self, data, client, force):
        c = self.c
        keys = sorted(c.scheduler.tasks)
        key = data.draw(st.sampled_from(keys), label="key")
        # the closure: the key and, recursively, its dependents
        dependents: dict[str, list[str]] = {}
        for k, deps in self.deps.items():
            for d in deps:
                dependents.setdefault(d, []).append(k)
        closure: dict[str, None] = {}
        stack = [key]
        while stack:
            k = stack.pop()
            if k in closure:
                continue
            closure[k] = None
            stack.extend(dependents.get(k, ()))
        expected = []
        for k in closure:
            for cl in CLIENTS if force else (client,):
                if k in self.held[cl]:
                    del self.held[cl][k]
                    expected.append((cl, k))
        outs = self.send(CancelKeys(c.now, c.stimulus("cancel"), client, (key,), force))
        got = [(m.client, m.key) for m in outs if m.op == "KeyCancelled"]
        assert sorted(got) == sorted(expected), (got, expected)

    @precondition(lambda self: self.c is not None and self.c.scheduler.tasks)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def retry(self, data, client):
        c = self.c
        erred = sorted(k for k, ts in c.scheduler.tasks.items() if ts.state == "erred")
        key = data.draw(st.sampled_from(erred or sorted(c.scheduler.tasks)), label="key")
        self.send(RetryKeys(c.now, c.stimulus("retry"), client, (key,)))

    @precondition(lambda self: self.c is not None and self.c.scheduler.tasks)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def fire_and_forget(self, data, client):
        c = self.c
        key = data.draw(st.sampled_from(sorted(c.scheduler.tasks)), label="key")
        self.send(FireAndForget(c.now, c.stimulus("ff"), client, (key,)))

    @rule(client=st.sampled_from(CLIENTS))
    def remove_client(self, client):
        self.send(RemoveClient(self.c.now, self.c.stimulus("remove-client"), client))
        self.held[client] = {}

    # -- the network, the threads, the transfers -------------------------------

    def _deliver(self, data) -> None:
        link = data.draw(st.sampled_from(sorted(self.c.links)), label="link")
        self.c.deliver(link)
        self.after_event()

    def _finish(self, data) -> None:
        address, key = data.draw(st.sampled_from(sorted(self.c.executions)), label="execution")
        error = data.draw(st.sampled_from([None, None, None, "boom"]), label="error")
        nbytes = data.draw(NBYTES, label="nbytes")
        self.c.finish(address, key, nbytes, error)
        self.after_event()

    def _gather(self, data) -> None:
        address, peer = data.draw(st.sampled_from(sorted(self.c.gathers)), label="gather")
        self.c.complete_gather(address, peer)
        self.after_event()

    @precondition(lambda self: self.c is not None and self.c.links)
    @rule(data=st.data())
    def deliver(self, data):
        self._deliver(data)

    @precondition(lambda self: self.c is not None and self.c.executions)
    @rule(data=st.data())
    def finish(self, data):
        self._finish(data)

    @precondition(lambda self: self.c is not None and self.c.gathers)
    @rule(data=st.data())
    def complete_gather(self, data):
        self._gather(data)

    @precondition(lambda self: self.c is not None and self.c.busy)
    @rule(data=st.data())
    def run_a_while(self, data):
        """Several network / thread / transfer steps in a row, in a random order."""
        for _ in range(data.draw(st.integers(1, 8), label="n")):
            kinds = [
                name
                for name, pending in (
                    ("deliver", self.c.links),
                    ("finish", self.c.executions),
                    ("gather", self.c.gathers),
                )
                if pending
            ]
            if not kinds:
                return
            kind = data.draw(st.sampled_from(kinds), label="kind")
            getattr(self, "_" + kind)(data)

    # -- membership and time -------------------------------------------------

    @precondition(lambda self: self.c is not None and self.c.workers)
    @rule(data=st.data())
    def kill(self, data):
        address = data.draw(st.sampled_from(sorted(self.c.workers)), label="worker")
        self.c.kill(address)
        self.after_event()

    @rule(nthreads=st.integers(1, 2))
    def add_worker(self, nthreads):
        self.c.add_worker(self.new_worker_name(), nthreads)
        self.after_event()

    @precondition(lambda self: self.c is not None and self.c.workers)
    @rule(data=st.data())
    def heartbeat(self, data):
        address = data.draw(st.sampled_from(sorted(self.c.workers)), label="worker")
        link = self.c.links.setdefault((address, "scheduler"), deque())
        link.append(WorkerHeartbeat(self.c.now, self.c.stimulus("heartbeat"), address, 0, 0))

    @precondition(lambda self: self.c is not None and self.c.timers)
    @rule()
    def fire_timers(self):
        self.c.fire_timers()
        self.after_event()

    # -- invariants ----------------------------------------------------------

    @invariant()
    def cross_machine(self):
        c = self.c
        if c is None:
            return
        s = c.scheduler
        # the model's references are the scheduler's
        for client in CLIENTS:
            cs = s.clients.get(client)
            wants = dict(cs.wants) if cs is not None else {}
            assert wants == self.held[client], f"{client}: scheduler {wants} != model {self.held[client]}"
        ff = s.clients[FIRE_AND_FORGET]
        for key, count in ff.wants.items():
            assert count == 1 and s.tasks[key].state not in ("memory", "erred"), (key, count)
        # what clients were told agrees with the scheduler
        for client in CLIENTS:
            for key in self.held[client]:
                state = s.tasks[key].state
                last = self.last_status.get((client, key))
                if state == "memory":
                    assert last == "KeyInMemory", f"{client} holds {key} (memory) but last heard {last}"
                elif state == "erred":
                    assert last == "KeyErred", f"{client} holds {key} (erred) but last heard {last}"
                else:
                    assert last != "KeyInMemory", f"{client} holds {key} ({state}) but last heard KeyInMemory"
        # scheduler's view of data and work against the workers'
        for key, ts in s.tasks.items():
            for ws in ts.who_has:
                w = c.workers.get(ws.address)
                assert w is not None, f"{key} held by {ws.address}, which is gone"
                if self.pending_on_links(ws.address, key):
                    continue
                wt = w.tasks.get(key)
                assert wt is not None and wt.state == "memory", (
                    f"scheduler: {key} in memory on {ws.address}; worker: {wt}"
                )
                assert key in c.stores[ws.address], f"{key} not in {ws.address}'s store"
            if ts.state == "processing":
                address = ts.processing_on.address
                w = c.workers.get(address)
                assert w is not None, f"{key} processing on {address}, which is gone"
                if self.pending_on_links(address, key):
                    continue
                wt = w.tasks.get(key)
                assert wt is not None, f"{key} processing on {address}, which does not know it"
        # each worker's store is what its state machine says is in memory
        for address, w in c.workers.items():
            in_memory = {k for k, wt in w.tasks.items() if wt.state == "memory"}
            assert set(c.stores[address]) == in_memory, (
                f"{address}: store {sorted(c.stores[address])} != memory {sorted(in_memory)}"
            )

    # -- the end -------------------------------------------------------------

    def settle(self) -> None:
        """Run everything pending to completion, firing the steal timer too (bounded)."""
        c = self.c
        for _ in range(SETTLE_ROUNDS):
            c.drain()
            self.after_event()
            if c.busy:
                continue
            if "steal" not in c.timers:
                return
            # keep the workers alive while time moves for the steal timer
            for address in sorted(c.workers):
                c.to_scheduler(WorkerHeartbeat(c.now, c.stimulus("heartbeat"), address, 0, 0))
            c.fire_timers(c.timers["steal"])
            self.after_event()
            if not c.busy:
                return
        raise AssertionError(f"the cluster did not settle in {SETTLE_ROUNDS} rounds")

    def ensure_runnable(self) -> None:
        """Workers for every task that may only run on workers that are gone."""
        c = self.c
        if not c.workers:
            c.add_worker(self.new_worker_name())
            self.after_event()
        self.settle()
        for ts in list(c.scheduler.unrunnable):
            for name in ts.workers or ():
                if name not in c.workers:
                    c.add_worker(name)
                    self.after_event()
        self.settle()

    def teardown(self):
        c = self.c
        if c is None:
            return
        self.ensure_runnable()
        self.cross_machine()
        s = c.scheduler
        for client in CLIENTS:
            for key in self.held[client]:
                ts = s.tasks.get(key)
                assert ts is not None and ts.state in ("memory", "erred"), f"{client} holds unfinished {ts}"
                last = self.last_status.get((client, key))
                expected = "KeyInMemory" if ts.state == "memory" else "KeyErred"
                assert last == expected, f"{client}: {key} is {ts.state}, last heard {last}"
        # let go of everything: repeated keys in one ReleaseKeys drop one reference each
        for client in CLIENTS:
            keys = tuple(k for k, n in sorted(self.held[client].items()) for _ in range(n))
            if keys:
                self.send(ReleaseKeys(c.now, c.stimulus("release-all"), client, keys))
                self.held[client] = {}
            self.send(RemoveClient(c.now, c.stimulus("bye"), client))
        self.settle()
        self.cross_machine()
        assert s.tasks == {}, f"scheduler leaks {sorted(s.tasks)}"
        assert not s.queued and not s.unrunnable
        assert set(s.clients) == {FIRE_AND_FORGET} and not s.clients[FIRE_AND_FORGET].wants
        for address, w in c.workers.items():
            assert w.tasks == {}, f"{address} leaks {sorted(w.tasks)}"
            assert c.stores[address] == {}, f"{address} store leaks {sorted(c.stores[address])}"
            assert not s.workers[address].has_what and not s.workers[address].processing
            assert s.workers[address].occupancy == 0


TestClusterMachine = ClusterMachine.TestCase
TestClusterMachine.settings = settings.get_profile("twofold-stateful")


@pytest.mark.slow
def test_cluster_machine_soak(request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("TWOFOLD_SOAK"):
        pytest.skip("soak run: select with -m slow (or set TWOFOLD_SOAK=1)")
    run_state_machine_as_test(ClusterMachine, settings=settings.get_profile("twofold-stateful-soak"))
