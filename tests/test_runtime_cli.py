"""``python -m twofold.runtime.cli scheduler|worker``: a cluster made of separate processes.

One module-scoped cluster: a scheduler (``--port 0 --scheduler-file F``), a
worker found through the scheduler file with ``--resources "GPU=2"`` (started
before the scheduler has written the file), two more workers started by one
command given the address (``--nworkers 2 --nthreads 1``), and one without a
nanny (``--no-nanny``).  Clients connect by address and by
scheduler file.  The last test stops everything with SIGINT/SIGTERM and
checks the exit codes and the logs.  Each process logs to its own file.
"""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from runtime_support import (
    TIMEOUT,
    Proc,
    children_of,
    descendants_of,
    free_port,
    getpid,
    inc,
    pid_alive,
    read_json,
    wait_for,
)
from twofold import Client, wait
from twofold.errors import TimeoutError as TwofoldTimeoutError
from twofold.runtime.cli import read_scheduler_file


def where(*_):
    from twofold.context import current_task

    return current_task().worker


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sfile = d / "scheduler.json"
    procs: list[Proc] = []
    try:
        sched = Proc(["scheduler", "--port", "0", "--scheduler-file", str(sfile)], d / "scheduler.log")
        procs.append(sched)
        # started at once: it waits for the scheduler file to appear
        gpu = Proc(["worker", "--scheduler-file", str(sfile), "--resources", "GPU=2", "--name", "gpu"], d / "gpu.log")
        procs.append(gpu)
        try:
            address = read_scheduler_file(str(sfile), timeout=TIMEOUT)
        except FileNotFoundError:
            raise AssertionError(f"no scheduler file; scheduler log:\n{sched.log()}") from None
        cpu = Proc(["worker", address, "--nworkers", "2", "--nthreads", "1", "--name", "cpu"], d / "cpu.log")
        procs.append(cpu)
        plain = Proc(["worker", address, "--no-nanny", "--name", "plain"], d / "plain.log")
        procs.append(plain)
        wait_for(lambda: sched.log().count(" registered (") >= 4, what="four workers to register")
        yield SimpleNamespace(address=address, scheduler_file=sfile, scheduler=sched, gpu=gpu, cpu=cpu, plain=plain,
                              dir=d)  # fmt: skip
    finally:
        for p in reversed(procs):
            p.kill()


@pytest.fixture
def client(cli):
    with Client(cli.address, set_as_default=False, timeout=10) as c:
        yield c


def test_scheduler_file(cli):
    info = read_json(cli.scheduler_file)
    assert info["address"] == cli.address
    assert info["address"].startswith("tcp://127.0.0.1:")
    assert info["pid"] == cli.scheduler.pid
    assert "scheduler ready at " + cli.address in cli.scheduler.log()


def test_client_by_address(client, cli):
    assert client.submit(inc, 1).result(timeout=TIMEOUT) == 2
    assert client.gather(client.map(inc, range(100))) == list(range(1, 101))
    [everywhere] = client.scatter(["x" * 100], broadcast=True)
    holders = client.who_has([everywhere])[everywhere.key]
    assert len(holders) == 4


def test_client_by_scheduler_file(cli):
    with Client(scheduler_file=str(cli.scheduler_file), set_as_default=False, timeout=10) as c:
        assert c.scheduler.address == cli.address
        assert c.submit(inc, 10, pure=False).result(timeout=TIMEOUT) == 11


def test_worker_names_and_processes(client, cli):
    names = ["gpu", "cpu-0", "cpu-1", "plain"]
    addresses = client.gather([client.submit(where, n, workers=n, pure=False) for n in names])
    assert len(set(addresses)) == 4
    pids = client.gather([client.submit(getpid, n, workers=n, pure=False) for n in names])
    assert len(set(pids)) == 4 and os.getpid() not in pids
    # each worker process descends from the command that started its nanny (forked by the nanny's
    # zygote); --no-nanny runs in the command itself
    assert pids[0] in descendants_of(cli.gpu.pid)
    assert set(pids[1:3]) <= set(descendants_of(cli.cpu.pid))
    assert pids[3] == cli.plain.pid


