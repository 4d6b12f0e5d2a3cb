"""In-memory logs of the scheduler and workers, for ``get_scheduler_logs``/``get_worker_logs``.

One ring buffer per logger (``twofold.runtime.scheduler``, ``twofold.runtime.worker``),
attached when a server starts: it keeps the last ``SIZE`` records of that
logger and its children that the logger's level lets through (WARNING in
worker processes of a LocalCluster with ``silence_logs=True``; the
levels are the user's ``logging`` configuration, not changed here), as
``(level name, message)`` pairs.  Workers that share a process
(``LocalCluster(processes=False)``) share their buffer.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

SIZE = 10_000

_handlers: dict[str, "RingHandler"] = {}
_lock = threading.Lock()


class RingHandler(logging.Handler):
    def __init__(self, size: int = SIZE):
        super().__init__(level=logging.DEBUG)
        self.records: deque[tuple[str, str]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelname, record.getMessage()))
        except Exception:  # a record that cannot format itself must not break its caller
            self.handleError(record)


def attach(name: str) -> RingHandler:
    """The ring buffer of logger ``name``, attached on first use."""
    with _lock:
        handler = _handlers.get(name)
        if handler is None:
            handler = _handlers[name] = RingHandler()
            logging.getLogger(name).addHandler(handler)
        return handler


def recent(name: str, n: int) -> list[tuple[str, str]]:
    """The last ``n`` records of logger ``name``, oldest first."""
    handler = _handlers.get(name)
    if handler is None:
        return []
    records = list(handler.records)
    return records[-n:] if n else records
