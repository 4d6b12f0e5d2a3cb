"""twofold.runtime: the socket driver (real processes, TCP/TLS).

The wire layer: :mod:`~twofold.runtime.framing` (frames, limits, handshake
records) and :mod:`~twofold.runtime.comm` (handshaken, batched connections);
the servers (:mod:`~twofold.runtime.scheduler`, :mod:`~twofold.runtime.worker`),
the :mod:`~twofold.runtime.nanny`, :class:`~twofold.runtime.local.LocalCluster`,
the Client's :mod:`~twofold.runtime.backend` and the command line
(:mod:`~twofold.runtime.cli`).
"""

from twofold.runtime.comm import (
    Comm,
    CommStats,
    HandshakeError,
    Listener,
    ListenerStats,
    connect,
    format_address,
    listen,
    parse_address,
)
from twofold.runtime.framing import PROTOCOL_VERSION, FrameError, FrameLimits
from twofold.runtime.local import LocalCluster
from twofold.runtime.security import Security

__all__ = [
    "PROTOCOL_VERSION",
    "Comm",
    "CommStats",
    "FrameError",
    "FrameLimits",
    "HandshakeError",
    "Listener",
    "ListenerStats",
    "LocalCluster",
    "Security",
    "connect",
    "format_address",
    "listen",
    "parse_address",
]
