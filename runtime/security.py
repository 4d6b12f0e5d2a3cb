"""``Security``: TLS certificates and the shared secret, as dask's ``Security`` holds them.

TLS is mutual: every side presents a certificate signed by ``tls_ca_file``
and checks the peer's (hostnames are not checked: cluster nodes are known by
their certificates, as in dask).  The shared secret is twofold's lighter
alternative: every connection proves it with an HMAC handshake
(:mod:`twofold.runtime.comm`); ``TWOFOLD_SECRET`` in the environment sets
it for processes started from the command line.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

_ROLES = ("client", "scheduler", "worker")


@dataclass(frozen=True)
class Security:
    """Certificates (PEM paths) per role, and/or a shared secret."""

    tls_ca_file: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    tls_scheduler_cert: str | None = None
    tls_scheduler_key: str | None = None
    tls_worker_cert: str | None = None
    tls_worker_key: str | None = None
    require_encryption: bool = False
    secret: bytes | str | None = None

    def __post_init__(self) -> None:
        for name in ("tls_ca_file", "tls_client_cert", "tls_client_key", "tls_scheduler_cert",
                     "tls_scheduler_key", "tls_worker_cert", "tls_worker_key"):  # fmt: skip
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"Security({name}={path!r}): no such file")
        if self.require_encryption and self.tls_ca_file is None:
            raise ValueError("Security(require_encryption=True) needs tls_ca_file and certificates for each role")

    def __repr__(self) -> str:  # never print the secret
        tls = "tls" if self.tls_ca_file else "no tls"
        return f"Security({tls}, secret={'set' if self.secret else 'none'}, require_encryption={self.require_encryption})"

    @classmethod
    def from_env(cls) -> "Security":
        """A Security with the secret from ``TWOFOLD_SECRET`` (if set)."""
        return cls(secret=os.environ.get("TWOFOLD_SECRET") or None)

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None

    def _cert(self, role: str) -> tuple[str, str | None]:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
        cert = getattr(self, f"tls_{role}_cert")
        key = getattr(self, f"tls_{role}_key")
        if cert is None:
            raise ValueError(f"TLS is configured but Security has no tls_{role}_cert for the {role}")
        return cert, key

    def server_context(self, role: str) -> ssl.SSLContext | None:
        """The SSL context a ``role`` listens with (None without TLS)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(*self._cert(role))
        return ctx

    def client_context(self, address: str = "", role: str = "client") -> ssl.SSLContext | None:
        """The SSL context a ``role`` connects to ``address`` with (None for tcp:// without TLS)."""
        if not self.tls:
            if address.startswith("tls://"):
                raise ValueError(f"{address} is a tls:// address: pass security=Security(tls_ca_file=..., ...)")
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file)
        ctx.check_hostname = False
        ctx.load_cert_chain(*self._cert(role))
        return ctx

    def worker_cli_args(self) -> list[str]:
        """The ``twofold worker`` options that give a worker process this TLS setup (not the secret)."""
        if not self.tls:
            return []
        args = ["--tls-ca-file", self.tls_ca_file, "--tls-cert", self._cert("worker")[0]]
        if self.tls_worker_key:
            args += ["--tls-key", self.tls_worker_key]
        return args

    def check_address(self, address: str) -> None:
        if self.require_encryption and not address.startswith("tls://"):
            raise ValueError(f"Security(require_encryption=True) refuses the unencrypted address {address}")
