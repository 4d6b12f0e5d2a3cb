"""A policy object runs unchanged on the socket runtime: ``LocalCluster(policy=...)``,
``Client(policy=...)`` (which starts one) and ``twofold scheduler --policy``."""

from __future__ import annotations

import pytest

from twofold import Client, LocalCluster
from twofold.runtime.cli import load_policy, main
from twofold.scheduler.policies import BLevel, Default, Single

#: a module-level policy instance, for --policy tests.test_policies_runtime:ONE
ONE = Single()


def inc(x):
    return x + 1


def test_local_cluster_runs_the_policy_it_is_given():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, policy=Single()) as cluster:
        assert isinstance(cluster.scheduler.state.policy, Single)
        with Client(cluster) as client:
            futures = client.map(inc, range(6))
            assert client.gather(futures) == list(range(1, 7))
            holders = {addr for addrs in client.who_has(futures).values() for addr in addrs}
            first = min(cluster.scheduler.state.workers.values(), key=lambda ws: ws.order).address
            assert holders == {first}  # Single: everything on the first worker


def test_client_passes_policy_to_the_local_cluster_it_starts():
    with Client(n_workers=2, threads_per_worker=1, processes=False, policy=BLevel(), set_as_default=False) as c:
        dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b")}
        assert c.get(dsk, "c") == 3
        assert isinstance(c.cluster.scheduler.state.policy, BLevel)


def test_a_bad_policy_is_refused_before_the_cluster_starts():
    with pytest.raises(TypeError, match="pass Single()"):
        LocalCluster(n_workers=1, processes=False, policy=Single)


def test_load_policy_by_name_and_by_module_path():
    assert isinstance(load_policy("default"), Default)
    assert isinstance(load_policy("blevel"), BLevel)
    assert isinstance(load_policy("twofold.scheduler.policies:HEFT"), load_policy("heft").__class__)
    assert load_policy("test_policies_runtime:ONE") is ONE


@pytest.mark.parametrize("spec, message", [
    ("nosuch", "shipped policy"),
    ("no_such_module_xyz:Policy", "cannot import 'no_such_module_xyz'"),
    ("twofold.scheduler.policies:Nope", "has no 'Nope'"),
    ("twofold.scheduler.policies:Given", "decide_worker"),
    ("twofold.scheduler.policies.random_choice:SplitMix64", "cannot be made with no arguments"),
])  # fmt: skip
def test_load_policy_errors_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        load_policy(spec)


def test_the_scheduler_command_refuses_a_bad_policy_with_a_message(caplog):
    assert main(["scheduler", "--port", "0", "--policy", "no_such_module_xyz:P"]) == 2
    assert "cannot import 'no_such_module_xyz'" in caplog.text
