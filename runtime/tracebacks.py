"""Tracebacks across processes: the worker's frames, rebuilt as a real traceback object.

Traceback objects do not pickle.  The worker sends the stack as plain
``(filename, lineno, function name)`` entries; the client rebuilds a chain
of ``types.TracebackType`` whose frames carry those file and function
names, so ``future.traceback()`` is a traceback object, and
``traceback.print_tb`` (or an uncaught re-raise) shows the worker's lines
as if the error had happened locally.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from types import FrameType, TracebackType

#: at most this many frames travel (the innermost ones)
MAX_FRAMES = 100


def entries(tb: TracebackType | None) -> bytes:
    """The stack of ``tb`` as bytes for ``TaskError.traceback``."""
    stack = traceback.extract_tb(tb)[-MAX_FRAMES:]
    return pickle.dumps([(f.filename, f.lineno or 0, f.name) for f in stack], protocol=5)


def _frame(filename: str, lineno: int, name: str) -> FrameType:
    # the code sits on the remote line: tracebacks (3.11+) take lines from code positions
    code = compile("\n" * max(0, lineno - 1) + "__frame__ = _getframe()", filename, "exec").replace(co_name=name)
    namespace = {"_getframe": sys._getframe, "__name__": "twofold-remote"}
    exec(code, namespace)  # noqa: S102 - a frame object named after the remote one
    return namespace["__frame__"]


def rebuild(data: bytes | None) -> TracebackType | None:
    """A traceback object for the entries in ``data`` (None if there are none or they are bad)."""
    if not data:
        return None
    try:
        stack = pickle.loads(data)
        tb = None
        for filename, lineno, name in reversed(stack[-MAX_FRAMES:]):
            frame = _frame(str(filename), int(lineno), str(name))
            tb = TracebackType(tb, frame, frame.f_lasti, int(lineno))
        return tb
    except Exception:
        return None
