"""Faults on a real LocalCluster: dead workers, dead clients, bad peers, wrong secrets, a lost scheduler.

Each test asserts the outcome: results still correct, the right error (type
and message), what the scheduler keeps or forgets, that everyone else is
unharmed.  Workers are processes under nannies (``cluster.nannies[i].pid``);
the scheduler runs in this process, so its state is read on its loop
(``runtime_support.on_loop``) and its log records reach ``caplog``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from runtime_support import (
    TIMEOUT,
    add,
    append_line,
    child_env,
    getpid,
    inc,
    read_lines,
    scheduler_clients,
    scheduler_keys,
    slow_inc,
    state_clients,
    touch,
    wait_for,
    wait_for_file,
)
from twofold import Client, FutureLost, KilledWorker, LocalCluster, SchedulerConfig, as_completed, wait
from twofold.errors import CommClosedError
from twofold.runtime import HandshakeError, Security
from twofold.runtime.comm import parse_address
from twofold.runtime.framing import (
    BATCH,
    HANDSHAKE,
    HANDSHAKE_LIMITS,
    MAGIC,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    Hello,
    Verdict,
    decode_handshake,
    encode_handshake,
    frame_parts,
)


def suicide(path):
    """Note the attempt, then kill the worker process running it."""
    append_line(path, str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, name="faults") as c:
        yield c


@pytest.fixture
def client(cluster):
    cluster.wait_for_workers(2, timeout=TIMEOUT)  # a previous test may have killed one
    with Client(cluster, set_as_default=False) as c:
        yield c


# --------------------------------------------------------------------------
# dead workers
# --------------------------------------------------------------------------


def test_sigkill_a_worker_mid_graph(client, cluster):
    nanny = cluster.nannies[0]
    old_pid, restarts = nanny.pid, nanny.restarts
    by_pid = {client.submit(getpid, w, workers=[w], pure=False).result(timeout=TIMEOUT): w for w in cluster.workers}
    victim = by_pid[old_pid]
    tag = _uid()
    # data that only the victim holds: scattered (cannot be recomputed) and computed (can)
    [scattered] = client.scatter([f"only-on-victim-{tag}"], workers=[victim])
    computed = client.submit(inc, 1000, workers=[victim], allow_other_workers=True, key=f"computed-{tag}")
    assert computed.result(timeout=TIMEOUT) == 1001
    assert client.who_has([scattered, computed]) == {scattered.key: [victim], computed.key: [victim]}
    # a graph under way on both workers
    xs = client.map(slow_inc, range(40), key=[f"x-{tag}-{i}" for i in range(40)])
    ys = client.map(add, xs, list(reversed(xs)), key=[f"y-{tag}-{i}" for i in range(40)])
    total = client.submit(sum, ys, key=f"total-{tag}")
    wait_for(lambda: sum(f.done() for f in xs) >= 6, what="the graph to be under way")
    os.kill(old_pid, signal.SIGKILL)
    assert total.result(timeout=TIMEOUT) == 41 * 40  # (i + 1) + (40 - i) for each i
    assert client.gather(ys) == [41] * 40
    # what only the victim held: computed again from its task, or lost for good if scattered
    assert client.submit(inc, computed, pure=False).result(timeout=TIMEOUT) == 1002
    with pytest.raises(FutureLost, match="lost"):
        scattered.result(timeout=TIMEOUT)
    with pytest.raises(FutureLost):
        client.submit(len, scattered, pure=False).result(timeout=TIMEOUT)
    # the nanny started a fresh worker process, which joins and works
    wait_for(lambda: nanny.restarts == restarts + 1 and nanny.pid != old_pid, what="the nanny to restart it")
    cluster.wait_for_workers(2, timeout=TIMEOUT)
    assert victim not in cluster.workers  # the new process listens on a new port
    pids = {client.submit(getpid, w, workers=[w], pure=False).result(timeout=TIMEOUT) for w in cluster.workers}
    assert pids == {n.pid for n in cluster.nannies}
    assert old_pid not in pids


def test_task_that_kills_its_worker_errs_with_killed_worker(client, cluster, tmp_path):
    attempts = str(tmp_path / "attempts")
    allowed = SchedulerConfig().allowed_failures
    f = client.submit(suicide, attempts, key=f"suicide-{_uid()}")
    with pytest.raises(KilledWorker) as info:
        f.result(timeout=TIMEOUT)
    assert f.key in str(info.value) and "died" in str(info.value)
    assert f.status == "error"
    pids = read_lines(attempts)
    assert len(pids) == allowed + 1  # one worker death per attempt, then it gives up
    assert len(set(pids)) == len(pids)  # each attempt in a fresh worker process
    # the cluster recovers: the nannies bring both workers back
    cluster.wait_for_workers(2, timeout=TIMEOUT)
    assert client.gather(client.map(inc, range(10), pure=False)) == list(range(1, 11))
    assert all(n.finished is not None and not n.finished.done() for n in cluster.nannies)


# --------------------------------------------------------------------------
# a dead client
# --------------------------------------------------------------------------

_CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from twofold import Client
    from runtime_support import inc, wait_for_file

    address, tag, gate, ready = sys.argv[1:5]
    client = Client(address)
    held = client.map(inc, range(10), key=[f"held-{tag}-{i}" for i in range(10)])
    client.gather(held)
    running = client.map(wait_for_file, [gate] * 2, key=[f"long-{tag}-{i}" for i in range(2)])
    waiting = client.map(inc, running, key=[f"after-{tag}-{i}" for i in range(2)])
    with open(ready + ".tmp", "w") as f:
        f.write(client.id)
    import os
    os.replace(ready + ".tmp", ready)
    time.sleep(60)
    """
)


