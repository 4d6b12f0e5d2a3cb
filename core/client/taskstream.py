"""``client.get_task_stream`` and the ``get_task_stream()`` context manager.

Records are dask's: ``{"key", "worker", "status" ("OK" | "error"),
"nbytes", "type", "startstops": ({"action": "compute", "start", "stop"},)}``,
``start``/``stop`` on the worker's clock (virtual time in the simulator;
``time.monotonic()`` of the worker's process on the runtime).  A window
(``start=``/``stop=``) is on the scheduler's clock: a number, or a string
such as ``"60s"`` for that long before now.
"""

from __future__ import annotations

from twofold.client.modes import awaitable

from typing import TYPE_CHECKING, Any

from twofold.client.coordinating import parse_timeout
from twofold.messages_sharing import TaskStreamRequest

if TYPE_CHECKING:
    from twofold.client.client import Client


def _record(run: tuple) -> dict[str, Any]:
    key, worker, start, stop, ok, nbytes, typename, _ = run
    return {
        "key": key, "worker": worker, "status": "OK" if ok else "error", "nbytes": nbytes, "type": typename,
        "startstops": ({"action": "compute", "start": start, "stop": stop},),
    }  # fmt: skip


class TaskStreamMethods:
    """Mixin of :class:`~twofold.Client`."""

    def _scheduler_now(self: Client) -> float:
        return self._coordinate(lambda now, sid, rid: TaskStreamRequest(now, sid, self.id, rid, "now"))

    def _window_edge(self: Client, value: Any, now: float | None) -> tuple[float | None, float | None]:
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value, now
        if now is None:
            now = self._scheduler_now()
        return now - parse_timeout(value, "start/stop"), now

    @awaitable
    def get_task_stream(self: Client, start: Any = None, stop: Any = None, count: int | None = None,
                        plot: bool = False, filename: str | None = None, bokeh_resources: Any = None) -> list[dict]:  # fmt: skip
        """The task runs that finished in the window (all the scheduler keeps, by default)."""
        if plot:
            raise NotImplementedError("get_task_stream(plot=True): plotting comes with the dashboard; on a "
                                      "SimCluster, cluster.plot() draws the task stream")  # fmt: skip
        lo, now = self._window_edge(start, None)
        hi, _ = self._window_edge(stop, now)
        runs = self._coordinate(lambda now_, sid, rid: TaskStreamRequest(now_, sid, self.id, rid, "get", lo, hi,
                                                                        count))  # fmt: skip
        return [_record(run) for run in runs]


class get_task_stream:  # noqa: N801 - dask's name
    """``with get_task_stream() as ts: ...`` then ``ts.data``: the runs that finished inside the block."""

    def __init__(self, client: Client | None = None, plot: bool = False, filename: str = "task-stream.html"):
        if plot:
            raise NotImplementedError("get_task_stream(plot=True): plotting comes with the dashboard")
        self.client = client
        self.data: list[dict] = []
        self._start: float | None = None

    def __enter__(self) -> get_task_stream:
        from twofold.client.client import default_client

        self.client = default_client(self.client)
        self._start = self.client._scheduler_now()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.data.extend(self.client.get_task_stream(start=self._start))
