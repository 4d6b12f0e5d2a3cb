"""The scheduler's extension seam: dispatch, timers, hooks, declarations.

A toy extension (a counter of pings per client, with a timer) shows what
any feature behind the seam can rely on; work stealing is checked to be an
extension that can be left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from twofold import messages as M
from twofold.config import SchedulerConfig
from twofold.messages import AddClient, AddWorker, RemoveClient, RemoveWorker, SetTimer, TimerFired, message
from twofold.scheduler import SchedulerState
from twofold.scheduler.extension import Extension
from twofold.scheduler.stealing import Stealing

from scheduler_support import ANY, Sched, T, X, compute


@message(by="client")
class ExtPing(M.Message):
    client: str
    n: int


@message(to="client")
class ExtPong(M.Message):
    client: str
    total: int


@dataclass(frozen=True, slots=True)
class PingStats:
    name: str
    clients: int


class Pinger(Extension):
    name = "pinger"
    timer_prefix = "ping"

    def __init__(self):
        self.totals = {}
        self.log = []

    def handlers(self):
        return {ExtPing: self._on_ping}

    def _on_ping(self, event):
        self.totals[event.client] = self.totals.get(event.client, 0) + event.n
        self.send(ExtPong(self.now, self.stimulus_id, event.client, self.totals[event.client]))
        self.set_timer(self.now + 1.0, event.client)

    def on_timer(self, token, arg):
        self.log.append(("timer", token, arg))

    def worker_added(self, ws):
        self.log.append(("added", ws.address))

    def worker_removed(self, ws):
        self.log.append(("removed", ws.address, ws.address in self.state.workers))

    def client_removed(self, client):
        self.log.append(("client-gone", client))
        self.totals.pop(client, None)

    def graph_added(self, client, keys):
        self.log.append(("graph", client, keys))

    def transition(self, key, start, finish, stimulus_id, now):
        self.log.append(("t", key, start, finish))

    def validate(self):
        assert all(v >= 0 for v in self.totals.values())

    def statistics(self):
        return PingStats(self.name, len(self.totals))


def machine(*extensions, **config):
    config.setdefault("steal_interval", 0.0)
    return SchedulerState(SchedulerConfig(**config), extensions=list(extensions))


def test_an_extension_gets_its_messages_and_answers_through_the_machine():
    p = Pinger()
    s = machine(p)
    outs = s.handle(ExtPing(0.0, "p-1", "alice", 2))
    assert outs == [ExtPong(0.0, "p-1", "alice", 2), SetTimer(0.0, "p-1", 1.0, "ping:alice")]
    assert s.handle(ExtPing(0.5, "p-2", "alice", 3))[0].total == 5
    assert s.extensions["pinger"] is p and s.extension("pinger") is p
    assert s.statistics() == {"pinger": PingStats("pinger", 1)}


def test_timers_go_to_the_extension_whose_prefix_they_carry_and_only_when_due():
    p = Pinger()
    s = machine(p)
    s.handle(ExtPing(0.0, "p-1", "alice", 1))
    s.handle(ExtPing(0.5, "p-2", "alice", 1))  # replaces the timer: due at 1.5 now
    s.handle(TimerFired(1.0, "t-1", "ping:alice"))
    assert p.log == []  # superseded
    s.handle(TimerFired(1.5, "t-2", "ping:alice"))
    assert p.log == [("timer", "ping:alice", "alice")]
    p.cancel_timer("alice")
    s.handle(TimerFired(2.0, "t-3", "ping:alice"))
    assert len(p.log) == 1


def test_hooks_see_workers_clients_graphs_and_transitions():
    p = Pinger()
    s = machine(p)
    s.handle(AddWorker(0.0, "w", "w0", 1))
    s.handle(AddClient(0.0, "c", "alice"))
    s.handle(M.UpdateGraph(0.0, "g", "alice", (T("x-1"),), ("x-1",)))
    s.handle(RemoveClient(0.0, "bye", "alice"))
    s.handle(RemoveWorker(0.0, "lost", "w0"))
    assert ("added", "w0") in p.log
    assert ("graph", "alice", ("x-1",)) in p.log
    assert ("t", "x-1", "released", "waiting") in p.log
    assert ("t", "x-1", "waiting", "processing") in p.log
    assert ("client-gone", "alice") in p.log
    assert p.log[-1] == ("removed", "w0", False)  # called once the worker is out of state.workers


def test_transition_hooks_and_the_story_log_both_get_every_transition():
    p = Pinger()
    s = machine(p, story_length=100)
    s.handle(AddWorker(0.0, "w", "w0", 1))
    s.handle(M.UpdateGraph(0.0, "g", "alice", (T("x-1"),), ("x-1",)))
    story = [(start, finish) for _, start, finish, _, _ in s.story("x-1")]
    hooked = [(e[2], e[3]) for e in p.log if e[0] == "t"]
    assert story == hooked == [("released", "waiting"), ("waiting", "processing")]


def test_an_observer_sees_transitions_without_any_extension():
    s = machine()
    seen = []
    s.observe_transitions(seen)
    s.handle(AddWorker(0.0, "w", "w0", 1))
    s.handle(M.UpdateGraph(0.0, "g", "alice", (T("x-1"),), ("x-1",)))
    assert [(e[0], e[1], e[2]) for e in seen] == [("x-1", "released", "waiting"), ("x-1", "waiting", "processing")]
    with pytest.raises(TypeError, match="append"):
        s.observe_transitions(42)


def test_validate_runs_every_extensions_invariants():
    p = Pinger()
    s = machine(p)
    s.validate()
    p.totals["alice"] = -1
    with pytest.raises(AssertionError):
        s.validate()


def test_a_message_nobody_handles_is_refused_with_its_name():
    s = machine()
    with pytest.raises(TypeError, match="ExtPing"):
        s.handle(ExtPing(0.0, "p", "alice", 1))


def test_conflicting_extensions_are_refused_when_the_machine_is_built():
    with pytest.raises(ValueError, match="ExtPing is handled twice"):
        machine(Pinger(), type("Other", (Pinger,), {"name": "other", "timer_prefix": "other"})())
    with pytest.raises(ValueError, match="unique"):
        machine(Pinger(), Pinger())
    with pytest.raises(ValueError, match="timer prefix"):
        machine(type("Ttl", (Extension,), {"name": "t", "timer_prefix": "ttl"})())
    with pytest.raises(TypeError, match="Extension instances"):
        machine(object())


def test_a_timer_without_a_prefix_is_an_error_of_the_extension():
    class NoTimers(Extension):
        name = "quiet"

    e = NoTimers()
    machine(e)
    with pytest.raises(TypeError, match="timer_prefix"):
        e.set_timer(1.0)


def test_work_stealing_is_an_extension_and_can_be_left_out():
    with_stealing = Sched(steal_interval=0.1)
    assert isinstance(with_stealing.state.extensions["stealing"], Stealing)
    with_stealing.add_worker("w0")
    with_stealing.add_worker("w1")
    outs = with_stealing.submit(T("x-1"))
    assert X(SetTimer, at=0.1, token="steal", background=True) in outs

    s = SchedulerState(SchedulerConfig(steal_interval=0.1), extensions=[])
    s.handle(AddWorker(0.0, "w", "w0", 1))
    s.handle(AddWorker(0.0, "w", "w1", 1))
    outs = s.handle(M.UpdateGraph(0.0, "g", "c", (T("x-1"),), ("x-1",)))
    assert outs == [compute("w0", "x-1", (0, 1))]
    assert "stealing" not in s.extensions and not any(t.startswith("steal") for t in s.timers)
    with pytest.raises(TypeError, match="StealResponse"):
        s.handle(M.StealResponse(0.0, "s", "w0", "x-1", True))


def test_stealing_statistics_count_requests_and_moves():
    from test_scheduler_placement import overloaded

    s = overloaded()
    s(TimerFired, token="steal")
    assert s.state.statistics()["stealing"] == (stats := s.state.extensions["stealing"].statistics())
    assert (stats.requested, stats.moved, stats.in_flight) == (1, 0, 1)
    s(M.StealResponse, worker="w0", key="y-3", released=True)
    stats = s.state.extensions["stealing"].statistics()
    assert (stats.requested, stats.moved, stats.in_flight) == (1, 1, 0)


# --------------------------------------------------------------------------
# declarations: who may send a message, where an output goes
# --------------------------------------------------------------------------


def test_every_message_declares_its_senders_and_destination_once():
    from_client = {cls for cls in M.REGISTRY.values() if "client" in cls.senders}
    from_worker = {cls for cls in M.REGISTRY.values() if "worker" in cls.senders}
    assert {M.UpdateGraph, M.ReleaseKeys, M.AddClient, M.MissingData} <= from_client
    assert {M.TaskFinished, M.AddWorker, M.StealResponse, M.MissingData} <= from_worker
    assert M.ComputeTask not in from_client | from_worker  # only the scheduler sends it
    assert M.MissingData.senders == {"client": "reporter", "worker": "reporter"}
    assert M.ComputeTask.destination == "worker" and M.KeyInMemory.destination == "client"
    assert M.SetTimer.destination == "timer" and M.CloseWorker.destination == "close"
    assert M.TaskFinished.destination == ""  # never a scheduler output


def test_a_bad_declaration_is_refused_at_class_creation():
    with pytest.raises(TypeError, match="field 'client'"):
        @message(by="client")
        class NoClientField(M.Message):
            worker: str

    with pytest.raises(ValueError, match="by="):
        @message(by="scheduler")
        class BadKind(M.Message):
            client: str

    with pytest.raises(ValueError, match="to="):
        @message(to="everyone")
        class BadDestination(M.Message):
            client: str
