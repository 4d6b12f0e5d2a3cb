"""The simulated network: latency + size / bandwidth, in order per link.

Each (source, destination) pair is a link.  A message sent at ``now``
arrives at ``max(now + latency + nbytes / bandwidth (+ chaos delay), last
arrival on that link)``, so links never reorder; different links freely do.
A link is down while a partition covers it or either end is dead: messages
on it are lost, and a sender that asked to be told (``on_fail``) hears of
it after ``connect_timeout``.  Per-pair latency/bandwidth overrides and
slow-downs (``factor`` over a time window) model heterogeneous networks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from twofold.sim.simulation import Simulation

#: a control message's size on the wire, before any payload
MESSAGE_OVERHEAD = 200


class Network:
    def __init__(
        self,
        sim: Simulation,
        latency: float = 0.001,
        bandwidth: float = 1e9,
        links: dict | None = None,
        connect_timeout: float = 1.0,
    ) -> None:
        if latency < 0 or bandwidth <= 0:
            raise ValueError(f"latency must be >= 0 and bandwidth > 0, got {latency}, {bandwidth}")
        self.sim = sim
        self.latency = latency
        self.bandwidth = bandwidth
        self.connect_timeout = connect_timeout
        #: frozenset({a, b}) -> (latency, bandwidth)
        self.overrides: dict[frozenset, tuple[float, float]] = {}
        for pair, spec in (links or {}).items():
            a, b = pair
            self.overrides[frozenset((a, b))] = (float(spec[0]), float(spec[1]))
        self._last: dict[tuple[str, str], float] = {}
        #: (frozenset pair, start, end)
        self.partitions: list[tuple[frozenset, float, float]] = []
        #: (frozenset pair, factor, start, end)
        self.slow_links: list[tuple[frozenset, float, float, float]] = []
        #: chaos: probability and maximum extra delay per message
        self.delay_probability = 0.0
        self.max_delay = 0.0
        self.bytes_moved = 0

    def is_down(self, src: str, dst: str) -> bool:
        sim = self.sim
        node_of = sim.node_of
        if node_of:  # an endpoint that lives on a host goes down with it
            src = node_of.get(src, src)
            dst = node_of.get(dst, dst)
        dead = sim.dead
        if dead and (src in dead or dst in dead):
            return True
        if self.partitions:
            now = sim.clock.now
            pair = frozenset((src, dst))
            for p, start, end in self.partitions:
                if p == pair and start <= now < end:
                    return True
        return False

    def arrival(self, src: str, dst: str, nbytes: int) -> float:
        """When a message of ``nbytes`` sent now from ``src`` arrives at ``dst``.

        The one place the simulator's network arithmetic lives: the link's
        latency + size / bandwidth, times any slow-down, plus any chaos delay,
        and never before the link's previous arrival (links keep order).
        It books the arrival (the link's last, the bytes moved): call it once
        per message actually sent.
        """
        clock = self.sim.clock
        if self.overrides:
            latency, bandwidth = self.overrides.get(frozenset((src, dst)), (self.latency, self.bandwidth))
        else:
            latency, bandwidth = self.latency, self.bandwidth
        t = latency + nbytes / bandwidth
        if self.slow_links:
            now = clock.now
            pair = frozenset((src, dst))
            for p, factor, start, end in self.slow_links:
                if p == pair and start <= now < end:
                    t *= factor
        if self.delay_probability and self.sim.rng.random() < self.delay_probability:
            t += self.sim.rng.random() * self.max_delay
        when = clock.now + t
        link = (src, dst)
        last = self._last.get(link, 0.0)
        if when < last:
            when = last
        self._last[link] = when
        self.bytes_moved += nbytes
        return when

    def noticed(self, src: str, dst: str) -> float:
        """When ``dst`` notices that ``src`` broke their connection (its process died): one
        latency of that link from now (no payload, no slow-down, nothing booked on the link)."""
        latency = self.overrides.get(frozenset((src, dst)), (self.latency,))[0] if self.overrides else self.latency
        return self.sim.clock.now + latency

    def post(self, src: str, dst: str, nbytes: int, deliver: Callable[..., Any], args: tuple) -> None:
        """:meth:`send` for control messages on the hot path: no loss callback,
        never background, arguments as one tuple (no packing)."""
        sim = self.sim
        if (sim.dead or self.partitions) and self.is_down(src, dst):
            return
        sim.clock.schedule(self.arrival(src, dst, nbytes), deliver, args)

    def send(
        self,
        src: str,
        dst: str,
        nbytes: int,
        deliver: Callable[..., Any],
        *args: Any,
        on_fail: Callable[[], Any] | None = None,
        background: bool = False,
    ) -> None:
        """Carry a message; ``deliver(*args)`` runs at the destination on arrival.

        ``background`` messages (heartbeats) do not keep a stalled simulation alive.
        """
        clock = self.sim.clock
        if self.is_down(src, dst):
            if on_fail is not None:
                clock.at(clock.now + self.connect_timeout, on_fail)
            return
        when = self.arrival(src, dst, nbytes)
        if on_fail is None:
            # nobody to tell of a loss: deliver straight away (a host that died in
            # the meantime ignores it; a partition cuts only what is sent after it).
            clock.schedule(when, deliver, args, background)
        else:
            clock.at(when, self._arrive, src, dst, deliver, args, on_fail, background=background)

    def _arrive(self, src: str, dst: str, deliver: Callable, args: tuple, on_fail: Callable | None) -> None:
        if self.is_down(src, dst):
            # lost in transit (the destination died, or a partition started)
            if on_fail is not None:
                clock = self.sim.clock
                clock.at(clock.now + self.connect_timeout, on_fail)
            return
        deliver(*args)
