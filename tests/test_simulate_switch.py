"""The simulate switch (``twofold.sim.simulate``): LocalCluster()/Client() become SimClusters.

The switch is turned on inside each test with ``simulating(...)`` (never
through the environment of the whole run), and whole pytest runs under
``--twofold-simulate`` happen in fresh subprocesses on a temporary test file.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from twofold import Client, LocalCluster
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.sim import SimCluster, simulate
from twofold.sim.simulate import CHAOS_OPTIONS, Spec, derive_seed, parse, simulating

SUBPROCESS_TIMEOUT = 120


def inc(x):
    return x + 1


# --------------------------------------------------------------------------
# the spec
# --------------------------------------------------------------------------


def test_parse_seed_alone_and_with_rates():
    assert parse("7") == Spec(7)
    assert parse(7) == Spec(7)
    spec = parse(" 7, crash=0.01 ,delay=0.05")
    assert spec.seed == 7
    assert spec.rates == {"crash": 0.01, "delay": 0.05}
    assert str(spec) == "7,crash=0.01,delay=0.05"
    assert parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "seed '' is not an integer"),
        ("seven", "seed 'seven' is not an integer"),
        ("-1", "seed must be >= 0"),
        ("7,crash", "'crash' is not NAME=RATE"),
        ("7,=1", "is not NAME=RATE"),
        ("7,boom=0.1", "unknown chaos option 'boom'"),
        ("7,crash=x", "crash='x' is not a number"),
        ("7,crash=-1", "crash must be a finite number >= 0"),
        ("7,crash=nan", "finite number >= 0"),
        ("7,delay=2", "delay is a probability"),
        ("7,crash=1,crash=2", "given twice"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, match):
    with pytest.raises(ValueError, match=match) as info:
        parse(text)
    if "NAME" in str(info.value) or "unknown" in match:
        assert all(name in str(info.value) for name in CHAOS_OPTIONS)  # the valid names are listed


def test_parse_rejects_a_non_string():
    with pytest.raises(TypeError, match="simulate spec is a str"):
        parse(7.5)


def test_every_chaos_option_is_one_simcluster_takes():
    for name in CHAOS_OPTIONS:
        SimCluster(n_workers=1, chaos={name: 0.5 if name != "horizon" else 1.0}).close()


def test_the_env_var_is_read_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setattr(simulate, "_explicit", simulate._UNSET)
    monkeypatch.delenv(simulate.ENV, raising=False)
    assert simulate.active() is None
    monkeypatch.setenv(simulate.ENV, "5,slow=0.1")
    assert simulate.active() == Spec(5, (("slow", 0.1),))
    monkeypatch.setenv(simulate.ENV, "5,nope=1")
    with pytest.raises(ValueError, match=r"\$TWOFOLD_SIMULATE: .*unknown chaos option 'nope'"):
        simulate.active()
    monkeypatch.delenv(simulate.ENV)


def test_simulating_none_forces_the_switch_off(monkeypatch):
    monkeypatch.setenv(simulate.ENV, "3")
    with simulating(None):
        assert simulate.active() is None
    with simulating("4") as spec:
        assert spec == Spec(4)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(7, "t.py::a", 0) == derive_seed(7, "t.py::a", 0)
    seeds = {derive_seed(7, scope, k) for scope in ("t.py::a", "t.py::b", "") for k in range(3)}
    assert len(seeds) == 9
    assert derive_seed(7, "", 0) != derive_seed(8, "", 0)
    # fixed forever: a seed printed in a report today replays tomorrow
    assert derive_seed(7, "", 0) == int.from_bytes(
        __import__("hashlib").sha256(b"twofold-simulate|7||0").digest()[:6], "big")


def test_every_localcluster_parameter_is_mapped_or_ignored_on_purpose():
    params = set(inspect.signature(LocalCluster.__init__).parameters) - {"self"}
    assert params == set(simulate.MAPPED) | set(simulate.IGNORED)
    assert not set(simulate.MAPPED) & set(simulate.IGNORED)


# --------------------------------------------------------------------------
# LocalCluster(...) and Client() under the switch
# --------------------------------------------------------------------------


def test_localcluster_becomes_a_simcluster_of_the_same_shape():
    with simulating("7"):
        cluster = LocalCluster(n_workers=3, threads_per_worker=2, processes=False, memory_limit="1GB",
                               resources={"GPU": 1}, host="0.0.0.0", scheduler_port=8786, timeout=5,
                               silence_logs=False, name="mine", dashboard_address=None)  # fmt: skip
    with cluster:
        assert isinstance(cluster, SimCluster)
        assert not isinstance(cluster, LocalCluster)
        assert cluster.scheduler_address.startswith("sim://")
        assert cluster.workers == ["worker-0", "worker-1", "worker-2"]
        assert (cluster.n_workers, cluster.threads_per_worker, cluster.processes) == (3, 2, False)
        assert cluster.memory_limit == 10**9 and cluster.resources == {"GPU": 1}
        assert cluster.dashboard_link is None and cluster.status == "running"
        assert cluster._sim.virtual_time is True
        assert cluster.seed == derive_seed(7, "", 0)
        with Client(cluster, set_as_default=False) as client:
            assert client.nthreads() == {"worker-0": 2, "worker-1": 2, "worker-2": 2}
            assert client.submit(inc, 1).result(timeout=5) == 2
            assert client.submit(time.sleep, 3600).result(timeout=4000) is None  # virtual seconds
        cluster.wait_for_workers(3, timeout=1)
        with pytest.raises(TwofoldTimeoutError, match="virtual s"):
            cluster.wait_for_workers(4, timeout=1)
        with pytest.raises(AttributeError, match="runtime-only"):
            cluster.nannies
        assert "TWOFOLD_SIMULATE=7" in repr(cluster)
    assert cluster.status == "closed"
    cluster.close(timeout=1)  # twice is harmless, with LocalCluster's timeout=


def test_default_shape_is_localclusters_on_this_machine():
    from twofold.runtime.local import local_shape

    with simulating("1"):
        with LocalCluster() as cluster:
            assert (cluster.n_workers, cluster.threads_per_worker) == local_shape(None, None, True)
        with LocalCluster(processes=False) as cluster:
            assert (cluster.n_workers, cluster.threads_per_worker) == local_shape(None, None, False)


def test_localcluster_refuses_what_the_real_one_refuses():
    with simulating("1"):
        with pytest.raises(TypeError, match="LocalCluster.*unexpected keyword argument 'bogus'"):
            LocalCluster(bogus=1)
        with pytest.raises(TypeError, match="n_workers must be an int"):
            LocalCluster(n_workers="2")
        with pytest.raises(ValueError, match="memory_limit"):
            LocalCluster(memory_limit="lots")
        with pytest.raises(TypeError, match="dashboard_address"):
            LocalCluster(dashboard_address=3.5)


def test_client_without_address_owns_its_simulated_cluster():
    with simulating("2"):
        client = Client(n_workers=2, threads_per_worker=3, set_as_default=False)
    cluster = client.cluster
    assert isinstance(cluster, SimCluster) and cluster.n_workers == 2
    assert client.nthreads() == {"worker-0": 3, "worker-1": 3}
    assert client.submit(inc, 41).result(timeout=5) == 42
    client.close()
    assert cluster.status == "closed"


def test_the_client_refuses_unknown_cluster_options_under_the_switch():
    with simulating("2"):
        with pytest.raises(TypeError, match="unexpected keyword argument 'n_wrokers'"):
            Client(n_wrokers=2, set_as_default=False)


def test_explicit_addresses_and_simclusters_are_left_alone():
    with simulating("2"):
        with SimCluster(n_workers=1, seed=5) as own:
            assert own.seed == 5 and own._sim.virtual_time is False
            assert simulate.made() == []
        with pytest.raises(Exception) as info:
            Client("tcp://127.0.0.1:1", timeout=0.2, set_as_default=False)
        assert not isinstance(info.value, TypeError)  # a connection error, as without the switch


def test_subclasses_of_localcluster_stay_real():
    class Mine(LocalCluster):
        pass

    with simulating("2"):
        with Mine(n_workers=1, processes=False) as cluster:
            assert type(cluster) is Mine and cluster.scheduler_address.startswith("tcp://")


def test_chaos_rates_reach_the_simcluster():
    with simulating("3,crash=0.5,delay=0.2,max_delay=0.02,horizon=10"):
        with LocalCluster(n_workers=4) as cluster:
            assert cluster.fault_plan, "a crash rate of 0.5/s over 10 s on 4 workers draws faults"
            assert {f.kind for f in cluster.fault_plan} == {"crash"}
            assert all(f.at < 10 for f in cluster.fault_plan)
            network = cluster._sim.network
            assert (network.delay_probability, network.max_delay) == (0.2, 0.02)


def test_clusters_of_a_scope_are_seeded_in_order_and_independent_of_before():
    def seeds():
        with simulating("9", scope="t.py::x"):
            with LocalCluster(n_workers=1) as a, LocalCluster(n_workers=1) as b:
                return a.seed, b.seed, simulate.made()

    first = seeds()
    with simulating("9", scope="other"):
        LocalCluster(n_workers=1).close()
    assert seeds() == first
    assert first[:2] == (derive_seed(9, "t.py::x", 0), derive_seed(9, "t.py::x", 1))
    assert [seed for seed, _ in first[2]] == list(first[:2])


def test_the_same_program_gives_the_same_digest():
    def run():
        with simulating("11,delay=0.3"):
            with Client(n_workers=2, set_as_default=False) as client:
                futures = client.map(inc, range(20))
                assert client.gather(futures) == list(range(1, 21))
                return client.cluster.digest()

    assert run() == run()


# --------------------------------------------------------------------------
# whole pytest runs under --twofold-simulate (fresh processes)
# --------------------------------------------------------------------------

SUITE = '''
import time

import pytest

from twofold import Client, LocalCluster


def work(x):
    time.sleep(x)  # virtual: the cluster is simulated
    return time.time()


def test_digest():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        stamps = client.gather(client.map(work, [1, 2, 3, 4]))
        print("SEED", cluster.seed, "DIGEST", cluster.digest(), "STAMPS", stamps)


def test_fails():
    with Client(n_workers=1) as client:
        assert client.submit(work, 1).result() == 0


@pytest.mark.twofold_runtime_only("wants real processes")
def test_needs_a_real_cluster():
    pass


def test_async_program():
    import asyncio

    async def main():
        async with Client(asynchronous=True) as client:
            started = asyncio.get_running_loop().time()
            await asyncio.sleep(100)  # virtual: the loop is on the cluster's clock
            assert await client.submit(abs, -4) == 4
            return asyncio.get_running_loop().time() - started
    wall = time.perf_counter()
    slept = asyncio.run(main())
    print("ASYNC SLEPT", round(slept), "WALL", time.perf_counter() - wall < 5)
'''


def _pytest(tmp_path, *args, env=None):
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE))
    full_env = {k: v for k, v in os.environ.items() if k != simulate.ENV}
    full_env.update(env or {})
    full_env["PYTHONHASHSEED"] = str(len(args))  # differs between the runs compared below
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", *args],
                          cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)  # fmt: skip


def _digest_line(out: str) -> str:
    found = re.findall(r"SEED \d+ DIGEST \S+ STAMPS \[[^\]]*\]", out)
    assert len(found) == 1, out
    return found[0]


def test_a_test_run_twice_in_fresh_processes_gives_the_same_run(tmp_path):
    one = _pytest(tmp_path, "--twofold-simulate=7,delay=0.1", "test_suite.py::test_digest")
    two = _pytest(tmp_path, "--twofold-simulate=7,delay=0.1", "test_suite.py::test_digest", "-q")
    assert one.returncode == 0 and two.returncode == 0, one.stdout + one.stderr
    assert _digest_line(one.stdout) == _digest_line(two.stdout)
    assert f"SEED {derive_seed(7, 'test_suite.py::test_digest', 0)} " in _digest_line(one.stdout)
    # the whole file, switched on by the env var: the test's run does not depend on what else runs
    three = _pytest(tmp_path, "test_suite.py", env={simulate.ENV: "7,delay=0.1"})
    assert three.returncode == 1, three.stdout
    assert _digest_line(three.stdout) == _digest_line(one.stdout)


def test_a_failing_test_prints_the_seed_and_the_replay_command(tmp_path):
    result = _pytest(tmp_path, "--twofold-simulate=5,slow=0.01", "test_suite.py", "-rs")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 2 passed, 1 skipped" in out
    assert "runtime-only under --twofold-simulate: wants real processes" in out
    seed = derive_seed(5, "test_suite.py::test_fails", 0)
    assert "twofold simulate: seed 5" in out
    assert f"clusters this test made: simulated-{seed} (seed {seed})" in out
    assert "replay: pytest --twofold-simulate=5,slow=0.01 test_suite.py::test_fails" in out
    assert "or: TWOFOLD_SIMULATE=5,slow=0.01 pytest test_suite.py::test_fails" in out
    assert "test_suite.py::test_digest" not in out.split("twofold simulate: 1 failed")[-1]


def test_a_bad_option_is_a_usage_error(tmp_path):
    result = _pytest(tmp_path, "--twofold-simulate=7,oops=1", "test_suite.py")
    assert result.returncode == 4  # pytest's usage error
    assert "unknown chaos option 'oops'" in result.stderr


def test_without_the_switch_runtime_only_tests_run(tmp_path):
    result = _pytest(tmp_path, "test_suite.py::test_needs_a_real_cluster")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout


def test_the_report_of_a_test_that_used_a_cluster_made_earlier():
    from twofold.sim.pytest_plugin import replay_text

    text = replay_text(Spec(3), "tests/t.py::test_y[a b]", [])
    assert "the switch made no cluster in this test" in text
    assert "pytest --twofold-simulate=3 tests/t.py" in text  # the module, to get the shared cluster as it was
    assert "replay: pytest --twofold-simulate=3 'tests/t.py::test_y[a b]'" in text


def test_a_policy_given_to_localcluster_reaches_the_simulated_scheduler():
    from twofold.scheduler.policies import Single

    with simulating("3"):
        with LocalCluster(n_workers=3, threads_per_worker=1, policy=Single()) as cluster:
            with Client(cluster, set_as_default=False) as client:
                futures = client.map(abs, range(-6, 0))
                assert client.gather(futures) == [6, 5, 4, 3, 2, 1]
                assert {tuple(v) for v in client.who_has(futures).values()} == {("worker-0",)}


def test_asyncio_run_under_the_switch_is_on_the_simulations_clock(tmp_path):
    done = _pytest(tmp_path, "--twofold-simulate=5", "test_suite.py::test_async_program")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ASYNC SLEPT 100 WALL True" in done.stdout


def test_worker_processes_become_a_simulator_that_pickles_what_they_would():
    import threading as _threading

    with simulating("3"):
        with LocalCluster(n_workers=1, processes=True) as procs, LocalCluster(n_workers=1, processes=False) as threads:
            assert procs._sim.wire is not None and threads._sim.wire is None
            with Client(procs, set_as_default=False) as client:
                with pytest.raises(Exception, match="lock"):
                    client.submit(_threading.Lock).result(timeout=10)
