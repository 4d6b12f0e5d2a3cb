"""Invariants of one worker's state, checkable after any event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.worker.state import RUNNING

if TYPE_CHECKING:
    from twofold.worker.machine import WorkerState

STATES = {
    "waiting", "ready", "constrained", "executing", "long-running", "memory",
    "fetch", "flight", "missing", "cancelled", "resumed", "released",
}


def validate_worker(w: WorkerState) -> None:
    for key, ts in w.tasks.items():
        where = f"{w.address}: task {key!r} ({ts.state})"
        assert ts.key == key, where
        assert ts.state in STATES, f"{where}: unknown state"
        assert w.address not in ts.who_has, f"{where}: lists itself as a holder"
        for dep in ts.dependencies:
            assert w.tasks.get(dep.key) is dep, f"{where}: input {dep.key!r} forgotten"
            assert ts in dep.dependents, f"{where}: not a dependent of {dep.key!r}"
        for dts in ts.dependents:
            assert w.tasks.get(dts.key) is dts, f"{where}: dependent {dts.key!r} forgotten"
            assert ts in dts.dependencies, f"{where}: dependent {dts.key!r} does not list it"
        state = ts.state
        running_like = state in RUNNING or (state in ("cancelled", "resumed") and ts.previous in RUNNING)
        in_thread = ts in w.executing
        seceded = ts in w.long_running
        assert running_like == (in_thread or seceded), f"{where}: thread bookkeeping"
        assert not (in_thread and seceded), f"{where}: both executing and long-running"
        if state == "executing":
            assert in_thread, f"{where}: not holding a thread"
        if state == "long-running":
            assert seceded, f"{where}: not in long_running"
        if state == "waiting":
            expected = {d for d in ts.dependencies if d.state != "memory"}
            assert set(ts.waiting_on) == expected and expected, f"{where}: waiting_on"
        elif state not in ("cancelled", "resumed"):
            assert not ts.waiting_on, f"{where}: waiting_on outside waiting"
        if state in ("ready", "constrained", "executing"):
            for dep in ts.dependencies:
                assert dep.state == "memory", f"{where}: input {dep.key!r} is {dep.state}"
        assert (state == "ready") == (ts in w.ready), f"{where}: ready queue"
        if state == "ready":
            assert w.ready.key_of(ts) == ts.order, f"{where}: queued under a stale order"
        assert (state == "constrained") == (ts in w.constrained), f"{where}: constrained queue"
        fetching = state == "fetch"
        assert fetching == (w.data_needed.get(ts.order) is ts), f"{where}: data_needed"
        if fetching:
            assert ts.who_has, f"{where}: fetch with no holder"
            for peer in ts.who_has:
                assert w.data_needed_per_peer[peer].get(ts.order) is ts, f"{where}: per-peer index for {peer}"
        if state == "missing":
            assert not ts.who_has, f"{where}: missing but has holders"
        flying = state == "flight" or (state in ("cancelled", "resumed") and ts.previous == "flight")
        if flying:
            assert ts.coming_from is not None and ts in w.in_flight.get(ts.coming_from, ()), f"{where}: not in flight"
        if state in ("cancelled", "resumed"):
            assert ts.previous in ("executing", "long-running", "flight"), f"{where}: previous={ts.previous}"
        if state == "resumed":
            assert ts.next in ("fetch", "waiting"), f"{where}: next={ts.next}"
        if state == "memory":
            assert ts.nbytes >= 0, f"{where}: nbytes"
        if fetching or state in ("missing", "flight"):
            assert ts.dependents or not ts.dependencies, f"{where}: an input with dependencies"
    for peer, per_peer in w.data_needed_per_peer.items():
        assert per_peer, f"{w.address}: empty per-peer index for {peer}"
        for ts in per_peer.values():
            assert ts.state == "fetch" and peer in ts.who_has, f"{w.address}: stale per-peer {ts.key!r}"
    for peer, batch in w.in_flight.items():
        for ts in batch:
            assert ts.coming_from == peer or ts.state == "memory", f"{w.address}: {ts.key!r} in flight from {peer}"
    assert len(w.executing) <= w.nthreads, f"{w.address}: {len(w.executing)} executing > {w.nthreads} threads"
    for ts in w.rejoining:
        assert ts in w.long_running, f"{w.address}: rejoining {ts.key!r} not seceded"
    used: dict[str, float] = {}
    for ts in list(w.executing) + list(w.long_running):
        for name, amount in (ts.resources or {}).items():
            used[name] = used.get(name, 0) + amount
    for name, total in w.total_resources.items():
        assert abs(w.available_resources[name] + used.get(name, 0) - total) < 1e-9, f"{w.address}: resource {name}"
        assert w.available_resources[name] >= -1e-9, f"{w.address}: resource {name} overcommitted"
