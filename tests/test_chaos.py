"""Chaos-testing your own code: chaos_test, shrinking, replay snippets, the pytest plugin."""

import os
import subprocess
import sys
import textwrap

import pytest

from twofold.sim import Fault, SimCluster
from twofold.sim.chaos import DEFAULT_RATES, ChaosFailure, ChaosReport, chaos_test, fault_code, replay
from twofold.sim.shrinking import shrink_plan

pytest_plugins = ["pytester"]

#: the planted bug's side effect: the scenario wants it to happen exactly once
RAN = []


def inc(x):
    return x + 1


def side_effect(x):
    RAN.append(x)
    return x


def correct(client):
    """Right under any fault: results are recomputed, sums stay sums."""
    futures = client.map(inc, range(30))
    total = client.submit(sum, futures)
    assert total.result() == sum(range(1, 31))


def planted(client):
    """Wrong under faults: a task is not an exactly-once side effect (a restart reruns it)."""
    RAN.clear()
    effect = client.submit(side_effect, 1)
    others = client.map(inc, range(10))
    assert effect.result() == 1
    assert sum(client.gather(others)) == 55
    assert len(RAN) == 1, f"side_effect ran {len(RAN)} times"


def always_wrong(client):
    assert client.submit(inc, 1).result() == 3, "inc(1) is not 3"


PLANTED = dict(durations={"side_effect": 5.0, "inc": 0.1}, progress=False)


@pytest.fixture(scope="module")
def planted_failure():
    with pytest.raises(ChaosFailure) as info:
        chaos_test(planted, seeds=20, **PLANTED)
    return info.value


def test_a_correct_scenario_passes_over_ten_seeds(capsys):
    report = chaos_test(correct, seeds=10, durations={"inc": 0.3})
    assert isinstance(report, ChaosReport) and report.ok
    assert report.seeds == tuple(range(10)) and not report.failures and report.shrunk is None
    assert all(run.n_faults > 0 for run in report.runs)  # every seed really had faults
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("chaos 1/10 seed=0: ok") and "virtual" in lines[0] and "wall" in lines[0]
    assert lines[-1].startswith("chaos: 10 seeds passed")


def test_a_fault_dependent_bug_names_its_seed_and_shrinks(planted_failure):
    err = planted_failure
    assert isinstance(err, AssertionError)
    assert isinstance(err.__cause__, AssertionError) and "side_effect ran" in str(err.__cause__)
    shrunk = err.report.shrunk
    failed = err.report.failures[0]
    assert err.seed == shrunk.seed == failed.seed == err.report.seeds[-1]  # it stopped at the first failure
    assert err.report.runs[0].ok or failed.seed == 0
    assert shrunk.reproduced and shrunk.minimal
    assert 1 <= len(shrunk.plan) < len(shrunk.original_plan) == failed.n_faults
    assert set(shrunk.plan) <= set(shrunk.original_plan)
    text = str(err)
    assert f"on seed {failed.seed}" in text and "AssertionError: side_effect ran" in text
    assert f"Shrunk to {len(shrunk.plan)} of {failed.n_faults} faults" in text
    for fault in shrunk.plan:
        assert fault_code(fault) in text
    assert textwrap.indent(shrunk.snippet, "    ") in text
    assert f"seeds=[{failed.seed}]" in text


def test_the_printed_snippet_replays_the_failure(planted_failure):
    shrunk = planted_failure.report.shrunk
    with pytest.raises(AssertionError, match="side_effect ran"):
        exec(shrunk.snippet, {"planted": planted})


def test_the_shrunk_plan_is_minimal(planted_failure):
    shrunk = planted_failure.report.shrunk
    options = {"durations": PLANTED["durations"]}
    with pytest.raises(AssertionError, match="side_effect ran"):
        replay(planted, shrunk.seed, shrunk.plan, **options)
    for i in range(len(shrunk.plan)):
        replay(planted, shrunk.seed, shrunk.plan[:i] + shrunk.plan[i + 1:], **options)  # passes


def test_a_bug_without_faults_shrinks_to_the_empty_plan():
    with pytest.raises(ChaosFailure) as info:
        chaos_test(always_wrong, seeds=3, progress=False)
    err = info.value
    assert err.seed == 0 and err.plan == ()
    assert "without any faults" in str(err) and "faults_plan=[]" in str(err)
    assert "AssertionError: inc(1) is not 3" in str(err)


def test_shrinking_reports_progress_and_can_be_skipped(capsys):
    with pytest.raises(ChaosFailure) as info:
        chaos_test(planted, seeds=20, shrink=False, **dict(PLANTED, progress=True))
    assert info.value.report.shrunk is None
    assert "fault plan not shrunk" in str(info.value)
    err = capsys.readouterr().err
    assert "FAIL" in err and "side_effect ran" in err and "shrinking" not in err


def two_bugs(client):
    RAN.clear()
    assert client.submit(side_effect, 1).result() == 1
    if len(RAN) >= 3:
        raise RuntimeError(f"side_effect ran {len(RAN)} times")
    assert len(RAN) < 2, "side_effect ran twice"


def test_shrinking_keeps_to_the_same_bug():
    """One restart is enough for the AssertionError; the RuntimeError needs two: shrinking must not slip."""
    options = dict(rates=dict(DEFAULT_RATES, restart=0.3), durations={"side_effect": 5.0}, progress=False)
    report = chaos_test(two_bugs, seeds=10, fail_fast=False, raise_on_failure=False, shrink=False, **options)
    seed = next(run.seed for run in report.failures if run.error.startswith("RuntimeError"))
    with pytest.raises(ChaosFailure) as info:
        chaos_test(two_bugs, seeds=[seed], **options)
    shrunk = info.value.report.shrunk
    assert shrunk.error.startswith("RuntimeError: side_effect ran") and shrunk.minimal
    assert len(shrunk.plan) >= 2


