"""pytest plugin (entry point ``twofold``): the ``chaos`` and ``sim_cluster`` fixtures.

    def test_my_pipeline(chaos):
        chaos.run(my_scenario, seeds=50, durations={"load": 2.0})

    def test_one_cluster(sim_cluster):
        with Client(sim_cluster) as client: ...

``--twofold-seeds N`` changes the default number of seeds of ``chaos.run``
(a soak run in CI: ``pytest --twofold-seeds 500``); a test that passes
``seeds=`` itself keeps its own.

``--twofold-simulate SEED[,crash=RATE,...]`` (or ``$TWOFOLD_SIMULATE``) runs
the session with the simulate switch on (``twofold.sim.simulate``): every
``LocalCluster(...)`` and address-less ``Client()`` is a SimCluster on
virtual time.  Each test is a scope of its own (its clusters' seeds come
from SEED, its node id and their order), and a failing test's report gets a
section with those seeds and the command that replays it.

Why the imports are inside the fixtures and hooks: pytest loads every installed
plugin in every run, so importing the simulator here would cost each
project that merely has twofold installed.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Callable

import pytest

_SWITCH = "twofold.sim.simulate"


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
    group.addoption(
        "--twofold-simulate",
        action="store",
        default=None,
        metavar="SEED[,NAME=RATE...]",
        help="run every LocalCluster()/Client() of the session as a SimCluster on virtual time, seeded from "
        "SEED, with optional chaos rates (e.g. 7,crash=0.01,delay=0.05); $TWOFOLD_SIMULATE does the same",
    )


# -- the simulate switch ---------------------------------------------------------


def _switch() -> Any:
    """The twofold.sim.simulate module if this session simulates, else None (never imports it)."""
    module = sys.modules.get(_SWITCH)
    try:
        return module if module is not None and module.active() is not None else None
    except ValueError:  # a bad $TWOFOLD_SIMULATE set by a test: its LocalCluster() says so, not the hooks
        return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "twofold_runtime_only(reason): needs a real LocalCluster (processes, sockets); "
        "skipped under --twofold-simulate",
    )
    given = config.getoption("twofold_simulate", None)
    if given is None and not os.environ.get("TWOFOLD_SIMULATE", "").strip():
        return
    from twofold.sim import simulate

    try:
        spec = simulate.parse(given) if given is not None else simulate.active()
    except ValueError as err:
        raise pytest.UsageError(f"--twofold-simulate: {err}" if given is not None else str(err)) from None
    if given is not None:
        config._twofold_simulate_previous = simulate.activate(spec)  # type: ignore[attr-defined]
    if spec is not None:
        config._twofold_loop_policy = simulate.install_virtual_loops()  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "_twofold_simulate_previous"):
        sys.modules[_SWITCH].restore(config._twofold_simulate_previous)
    if hasattr(config, "_twofold_loop_policy"):
        import asyncio

        asyncio.set_event_loop_policy(config._twofold_loop_policy)


def pytest_report_header(config: pytest.Config) -> Any:
    switch = _switch()
    if switch is not None:
        return f"twofold: simulating every LocalCluster()/Client() with --twofold-simulate={switch.active()}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    switch = _switch()
    if switch is None:
        return
    marker = item.get_closest_marker("twofold_runtime_only")
    if marker is not None:
        why = marker.args[0] if marker.args else marker.kwargs.get("reason", "needs a real cluster")
        pytest.skip(f"runtime-only under --twofold-simulate: {why}")
    switch.begin(item.nodeid)  # before the test's fixtures make clusters


def replay_text(spec: Any, nodeid: str, made: list, rootdir: Any = None) -> str:
    """The report section of a test that failed under the switch (node ids are relative to ``rootdir``)."""
    where = shlex.quote(nodeid)
    if rootdir is not None and os.path.abspath(os.getcwd()) != os.path.abspath(rootdir):
        where += f"   (from {rootdir})"
    lines = [f"simulated with --twofold-simulate={spec} (every LocalCluster()/Client() a SimCluster)"]
    if made:
        lines.append("clusters this test made: " + ", ".join(f"{name} (seed {seed})" for seed, name in made))
    else:
        module = shlex.quote(nodeid.split("::")[0])
        lines.append("the switch made no cluster in this test: a SimCluster(...) it made keeps its own seed, and a "
                     "cluster of a wider-scoped fixture was made by an earlier test (alone, the test gets it afresh; "
                     f"as it was: pytest --twofold-simulate={spec} {module})")  # fmt: skip
    lines.append(f"replay: pytest --twofold-simulate={spec} {where}")
    lines.append(f"    or: TWOFOLD_SIMULATE={spec} pytest {where}")
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    switch = _switch()
    if switch is not None and report.failed:
        text = replay_text(switch.active(), item.nodeid, switch.made(), item.config.rootpath)
        report.sections.append((f"twofold simulate: seed {switch.active().seed}", text))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    switch = _switch()
    failed = terminalreporter.stats.get("failed", []) if switch is not None else []
    if failed:
        spec = switch.active()
        terminalreporter.section(f"twofold simulate: {len(failed)} failed with --twofold-simulate={spec}")
        for report in failed:
            terminalreporter.line(f"pytest --twofold-simulate={spec} {shlex.quote(report.nodeid)}")


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
