"""Chaos-test your own code: one scenario, many seeds, random faults, a shrunk replay.

    from twofold.sim.chaos import chaos_test

    def scenario(client):
        assert sum(client.gather(client.map(inc, range(10)))) == 55

    chaos_test(scenario, seeds=20)

For each seed a fresh validated :class:`SimCluster` gets a random fault plan
(crashes, restarts, lost data, partitions, slow-downs, message delays);
``scenario(client)`` runs against it.  Any exception is a failure: the
user's own assertions, a broken scheduler or worker invariant
(``validate=True`` checks them after every event), ``SimulationStalled``.
The first failure is shrunk (``shrinking.py``) to a smallest fault plan that
still fails the same way, and :class:`ChaosFailure` says the seed, the
error, the plan as code and a snippet that replays it (``chaos_text.py``).

Why the plan is drawn here and not by ``SimCluster(chaos=rates)``: the
cluster draws its plan from the run's own random generator, so a cluster
given the same plan back through ``faults_plan=`` sees different message
delays and durations afterwards and is a different run.  Drawing the plan
from a generator of its own (derived from the seed) and always handing it
over as ``faults_plan`` makes the original run, every shrinking replay and
the printed snippet the very same construction.  The cluster also gets a
fixed name (``chaos-<seed>``), because partitions name the scheduler's
address, which otherwise depends on how many clusters the process made.
"""

from __future__ import annotations

import inspect
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from twofold.client.client import Client
from twofold.sim import chaos_text, faults
from twofold.sim.chaos_text import fault_code, plan_code  # noqa: F401 - part of this module's API
from twofold.sim.cluster import SimCluster
from twofold.sim.faults import Fault

#: the default mix: rates per worker per virtual second, ``delay`` per message
DEFAULT_RATES: Mapping[str, float] = {
    "restart": 0.05,
    "crash": 0.02,
    "lose_data": 0.02,
    "partition": 0.02,
    "slow": 0.05,
    "delay": 0.1,
    "horizon": 60,
}

#: options chaos_test sets itself, so the user may not pass them through
_RESERVED = ("seed", "chaos", "faults_plan", "validate", "name")

__all__ = ["DEFAULT_RATES", "ChaosFailure", "ChaosReport", "SeedRun", "Shrunk", "chaos_test", "fault_code",
           "plan_code", "replay"]

#: wall time, bound at import: real even while a SimCluster virtualises the time module
_wall = time.perf_counter


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedRun:
    """One seed's run.  ``wall_time`` is left out of equality (it is not deterministic)."""

    seed: int
    ok: bool
    virtual_time: float          # simulated seconds when the scenario returned or raised
    n_faults: int                # faults in the seed's random plan
    digest: str                  # trace digest: equal digests, equal runs
    error: str | None = None     # "TypeName: message" when it failed
    wall_time: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Shrunk:
    """The first failure, reduced to a smallest fault plan that still fails the same way."""

    seed: int
    error: str | None            # the shrunk replay's error (None: it passed, so not ``reproduced``)
    original_plan: tuple[Fault, ...]
    plan: tuple[Fault, ...]      # empty: the scenario fails without faults
    replays: int                 # distinct sub-plans replayed while shrinking
    minimal: bool                # dropping any one fault of ``plan`` makes the run pass
    reproduced: bool             # the full plan failed the same way again (False: not deterministic)
    digest: str                  # trace digest of the shrunk replay
    snippet: str                 # Python code that replays it


@dataclass(frozen=True, slots=True)
class ChaosReport:
    runs: tuple[SeedRun, ...]
    shrunk: Shrunk | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def failures(self) -> tuple[SeedRun, ...]:
        return tuple(r for r in self.runs if not r.ok)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def digests(self) -> dict[int, str]:
        return {r.seed: r.digest for r in self.runs}


class ChaosFailure(AssertionError):
    """A scenario failed under chaos; ``str()`` says the seed, the shrunk plan and how to replay it.

    The scenario's own exception is chained (``__cause__``).
    """

    def __init__(self, message: str, report: ChaosReport) -> None:
        super().__init__(message)
        self.report = report

    @property
    def seed(self) -> int:
        return self.report.failures[0].seed

    @property
    def plan(self) -> tuple[Fault, ...] | None:
        """The shrunk plan (None when shrinking was off)."""
        return self.report.shrunk.plan if self.report.shrunk else None

    def __reduce__(self):  # picklable (pytest-xdist ships failures between processes)
        return (type(self), (str(self), self.report))