def test_client_process_killed_mid_run(client, cluster, tmp_path):
    tag = _uid()
    gate = str(tmp_path / "gate")
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLIENT_SCRIPT, cluster.scheduler_address, tag, gate, str(ready)],
        env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, what="the client process to submit")
        assert proc.poll() is None, proc.stdout.read().decode()
        dead_id = ready.read_text()
        ours = lambda: {k for k in scheduler_keys(cluster) if tag in k}  # noqa: E731
        wait_for(lambda: len(ours()) == 14, what="the client's 14 keys at the scheduler")
        assert dead_id in scheduler_clients(cluster)
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        wait_for(lambda: dead_id not in scheduler_clients(cluster), what="the scheduler to drop the dead client")
        wait_for(lambda: dead_id not in state_clients(cluster), what="the state machine to forget the client")
        wait_for(lambda: not ours(), what="the dead client's keys to be released")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        touch(gate)  # free the worker threads still waiting
    wait_for(lambda: not scheduler_keys(cluster), what="the scheduler to hold no task at all")
    # the other client is unharmed
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


# --------------------------------------------------------------------------
# bad peers on the scheduler's port
# --------------------------------------------------------------------------

_PREFIX = struct.Struct("!4sBBHII")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def _recv_record(sock: socket.socket, expect: type):
    magic, version, kind, flags, header_len, n = _PREFIX.unpack(_recv_exactly(sock, _PREFIX.size))
    assert (magic, kind, n) == (MAGIC, HANDSHAKE, 0)
    return decode_handshake(_recv_exactly(sock, header_len), expect)


def _raw_connect(address: str, handshake: bool) -> socket.socket:
    _, host, port = parse_address(address)
    sock = socket.create_connection((host, port), timeout=5)
    hello = _recv_record(sock, Hello)
    assert hello.kind == "scheduler"
    if handshake:
        mine = Hello(PROTOCOL_VERSION, "client", "raw-test", os.urandom(NONCE_BYTES), False, b"")
        sock.sendall(b"".join(frame_parts(HANDSHAKE, encode_handshake(mine), [], HANDSHAKE_LIMITS)))
        verdict = _recv_record(sock, Verdict)
        assert verdict.ok, verdict.reason
    return sock


def _closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Read until the peer closes (True) or ``timeout`` passes with it still open (False)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return True


