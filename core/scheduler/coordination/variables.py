"""Variables: one item per name; a get waits until the variable is set.

A variable holding a future keeps its data alive (pseudo-client
``"variable:<name>"``); setting another value, or deleting the variable,
lets go of it.  Every waiting get is answered by the next set, and each
getter receives its own reference to a future value.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twofold.messages_coordination import VariableRequest
from twofold.scheduler.coordination import items as I
from twofold.scheduler.coordination.base import CoordinationExtension, Refused, Waiter


class _Variable:
    __slots__ = ("item", "waiters")

    def __init__(self) -> None:
        self.item: tuple | None = None
        self.waiters: deque[Waiter] = deque()


@dataclass(frozen=True, slots=True)
class VariableStatistics:
    name: str
    variables: int
    set: int
    waiting: int


def holder_of(name: str) -> str:
    return f"variable:{name}"


class Variables(CoordinationExtension):
    name = "variables"
    timer_prefix = "variable"
    request_type = VariableRequest
    actions = {"set": "_set", "get": "_get", "delete": "_delete"}

    def __init__(self) -> None:
        super().__init__()
        self.variables: dict[str, _Variable] = {}

    def _set(self, event: VariableRequest) -> None:
        if not isinstance(event.items, tuple) or len(event.items) != 1:
            raise Refused("ValueError", "a set carries exactly one item")
        item = I.check_item(event.items[0])
        holder = holder_of(event.name)
        I.hold(self, holder, item)  # first: setting the value it already holds must not drop it
        var = self.variables.get(event.name)
        if var is None:
            var = self.variables[event.name] = _Variable()
        old, var.item = var.item, item
        self.reply(event, True)
        while var.waiters:
            waiter = var.waiters.popleft()
            self.done_waiting(waiter)
            self.reply(waiter.event, [item])
            I.give(self, waiter.client, [item])
        if old is not None:
            I.release(self, holder, old)

    def _get(self, event: VariableRequest) -> None:
        var = self.variables.get(event.name)
        if var is not None and var.item is not None:
            self.reply(event, [var.item])
            I.give(self, event.client, [var.item])
        elif event.timeout == 0:
            self.fail(event, "TimeoutError", f"variable {event.name!r} is not set")
        else:
            if var is None:
                var = self.variables[event.name] = _Variable()
            self.wait(event, var.waiters)

    def _delete(self, event: VariableRequest) -> None:
        var = self.variables.get(event.name)
        if var is not None and var.item is not None:
            old, var.item = var.item, None
            I.release(self, holder_of(event.name), old)
            self._forget_if_idle(event.name, var)
        self.reply(event, True)

    def expired(self, waiter: Waiter) -> None:
        var = self.variables[waiter.event.name]
        var.waiters.remove(waiter)
        self._forget_if_idle(waiter.event.name, var)
        self.fail(waiter.event, "TimeoutError",
                  f"timed out after {waiter.event.timeout:g} s waiting for variable {waiter.event.name!r}")

    def _forget_if_idle(self, name: str, var: _Variable) -> None:
        if var.item is None and not var.waiters:
            del self.variables[name]

    def client_removed(self, client: str) -> None:
        for name, var in list(self.variables.items()):
            if self.drop_waiters(var.waiters, lambda w: w.client != client):
                self._forget_if_idle(name, var)

    def validate(self) -> None:
        for name, var in self.variables.items():
            assert var.item is not None or var.waiters, f"variable {name!r} is empty and idle but kept"
            assert var.item is None or not var.waiters, f"variable {name!r} is set but has waiters"
            if var.item is not None:
                assert I.holds(self, holder_of(name), var.item), f"variable {name!r}: its future is not held"
        self.check_waiters(var.waiters for var in self.variables.values())

    def statistics(self) -> VariableStatistics:
        vs = self.variables.values()
        return VariableStatistics(self.name, len(self.variables), sum(v.item is not None for v in vs),
                                  sum(len(v.waiters) for v in vs))  # fmt: skip
