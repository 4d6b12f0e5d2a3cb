"""A LocalCluster over mutual TLS (dask-style ``Security`` with certificate paths)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from twofold import Client, LocalCluster, Security
from twofold.errors import CommClosedError
from twofold.runtime.comm import HandshakeError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not available")

TIMEOUT = 30


def inc(x):
    return x + 1


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """One self-signed certificate: its own CA, used by every role."""
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=twofold-test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def security(cert, key) -> Security:
    return Security(tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key, tls_scheduler_cert=cert,
                    tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)  # fmt: skip


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_cluster_over_tls(cert, processes):
    sec = security(*cert)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, security=sec) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        assert all(w.startswith("tls://") for w in cluster.workers)
        # by address, over TLS (not the in-process channel), data moving between workers too
        with Client(cluster.scheduler_address, security=sec, set_as_default=False) as client:
            a, b = cluster.workers
            x = client.submit(inc, 1, workers=[a])
            y = client.submit(inc, x, workers=[b])
            assert y.result(timeout=TIMEOUT) == 3
            [big] = client.scatter([b"x" * 3_000_000], workers=[a])
            assert client.submit(len, big, workers=[b]).result(timeout=TIMEOUT) == 3_000_000
            assert client.gather(big) == b"x" * 3_000_000
        # without a certificate the scheduler is unreachable
        with pytest.raises((CommClosedError, HandshakeError, OSError, ValueError)):
            Client(cluster.scheduler_address, set_as_default=False, timeout=5)


def test_plain_tcp_address_refused_when_encryption_is_required(cert):
    sec = security(*cert)
    with pytest.raises(ValueError, match="require_encryption"):
        sec.check_address("tcp://127.0.0.1:8786")
