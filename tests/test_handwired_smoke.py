"""End-to-end runs of both machines through the hand-wired router."""

from twofold.handwired import HandWired
from twofold.messages import ReleaseKeys, RetryKeys, TaskSpec, UpdateGraph


def submit(c: HandWired, specs, wanted, client="c"):
    c.to_scheduler(UpdateGraph(c.now, c.stimulus("submit"), client, tuple(specs), tuple(wanted)))


def test_diamond_computes_and_releases_everything():
    c = HandWired(n_workers=2)
    submit(c, [TaskSpec("a-1", b"f"), TaskSpec("b-1", b"f"), TaskSpec("c-1", b"f", ("a-1", "b-1"))], ["c-1"])
    c.drain()
    [msg] = c.received("c")
    assert (msg.op, msg.key) == ("KeyInMemory", "c-1")
    # inputs were freed once c-1 was in memory; only the wanted key holds data
    assert {k for store in c.stores.values() for k in store} == {"c-1"}
    c.to_scheduler(ReleaseKeys(c.now, "rel", "c", ("c-1",)))
    c.drain()
    assert c.scheduler.tasks == {}
    assert all(store == {} for store in c.stores.values())
    assert all(ws.tasks == {} for ws in c.workers.values())


def test_error_reaches_dependents_and_retry_recovers():
    c = HandWired(n_workers=1)
    submit(c, [TaskSpec("x-1", b"f"), TaskSpec("y-1", b"f", ("x-1",))], ["y-1"])
    c.drain(fail=frozenset({"x-1"}))
    [err] = c.received("c")
    assert (err.op, err.key, err.blamed, err.error.message) == ("KeyErred", "y-1", "x-1", "boom")
    c.to_scheduler(RetryKeys(c.now, "retry", "c", ("y-1",)))
    c.drain()
    assert c.received("c")[-1].op == "KeyInMemory"


def test_worker_death_recomputes_lost_results():
    c = HandWired(n_workers=2)
    submit(c, [TaskSpec(f"z-{i}", b"f") for i in range(6)], [f"z-{i}" for i in range(6)])
    c.drain()
    lost = [ts.key for ts in c.scheduler.tasks.values() if c.scheduler.workers["w0"] in ts.who_has]
    assert lost
    submit(c, [TaskSpec(f"q-{i}", b"f", (f"z-{i}",)) for i in range(6)], [f"q-{i}" for i in range(6)])
    c.kill("w0")
    c.drain()
    done = {m.key for m in c.received("c", "KeyInMemory")}
    assert done >= {f"q-{i}" for i in range(6)}
    assert {m.key for m in c.received("c", "KeyLost")} == set(lost)
