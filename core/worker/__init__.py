"""The pure worker state machine (see DESIGN.md, "Worker side")."""

from twofold.worker.machine import WorkerState
from twofold.worker.state import WTask
from twofold.worker.validate import validate_worker

__all__ = ["WTask", "WorkerState", "validate_worker"]
