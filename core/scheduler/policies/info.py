"""Information models: what a policy is told about durations and sizes.

A policy never reads the truth directly: it asks its information model,
through ``view.duration(ts)`` and ``view.nbytes(ts)``, so the same policy
can be studied with exact knowledge, with user estimates, or with none
(Estee's "exact / user / mean / blind" information modes; the rest come
with phase 2 of issue 13).

* :class:`Estimates`: what the scheduler itself believes: the smoothed
  per-prefix duration it learnt from finished runs
  (``SchedulerConfig.unknown_task_duration`` before any ran), and sizes
  once a result exists (``default_nbytes`` before).
* :class:`Given`: a table by key or key prefix (exact, when it is the one
  the simulator's duration and size models use), falling back to another
  model for what it does not list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    from twofold.scheduler.policies.view import SchedulerView
    from twofold.scheduler.state import TaskState


class InfoModel(Protocol):
    def duration(self, view: SchedulerView, ts: TaskState) -> float:
        """Expected seconds of one run of ``ts``."""

    def nbytes(self, view: SchedulerView, ts: TaskState) -> int:
        """Expected size of ``ts``'s result in bytes."""


@dataclass(frozen=True, slots=True)
class Estimates:
    """The scheduler's own current estimates (see the module docstring)."""

    #: the size assumed for a result that does not exist yet
    default_nbytes: int = 0

    def duration(self, view: SchedulerView, ts: TaskState) -> float:
        return view.durations.get(ts.prefix, view.unknown_duration)

    def nbytes(self, view: SchedulerView, ts: TaskState) -> int:
        nbytes = ts.nbytes
        return nbytes if nbytes >= 0 else self.default_nbytes


@dataclass(frozen=True, slots=True)
class Given:
    """Durations and sizes from tables keyed by task key or key prefix."""

    durations: Mapping[str, float] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    fallback: Any = field(default_factory=Estimates)

    def __post_init__(self) -> None:
        for what, table in (("durations", self.durations), ("sizes", self.sizes)):
            if not isinstance(table, Mapping):
                raise TypeError(f"Given({what}=...) must be a mapping of key or prefix to a number, got {table!r}")
            for name, value in table.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"Given({what}=...)[{name!r}] must be a number >= 0, got {value!r}")

    def duration(self, view: SchedulerView, ts: TaskState) -> float:
        table = self.durations
        value = table.get(ts.key)
        if value is None:
            value = table.get(ts.prefix)
        return self.fallback.duration(view, ts) if value is None else value

    def nbytes(self, view: SchedulerView, ts: TaskState) -> int:
        table = self.sizes
        value = table.get(ts.key)
        if value is None:
            value = table.get(ts.prefix)
        return self.fallback.nbytes(view, ts) if value is None else int(value)


def check_info(info: Any) -> Any:
    """``info`` if it is an information model, else a clear TypeError."""
    for method in ("duration", "nbytes"):
        if not callable(getattr(info, method, None)):
            raise TypeError(
                f"an information model needs duration(view, ts) and nbytes(view, ts) methods;"
                f" {type(info).__name__} has no {method}"
            )
    return info