def test_shrink_plan_finds_a_minimal_subset_with_hypothesis():
    calls = []

    def fails(kept):
        calls.append(kept)
        return {3, 17, 25} <= set(kept) and 10 not in kept

    result = shrink_plan(30, fails)
    assert result.kept == (3, 17, 25) and result.minimal and not result.budget_exhausted
    assert result.replays == len(set(calls)) == len(calls)  # memoised
    # 20 faults needed: random sub-plans never hit it, the one-at-a-time pass still gets there
    needed = set(range(0, 40, 2))
    assert shrink_plan(40, lambda kept: needed <= set(kept)).kept == tuple(sorted(needed))
    # out of budget: still a failing plan, but not called minimal
    small = shrink_plan(40, lambda kept: needed <= set(kept), budget=5)
    assert needed <= set(small.kept) and not small.minimal and small.budget_exhausted


def test_collect_every_failing_seed_without_raising():
    report = chaos_test(planted, seeds=8, fail_fast=False, raise_on_failure=False, shrink=False, **PLANTED)
    assert len(report.runs) == 8 and not report.ok
    assert len(report.failures) >= 2
    assert set(report.digests) == set(range(8))


def test_chaos_test_is_deterministic(planted_failure):
    with pytest.raises(ChaosFailure) as again:
        chaos_test(planted, seeds=20, **PLANTED)
    assert again.value.report == planted_failure.report
    assert str(again.value) == str(planted_failure)
    assert chaos_test(correct, seeds=3, progress=False) == chaos_test(correct, seeds=3, progress=False)


def test_digests_do_not_depend_on_the_process_hash_seed(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent("""
        from twofold.sim.chaos import chaos_test
        def scenario(client):  # no multi-worker gather: see the xfail in test_client_sim_faults.py
            futures = client.map(abs, range(-20, 0))
            assert client.submit(sum, futures).result() == 210
        print(sorted(chaos_test(scenario, seeds=4, progress=False).digests.items()))
    """))
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_a_scenario_that_is_not_deterministic_is_called_out():
    calls = []

    def flaky(client):
        calls.append(1)
        client.submit(inc, 1).result()
        assert len(calls) != 1, "fails on the first call only"

    with pytest.raises(ChaosFailure) as info:
        chaos_test(flaky, seeds=2, progress=False)
    assert not info.value.report.shrunk.reproduced
    assert "not deterministic" in str(info.value)


def test_bad_arguments_are_refused_before_anything_runs():
    with pytest.raises(TypeError, match="seed"):
        chaos_test(correct, seed=3)
    with pytest.raises(TypeError, match="faults_plan"):
        chaos_test(correct, faults_plan=[])
    with pytest.raises(ValueError, match="seeds"):
        chaos_test(correct, seeds=0)
    with pytest.raises(TypeError, match="seeds"):
        chaos_test(correct, seeds=["a"])
    with pytest.raises(TypeError, match="callable"):
        chaos_test(None)
    with pytest.raises(ValueError, match="unknown chaos options"):
        chaos_test(correct, rates={"meteor": 1.0})


def test_fault_code_round_trips():
    faults = [Fault("crash", "worker-1", 3.2, end=4.123456789), Fault("restart", "worker-0", 0.1),
              Fault("partition", "worker-2", 1.0, end=2.0, peer="sim://chaos-3"),
              Fault("slow", "worker-3", 1.5, end=2.5, factor=2.75)]
    for fault in faults:
        assert eval(fault_code(fault), {"Fault": Fault}) == fault


# --------------------------------------------------------------------------
# the pytest plugin
# --------------------------------------------------------------------------

PLUGIN_TESTS = """
    from twofold import Client

    RAN = []

    def once(x):
        RAN.append(x)
        return x

    def good(client):
        assert client.submit(abs, -3).result() == 3

    def bad(client):
        RAN.clear()
        assert client.submit(once, 1).result() == 1
        client.gather(client.map(abs, range(10)))
        assert len(RAN) == 1, f"once() ran {len(RAN)} times"

    def test_good(chaos):
        report = chaos.run(good, progress=False)
        assert len(report.runs) == EXPECTED_SEEDS

    def test_bad(chaos):
        chaos.run(bad, seeds=20, durations={"once": 5.0}, progress=False)

    def test_cluster(sim_cluster):
        assert len(sim_cluster.workers) == 2
        with Client(sim_cluster) as client:
            assert client.submit(abs, -1).result() == 1
"""


@pytest.mark.parametrize("option, expected", [((), 20), (("--twofold-seeds", "3"), 3)])
def test_the_pytest_fixtures(pytester, option, expected):
    pytester.makepyfile(test_user=textwrap.dedent(PLUGIN_TESTS).replace("EXPECTED_SEEDS", str(expected)))
    result = pytester.runpytest("-p", "no:cacheprovider", *option)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "bad failed under chaos on seed" in out
    assert "once() ran 2 times" in out
    assert "faults_plan = [" in out and 'Fault("' in out
    assert "with SimCluster(" in out
    assert "Traceback" not in out  # the message, not the library's internals


def test_the_sim_cluster_fixture_is_closed_after_the_test(pytester):
    pytester.makepyfile(textwrap.dedent("""
        import pytest
        from twofold import Client
        from twofold.sim.cluster import _REGISTRY

        seen = []

        def test_use(sim_cluster):
            seen.append(sim_cluster.scheduler_address)
            assert sim_cluster.scheduler_address in _REGISTRY

        def test_closed():
            assert seen and seen[0] not in _REGISTRY
            with pytest.raises(ValueError, match="no simulated cluster"):
                Client(seen[0])
    """))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
