"""random: each ready task to a worker drawn uniformly at random.

The baseline of every scheduling study (Estee's "random": Beránek, Böhm &
Cima, J. Supercomputing 2022).  The draws come from a generator of the
policy's own (splitmix64, Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014), seeded by ``seed``: the
scheduler stays pure (no global ``random``), the same seed gives the same
choices on the simulator and on the socket runtime, and ``rng=`` accepts a
driver's seeded generator (anything with ``randrange``) instead.
"""

from __future__ import annotations

from typing import Any

from twofold.scheduler.policies.base import Policy

_MASK = (1 << 64) - 1


class SplitMix64:
    """A tiny deterministic generator: 64-bit state, ``randrange(n)``."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        self.state = z = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def randrange(self, n: int) -> int:
        return self.next() % n  # bias below 2**-40 for any cluster size


class Random(Policy):
    """Uniformly random placement over every valid worker; no queuing, no stealing."""

    name = "random"
    queuing = False
    narrow = False

    def __init__(self, seed: int = 0, rng: Any = None) -> None:
        if rng is None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise TypeError(f"seed must be an int, got {seed!r}")
            rng = SplitMix64(seed)
        elif not callable(getattr(rng, "randrange", None)):
            raise TypeError(f"rng must have a randrange(n) method (a seeded random.Random), got {rng!r}")
        self.rng = rng

    def decide_worker(self, view, ts, candidates):
        ordered = sorted(candidates, key=_order)
        return ordered[self.rng.randrange(len(ordered))] if ordered else None

    def stealer(self):
        return None


def _order(ws: Any) -> int:
    return ws.order
