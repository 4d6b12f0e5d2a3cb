"""Worker plugins, scheduler plugins and uploaded files, on every backend.

Each test runs on a fresh validated SimCluster and on the module-scoped
threads and processes LocalClusters of ``test_client_api.py`` (its
fixtures): plugin and module names are unique per test, since what the
runtime clusters' schedulers and workers keep lives for the whole module.
Workers that join later need a cluster of their own (the last tests).
"""

from __future__ import annotations

import re
import uuid
import zipfile

import pytest

from twofold import Client, SchedulerPlugin, WorkerPlugin
from twofold.runtime import LocalCluster
from twofold.sim import SimCluster

from test_client_api import TIMEOUT, backend, backend_cluster, cluster, eventually, is_sim  # noqa: F401


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def name(request):
    """Unique per test and backend, usable as a module name."""
    return "tf_" + re.sub(r"\W", "_", request.node.name) + "_" + uuid.uuid4().hex[:6]


class Recorder(WorkerPlugin):
    def __init__(self, tag):
        self.tag = tag
        self.seen = None

    def setup(self, worker):
        self.seen = worker.address

    def teardown(self, worker):
        setattr(worker, f"torn_{self.tag}", True)


class Failing(WorkerPlugin):
    def __init__(self, tag):
        self.tag = tag

    def setup(self, worker):
        raise ValueError(f"no setup for {self.tag}")


class Named(WorkerPlugin):
    def __init__(self, name, value):
        self.name = name
        self.value = value


class Log(SchedulerPlugin):
    def __init__(self):
        self.log = []

    def start(self, scheduler):
        self.log.append(("start", len(scheduler.workers)))

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs):
        self.log.append(("graph", tuple(sorted(keys))))

    def transition(self, key, start, finish, *args, **kwargs):
        self.log.append(("transition", key, start, finish))

    def add_worker(self, scheduler, worker):
        self.log.append(("add", worker))

    def remove_worker(self, scheduler, worker, **kwargs):
        self.log.append(("remove", worker))

    def close(self):
        self.log.append(("close",))


def plugin_state(name, dask_worker):
    plugin = getattr(dask_worker, "plugins", {}).get(name)
    return None if plugin is None else (plugin.seen == dask_worker.address, getattr(plugin, "value", None))


def has_plugin(name, dask_worker):
    return name in (getattr(dask_worker, "plugins", None) or {})


def torn(tag, dask_worker):
    return getattr(dask_worker, f"torn_{tag}", False)


def scheduler_log(name, dask_scheduler):
    return list(dask_scheduler.plugin_hub.plugins[name].log)


def call_module(module, attr="f"):
    import importlib

    return getattr(importlib.import_module(module), attr)()


def module_loaded(module):
    import sys

    return module in sys.modules


def stored(client):
    return client._plugin_request("list")


def inc(x):
    return x + 1


# --------------------------------------------------------------------------
# worker plugins
# --------------------------------------------------------------------------


def test_worker_plugin_is_set_up_on_every_worker_and_torn_down(client, name):
    result = client.register_worker_plugin(Recorder(name), name=name)
    workers = list(client.scheduler_info()["workers"])
    assert result == {w: {"status": "OK"} for w in workers}
    assert client.run(plugin_state, name) == {w: (True, None) for w in workers}  # each worker its own copy
    assert name in stored(client)
    client.unregister_worker_plugin(name)
    assert client.run(has_plugin, name) == {w: False for w in workers}
    assert client.run(torn, name) == {w: True for w in workers}
    assert name not in stored(client)
    with pytest.raises(ValueError, match=name):
        client.unregister_worker_plugin(name)


def test_a_failing_setup_raises_and_leaves_no_worker_with_it(client, name):
    with pytest.raises(ValueError, match=f"no setup for {name}"):
        client.register_worker_plugin(Failing(name), name=name)
    assert not any(client.run(has_plugin, name).values())
    assert name not in stored(client)
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


def test_register_plugin_uses_the_name_attribute_and_replaces(client, name):
    client.register_plugin(Named(name, 1))
    client.register_worker_plugin(Named(name, 2))
    assert set(client.run(lambda dask_worker: dask_worker.plugins[name].value).values()) == {2}
    assert list(stored(client)).count(name) == 1
    client.unregister_worker_plugin(name)
    with pytest.raises(TypeError, match="instance"):
        client.register_worker_plugin(Named)
    with pytest.raises(TypeError):
        client.register_plugin(object())


class Transitions(WorkerPlugin):
    def __init__(self, prefix):
        self.prefix = prefix
        self.moves = []

    def transition(self, key, start, finish, **kwargs):
        if key.startswith(self.prefix):
            self.moves.append((key, start, finish))