_BAD_FRAMES = {
    # before the handshake (only small handshake records are accepted)
    "http-request": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a twofold peer"),
    "oversized-hello": (False, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, HANDSHAKE, 0, 10**6, 0), "over the 4096-byte limit"),
    # after a good handshake
    "garbage": (True, b"\x00" * 64, "bad magic"),
    "undecodable-batch": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 4, 0) + b"\xc1\xc1\xc1\xc1",
                          "undecodable batch header"),
    "wrong-version": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION + 1, BATCH, 0, 1, 0) + b"\x90", "wrong protocol version"),
    "oversized-header": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 2**31, 0), "over the"),
    "oversized-payload": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 1, 1) + struct.pack("!Q", 2**40),
                          "over the"),
    "too-many-frames": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 1, 2**31), "payload frames is over"),
    "unknown-op": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 4, 0) + b"\x91\xa2hi", "unknown message op"),
    "not-a-message": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 2, 0) + b"\x91\x05", "not a twofold message"),
    "empty-batch": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 1, 0) + b"\x90", "not AddClient or AddWorker"),
    "truncated": (True, _PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, 100, 0) + b"\x91", "truncated frame"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_BAD_FRAMES))
def test_bad_frame_closes_only_that_connection(client, cluster, caplog, case):
    handshake, data, reason = _BAD_FRAMES[case]
    before = client.submit(inc, 1, key=f"before-{_uid()}")
    assert before.result(timeout=TIMEOUT) == 2
    caplog.set_level(logging.INFO, logger="twofold.runtime")
    sock = _raw_connect(cluster.scheduler_address, handshake)
    try:
        sock.sendall(data)
        if case == "truncated":
            sock.shutdown(socket.SHUT_WR)  # the peer goes away in the middle of a frame
        assert _closed_by_peer(sock), f"the scheduler kept the connection open after {case}"
    finally:
        sock.close()
    if reason:
        wait_for(lambda: reason in caplog.text, timeout=5, what=f"the reason ({reason!r}) in the log")
    # the existing client, its data and the scheduler are unharmed
    assert client.id in scheduler_clients(cluster)
    assert before.result(timeout=TIMEOUT) == 2 and before.key in scheduler_keys(cluster)
    assert client.submit(add, before, 10, pure=False).result(timeout=TIMEOUT) == 12
    assert len(cluster.workers) == 2
    with Client(cluster.scheduler_address, set_as_default=False) as other:
        assert other.submit(inc, 2, pure=False).result(timeout=TIMEOUT) == 3


def test_first_message_not_add_client_closes_the_connection(client, cluster, caplog):
    """A well-formed batch whose first message is not AddClient/AddWorker is refused too."""
    from twofold import messages as M

    caplog.set_level(logging.INFO, logger="twofold.runtime")
    sock = _raw_connect(cluster.scheduler_address, handshake=True)
    try:
        header = M.dumps([M.ReleaseKeys(0.0, "raw", "client-nobody", ("k",))])
        sock.sendall(_PREFIX.pack(MAGIC, PROTOCOL_VERSION, BATCH, 0, len(header), 0) + header)
        assert _closed_by_peer(sock)
    finally:
        sock.close()
    wait_for(lambda: "not AddClient or AddWorker" in caplog.text, timeout=5)
    assert client.submit(inc, 3, pure=False).result(timeout=TIMEOUT) == 4


# --------------------------------------------------------------------------
# shared secrets
# --------------------------------------------------------------------------


def via_task_client(x):
    """get_client() inside a task: the worker's own client must prove the secret too."""
    from twofold import get_client

    return get_client().submit(inc, x, pure=False).result(timeout=TIMEOUT)


