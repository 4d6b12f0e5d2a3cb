"""twofold.runtime: the socket driver (real processes, TCP/TLS). Arrives with its own issue."""
