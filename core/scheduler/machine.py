"""SchedulerState: the pure scheduler.  ``handle(event) -> list[output]``.

The one entry point is :meth:`SchedulerState.handle`.  It dispatches on the
event's type to a handler (client events in ``clients.py``, worker events in
``workers.py``, and the message types each :class:`Extension` declares:
work stealing in ``stealing.py``, the coordination primitives in
``coordination/``), which changes state through the transition engine
(``transitions.py``) and appends outputs.  Frees of worker data are batched
into one ``FreeKeys`` per worker per event.

No clocks, I/O or randomness: time comes from ``event.now``; timeouts are
``SetTimer`` outputs answered by ``TimerFired`` events, whose token's prefix
says whose timer it is (``ttl`` is the machine's own, the rest belong to
extensions).
"""

from __future__ import annotations

import math
from collections import deque
from types import MethodType
from typing import Any, Callable, Iterable

from twofold.config import SchedulerConfig
from twofold.messages import FreeKeys, Message, SetTimer, TimerFired
from twofold.scheduler.clients import ClientHandlers
from twofold.scheduler.policies.base import Policy, bind
from twofold.scheduler.policies.default import Default
from twofold.scheduler.policies.view import SchedulerView
from twofold.scheduler.state import ClientInfo, TaskState, WorkerInfo
from twofold.scheduler.extension import HOOKS, Extension, TransitionFanOut, overrides
from twofold.scheduler.transitions import FIRE_AND_FORGET, Recs, Transitions
from twofold.scheduler.workers import WorkerHandlers
from twofold.taskqueue import TaskQueue


def default_extensions(stealer: Callable[[], Extension | None] | None = None) -> list[Extension]:
    """What a scheduler runs unless told otherwise: work stealing, the coordination
    primitives, and what clients share (datasets, metadata, events).

    ``stealer``: makes the stealing component instead of :class:`Stealing`
    (a policy's ``stealer``; it may return None: no stealing)."""
    from twofold.scheduler.coordination import coordination_extensions
    from twofold.scheduler.sharing import sharing_extensions
    from twofold.scheduler.cluster_ops import ClusterOps
    from twofold.scheduler.restart import Restart
    from twofold.scheduler.stealing import Stealing

    steal = Stealing() if stealer is None else stealer()
    if steal is not None and not isinstance(steal, Extension):
        raise TypeError(f"a policy's stealer() must return an Extension or None, got {type(steal).__name__}")
    stealing = [] if steal is None else [steal]
    return [*stealing, *coordination_extensions(), *sharing_extensions(), ClusterOps(), Restart()]


