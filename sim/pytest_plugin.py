"""pytest plugin (entry point ``twofold``): the ``chaos`` and ``sim_cluster`` fixtures.

    def test_my_pipeline(chaos):
        chaos.run(my_scenario, seeds=50, durations={"load": 2.0})

    def test_one_cluster(sim_cluster):
        with Client(sim_cluster) as client: ...

``--twofold-seeds N`` changes the default number of seeds of ``chaos.run``
(a soak run in CI: ``pytest --twofold-seeds 500``); a test that passes
``seeds=`` itself keeps its own.

Why the imports are inside the fixtures: pytest loads every installed
plugin in every run, so importing the simulator here would cost each
project that merely has twofold installed.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twofold", "twofold chaos testing")
    group.addoption(
        "--twofold-seeds",
        action="store",
        type=int,
        default=None,
        metavar="N",
        help="number of seeds chaos.run() tries when a test does not say (default: chaos_test's, 20)",
    )


class ChaosRunner:
    """What the ``chaos`` fixture returns: :meth:`run` is ``chaos_test`` with pytest's reporting."""

    def __init__(self, seeds: int | None) -> None:
        #: the ``--twofold-seeds`` value, or None
        self.seeds = seeds
        #: the report of the last :meth:`run` that returned
        self.report: Any = None

    def run(self, scenario: Callable[[Any], Any], **options: Any):
        """Run ``chaos_test(scenario, **options)``; on failure, fail the test with its message."""
        from twofold.sim.chaos import ChaosFailure, chaos_test

        if self.seeds is not None:
            options.setdefault("seeds", self.seeds)
        try:
            self.report = chaos_test(scenario, **options)
        except ChaosFailure as err:
            # the message says it all (seed, error and where, shrunk plan, replay code);
            # pytest would print it once more per chained exception, so the chain is
            # hidden from the report (still there as __context__ for a debugger)
            raise pytest.fail.Exception(str(err), pytrace=False) from None
        return self.report


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> ChaosRunner:
    """Run a scenario (a function taking a Client) over many seeds with random faults."""
    return ChaosRunner(request.config.getoption("twofold_seeds"))


@pytest.fixture
def sim_cluster():
    """A small simulated cluster (2 workers x 2 threads, seed 0, invariants checked), closed afterwards."""
    from twofold.sim import SimCluster

    cluster = SimCluster(n_workers=2, threads_per_worker=2, seed=0, validate=True)
    try:
        yield cluster
    finally:
        cluster.close()