# --------------------------------------------------------------------------
# Running one seed
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    error: BaseException | None
    signature: tuple | None
    now: float
    digest: str


def _signature(exc: BaseException) -> tuple:
    """What makes two failures "the same bug": exception type and where it was raised.

    Shrinking keeps only sub-plans that fail the same way, so it cannot
    slip from the user's assertion to some other failure (a stall, say).
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = (frames[-1].filename, frames[-1].lineno) if frames else None
    return (type(exc).__module__, type(exc).__qualname__, where)


@dataclass(frozen=True, slots=True)
class Setup:
    """Everything but the seed and the plan that makes a run: it builds clusters and replay code."""

    scenario: Callable[[Client], Any]
    n_workers: int = 4
    threads_per_worker: int = 2
    rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    options: Mapping[str, Any] = field(default_factory=dict)   # more SimCluster keyword arguments

    @property
    def delays(self) -> dict[str, float] | None:
        """The cluster's own chaos: message delays only (faults come as a plan)."""
        delay = float(self.rates.get("delay", 0.0))
        if not delay:
            return None
        return {"delay": delay, "max_delay": float(self.rates.get("max_delay", 0.01))}

    def cluster_kwargs(self, seed: int, plan: Sequence[Fault]) -> dict[str, Any]:
        return dict(n_workers=self.n_workers, threads_per_worker=self.threads_per_worker, seed=seed,
                    name=f"chaos-{seed}", validate=True, chaos=self.delays, faults_plan=list(plan),
                    **self.options)

    def draw(self, seed: int) -> list[Fault]:
        """The seed's random fault plan, from a generator of its own (see the module docstring)."""
        restart_delay = self.options.get(
            "restart_delay", inspect.signature(SimCluster).parameters["restart_delay"].default)
        workers = [f"worker-{i}" for i in range(self.n_workers)]
        return faults.draw_plan(random.Random(f"twofold-chaos-{seed}"), workers, f"sim://chaos-{seed}",
                                self.rates, float(self.rates.get("horizon", 60.0)), restart_delay)

    def run(self, seed: int, plan: Sequence[Fault]) -> _Outcome:
        cluster = SimCluster(**self.cluster_kwargs(seed, plan))
        error = None
        try:
            client = Client(cluster)
            try:
                self.scenario(client)
            finally:
                try:
                    client.close()
                except Exception:  # the simulation may be broken already; the first error is the story
                    pass
        except Exception as exc:
            error = exc
        finally:
            cluster.close()
        return _Outcome(error, None if error is None else _signature(error), cluster.now, cluster.digest())


def replay(scenario: Callable[[Client], Any], seed: int, faults_plan: Sequence[Fault] = (), *,
           n_workers: int = 4, threads_per_worker: int = 2, rates: Mapping[str, float] | None = None,
           **cluster_options: Any) -> None:
    """Run ``scenario`` once as chaos_test does for ``seed``, with ``faults_plan``; raise what it raises."""
    setup = Setup(scenario, n_workers, threads_per_worker, dict(DEFAULT_RATES if rates is None else rates),
                  cluster_options)
    outcome = setup.run(seed, faults_plan)
    if outcome.error is not None:
        raise outcome.error


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


