"""Invariants of the scheduler state, checkable after any event.

Tests, the simulator and the hypothesis state machine call
:func:`validate_scheduler`; it raises ``AssertionError`` naming the first
broken rule.  Cost is O(tasks + workers): not for production hot paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.scheduler.state import NEEDS_INPUTS

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState

STATES = {"released", "waiting", "queued", "no-worker", "processing", "memory", "erred"}


def validate_scheduler(s: SchedulerState) -> None:
    workers = s.workers
    for key, ts in s.tasks.items():
        where = f"task {key!r} ({ts.state})"
        assert ts.key == key, where
        assert ts.state in STATES, f"{where}: unknown state"
        for dep in ts.dependencies:
            assert dep.state != "forgotten" and s.tasks.get(dep.key) is dep, f"{where}: dependency {dep.key!r} forgotten"
            assert ts in dep.dependents, f"{where}: not a dependent of its dependency {dep.key!r}"
            needs = ts.state in NEEDS_INPUTS
            assert (ts in dep.waiters) == needs, f"{where}: waiter link to {dep.key!r} is {not needs}"
        for dts in ts.dependents:
            assert ts in dts.dependencies, f"{where}: dependent {dts.key!r} does not list it"
            assert s.tasks.get(dts.key) is dts, f"{where}: dependent {dts.key!r} forgotten"
        for dts in ts.waiters:
            assert dts.state in NEEDS_INPUTS, f"{where}: waiter {dts.key!r} is {dts.state}"
        # data
        if ts.state == "memory":
            assert ts.who_has, f"{where}: in memory with no holder"
        else:
            assert not ts.who_has, f"{where}: has holders outside memory"
        for ws in ts.who_has:
            assert workers.get(ws.address) is ws, f"{where}: held by dead worker {ws.address}"
            assert ts in ws.has_what, f"{where}: holder {ws.address} does not list it"
        # processing
        if ts.state == "processing":
            ws = ts.processing_on
            assert ws is not None and workers.get(ws.address) is ws, f"{where}: on a dead or no worker"
            assert ts in ws.processing, f"{where}: not in its worker's processing"
            assert ts.long_running == (ts in ws.long_running), f"{where}: long-running mismatch"
            for dep in ts.dependencies:
                assert dep.state == "memory", f"{where}: input {dep.key!r} is {dep.state}"
        else:
            assert ts.processing_on is None, f"{where}: processing_on set"
            assert ts.steal_to is None, f"{where}: steal pending"
        # waiting
        if ts.state == "waiting":
            expected = [dep for dep in ts.dependencies if dep.state != "memory"]
            assert list(ts.waiting_on) == expected or set(ts.waiting_on) == set(expected), (
                f"{where}: waiting_on {[d.key for d in ts.waiting_on]} != {[d.key for d in expected]}"
            )
            assert ts.waiting_on, f"{where}: waiting on nothing"
        else:
            assert not ts.waiting_on, f"{where}: waiting_on outside waiting"
        if ts.state in ("queued", "no-worker"):
            for dep in ts.dependencies:
                assert dep.state == "memory", f"{where}: input {dep.key!r} is {dep.state}"
        assert (ts.state == "queued") == (ts in s.queued), f"{where}: queue mismatch"
        assert (ts.state == "no-worker") == (ts in s.unrunnable), f"{where}: unrunnable mismatch"
        if ts.state == "erred":
            assert ts.error is not None and ts.blamed is not None, f"{where}: no error"
        # no leaks: everything that is not done is needed
        if ts.state in NEEDS_INPUTS or ts.state == "memory":
            assert ts.who_wants or ts.waiters, f"{where}: nobody needs it"
        if ts.state in ("released", "erred") and not ts.who_wants and not ts.waiters:
            assert ts.dependents, f"{where}: unneeded and nothing depends on it (leak)"
        # references
        for client, count in ts.who_wants.items():
            cs = s.clients.get(client)
            assert cs is not None, f"{where}: wanted by unknown client {client!r}"
            assert cs.wants.get(key) == count and count > 0, f"{where}: refcount mismatch for {client!r}"
    for cs in s.clients.values():
        for key, count in cs.wants.items():
            ts = s.tasks.get(key)
            assert ts is not None, f"client {cs.name!r} wants forgotten key {key!r}"
            assert ts.who_wants.get(cs.name) == count, f"client {cs.name!r}: refcount mismatch on {key!r}"
    for ts in s.queued.values():
        assert s.tasks.get(ts.key) is ts, f"queued task {ts.key!r} forgotten"
    for ts in s.unrunnable:
        assert s.tasks.get(ts.key) is ts, f"unrunnable task {ts.key!r} forgotten"
    for address, ws in workers.items():
        where = f"worker {address}"
        assert ws.address == address, where
        for ts in ws.processing:
            assert ts.state == "processing" and ts.processing_on is ws, f"{where}: stale processing {ts.key!r}"
        for ts in ws.has_what:
            assert ts.state == "memory" and ws in ts.who_has, f"{where}: stale has_what {ts.key!r}"
        expected = sum(ts.duration_estimate for ts in ws.processing if not ts.long_running)
        assert abs(ws.occupancy - expected) < 1e-6 * max(1.0, expected), f"{where}: occupancy {ws.occupancy} != {expected}"
        assert (ws in s.room) == s._has_room(ws), f"{where}: room set says {ws in s.room}"
        if s.queued:
            assert not s._has_room(ws), f"{where}: has room while tasks are queued"
    for ws in s.room:
        assert workers.get(ws.address) is ws, f"dead worker {ws.address} in room"
    for ext in s.extensions.values():
        ext.validate()
