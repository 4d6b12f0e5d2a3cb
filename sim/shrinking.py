"""Shrink a failing fault plan to a smallest sub-plan that still fails.

Why it works: a simulated run is a pure function of (seed, options, fault
plan), so "does this sub-plan still fail?" is a deterministic predicate
that can be asked as often as we like.  We hand that predicate to
hypothesis, which is good at minimising: a sub-plan is a tuple of booleans
(keep fault *i* or not), booleans shrink towards False, so hypothesis drives
the plan towards dropping faults.  Its shrinker is a local search, so a
final pass removes faults one at a time until none can go: the result is
*1-minimal* (dropping any single remaining fault makes the run pass).

Why the search is seeded the way it is: hypothesis cannot start from a
known failing example (``@example`` inputs are not shrunk, and a seeded
example database is ignored once the run is derandomized), so its random
phase has to find a failing subset itself.  Two cheap candidates come
first: no faults at all (the bug is not fault-related) and the faults that
started before the failure (later ones cannot have caused it, though they
may change when a stall is noticed, so this is checked, not assumed).  If
hypothesis finds nothing within its budget, the one-at-a-time pass starts
from the best known failing plan instead.

Everything is deterministic: ``derandomize=True``, no example database, and
a memo so that hypothesis asking twice costs one replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

#: how many random sub-plans hypothesis may try before its shrink phase
GENERATE_EXAMPLES = 60


@dataclass(frozen=True, slots=True)
class ShrinkResult:
    kept: tuple[int, ...]       # indices into the plan that was shrunk, ascending
    replays: int                # distinct sub-plans replayed
    minimal: bool               # True if dropping any one kept fault was tried and passed
    budget_exhausted: bool


class _Oracle:
    """Memoised ``fails(kept_indices) -> bool`` with a replay budget."""

    def __init__(self, fails: Callable[[tuple[int, ...]], bool], budget: int,
                 on_replay: Callable[[int, int], None] | None) -> None:
        self._fails = fails
        self._memo: dict[tuple[int, ...], bool] = {}
        self.budget = budget
        self.exhausted = False
        self.best: tuple[int, ...] | None = None
        self._on_replay = on_replay

    @property
    def replays(self) -> int:
        return len(self._memo)

    def known(self, kept: Sequence[int]) -> bool:
        """Was this sub-plan really replayed (not refused for lack of budget)?"""
        return tuple(sorted(kept)) in self._memo

    def __call__(self, kept: Sequence[int]) -> bool:
        kept = tuple(sorted(kept))
        known = self._memo.get(kept)
        if known is not None:
            return known
        if len(self._memo) >= self.budget:
            self.exhausted = True
            return False
        result = self._memo[kept] = bool(self._fails(kept))
        if result and (self.best is None or len(kept) < len(self.best)):
            self.best = kept
        if self._on_replay is not None:
            self._on_replay(len(self._memo), len(self.best) if self.best is not None else -1)
        return result


def shrink_plan(
    n: int,
    fails: Callable[[tuple[int, ...]], bool],
    *,
    failed_before: int | None = None,
    budget: int = 300,
    on_replay: Callable[[int, int], None] | None = None,
) -> ShrinkResult:
    """Find a small ``kept`` subset of ``range(n)`` with ``fails(kept)`` true.

    ``fails(tuple(range(n)))`` is assumed true (the caller checked it).
    ``failed_before``: the number of leading faults (the plan is sorted by
    time) that started before the failure was raised, if known.
    """
    oracle = _Oracle(fails, budget, on_replay)
    oracle.best = tuple(range(n))
    if n == 0 or oracle(()):
        return ShrinkResult((), oracle.replays, True, oracle.exhausted)
    universe = tuple(range(n))
    if failed_before is not None and failed_before < n and oracle(tuple(range(failed_before))):
        universe = tuple(range(failed_before))
    if len(universe) > 1:
        _hypothesis_search(universe, oracle)  # every failing sub-plan it meets updates oracle.best
    kept, minimal = _one_at_a_time(list(oracle.best), oracle)
    return ShrinkResult(tuple(kept), oracle.replays, minimal, oracle.exhausted)


def _hypothesis_search(universe: tuple[int, ...], oracle: _Oracle) -> None:
    try:
        from hypothesis import HealthCheck, Phase, Verbosity, find, settings
        from hypothesis import strategies as st
        from hypothesis.errors import NoSuchExample
    except ImportError as exc:  # hypothesis is a test extra, not a runtime dependency
        raise ImportError(
            "shrinking a fault plan needs hypothesis: pip install 'twofold[test]' (or pass shrink=False)"
        ) from exc

    def condition(mask: tuple[bool, ...]) -> bool:
        return oracle(tuple(i for i, keep in zip(universe, mask) if keep))

    options = settings(
        database=None,
        derandomize=True,
        deadline=None,
        max_examples=GENERATE_EXAMPLES,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    try:
        find(st.tuples(*[st.booleans()] * len(universe)), condition, settings=options)
    except NoSuchExample:
        pass  # nothing failing among the random sub-plans: the final pass starts from the best known


def _one_at_a_time(kept: list[int], oracle: _Oracle) -> tuple[list[int], bool]:
    """Drop single faults while the run still fails; True if the result is 1-minimal."""
    progress = True
    while progress:
        progress = False
        for i in list(kept):
            trial = [k for k in kept if k != i]
            if oracle(trial):
                kept = trial
                progress = True
                break
    # a trial refused for lack of budget is not a pass: then minimality is unproven
    return kept, all(oracle.known([k for k in kept if k != i]) for i in kept)