def test_wrong_shared_secret_is_refused_clearly(caplog):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, security=Security(secret="a"),
                      name="secret") as cluster:  # fmt: skip
        address = cluster.scheduler_address
        assert len(cluster.workers) == 2  # the nannies' workers proved the secret too
        caplog.set_level(logging.INFO, logger="twofold.runtime")
        with pytest.raises(HandshakeError, match="wrong shared secret"):
            Client(address, security=Security(secret="b"), set_as_default=False, timeout=5)
        with pytest.raises(HandshakeError, match="shared secret is required"):
            Client(address, set_as_default=False, timeout=5)
        assert "wrong shared secret" in caplog.text
        assert scheduler_clients(cluster) == set()
        with Client(address, security=Security(secret="a"), set_as_default=False, timeout=5) as c:
            a, b = cluster.workers
            x = c.submit(inc, 1, workers=[a])
            y = c.submit(inc, x, workers=[b])  # b fetches x from a: worker-to-worker with the secret
            assert y.result(timeout=TIMEOUT) == 3
            assert c.gather([x, y]) == [2, 3]  # the client fetches from the workers with the secret
            assert c.submit(via_task_client, 10, pure=False).result(timeout=TIMEOUT) == 11
        with Client(cluster, set_as_default=False) as c:  # the cluster's own security
            assert c.submit(inc, 2).result(timeout=TIMEOUT) == 3
        # a worker's data port refuses strangers too
        with pytest.raises(HandshakeError, match="wrong shared secret"):
            Client(cluster.workers[0], security=Security(secret="b"), set_as_default=False, timeout=5)
    # a client holding a secret refuses a scheduler without one (it could be an impostor)
    with LocalCluster(n_workers=0, processes=False, name="nosecret") as open_cluster:
        with pytest.raises(HandshakeError, match="does not use one"):
            Client(open_cluster.scheduler_address, security=Security(secret="a"), set_as_default=False, timeout=5)


def test_client_pointed_at_a_worker_is_refused(client, cluster):
    with pytest.raises(HandshakeError, match="expected a scheduler"):
        Client(cluster.workers[0], set_as_default=False, timeout=5)
    assert client.submit(inc, 1, pure=False).result(timeout=TIMEOUT) == 2


# --------------------------------------------------------------------------
# the scheduler going away
# --------------------------------------------------------------------------


@pytest.mark.parametrize("connect", ["cluster", "address"])
def test_scheduler_going_away_fails_waiting_calls(tmp_path, connect):
    """result(), wait(), gather() and as_completed() blocked on a task raise CommClosedError, not hang."""
    gate = str(tmp_path / "gate")
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, name="doomed")
    try:
        client = Client(cluster if connect == "cluster" else cluster.scheduler_address, set_as_default=False)
        done = client.submit(inc, 1)
        assert done.result(timeout=TIMEOUT) == 2
        waiting = client.submit(wait_for_file, gate)
        wait_for(lambda: waiting.key in scheduler_keys(cluster))
        errors: dict[str, BaseException] = {}

        def blocked(name, call):
            try:
                call()
            except BaseException as exc:
                errors[name] = exc

        others = [
            threading.Thread(target=blocked, args=(name, call), daemon=True)
            for name, call in [
                ("wait", lambda: wait([waiting], timeout=TIMEOUT)),
                ("gather", lambda: client.gather([waiting, done])),  # no timeout in gather(): a daemon thread
                ("as_completed", lambda: list(as_completed([waiting]))),
            ]
        ]  # fmt: skip
        for t in others:
            t.start()
        closer = threading.Timer(0.5, cluster.close)
        closer.start()
        start = time.monotonic()
        with pytest.raises(CommClosedError, match="scheduler") as info:
            waiting.result(timeout=TIMEOUT)
        assert time.monotonic() - start < 10, "result() waited far longer than the close took"
        assert cluster.scheduler_address in str(info.value)
        closer.join(TIMEOUT)
        for t in others:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in others), f"still blocked after the scheduler closed: {others}"
        assert {name: type(exc) for name, exc in errors.items()} == dict.fromkeys(
            ["wait", "gather", "as_completed"], CommClosedError
        ), errors
        # later calls fail at once with the same clear error instead of hanging
        with pytest.raises(CommClosedError):
            client.submit(inc, 5, pure=False).result(timeout=TIMEOUT)
        with pytest.raises(CommClosedError):
            client.gather([client.submit(inc, 6, pure=False)])
        client.close()
        assert client.status == "closed"
    finally:
        touch(gate)
        cluster.close()
