"""Exceptions users see, and the rebuilding of remote ones.

Errors that the scheduler itself decides (a worker died too often, a graph
was refused) travel as :class:`twofold.messages.TaskError` records without a
pickled exception; :func:`error_class` maps their ``typename`` back here.
"""

from __future__ import annotations


class TwofoldError(Exception):
    """Base class of twofold's own errors."""


class KilledWorker(TwofoldError):
    """A task's workers died ``allowed_failures`` + 1 times while running it."""


class CancelledError(TwofoldError):
    """The future was cancelled."""


class FutureLost(TwofoldError):
    """The data of a scattered key was lost with every worker that held it."""


class InvalidGraph(TwofoldError, ValueError):
    """A submitted graph was refused: cycle, unknown dependency or bad option."""


class ActorLost(TwofoldError):
    """An actor's instance is gone: its worker died, restarted or released it."""


class ProtocolError(TwofoldError):
    """A peer sent something the protocol does not allow."""


_BY_NAME = {cls.__name__: cls for cls in (KilledWorker, CancelledError, FutureLost, InvalidGraph)}


def error_class(typename: str) -> type[Exception]:
    """The exception class for a scheduler-made error's ``typename``."""
    return _BY_NAME.get(typename, TwofoldError)


class CommClosedError(TwofoldError, OSError):
    """A peer (scheduler or worker) is gone or unreachable."""


class SimulationStalled(TwofoldError):
    """A blocking call waited on the simulated cluster, but nothing left to
    simulate can ever satisfy it (e.g. no worker can run the task)."""


class TimeoutError(TwofoldError, TimeoutError):  # noqa: A001 - dask's name
    """A wait ran out of time."""
