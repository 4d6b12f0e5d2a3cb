"""Hypothesis drives one scheduler and several workers through random interleavings.

The machine below plays the clients and the network of a :class:`HandWired`
cluster.  Two clients submit small random graphs (new keys, inputs among new
and known keys, priorities, ``workers=`` restrictions, ``retries=``, keys that
come back after being forgotten), take and drop references (``DesireKeys``,
``ReleaseKeys``), cancel (sometimes with force), retry, fire and forget,
scatter (sometimes the same data again), replicate and go away
(``RemoveClient``).  Independently, hypothesis decides which pending message
is delivered next (any link, each link FIFO), which execution finishes (with
success or error) and which transfer completes; workers die (idle or busy)
and join; work-stealing ticks and worker-TTL timers fire.

After every step it checks what neither machine's own validator can see (the
harness runs those after every event): the clients' reference counts against
a model kept here, what each client was last told against the key's state,
the scheduler's holders and assignments against the workers' states and
stores, and the harness's pending executions and transfers against the
workers' threads and flights.  At the end it lets the cluster settle, checks
that every held key finished (and that its client heard so), releases
everything and checks that nothing leaked on the scheduler, the workers or
their data stores.

Below the machine: deterministic reproducers of what it found (regressions
for bugs fixed since, xfail tests for open ones; the machine steers around
open ones unless ``TWOFOLD_STATEFUL_KNOWN_BUGS=expose``).

Settings: ``TWOFOLD_STATEFUL_EXAMPLES`` examples (150) of
``TWOFOLD_STATEFUL_STEPS`` steps (40); the soak test (``-m slow``, or
``TWOFOLD_SOAK=1``) runs ``TWOFOLD_SOAK_EXAMPLES`` (2000).
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
    Replicate,
    RetryKeys,
    ScatteredKey,
    TaskSpec,
    UpdateData,
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

#: Steer the machine around the open library bugs reproduced by the xfail
#: tests at the bottom of this file (look for ``AVOID_KNOWN_BUGS``).  Set
#: ``TWOFOLD_STATEFUL_KNOWN_BUGS=expose`` to drive straight into them.
AVOID_KNOWN_BUGS = os.environ.get("TWOFOLD_STATEFUL_KNOWN_BUGS", "avoid") != "expose"

CLIENTS = ("c0", "c1")
#: add_worker stops at this many live workers (more only spreads the load thinner)
MAX_WORKERS = 5
#: worker states of a task it was asked to compute and will report on
WILL_REPORT = frozenset({"waiting", "ready", "constrained", "executing", "long-running"})
STATUS_OPS = frozenset({"KeyInMemory", "KeyErred", "KeyCancelled", "KeyLost", "KeyRetried"})
#: how many rounds of (drain, fire the steal timer) teardown allows before calling it a livelock
SETTLE_ROUNDS = 200
NBYTES = st.sampled_from([8, 10**6, 0, 1000])


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

    def drop(self, client: str, key: str) -> None:
        """The client let go of its last reference: it forgets what it heard about the key."""
        del self.held[client][key]
        self.last_status.pop((client, key), None)

    def drop_all(self, client: str) -> None:
        for key in list(self.held[client]):
            self.drop(client, key)

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
        worker_ttl=st.sampled_from([1e9, 1e9, 1e9, 2.0]),
        allowed_failures=st.sampled_from([0, 1, 3, 3]),
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
        if data.draw(st.integers(0, 9), label="bad?") == 0:
            return self.submit_bad_graph(client, data.draw(st.sampled_from(["unknown", "cycle", "self"])))
        known = self.held_keys()
        extra = sorted(k for k in c.scheduler.tasks if k not in known)
        pool = known + extra
        n_new = data.draw(st.integers(1, 6), label="n_new")
        shape = data.draw(st.sampled_from(["random", "fan-out", "chain"]), label="shape")
        hub = data.draw(st.sampled_from(pool), label="hub") if pool and shape == "fan-out" else None
        specs = []
        new_keys: list[str] = []
        forgotten = [k for k in self.deps if k not in c.scheduler.tasks and k.startswith("t-")][-5:]
        for i in range(n_new):
            key = self.fresh_key()
            if forgotten and data.draw(st.integers(0, 5), label="reuse a forgotten key?") == 0:
                # keys are deterministic (dask: same function and arguments): they come back
                key = forgotten.pop(data.draw(st.integers(0, len(forgotten) - 1), label="which"))
            candidates = new_keys + pool
            deps = ()
            if candidates:
                deps = tuple(
                    data.draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True), label="deps")
                )
            if shape == "fan-out" and (hub or i):
                hub = hub or new_keys[0]
                deps = (hub,) + tuple(d for d in deps if d != hub)
            elif shape == "chain" and i:
                deps = (new_keys[-1],) + tuple(d for d in deps if d != new_keys[-1])
            priority = data.draw(st.integers(-2, 2), label="priority")
            workers = None
            allow_other = False
            if data.draw(st.integers(0, 9), label="restrict?") == 0:
                names = self.all_workers + [f"w{self._next_worker}"]
                workers = tuple(
                    data.draw(
                        st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True), label="workers"
                    )
                )
                allow_other = data.draw(st.booleans(), label="allow_other_workers")
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

    @precondition(
        lambda self: self.c is not None
        and any(ts.state == "memory" and ts.who_wants for ts in self.c.scheduler.tasks.values())
    )
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), n=st.integers(2, 6))
    def map_over(self, data, client, n):
        """Many tasks on one result in memory: they crowd its holder, and idle workers steal."""
        c = self.c
        hubs = sorted(k for k, ts in c.scheduler.tasks.items() if ts.state == "memory" and ts.who_wants)
        hub = data.draw(st.sampled_from(hubs), label="hub")
        keys = [self.fresh_key() for _ in range(n)]
        specs = tuple(TaskSpec(k, b"f", (hub,)) for k in keys)
        for k in keys:
            self.deps[k] = (hub,)
        outs = self.send(UpdateGraph(c.now, c.stimulus("submit"), client, specs, tuple(keys)))
        assert not [m for m in outs if m.op == "GraphRefused"]
        for k in keys:
            self.hold(client, k)

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

    @rule(data=st.data(), client=st.sampled_from(CLIENTS))
    def submit_more(self, data, client):
        """The same again: graphs should be common among the rules."""
        self.submit(data, client)

    @precondition(lambda self: any(self.held[c] for c in CLIENTS))
    @rule(data=st.data())
    def release(self, data):
        client = data.draw(st.sampled_from([c for c in CLIENTS if self.held[c]]), label="client")
        keys = sorted(self.held[client])
        key = data.draw(st.sampled_from(keys), label="key")
        self.send(ReleaseKeys(self.c.now, self.c.stimulus("release"), client, (key,)))
        self.held[client][key] -= 1
        if not self.held[client][key]:
            self.drop(client, key)

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
            self.last_status.pop((client, key), None)  # it holds no future for it

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
        losers = CLIENTS if force else (client,)
        expected = [(cl, k) for k in closure for cl in losers if k in self.held[cl]]
        outs = self.send(CancelKeys(c.now, c.stimulus("cancel"), client, (key,), force))
        for cl, k in expected:
            self.drop(cl, k)
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

    @precondition(lambda self: self.c is not None and self.c.workers)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), nbytes=NBYTES)
    def scatter(self, data, client, nbytes):
        """The client puts data on a worker itself (ScatterPlan already followed), then says so."""
        c = self.c
        address = data.draw(st.sampled_from(sorted(c.workers)), label="worker")
        scattered = [k for k in self.deps if k.startswith("s-")]
        if scattered and data.draw(st.integers(0, 2), label="same data again?") == 0:
            # scatter keys hash the data: the same data comes back under the same key
            key = data.draw(st.sampled_from(scattered), label="key")
        else:
            self._next_key += 1
            key = f"s-{self._next_key}"
        self.deps[key] = ()
        # what the ScatterPlan would have said of this worker's frees (a new copy must
        # survive the FreeKeys/RemoveReplicas of an older one still on its way)
        ws = c.scheduler.workers.get(address)
        c.scatter(address, {key: nbytes}, after=ws.free_seq if ws is not None else -1)
        self.after_event()
        item = ScatteredKey(key, nbytes, "int", (address,))
        self.send(UpdateData(c.now, c.stimulus("scatter"), client, (item,)))
        self.hold(client, key)

    @precondition(lambda self: self.c is not None and self.c.workers and self.c.scheduler.tasks)
    @rule(data=st.data(), client=st.sampled_from(CLIENTS), n=st.sampled_from([None, 1, 2, 3]))
    def replicate(self, data, client, n):
        """Copies of keys on more workers (or fewer: never the last one)."""
        c = self.c
        known = sorted(c.scheduler.tasks)
        keys = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3), label="keys")
        self.send(Replicate(c.now, c.stimulus("replicate"), client, tuple(keys), n))

    @rule(client=st.sampled_from(CLIENTS))
    def remove_client(self, client):
        self.send(RemoveClient(self.c.now, self.c.stimulus("remove-client"), client))
        self.drop_all(client)

    # -- the network, the threads, the transfers -------------------------------

    def _deliver(self, data) -> None:
        link = data.draw(st.sampled_from(sorted(self.c.links)), label="link")
        self.c.deliver(link)
        self.after_event()

    def _finish(self, data) -> None:
        address, key = data.draw(st.sampled_from(sorted(self.c.executions)), label="execution")
        error = "boom" if data.draw(st.integers(0, 4), label="fail?") == 0 else None
        nbytes = data.draw(NBYTES, label="nbytes")
        self.c.finish(address, key, nbytes, error)
        self.after_event()

    def _tick(self, data) -> None:
        self.c.fire_timers(self.c.timers["steal"])
        self.after_event()

    def _gather(self, data) -> None:
        address, peer = data.draw(st.sampled_from(sorted(self.c.gathers)), label="gather")
        self.c.complete_gather(address, peer)
        self.after_event()

    @precondition(lambda self: self.c is not None and self.c.busy)
    @rule(data=st.data())
    def run_a_while(self, data):
        """Several network / thread / transfer / steal-tick steps in a row, in a random order."""
        for _ in range(data.draw(st.integers(1, 12), label="n")):
            kinds = [
                name
                for name, pending in (
                    ("deliver", self.c.links),
                    ("finish", self.c.executions),
                    ("gather", self.c.gathers),
                    ("tick", "steal" in self.c.timers),
                )
                if pending
            ]
            if not kinds:
                return
            kind = data.draw(st.sampled_from(kinds), label="kind")
            getattr(self, "_" + kind)(data)

    @precondition(lambda self: self.c is not None and self.c.busy)
    @rule(data=st.data())
    def run_some_more(self, data):
        """The same again: hypothesis picks rules evenly, and progress should be common."""
        self.run_a_while(data)

    # -- membership and time -------------------------------------------------

    @precondition(lambda self: self.c is not None and self.c.workers)
    @rule(data=st.data())
    def kill(self, data):
        address = data.draw(st.sampled_from(sorted(self.c.workers)), label="worker")
        self.c.kill(address)
        self.after_event()

    @precondition(lambda self: self.c is not None and (self.c.executions or self.c.gathers))
    @rule(data=st.data())
    def kill_busy_worker(self, data):
        """Kill a worker that is running something, or that something is being fetched from."""
        c = self.c
        busy = {address for address, _ in c.executions} | {peer for _, peer in c.gathers if peer in c.workers}
        busy |= {address for address, _ in c.gathers}
        address = data.draw(st.sampled_from(sorted(busy)), label="worker")
        c.kill(address)
        self.after_event()

    @precondition(lambda self: self.c is not None and len(self.c.workers) < MAX_WORKERS)
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

    @precondition(lambda self: self.c is not None)
    @rule(to=st.sampled_from(["steal tick", "steal tick", 0.05, 0.5, 3.0]))
    def time_passes(self, to):
        """Move time to the next work-stealing tick, or on by ``to`` seconds; due timers fire.

        Worker TTL only bites in examples with a short one (see ``setup``).
        """
        c = self.c
        if to == "steal tick":
            if "steal" not in c.timers:
                return
            c.fire_timers(c.timers["steal"])
        else:
            c.fire_timers(c.now + to)
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
                    # pending again: never heard of, lost (being recomputed) or retried
                    assert last in (None, "KeyLost", "KeyRetried"), (
                        f"{client} holds {key} ({state}) but last heard {last}"
                    )
        # scheduler's view of data and work against the workers'
        for key, ts in s.tasks.items():
            for ws in ts.who_has:
                # strict: the scheduler lists a holder only once it reported the data, and
                # stops listing it before it tells it to drop the data
                w = c.workers.get(ws.address)
                assert w is not None, f"{key} held by {ws.address}, which is gone"
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
                # with nothing in flight about it, the worker must be on its way to report it
                will_report = wt.state in WILL_REPORT or (wt.state == "resumed" and wt.next == "waiting")
                assert will_report, f"{key} processing on {address}, where it is {wt.state}: it never finishes"
        # the harness's pending executions and transfers are the workers' threads and flights
        running = {
            (address, wt.key)
            for address, w in c.workers.items()
            for wt in list(w.executing) + list(w.long_running)
        }
        assert set(c.executions) == running, (sorted(c.executions), sorted(running))
        flights = {(address, peer) for address, w in c.workers.items() for peer in w.in_flight}
        assert set(c.gathers) == flights, (sorted(c.gathers), sorted(flights))
        for address, w in c.workers.items():
            # each worker's store is what its state machine says is in memory
            in_memory = {k for k, wt in w.tasks.items() if wt.state == "memory"}
            assert set(c.stores[address]) == in_memory, (
                f"{address}: store {sorted(c.stores[address])} != memory {sorted(in_memory)}"
            )
            # and the scheduler knows of that data, unless a message about it is under way
            # or the worker keeps it only for a local dependent (unowned)
            for key in in_memory:
                if w.tasks[key].unowned or self.pending_on_links(address, key):
                    continue
                ts = s.tasks.get(key)
                assert ts is not None and s.workers.get(address) in ts.who_has, (
                    f"{address} holds {key}, unknown to the scheduler ({ts}): it would never be freed"
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
        # a restricted task's inputs may themselves wait for a restricted worker: repeat
        while c.scheduler.unrunnable:
            missing = [
                name for ts in c.scheduler.unrunnable for name in ts.workers or () if name not in c.workers
            ]
            assert missing, f"unrunnable although its workers are here: {list(c.scheduler.unrunnable)}"
            for name in dict.fromkeys(missing):
                c.add_worker(name)  # the worker comes back under its old address
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
                self.drop_all(client)
            self.send(RemoveClient(c.now, c.stimulus("bye"), client))
        self.settle()
        self.cross_machine()
        assert s.tasks == {}, f"scheduler leaks {sorted(s.tasks)}"
        assert not s.queued and not s.unrunnable
        assert set(s.clients) == {FIRE_AND_FORGET} and not s.clients[FIRE_AND_FORGET].wants
        for address, w in c.workers.items():
            leaks = sorted(w.tasks)
            assert not leaks, f"{address} leaks {leaks}"
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


# --------------------------------------------------------------------------
# Deterministic regressions for what the machine found
#
# Each was a library bug when the machine found it (the commit is named);
# all were fixed upstream while this file was written.  They pin the exact
# interleaving, which the random machine may take a while to hit again.
# --------------------------------------------------------------------------


def _submit(c: HandWired, specs, wanted, client="c0"):
    return c.to_scheduler(UpdateGraph(c.now, c.stimulus("submit"), client, tuple(specs), tuple(wanted)))


def _scatter(c: HandWired, key: str, worker: str, after: int = -1) -> None:
    """A client scatters ``key`` (8 bytes) to ``worker``: data to the worker
    directly (``after``: the ScatterPlan's free_seq for it), then UpdateData."""
    c.scatter(worker, {key: 8}, after=after)
    c.to_scheduler(UpdateData(c.now, c.stimulus("scatter"), "c0", (ScatteredKey(key, 8, "int", (worker,)),)))


def _status(c: HandWired, client="c0"):
    return [(m.op, m.key) for m in c.received(client) if m.op in STATUS_OPS]


def test_retries_after_error_rerun_on_the_same_worker():
    """A: at 0175c6c the retry's FreeKeys followed its new ComputeTask, so the task hung."""
    c = HandWired(n_workers=1)
    _submit(c, [TaskSpec("t-1", b"f", retries=1)], ["t-1"])
    c.deliver(("scheduler", "w0"))
    c.finish("w0", "t-1", error="boom")
    c.deliver(("w0", "scheduler"))  # the TaskErred: one retry left
    ops = [m.op for m in c.links[("scheduler", "w0")]]
    assert "ComputeTask" in ops
    assert "FreeKeys" not in ops[ops.index("ComputeTask"):], ops
    c.drain()
    assert c.scheduler.tasks["t-1"].state == "memory"
    assert _status(c) == [("KeyInMemory", "t-1")]


def test_retry_of_failed_root_task_finishes():
    """B: at 0175c6c a stale 'waiting' recommendation freed the retried task after re-sending it."""
    c = HandWired(n_workers=1)
    _submit(c, [TaskSpec("x-1", b"f")], ["x-1"])
    c.drain(fail=frozenset({"x-1"}))
    c.to_scheduler(RetryKeys(c.now, "retry", "c0", ("x-1",)))
    c.drain()
    assert c.scheduler.tasks["x-1"].state == "memory"
    assert _status(c)[0] == ("KeyErred", "x-1") and _status(c)[-1] == ("KeyInMemory", "x-1")


def test_retry_of_killed_task_without_workers_queues_it():
    """B again: at 0175c6c, with no worker, it raised InvalidTransition queued -> waiting."""
    c = HandWired(n_workers=1, scheduler_config=SchedulerConfig(allowed_failures=0))
    _submit(c, [TaskSpec("t-1", b"f")], ["t-1"])
    c.deliver(("scheduler", "w0"))
    c.kill("w0")  # KilledWorker at once: allowed_failures=0
    assert c.scheduler.tasks["t-1"].state == "erred"
    c.to_scheduler(RetryKeys(c.now, "retry", "c0", ("t-1",)))
    assert c.scheduler.tasks["t-1"].state == "queued"
    c.add_worker("w1")
    c.drain()
    assert c.scheduler.tasks["t-1"].state == "memory"
    assert _status(c)[-1] == ("KeyInMemory", "t-1")


def test_replica_of_a_released_key_does_not_leak_on_the_worker():
    """C: at c6b7f08 a replica fetch whose only source dropped the key stayed 'missing' forever."""
    c = HandWired(n_workers=2)
    _submit(c, [TaskSpec("x-1", b"f", workers=("w0",))], ["x-1"])
    c.drain()
    c.to_scheduler(Replicate(c.now, "rep", "c0", ("x-1",), None))  # AcquireReplicas to w1
    c.to_scheduler(ReleaseKeys(c.now, "rel", "c0", ("x-1",)))  # FreeKeys to w0; x-1 forgotten
    c.deliver(("scheduler", "w0"))  # w0 drops x-1
    c.deliver(("scheduler", "w1"))  # w1 starts fetching it from w0
    c.drain()  # the fetch finds nothing
    assert c.scheduler.tasks == {}
    assert c.workers["w1"].tasks == {} and c.stores["w1"] == {}


def test_result_of_an_abandoned_run_is_not_taken_for_the_next():
    """D: at c6b7f08 a TaskFinished from a freed run counted for the key's next run on that worker.

    The worker then dropped the data and, when the new run failed, the
    scheduler ignored the error: it said 'memory on w0' with nothing there.
    """
    c = HandWired(n_workers=1)
    _submit(c, [TaskSpec("x-1", b"f")], ["x-1"])
    c.deliver(("scheduler", "w0"))
    c.finish("w0", "x-1")  # TaskFinished in flight
    c.to_scheduler(ReleaseKeys(c.now, "rel", "c0", ("x-1",)))  # forgotten; FreeKeys in flight
    _submit(c, [TaskSpec("x-1", b"f")], ["x-1"])  # the same key again: ComputeTask in flight
    c.deliver(("w0", "scheduler"))  # the old run's TaskFinished
    c.deliver(("scheduler", "w0"))  # FreeKeys: w0 drops the data
    c.deliver(("scheduler", "w0"))  # ComputeTask: w0 runs it again
    assert c.scheduler.tasks["x-1"].state == "processing"
    c.finish("w0", "x-1", error="boom")
    c.drain()
    assert c.scheduler.tasks["x-1"].state == "erred"
    assert _status(c)[-1] == ("KeyErred", "x-1")
    assert not c.scheduler.tasks["x-1"].who_has and c.stores["w0"] == {}


def test_result_from_the_previous_worker_does_not_crash_the_scheduler():
    """E: at c6b7f08 such a TaskFinished raised AttributeError in _on_task_finished (double unassign)."""
    c = HandWired(n_workers=2)
    _submit(c, [TaskSpec("x-1", b"f", workers=("w0",))], ["x-1"])
    c.deliver(("scheduler", "w0"))
    c.finish("w0", "x-1")  # TaskFinished in flight
    c.to_scheduler(ReleaseKeys(c.now, "rel", "c0", ("x-1",)))  # forgotten; FreeKeys in flight
    _submit(c, [TaskSpec("x-1", b"f", workers=("w1",))], ["x-1"])  # the same key, now on w1
    c.deliver(("w0", "scheduler"))  # w0's report of the abandoned run
    c.drain()
    ts = c.scheduler.tasks["x-1"]
    assert ts.state == "memory" and [ws.address for ws in ts.who_has] == ["w1"]
    assert c.stores == {"w0": {}, "w1": {"x-1": 8}}


def test_second_acquire_replicas_while_fetching_keeps_the_fetch_queue_sound():
    """F: at c6b7f08 a second AcquireReplicas for a key in 'fetch' queued it twice (stale per-peer entry)."""
    c = HandWired(n_workers=2)
    on_w0 = ("w0",)
    _submit(c, [TaskSpec("x-1", b"f", workers=on_w0), TaskSpec("y-1", b"f", workers=on_w0)], ["x-1", "y-1"])
    c.drain()
    c.to_scheduler(Replicate(c.now, "r1", "c0", ("y-1",), 2))
    c.deliver(("scheduler", "w1"))  # w1 fetches y-1 from w0: w0 is now busy for w1
    c.to_scheduler(Replicate(c.now, "r2", "c0", ("x-1",), 2))
    c.to_scheduler(Replicate(c.now, "r3", "c0", ("x-1",), 2))
    c.deliver(("scheduler", "w1"))  # x-1 -> fetch (its holder is busy)
    c.deliver(("scheduler", "w1"))  # x-1 again, while in fetch
    w1 = c.workers["w1"]
    assert list(w1.data_needed.values()).count(w1.tasks["x-1"]) == 1
    c.drain()
    assert c.stores["w1"].keys() == {"x-1", "y-1"}
    assert {ws.address for ws in c.scheduler.tasks["x-1"].who_has} == {"w0", "w1"}


def test_add_replicas_while_computing_the_key_there_keeps_the_result():
    """G: at 828967f the scheduler answered an AddReplicas for a key it had meanwhile asked that
    same worker to compute with RemoveReplicas; the worker answered the ComputeTask from its copy,
    then dropped it: the scheduler said memory on w1, w1 held nothing."""
    c = HandWired(n_workers=2)
    _submit(c, [TaskSpec("x-1", b"f")], ["x-1"])
    c.drain()  # x-1 on w0
    _submit(c, [TaskSpec("y-1", b"f", ("x-1",), workers=("w1",))], ["y-1"])
    c.deliver(("scheduler", "w1"))  # ComputeTask y-1: w1 fetches x-1 from w0
    c.complete_gather("w1", "w0")  # w1 has a copy of x-1; its AddReplicas is in flight
    c.kill("w0")  # the scheduler thinks x-1 is lost: ComputeTask x-1 to w1
    c.deliver(("w1", "scheduler"))  # AddReplicas(x-1) while x-1 is processing on w1: RemoveReplicas
    c.drain()  # w1 answers the ComputeTask from memory (TaskFinished), then drops x-1
    ts = c.scheduler.tasks["x-1"]
    assert ts.state == "memory" and [ws.address for ws in ts.who_has] == ["w1"]
    assert "x-1" in c.stores["w1"], "scheduler says x-1 is in memory on w1; w1 holds nothing"


def test_scatter_onto_a_key_in_flight_then_release_leaves_nothing_behind():
    """I: at f42c308 scattered data put a key in flight in memory but left it in the transfer batch;
    once released, the transfer's data landed in the store and nothing deleted it."""
    c = HandWired(n_workers=2)

    _scatter(c, "s-1", "w0")
    _submit(c, [TaskSpec("t-1", b"f", ("s-1",), workers=("w1",))], ["t-1"])
    c.deliver(("scheduler", "w1"))  # ComputeTask t-1: w1 fetches s-1 from w0
    _scatter(c, "s-1", "w1")  # the same data put on w1 by the client meanwhile
    c.to_scheduler(CancelKeys(c.now, "cancel", "c0", ("s-1",)))  # s-1 and t-1: FreeKeys
    c.deliver(("scheduler", "w1"))  # w1 forgets s-1, which is still in its transfer batch
    c.complete_gather("w1", "w0")  # the transfer arrives
    c.drain()
    assert c.scheduler.tasks == {}
    assert c.workers["w1"].tasks == {}
    assert c.stores["w1"] == {}, "w1's store keeps data no state machine knows of"


def test_scatter_onto_the_only_key_in_flight_keeps_it():
    """J: at e5f9c1a (the fix of I) scattering onto the only key of a transfer emptied the batch, and
    the arriving transfer was taken for 'nothing of ours was asked': everything it brought was
    deleted, the scattered key included, while worker and scheduler said memory on w1."""
    c = HandWired(n_workers=2)

    _scatter(c, "s-1", "w0")
    _submit(c, [TaskSpec("t-1", b"f", ("s-1",), workers=("w1",))], ["t-1"])
    c.deliver(("scheduler", "w1"))  # ComputeTask t-1: w1 fetches s-1 (alone) from w0
    _scatter(c, "s-1", "w1")  # the same data put on w1 by the client meanwhile: the batch is now empty
    c.complete_gather("w1", "w0")  # the transfer arrives
    assert c.workers["w1"].tasks["s-1"].state == "memory"
    assert "w1" in [ws.address for ws in c.scheduler.tasks["s-1"].who_has]
    assert "s-1" in c.stores["w1"], "w1 and the scheduler say memory on w1; w1's store holds nothing"


# --------------------------------------------------------------------------
# Open library bugs: deterministic reproducers (the machine steers around them)
# --------------------------------------------------------------------------


def test_bug_h_rescatter_after_release_loses_the_data():
    c = HandWired(n_workers=1)

    def scatter(key):
        # carrying what the ScatterPlan said of w0's frees
        _scatter(c, key, "w0", after=c.scheduler.workers["w0"].free_seq)

    scatter("s-1")
    c.to_scheduler(ReleaseKeys(c.now, "rel", "c0", ("s-1",)))  # s-1 forgotten: FreeKeys on its way to w0
    scatter("s-1")  # the same data again, before that FreeKeys arrives
    c.drain()
    assert "s-1" in c.stores["w0"], "scheduler says s-1 is in memory on w0; w0 holds nothing"
    _submit(c, [TaskSpec("t-1", b"f", ("s-1",))], ["t-1"])
    c.drain()
    assert c.scheduler.tasks["t-1"].state == "memory"


def test_lost_input_of_a_task_running_elsewhere_sends_it_back_to_waiting():
    """I: at afd9533 a worker's death left a task processing while its input was recomputed.

    ``a`` and ``c`` (which needs ``b``) are in memory on w0; ``b`` (needs
    ``a``) runs again on w1 for ``e``; ``d`` (needs ``a``) runs on w0.  w0
    dies: ``a`` is lost, so ``b`` was recommended back to waiting — but ``d``
    fails (KilledWorker), ``e`` errs with it, and dropping ``e``'s inputs
    overwrote ``b``'s recommendation with 'released'.  The lost ``c``, still
    wanted, then needed ``b`` again, so the release was a no-op and ``b``
    stayed processing on w1 with its input ``a`` not in memory.
    """
    c = HandWired(n_workers=2, scheduler_config=SchedulerConfig(allowed_failures=0), validate=True)
    w0 = ("w0",)
    _submit(c, [TaskSpec("a", b"f", workers=w0)], ["a"])
    _submit(c, [TaskSpec("b", b"f", ("a",)), TaskSpec("c", b"f", ("b",), workers=w0)], ["c"])
    c.drain()
    assert c.scheduler.tasks["b"].state == "released"  # only c needed it
    _submit(c, [TaskSpec("d", b"f", ("a",), workers=w0)], ["d"])  # w0's one thread is d's
    _submit(c, [TaskSpec("e", b"f", ("b", "d"))], ["e"])
    c.deliver(("scheduler", "w0"))
    s = c.scheduler
    assert [s.tasks[k].processing_on.address for k in "bd"] == ["w1", "w0"]
    c.kill("w0")  # validate=True: the scheduler's invariants hold after the event
    assert s.tasks["a"].state != "memory" and s.tasks["b"].state == "waiting"
    assert s.tasks["e"].state == "erred" and s.tasks["d"].state == "erred"
    c.add_worker("w0")  # the restricted tasks' worker comes back
    c.drain()
    assert s.tasks["c"].state == "memory" and s.tasks["a"].state == "memory"