class SchedulerState(ClientHandlers, WorkerHandlers, Transitions):
    """All the scheduler knows, changed only by :meth:`handle`.

    ``extensions``: the :class:`~twofold.scheduler.extension.Extension`
    objects to run (default: :func:`default_extensions`, with the policy's
    stealing component); each is attached to this machine and reached as
    ``state.extensions[name]``.

    ``policy``: a :class:`~twofold.scheduler.policies.Policy` (default:
    :class:`~twofold.scheduler.policies.Default`), or an object of the
    older ``decide_worker(state, ts, candidates)`` protocol.
    """

    #: the driver's scheduler plugins (``twofold.plugins.SchedulerPluginHub``); the machine never reads it
    plugin_hub: Any = None

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        policy: Any = None,
        extensions: Iterable[Extension] | None = None,
    ):
        self.config = config = config or SchedulerConfig()
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.workers_by_name: dict[str, WorkerInfo] = {}
        self.clients: dict[str, ClientInfo] = {FIRE_AND_FORGET: ClientInfo(FIRE_AND_FORGET)}
        #: root tasks waiting for room on a worker, by priority
        self.queued: TaskQueue[TaskState] = TaskQueue()
        #: ready tasks no current worker may run
        self.unrunnable: dict[TaskState, None] = {}
        #: workers that can take more root tasks
        self.room: dict[WorkerInfo, None] = {}
        #: task prefix -> smoothed duration (seconds)
        self.durations: dict[str, float] = {}
        #: pending timers: token -> due time
        self.timers: dict[str, float] = {}
        #: the work-stealing extension, if one runs (the hot path arms its timer)
        self._stealer = None
        self.policy = policy if policy is not None else Default()
        #: what policies read: built once, shared by every decision
        self.view = SchedulerView(self, self.policy.info if isinstance(self.policy, Policy) else None)
        binding = bind(self, self.policy, self.view)
        self._decide = binding.decide
        self._policy_arg = binding.arg
        self._prioritize = binding.prioritize
        self._pick = binding.pick
        #: every unrestricted ready task waits for a free thread (no greedy transfer)
        self._withhold_all = not binding.greedy
        self._queuing = (
            True if self._withhold_all
            else math.isfinite(config.worker_saturation) if binding.queuing is None
            else binding.queuing
        )
        #: pipelining past a worker's slots (none without greedy transfer)
        self._max_tasks_per_thread = 0 if self._withhold_all else config.max_tasks_per_thread
        self._pipeline_seconds = 0.0 if self._withhold_all else config.pipeline_seconds
        #: candidates are not the machine's short list (one flag on the hot path)
        self._wide = not binding.narrow or self._withhold_all
        self._unknown_duration = config.unknown_task_duration
        self._task_counter = 0
        self._run_counter = 0
        self._worker_counter = 0
        self._scatter_counter = 0
        self._pending_scatters: list = []
        #: SchedulerInfoRequests waiting for more workers, oldest first
        self._info_waiters: list = []
        #: the story log (``story()``); transitions go to ``_story``, a sink that may also feed observers
        self._story_log: deque | None = deque(maxlen=config.story_length) if config.story_length else None
        self._observers: list[Callable[[tuple], None]] = []
        self._story: Any = None
        # per-event scratch
        self._now = 0.0
        self._sid = ""
        self._outs: list = []
        self._to_free: dict[WorkerInfo, list[str]] = {}
        self._attach_extensions(default_extensions(binding.stealer) if extensions is None else list(extensions))

    # -- extensions --------------------------------------------------------

    def _attach_extensions(self, extensions: list[Extension]) -> None:
        """Build the handler table, the timer owners and the hook lists."""
        self.extensions: dict[str, Extension] = {}
        handlers = {cls: MethodType(func, self) for cls, func in _HANDLERS.items()}
        self._timer_owners: dict[str, Extension] = {}
        for ext in extensions:
            if not isinstance(ext, Extension):
                raise TypeError(f"extensions must be Extension instances, got {type(ext).__name__}")
            name = ext.name
            if not name or name in self.extensions:
                raise ValueError(f"extension names must be unique and non-empty, got {name!r} twice or empty")
            self.extensions[name] = ext
            ext.attach(self)
            for cls, handler in ext.handlers().items():
                if cls in handlers:
                    raise ValueError(f"{cls.__name__} is handled twice (by {name!r} and another)")
                handlers[cls] = handler
            prefix = ext.timer_prefix
            if prefix is not None:
                if prefix == "ttl" or prefix in self._timer_owners or ":" in prefix:
                    raise ValueError(f"timer prefix {prefix!r} of {name!r} is taken or malformed")
                self._timer_owners[prefix] = ext
        self._handlers = handlers
        for hook in HOOKS:  # (an extension may switch a hook off by setting it to None on itself)
            hooks = [getattr(e, hook) for e in extensions if overrides(e, hook)]
            setattr(self, f"_hooks_{hook}", [h for h in hooks if h is not None])
        self._rebuild_story()

    def observe_transitions(self, sink: Any) -> None:
        """``sink.append((key, start, finish, stimulus_id, now))`` on every task
        transition (a list, a deque; the simulator's trace is one)."""
        if not callable(getattr(sink, "append", None)):
            raise TypeError(f"a transition sink needs an append(entry) method, got {type(sink).__name__}")
        self._observers.append(sink)
        self._rebuild_story()

    def _rebuild_story(self) -> None:
        sinks = [] if self._story_log is None else [self._story_log]
        sinks.extend(self._observers)
        if self._hooks_transition:
            sinks.append(_HookSink(self._hooks_transition))
        if len(sinks) <= 1:
            self._story = sinks[0] if sinks else None  # the common case: appended to directly
        else:
            self._story = TransitionFanOut([sink.append for sink in sinks])

    def extension(self, name: str) -> Extension:
        try:
            return self.extensions[name]
        except KeyError:
            raise KeyError(f"no scheduler extension {name!r}; running: {sorted(self.extensions)}") from None

    def statistics(self) -> dict[str, Any]:
        """Each extension's frozen statistics snapshot, by name."""
        return {name: ext.statistics() for name, ext in self.extensions.items()}

    # -- entry point -------------------------------------------------------

    def handle(self, event: Message) -> list:
        """Apply one event; return the outputs it causes, in order."""
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            raise TypeError(f"SchedulerState cannot handle {type(event).__name__}") from None
        self._now = event.now
        self._sid = event.stimulus_id
        outs = self._outs = []
        handler(event)
        if self._to_free:
            self._flush_frees()
        return outs

    # -- output helpers ----------------------------------------------------

    def _free(self, ws: WorkerInfo, key: str) -> None:
        if ws.address in self.workers:
            frees = self._to_free.get(ws)
            if frees is None:
                self._to_free[ws] = [key]
            else:
                frees.append(key)

    def _flush_frees(self) -> None:
        now, sid, outs = self._now, self._sid, self._outs
        for ws, keys in self._to_free.items():
            if ws.address in self.workers:
                ws.free_seq += 1
                outs.append(FreeKeys(now, sid, ws.address, tuple(keys), ws.free_seq))
        self._to_free = {}

    def _flush_frees_for(self, ws: WorkerInfo) -> None:
        keys = self._to_free.pop(ws)
        ws.free_seq += 1
        self._outs.append(FreeKeys(self._now, self._sid, ws.address, tuple(keys), ws.free_seq))

    def _set_timer(self, at: float, token: str, background: bool = False) -> None:
        self.timers[token] = at
        self._outs.append(SetTimer(self._now, self._sid, at, token, background))

    def _on_timer(self, event: TimerFired) -> None:
        token = event.token
        due = self.timers.get(token)
        if due is None or due > event.now:
            return  # cancelled, or superseded by a later one
        del self.timers[token]
        kind, _, arg = token.partition(":")
        if kind == "ttl":
            self._check_worker_ttl(arg)
        else:
            owner = self._timer_owners.get(kind)
            if owner is not None:
                owner.on_timer(token, arg)

    def _log(self, ts: TaskState, start: str) -> None:
        self._story.append((ts.key, start, ts.state, self._sid, self._now))

    def story(self, *keys: str) -> list[tuple[str, str, str, str, float]]:
        """Recorded transitions ``(key, start, finish, stimulus_id, now)`` of these keys
        (kept when ``config.story_length`` > 0)."""
        if self._story_log is None:
            return []
        wanted = set(keys)
        return [entry for entry in self._story_log if not wanted or entry[0] in wanted]

    # -- references held by extensions ---------------------------------------

    def hold_key(self, holder: str, key: str, report: bool = False) -> bool:
        """Let ``holder`` (a pseudo-client name, e.g. ``"queue:jobs"``) keep ``key``
        alive, as a client's future would; False if the scheduler does not know it.

        ``report``: ``holder`` is a real client: tell it the key's status."""
        ts = self.tasks.get(key)
        if ts is None:
            return False
        cs = self._client(holder)
        if not report:
            cs.holder = True
        self._add_wants(cs, ts)
        if ts.state == "released":
            self._transitions({ts: "waiting"})
        elif report:
            self._report_status(holder, ts)
        return True

    def release_key(self, holder: str, key: str) -> None:
        """Drop one of ``holder``'s references to ``key`` (it may be released)."""
        ts = self.tasks.get(key)
        if ts is not None and self._drop_wants(holder, ts, 1):
            recs: Recs = {}
            self._maybe_release(ts, recs)
            self._transitions(recs)
        cs = self.clients.get(holder)
        if cs is not None and not cs.wants and holder != FIRE_AND_FORGET:
            del self.clients[holder]

    def give_key(self, client: str, key: str) -> bool:
        """Add a reference of ``client`` to ``key`` and tell it the key's status
        (a future handed to it by a primitive); False if the key is unknown."""
        return self.hold_key(client, key, report=True)

    # -- placement helpers -------------------------------------------------

    def _has_room(self, ws: WorkerInfo) -> bool:
        """Can ``ws`` take another root task from the queue?"""
        busy = len(ws.processing) - len(ws.long_running)
        if busy < ws.slots:
            return True
        return (
            busy < ws.nthreads * self._max_tasks_per_thread
            and ws.occupancy < ws.nthreads * self._pipeline_seconds
        )

    def _room_changed(self, ws: WorkerInfo) -> None:
        """``ws`` lost a task: feed it from the queue, track whether it has room."""
        if ws.address not in self.workers:
            return
        # self._has_room(ws), inlined (once or twice per task)
        per_thread = self._max_tasks_per_thread
        seconds = self._pipeline_seconds
        busy = len(ws.processing) - len(ws.long_running)
        if busy < ws.slots or (busy < ws.nthreads * per_thread and ws.occupancy < ws.nthreads * seconds):
            queued = self.queued
            if queued:
                assign = self._assign
                story = self._story
                pick = self._pick
                while queued:
                    ts = queued.pop() if pick is None else self._picked(pick, ws)
                    assign(ts, ws)
                    if story is not None:
                        self._log(ts, "queued")
                    busy = len(ws.processing) - len(ws.long_running)
                    if not (busy < ws.slots or (
                        busy < ws.nthreads * per_thread and ws.occupancy < ws.nthreads * seconds
                    )):
                        self.room.pop(ws, None)
                        return
            self.room[ws] = None
        else:
            self.room.pop(ws, None)

    def _picked(self, pick: Callable, ws: WorkerInfo) -> TaskState:
        """The queued task the policy's ``pick`` chooses for ``ws``, taken off the queue."""
        queued = self.queued
        ts = pick(self.view, ws, dict.keys(queued))
        if ts is None:
            return queued.pop()
        if ts not in queued:
            raise ValueError(f"{type(self.policy).__name__}.pick returned {ts!r}, which is not waiting on the queue")
        queued.remove(ts)
        return ts

    def _slots_for(self, nthreads: int) -> int:
        if not self._queuing:
            return 2**62
        saturation = self.config.worker_saturation
        if self._withhold_all or not math.isfinite(saturation):
            return nthreads  # a policy queues although the configuration would not: one task per thread
        return max(1, math.ceil(nthreads * saturation))

    def valid_workers(self, ts: TaskState, strict_only: bool = False) -> dict[WorkerInfo, None] | None:
        """Workers ``ts`` may run on, or ``None`` for any worker.

        ``strict_only``: ignore ``workers=`` when it is only a preference
        (``allow_other_workers``), as work stealing does.
        """
        workers = ts.workers
        if workers is not None and strict_only and ts.allow_other_workers:
            workers = None
        if workers is None and not ts.resources:
            return None
        if workers is not None:
            allowed: dict[WorkerInfo, None] = {}
            for name in workers:
                ws = self.workers.get(name) or self.workers_by_name.get(name)
                if ws is not None:
                    allowed[ws] = None
            if not allowed and ts.allow_other_workers:
                allowed = dict.fromkeys(self.workers.values())
        else:
            allowed = dict.fromkeys(self.workers.values())
        if ts.resources:
            need = ts.resources.items()
            allowed = {
                ws: None for ws in allowed if all(ws.resources.get(r, 0) >= n for r, n in need)
            }
        return allowed

    def _decide_worker(self, ts: TaskState) -> WorkerInfo | None:
        valid = self.valid_workers(ts)
        candidates: Iterable[WorkerInfo]
        if self._wide:
            if self._withhold_all and valid is None and not ts.actor:
                candidates = self.room or self.workers.values()  # withheld until a thread is free
            else:
                candidates = self.workers.values() if valid is None else valid
        elif ts.dependencies:
            holders: dict[WorkerInfo, None] = {}
            total = 0
            for dep in ts.dependencies:
                holders.update(dep.who_has)
                total += max(dep.nbytes, 0)
            if total <= self.config.bandwidth * 0.001:
                # cheap inputs: idle workers are fair game too
                holders.update(self.room)
            if valid is not None:
                candidates = [ws for ws in holders if ws in valid] or list(valid)
            else:
                candidates = holders or self.workers.values()
        elif valid is not None:
            candidates = valid
        else:
            candidates = self.room or self.workers.values()
        if not candidates:
            return None
        return self._decide(self._policy_arg, ts, candidates)

    def _apply_ranks(self, tasks: list[TaskState]) -> None:
        """A new graph's tasks, reordered by the policy's ranks (higher first) among
        equal user priority: they take the same counters, in rank order."""
        ranks = self._prioritize(self.view, tasks)
        if not ranks:
            return
        counters = sorted(ts.priority[1] for ts in tasks)
        get = ranks.get
        ordered = sorted(tasks, key=lambda ts: (-get(ts, _NO_RANK), ts.priority[1]))
        for ts, counter in zip(ordered, counters):
            ts.priority = (ts.priority[0], counter)
            ts.queue_key = ts.priority[0] * (1 << 48) + counter

    # -- inspection --------------------------------------------------------

    def validate(self) -> None:
        """Raise AssertionError if any invariant is broken (see validate.py)."""
        from twofold.scheduler.validate import validate_scheduler

        validate_scheduler(self)

    def __repr__(self) -> str:
        return (
            f"<SchedulerState tasks={len(self.tasks)} workers={len(self.workers)}"
            f" clients={len(self.clients) - 1} queued={len(self.queued)}>"
        )


#: the rank of a task a policy did not rank: after every ranked one
_NO_RANK = float("-inf")


class _HookSink:
    """Extensions' ``transition`` hooks as one transition sink."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: list):
        self.hooks = hooks

    def append(self, entry: tuple) -> None:
        for hook in self.hooks:
            hook(*entry)


#: the machine's own handlers (unbound); extensions add theirs per instance
_HANDLERS: dict[type, Callable[[Any, Any], None]] = {}
_HANDLERS.update(ClientHandlers.handlers())
_HANDLERS.update(WorkerHandlers.handlers())
_HANDLERS[TimerFired] = SchedulerState._on_timer
