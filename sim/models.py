"""How long tasks take and how big results are, in the simulation.

A *model* answers per task.  It is built from what the user passes:

* a number: every task takes that long (seconds) / is that big (bytes);
* a mapping from a function name or key prefix to a number, a
  distribution or a callable (the longest matching entry wins; ``"*"`` is
  the fallback);
* a callable ``f(info) -> float`` of a :class:`TaskInfo`;
* a distribution (:class:`Uniform`, :class:`Exponential`,
  :class:`LogNormal`): drawn from the cluster's seeded generator, so runs
  repeat from the seed.

Result sizes default to the length of the pickled result (what would cross
a real network).
"""

from __future__ import annotations

import math
import pickle
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True, slots=True)
class TaskInfo:
    key: str
    prefix: str
    function: str
    worker: str


@dataclass(frozen=True, slots=True)
class Uniform:
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True, slots=True)
class Exponential:
    mean: float

    def draw(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal with the given *median* and shape ``sigma``."""

    median: float
    sigma: float

    def draw(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


_DISTRIBUTIONS = (Uniform, Exponential, LogNormal)


def _check_value(value: Any, what: str) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) or isinstance(value, _DISTRIBUTIONS) or callable(value)
    ):
        raise TypeError(f"{what} must be a number, a distribution or a callable, got {value!r}")
    if isinstance(value, (int, float)) and value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")


class Model:
    """Per-task numbers (durations or sizes) from the user's specification."""

    def __init__(self, spec: Any, rng: random.Random, what: str) -> None:
        self.rng = rng
        self.what = what
        self.table: dict[str, Any] | None = None
        self.default: Any = None
        if isinstance(spec, Mapping):
            self.table = {}
            for name, value in spec.items():
                if not isinstance(name, str):
                    raise TypeError(f"{what} keys must be function names or key prefixes (str), got {name!r}")
                _check_value(value, f"{what}[{name!r}]")
                if name == "*":
                    self.default = value
                else:
                    self.table[name] = value
        elif spec is not None:
            _check_value(spec, what)
            self.default = spec

    def lookup(self, info: TaskInfo) -> Any:
        if self.table:
            value = self.table.get(info.function)
            if value is None:
                value = self.table.get(info.prefix)
            if value is None:
                best = ""
                for name, candidate in self.table.items():
                    if info.key.startswith(name) and len(name) > len(best):
                        best, value = name, candidate
            if value is not None:
                return value
        return self.default

    def value(self, info: TaskInfo, fallback: float) -> float:
        spec = self.lookup(info)
        if spec is None:
            return fallback
        if isinstance(spec, (int, float)):
            return float(spec)
        if isinstance(spec, _DISTRIBUTIONS):
            return max(0.0, spec.draw(self.rng))
        result = spec(info)
        if not isinstance(result, (int, float)) or result < 0:
            raise ValueError(f"{self.what} callable returned {result!r} for {info.key!r}; expected a number >= 0")
        return float(result)


_NONE_NBYTES = len(pickle.dumps(None, protocol=5))


def measure_nbytes(obj: Any) -> int:
    """Bytes the object would take on the wire.

    An integer ``nbytes`` attribute (numpy arrays, workload payloads) wins;
    otherwise the length of its pickle, or ``sys.getsizeof`` if unpicklable.
    """
    if obj is None:
        return _NONE_NBYTES  # common (tasks run for their side effects): no pickling
    nbytes = getattr(obj, "nbytes", None)
    if type(nbytes) is int and nbytes >= 0:
        return nbytes
    try:
        return len(pickle.dumps(obj, protocol=5))
    except Exception:
        return sys.getsizeof(obj)


def function_name(func: Callable) -> str:
    inner = getattr(func, "func", None)  # functools.partial
    if inner is not None and callable(inner):
        func = inner
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name
