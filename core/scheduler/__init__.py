"""The pure scheduler state machine (see DESIGN.md, "The state machine contract")."""

from twofold.scheduler.machine import SchedulerState
from twofold.scheduler.placement import EarliestStart, PlacementPolicy, RoundRobin
from twofold.scheduler.state import ClientInfo, TaskState, WorkerInfo
from twofold.scheduler.transitions import FIRE_AND_FORGET, TRANSITIONS, InvalidTransition
from twofold.scheduler.validate import validate_scheduler

__all__ = [
    "FIRE_AND_FORGET",
    "TRANSITIONS",
    "ClientInfo",
    "EarliestStart",
    "InvalidTransition",
    "PlacementPolicy",
    "RoundRobin",
    "SchedulerState",
    "TaskState",
    "WorkerInfo",
    "validate_scheduler",
]
