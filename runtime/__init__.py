"""twofold.runtime: the socket driver (real processes, TCP/TLS).

So far the wire layer: :mod:`~twofold.runtime.framing` (frames, limits,
handshake records) and :mod:`~twofold.runtime.comm` (handshaken, batched
connections).  Servers, the nanny, ``LocalCluster`` and the CLI arrive with
their own issue.
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

__all__ = [
    "PROTOCOL_VERSION",
    "Comm",
    "CommStats",
    "FrameError",
    "FrameLimits",
    "HandshakeError",
    "Listener",
    "ListenerStats",
    "connect",
    "format_address",
    "listen",
    "parse_address",
]