def test_worker_plugin_transition_hook(client, name):
    client.register_worker_plugin(Transitions(name), name=name)
    key = f"{name}-t"
    assert client.submit(inc, 1, key=key).result(timeout=TIMEOUT) == 2
    moves = client.run(lambda dask_worker: dask_worker.plugins[name].moves)
    seen = [m for ms in moves.values() for m in ms]
    assert (key, "executing", "memory") in seen
    client.unregister_worker_plugin(name)
    assert not any(client.run(lambda dask_worker: dask_worker.plugin_tap is not None).values())


def test_register_worker_callbacks(client, name):
    def mark(dask_worker):
        setattr(dask_worker, f"mark_{name}", dask_worker.address)

    client.register_worker_callbacks(setup=mark)
    got = client.run(lambda dask_worker: getattr(dask_worker, f"mark_{name}", None))
    assert got == {w: w for w in got} and got


# --------------------------------------------------------------------------
# scheduler plugins
# --------------------------------------------------------------------------


def test_scheduler_plugin_sees_graphs_and_transitions(client, name):
    client.register_scheduler_plugin(Log(), name=name)
    key = f"{name}-x"
    assert client.submit(inc, 1, key=key).result(timeout=TIMEOUT) == 2
    log = client.run_on_scheduler(scheduler_log, name)
    assert log[0] == ("start", 2)
    assert ("graph", (key,)) in log
    moves = [(s, f) for what, *rest in log if what == "transition" for k, s, f in [rest] if k == key]
    assert ("processing", "memory") in moves
    client.unregister_scheduler_plugin(name)
    with pytest.raises(ValueError, match=name):
        client.unregister_scheduler_plugin(name)
    with pytest.raises(TypeError):
        client.register_scheduler_plugin(Recorder(name))


# --------------------------------------------------------------------------
# upload_file
# --------------------------------------------------------------------------


def test_upload_file_imports_and_reloads_a_module(client, name, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text("def f():\n    return 1\n")
    client.upload_file(str(path))
    assert client.submit(call_module, name, pure=False).result(timeout=TIMEOUT) == 1
    path.write_text("def f():\n    return 2\n")
    client.upload_file(str(path))
    assert client.submit(call_module, name, pure=False).result(timeout=TIMEOUT) == 2
    assert set(client.run(call_module, name).values()) == {2}


def test_upload_file_of_a_zip(client, name, tmp_path):
    path = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}_pkg/__init__.py", "def f():\n    return 'zipped'\n")
    client.upload_file(str(path))
    assert client.submit(call_module, f"{name}_pkg", pure=False).result(timeout=TIMEOUT) == "zipped"


def test_upload_file_errors_before_sending_anything(client, name, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{name}_missing.py"):
        client.upload_file(str(tmp_path / f"{name}_missing.py"))
    path = tmp_path / f"{name}.py"
    path.write_text("x = 1\ndef f(:\n")
    with pytest.raises(SyntaxError) as info:
        client.upload_file(str(path))
    assert info.value.filename == str(path) and info.value.lineno == 2
    assert not any(client.run(module_loaded, name).values())
    assert not [n for n in stored(client) if name in n]


# --------------------------------------------------------------------------
# workers that join later (a small cluster of their own)
# --------------------------------------------------------------------------


def _late_worker(kind, cluster):
    """A worker joins ``cluster`` (the simulator: its one worker restarts, registering again)."""
    if kind == "sim":
        address = cluster.workers[0]
        cluster.crash(address, at=cluster.now + 0.01)
        cluster.restart(address, at=cluster.now + 0.02)
        cluster.run(until=cluster.now + 1.0)
        return
    from twofold.runtime import loop as loops

    loops.run_sync(cluster._loop, cluster._add_worker(cluster.scheduler_address, f"{cluster.name}-late"))
    cluster.wait_for_workers(2, timeout=TIMEOUT)


@pytest.mark.parametrize("kind", ["sim", "threads", "processes"])
def test_workers_that_join_later_get_plugins_and_files(kind, tmp_path):
    name = f"tf_late_{kind}_{uuid.uuid4().hex[:6]}"
    if kind == "sim":
        cluster = SimCluster(n_workers=1, threads_per_worker=1, seed=0, validate=True)
    else:
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=(kind == "processes"))
    with cluster, Client(cluster, set_as_default=False) as client:
        client.register_scheduler_plugin(Log(), name="log")
        client.register_worker_plugin(Recorder(name), name=name)
        path = tmp_path / f"{name}.py"
        path.write_text("def f():\n    return 'late'\n")
        client.upload_file(str(path))
        before = set(client.scheduler_info()["workers"])
        _late_worker(kind, cluster)
        workers = client.scheduler_info()["workers"]
        assert all(v == (True, None) for v in client.run(plugin_state, name).values()) and len(workers) >= 1
        assert set(client.run(call_module, name).values()) == {"late"}
        log = client.run_on_scheduler(scheduler_log, "log")
        added = [w for what, *rest in log if what == "add" for w in rest]
        if kind == "sim":
            assert ("remove", *before) in log and added == list(before)
        else:
            assert added == [w for w in workers if w not in before]
