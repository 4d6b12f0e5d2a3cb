"""Events: a flag per name; every waiter wakes when it is set.

An event that is clear and has no waiters is forgotten: that is the state
a new event starts in, so nothing observable is lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_coordination import EventRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Waiter


class _Event:
    __slots__ = ("flag", "waiters")

    def __init__(self) -> None:
        self.flag = False
        self.waiters: deque[Waiter] = deque()


@dataclass(frozen=True, slots=True)
class EventStatistics:
    name: str
    events: int
    set: int
    waiting: int


class Events(CoordinationExtension):
    name = "events"
    timer_prefix = "event"
    request_type = EventRequest
    actions = {"set": "_set", "clear": "_clear", "is_set": "_is_set", "wait": "_wait"}

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, _Event] = {}

    def _event(self, name: str) -> _Event:
        ev = self.events.get(name)
        if ev is None:
            ev = self.events[name] = _Event()
        return ev

    def _set(self, event: EventRequest) -> None:
        ev = self._event(event.name)
        ev.flag = True
        while ev.waiters:
            waiter = ev.waiters.popleft()
            self.done_waiting(waiter)
            self.reply(waiter.event, True)
        self.reply(event, True)

    def _clear(self, event: EventRequest) -> None:
        ev = self.events.get(event.name)
        if ev is not None:
            ev.flag = False
            self._forget_if_idle(event.name, ev)
        self.reply(event, True)

    def _is_set(self, event: EventRequest) -> None:
        ev = self.events.get(event.name)
        self.reply(event, ev is not None and ev.flag)

    def _wait(self, event: EventRequest) -> None:
        ev = self._event(event.name)
        if ev.flag:
            self.reply(event, True)
        elif event.timeout == 0:
            self._forget_if_idle(event.name, ev)
            self.reply(event, False)
        else:
            self.wait(event, ev.waiters)

    def expired(self, waiter: Waiter) -> None:
        ev = self.events[waiter.event.name]
        ev.waiters.remove(waiter)
        self._forget_if_idle(waiter.event.name, ev)
        self.reply(waiter.event, False)

    def _forget_if_idle(self, name: str, ev: _Event) -> None:
        if not ev.flag and not ev.waiters:
            del self.events[name]

    def client_removed(self, client: str) -> None:
        for name, ev in list(self.events.items()):
            if self.drop_waiters(ev.waiters, lambda w: w.client != client):
                self._forget_if_idle(name, ev)

    def validate(self) -> None:
        for name, ev in self.events.items():
            assert ev.flag or ev.waiters, f"event {name!r} is clear and idle but kept"
            assert not (ev.flag and ev.waiters), f"event {name!r} is set but has waiters"
        self.check_waiters(ev.waiters for ev in self.events.values())

    def statistics(self) -> EventStatistics:
        return EventStatistics(self.name, len(self.events), sum(ev.flag for ev in self.events.values()),
                               sum(len(ev.waiters) for ev in self.events.values()))  # fmt: skip