def test_resources_flag(client, cli):
    gpu_address = client.submit(where, workers="gpu", pure=False).result(timeout=TIMEOUT)
    futures = client.map(where, range(8), resources={"GPU": 1}, pure=False)
    assert set(client.gather(futures)) == {gpu_address}
    two = client.submit(where, resources={"GPU": 2}, pure=False)
    assert two.result(timeout=TIMEOUT) == gpu_address
    three = client.submit(where, resources={"GPU": 3}, pure=False)
    with pytest.raises(TwofoldTimeoutError):
        wait([three], timeout=0.5)
    three.cancel()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--no-nanny"], 3, "worker cannot join the scheduler at {address}"),
        ([], 3, "lost the scheduler"),
    ],
    ids=["no-nanny", "nanny"],
)
def test_worker_without_scheduler_exits_with_clear_error(tmp_path, args, code, message):
    address = f"tcp://127.0.0.1:{free_port()}"
    p = Proc(["worker", address, "--timeout", "2", *args], tmp_path / "worker.log")
    try:
        rc = p.wait(TIMEOUT)
        log = p.log()
        assert rc == code, log
        assert message.format(address=address) in log, log
        assert "Traceback" not in log, log
    finally:
        p.kill()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler-file", "{missing}", "--timeout", "0.3"], "no scheduler file at {missing} after 0.3 s"),
        ([], "worker needs the scheduler's ADDRESS or --scheduler-file"),
        (["tcp://127.0.0.1:1", "--resources", "GPU"], "--resources takes NAME=AMOUNT pairs"),
        (["tcp://127.0.0.1:1", "--scheduler-file", "{missing}"], "not both"),
    ],
    ids=["missing-file", "no-address", "bad-resources", "address-and-file"],
)
def test_worker_bad_arguments(tmp_path, monkeypatch, args, message):
    """Refused with a one-line reason (SystemExit), before any process or connection (run in-process)."""
    import logging

    from twofold.runtime import cli

    monkeypatch.setattr(logging, "basicConfig", lambda **kw: None)  # leave pytest's logging alone
    missing = str(tmp_path / "nowhere.json")
    with pytest.raises(SystemExit) as info:
        cli.main(["worker", *(a.format(missing=missing) for a in args)])
    assert message.format(missing=missing) in str(info.value.code)


def grandchildren_of(pid: int) -> list[int]:
    return [g for child in children_of(pid) for g in children_of(child)]


def test_signals_shut_down_cleanly(cli):
    """Runs last: SIGINT the two-worker command, SIGTERM the --no-nanny worker, then SIGTERM the
    scheduler under the last worker, whose command then ends saying it lost the scheduler."""
    workers_of_cpu = grandchildren_of(cli.cpu.pid)  # command -> its nannies' zygote -> workers
    assert len(workers_of_cpu) == 2
    cli.cpu.signal(signal.SIGINT)
    assert cli.cpu.wait(TIMEOUT) == 0, cli.cpu.log()
    assert "received SIGINT: shutting down" in cli.cpu.log()
    assert cli.cpu.log().count("received SIGTERM: shutting down") == 2  # the nanny stopped both workers
    for pid in workers_of_cpu:
        wait_for(lambda: not pid_alive(pid), timeout=5, what=f"worker process {pid} to end")

    cli.plain.signal(signal.SIGTERM)
    assert cli.plain.wait(TIMEOUT) == 0, cli.plain.log()
    assert "received SIGTERM: shutting down" in cli.plain.log()
    assert "closing: asked to stop" in cli.plain.log()
    wait_for(lambda: cli.scheduler.log().count(" left: ") >= 3, timeout=5, what="the scheduler to see them leave")

    # the scheduler stops cleanly even with a worker connected; that worker's command ends, saying why
    [gpu_worker] = grandchildren_of(cli.gpu.pid)
    cli.scheduler.signal(signal.SIGTERM)
    assert cli.scheduler.wait(TIMEOUT) == 0, cli.scheduler.log()
    log = cli.scheduler.log()
    assert "received SIGTERM: shutting down" in log
    assert f"scheduler at {cli.address} closed" in log
    assert not cli.scheduler_file.exists()
    assert cli.gpu.wait(TIMEOUT) == 3, cli.gpu.log()  # EXIT_SCHEDULER_LOST: restarting is pointless
    assert "lost the scheduler" in cli.gpu.log()
    assert not pid_alive(gpu_worker)
    for p in (cli.cpu, cli.plain, cli.gpu, cli.scheduler):
        assert "Traceback" not in p.log(), p.log()
