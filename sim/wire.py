"""``SimCluster(serialize=True)``: user objects make the pickle round trip a real cluster makes.

By default the simulator hands Python objects around by reference (fast, but
a lock or a generator "works" where production would fail).  With
``serialize=True`` each crossing of a process boundary goes through the
runtime's own code, so it fails the way the runtime fails and sizes are
measured from the real bytes:

* task specs: ``RunSpecEncoder`` on the client (functions with cloudpickle,
  each distinct function once) and ``FunctionCache`` on the worker; the run
  spec the scheduler carries is those real bytes;
* results: ``describe_result`` (the worker's measure and inline pickle, by
  ``WorkerConfig.rides_inline``); a result that cannot be pickled stays in the
  worker's store, and whoever asks for it (the client, a peer) is told so;
* scatter, data sent to clients and peers, values (``dump_value``), actor
  call arguments and replies, task exceptions: pickled and loaded back
  (``twofold.serialize``, as ``runtime/payload.py`` packs them).

Only this module imports the runtime's serialization code, and only a
cluster made with ``serialize=True`` imports this module.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Mapping

from twofold import serialize
from twofold.runtime.execution import FunctionCache, RunSpecEncoder, describe_result
from twofold.runtime.payload import dumps_small


class Wire:
    """One simulation's serializer: the client's encoder, the workers' function cache."""

    def __init__(self) -> None:
        self._encoder = RunSpecEncoder()
        self._functions = FunctionCache()

    # -- task specs ---------------------------------------------------------------

    def encode_task(self, func: Callable, args: tuple, kwargs: dict) -> bytes:
        """The run spec's real bytes (``SerializationError`` for what cannot be pickled)."""
        return self._encoder.encode(func, args, kwargs)

    def decode_task(self, run_spec: bytes) -> tuple[Callable, tuple, dict]:
        return self._functions.decode(run_spec)

    # -- values -------------------------------------------------------------------

    def copy(self, obj: Any) -> tuple[Any, int]:
        """``(obj as the far end loads it, bytes on the wire)``, as one pickle (``dumps_small``)."""
        data = dumps_small(obj)
        return pickle.loads(data), len(data)

    def ship(self, obj: Any) -> tuple[Any, int]:
        """``(the far end's copy, nbytes)`` of a data-plane object (scatter, fetch, gather)."""
        header, frames = serialize.dumps(obj)
        nbytes = serialize.nbytes_of(obj, frames)
        # frames may share the sender's memory (out-of-band buffers, a bytearray): copy them, as a wire does
        return serialize.loads(header, [f if type(f) is bytes else bytes(f) for f in frames]), nbytes

    def ship_all(self, found: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
        """What a worker sends of ``found``: copies and sizes, and why a key could not go
        (the runtime's ``DataReply.errors``: ``"SerializationError: ..."``)."""
        copies: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        errors: dict[str, str] = {}
        for key, obj in found.items():
            try:
                copies[key], sizes[key] = self.ship(obj)
            except Exception as exc:
                errors[key] = f"{type(exc).__name__}: {exc}"
        return copies, sizes, errors

    # -- task outcomes ------------------------------------------------------------

    def result(self, result: Any, rides_inline: Callable[[int], bool]) -> tuple[int, Any, bool]:
        """``(nbytes, the copy that rides inline or None, rides)`` of a task's result, by the
        runtime worker's own measure (``describe_result``)."""
        nbytes, _, inline = describe_result(result, rides_inline)
        if inline is None:
            return nbytes, None, False
        return nbytes, pickle.loads(inline), True

    def exception(self, exc: BaseException) -> BaseException | None:
        """The exception as the client loads it; None if it does not survive pickling
        (the client then rebuilds one from its type name and message, as on the runtime)."""
        try:
            copy = pickle.loads(dumps_small(exc))
        except Exception:
            return None
        # the runtime ships the traceback beside the pickle (tracebacks don't pickle): here
        # the task's own frames stand for the one it rebuilds
        return copy.with_traceback(exc.__traceback__)


def fetch_error(errors: Mapping[str, str]) -> serialize.SerializationError:
    """What the client raises for keys whose holder could not send them (the runtime's words)."""
    key, why = next(iter(errors.items()))
    more = f" (and {len(errors) - 1} more keys)" if len(errors) > 1 else ""
    return serialize.SerializationError(f"the result of {key!r} cannot be sent from its worker: {why}{more}")