def chaos_test(
    scenario: Callable[[Client], Any],
    *,
    seeds: int | Iterable[int] = 20,
    n_workers: int = 4,
    threads_per_worker: int = 2,
    rates: Mapping[str, float] | None = None,
    shrink: bool = True,
    progress: bool = True,
    fail_fast: bool = True,
    raise_on_failure: bool = True,
    shrink_budget: int = 300,
    **cluster_options: Any,
) -> ChaosReport:
    """Run ``scenario(client)`` on a fresh faulty simulated cluster per seed.

    ``seeds``: an int ``n`` means ``range(n)``.  ``rates``: fault rates per
    worker per virtual second for ``restart``, ``crash``, ``lose_data``,
    ``partition``, ``slow``; ``delay`` is the chance that a message is
    delayed (by up to ``max_delay`` seconds); faults arrive until
    ``horizon`` virtual seconds (default :data:`DEFAULT_RATES`).  Other
    keyword arguments go to :class:`SimCluster` (``durations=``, ...).

    The first failing seed stops the loop (``fail_fast=False`` runs every
    seed), is shrunk with at most ``shrink_budget`` replays
    (``shrink=False`` skips that), and raises :class:`ChaosFailure`
    (``raise_on_failure=False`` returns the report instead).  Progress goes
    to stderr, one line per seed.
    """
    if not callable(scenario):
        raise TypeError(f"scenario must be a callable taking a Client, got {scenario!r}")
    seed_list = _seed_list(seeds)
    clash = sorted(set(cluster_options) & set(_RESERVED))
    if clash:
        raise TypeError(f"chaos_test sets {clash} itself (seed per run, faults from rates, validation on)")
    setup = Setup(scenario, n_workers, threads_per_worker, dict(DEFAULT_RATES if rates is None else rates),
                  dict(cluster_options))
    say = chaos_text.Progress(progress, len(seed_list))

    runs: list[SeedRun] = []
    first: tuple[int, list[Fault], _Outcome] | None = None
    for index, seed in enumerate(seed_list):
        plan = setup.draw(seed)
        started = _wall()
        outcome = setup.run(seed, plan)
        error = None if outcome.error is None else chaos_text.describe(outcome.error)
        run = SeedRun(seed, outcome.error is None, outcome.now, len(plan), outcome.digest, error,
                      _wall() - started)
        runs.append(run)
        say.seed(index, run)
        if outcome.error is not None and first is None:
            first = (seed, plan, outcome)
            if fail_fast:
                break

    if first is None:
        say.done(runs)
        return ChaosReport(tuple(runs))
    seed, plan, outcome = first
    shrunk = _shrink(setup, seed, plan, outcome, shrink_budget, say) if shrink else None
    report = ChaosReport(tuple(runs), shrunk)
    if not raise_on_failure:
        return report
    explicit = {"n_workers": n_workers, "threads_per_worker": threads_per_worker, "rates": rates}
    rerun = {k: v for k, v in explicit.items() if v != inspect.signature(chaos_test).parameters[k].default}
    message = chaos_text.failure_message(setup, report, plan, outcome.error, len(seed_list),
                                         {**rerun, **cluster_options})
    raise ChaosFailure(message, report) from outcome.error


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError(f"seeds must be an int or an iterable of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise TypeError(f"seeds must be an int or a non-empty iterable of ints, got {seeds!r}")
    return out


def _shrink(setup: Setup, seed: int, plan: list[Fault], outcome: _Outcome, budget: int,
            say: chaos_text.Progress) -> Shrunk:
    from twofold.sim.shrinking import shrink_plan

    # replays keep only what shrinking needs (an exception would keep its whole cluster alive)
    outcomes: dict[tuple[int, ...], tuple[tuple | None, str | None, str]] = {}

    def replay_subplan(kept: tuple[int, ...]) -> tuple[tuple | None, str | None, str]:
        if kept not in outcomes:
            got = setup.run(seed, [plan[i] for i in kept])
            outcomes[kept] = (got.signature, got.error and chaos_text.describe(got.error), got.digest)
        return outcomes[kept]

    def fails(kept: tuple[int, ...]) -> bool:
        return replay_subplan(kept)[0] == outcome.signature

    started = _wall()
    say.shrinking(seed, len(plan))
    everything = tuple(range(len(plan)))
    reproduced = fails(everything)
    if reproduced:
        failed_before = sum(1 for f in plan if f.at <= outcome.now)
        result = shrink_plan(len(plan), fails, failed_before=failed_before, budget=budget, on_replay=say.replay)
        kept, minimal = result.kept, result.minimal
    else:
        kept, minimal = everything, False
    _, error, digest = replay_subplan(kept)
    shrunk_plan = tuple(plan[i] for i in kept)
    say.shrunk(len(plan), len(kept), len(outcomes), _wall() - started, reproduced)
    return Shrunk(seed, error, tuple(plan), shrunk_plan, len(outcomes), minimal, reproduced, digest,
                  chaos_text.replay_snippet(setup, seed, shrunk_plan))
