"""Scheduler handlers for what clients send: graphs, references, cancel, retry, scatter, info.

A client's interest in a key is a reference count (``ClientInfo.wants`` and
``TaskState.who_wants`` mirror each other).  A key nobody wants and no
dependent needs is released, and forgotten once nothing depends on it.
"""

from __future__ import annotations

from numbers import Real
from operator import attrgetter
from typing import TYPE_CHECKING

from twofold.graph import find_cycle, unknown_dependencies
from twofold.messages import (
    AddClient,
    CancelKeys,
    DesireKeys,
    FireAndForget,
    GraphRefused,
    KeyCancelled,
    KeyErred,
    AcquireReplicas,
    KeyInMemory,
    KeyRetried,
    ReleaseKeys,
    RemoveClient,
    RemoveReplicas,
    Replicate,
    RetryKeys,
    ScatterPlan,
    ScatterRequest,
    SchedulerInfoReply,
    SchedulerInfoRequest,
    TaskError,
    TaskSpec,
    UpdateData,
    UpdateGraph,
    WhoHasReply,
    WhoHasRequest,
)
from twofold.scheduler.state import ClientInfo, TaskState, key_prefix
from twofold.scheduler.transitions import FIRE_AND_FORGET, Recs

if TYPE_CHECKING:
    from twofold.scheduler.machine import SchedulerState


def _spec_problem(spec: TaskSpec) -> str | None:
    """Why this spec is malformed, or None (once per submitted task: kept lean)."""
    if not isinstance(spec, TaskSpec):
        return f"graph entries must be TaskSpec records, got {type(spec).__name__}"
    key = spec.key
    if not isinstance(key, str) or not key:
        return f"task key must be a non-empty str, got {key!r}"
    if spec.run_spec is not None and not isinstance(spec.run_spec, bytes):
        return f"{key!r}: run_spec must be bytes or None"
    deps = spec.dependencies
    if not isinstance(deps, tuple) or (deps and not all(isinstance(d, str) for d in deps)):
        return f"{key!r}: dependencies must be a tuple of keys, got {deps!r}"
    if deps and key in deps:
        return f"{key!r} depends on itself"
    priority = spec.priority
    if not isinstance(priority, int) or isinstance(priority, bool):
        return f"{key!r}: priority must be an int, got {priority!r}"
    retries = spec.retries
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        return f"{key!r}: retries must be an int >= 0, got {retries!r}"
    if spec.workers is not None and (
        not isinstance(spec.workers, tuple) or not all(isinstance(w, str) for w in spec.workers)
    ):
        return f"{key!r}: workers must be a tuple of worker addresses or names"
    if spec.resources is not None:
        if not isinstance(spec.resources, dict) or not all(
            isinstance(k, str) and isinstance(v, Real) and v >= 0 for k, v in spec.resources.items()
        ):
            return f"{key!r}: resources must map names to numbers >= 0, got {spec.resources!r}"
    return None


#: a task's ``priority``, the sort key of runnable tasks (C-level: no call per task)
_by_priority = attrgetter("priority")


class ClientHandlers:
    """Mixin of :class:`~twofold.scheduler.SchedulerState`."""

    @classmethod
    def handlers(cls) -> dict:
        return {
            AddClient: cls._on_add_client,
            RemoveClient: cls._on_remove_client,
            UpdateGraph: cls._on_update_graph,
            DesireKeys: cls._on_desire_keys,
            ReleaseKeys: cls._on_release_keys,
            CancelKeys: cls._on_cancel_keys,
            RetryKeys: cls._on_retry_keys,
            FireAndForget: cls._on_fire_and_forget,
            ScatterRequest: cls._on_scatter_request,
            UpdateData: cls._on_update_data,
            WhoHasRequest: cls._on_who_has,
            SchedulerInfoRequest: cls._on_scheduler_info,
            Replicate: cls._on_replicate,
        }

    # -- references --------------------------------------------------------

    def _client(self: SchedulerState, name: str) -> ClientInfo:
        cs = self.clients.get(name)
        if cs is None:
            cs = self.clients[name] = ClientInfo(name)
        return cs

    def _add_wants(self: SchedulerState, cs: ClientInfo, ts: TaskState) -> None:
        key = ts.key
        cs.wants[key] = cs.wants.get(key, 0) + 1
        ts.who_wants[cs.name] = ts.who_wants.get(cs.name, 0) + 1

    def _drop_wants(self: SchedulerState, client: str, ts: TaskState, count: int | None = None) -> bool:
        """Drop ``count`` references (all if None); True if the client no longer wants it."""
        held = ts.who_wants.get(client)
        if held is None:
            return False
        cs = self.clients[client]
        left = 0 if count is None else held - count
        if left > 0:
            ts.who_wants[client] = left
            cs.wants[ts.key] = left
            return False
        del ts.who_wants[client]
        del cs.wants[ts.key]
        return True

    def _maybe_release(self: SchedulerState, ts: TaskState, recs: Recs) -> None:
        if ts.who_wants or ts.waiters:
            return
        if ts.state in ("released", "erred"):
            if not ts.dependents:
                recs[ts] = "forgotten"
        else:
            recs[ts] = "released"

    def _report_status(self: SchedulerState, client: str, ts: TaskState) -> None:
        """Tell a client that just took a reference what it can know already."""
        if ts.state == "memory":
            self._outs.append(
                KeyInMemory.build(self._now, self._sid, client, ts.key, ts.nbytes, ts.typename, None)
            )
        elif ts.state == "erred":
            self._outs.append(KeyErred(self._now, self._sid, client, ts.key, ts.error, ts.blamed))

    def _on_add_client(self: SchedulerState, event: AddClient) -> None:
        self._client(event.client)

    def _on_remove_client(self: SchedulerState, event: RemoveClient) -> None:
        if self._info_waiters:
            self._info_waiters = [r for r in self._info_waiters if r.client != event.client]
        if event.client == FIRE_AND_FORGET:
            return
        cs = self.clients.get(event.client)
        if cs is not None:
            recs: Recs = {}
            for key in list(cs.wants):
                ts = self.tasks[key]
                self._drop_wants(cs.name, ts)
                self._maybe_release(ts, recs)
                self._transitions(recs)
            del self.clients[cs.name]
        for hook in self._hooks_client_removed:
            hook(event.client)

    def _on_desire_keys(self: SchedulerState, event: DesireKeys) -> None:
        cs = self._client(event.client)
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None:
                self._outs.append(
                    KeyCancelled(self._now, self._sid, cs.name, key, "the scheduler no longer knows this key")
                )
                continue
            self._add_wants(cs, ts)
            if ts.state == "released":
                self._transitions({ts: "waiting"})
            else:
                self._report_status(cs.name, ts)

    def _on_release_keys(self: SchedulerState, event: ReleaseKeys) -> None:
        tasks = self.tasks
        recs: Recs = {}
        for key in event.keys:
            ts = tasks.get(key)
            if ts is not None and self._drop_wants(event.client, ts, 1):
                self._maybe_release(ts, recs)
                self._transitions(recs)

    def _on_fire_and_forget(self: SchedulerState, event: FireAndForget) -> None:
        cs = self.clients[FIRE_AND_FORGET]
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state in ("memory", "erred") or key in cs.wants:
                continue
            self._add_wants(cs, ts)
            if ts.state == "released":
                self._transitions({ts: "waiting"})

    # -- graphs ------------------------------------------------------------

    def _refuse(self: SchedulerState, event: UpdateGraph, message: str) -> None:
        keys = tuple(getattr(spec, "key", "?") for spec in event.tasks) or tuple(event.wanted)
        self._outs.append(
            GraphRefused(self._now, self._sid, event.client, keys, TaskError("InvalidGraph", message))
        )

    def _on_update_graph(self: SchedulerState, event: UpdateGraph) -> None:
        tasks = self.tasks
        specs = event.tasks
        if not isinstance(specs, tuple) or not isinstance(event.wanted, tuple):
            return self._refuse(event, "tasks and wanted must be tuples")
        edges = False
        for spec in specs:
            problem = _spec_problem(spec)
            if problem is not None:
                return self._refuse(event, problem)
            if spec.dependencies:
                edges = True
        if edges:
            missing = unknown_dependencies(specs, tasks)
            if missing:
                shown = ", ".join(f"{dep!r} (needed by {key!r})" for key, dep in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                return self._refuse(event, f"unknown dependencies: {shown}{more}")
        new_keys = {spec.key for spec in specs}
        stray = [key for key in event.wanted if key not in tasks and key not in new_keys]
        if stray:
            return self._refuse(event, f"wanted keys are neither submitted nor known: {stray[:5]!r}")
        cycle = find_cycle(specs, tasks) if edges else None  # (a graph without edges has no cycle)
        if cycle is not None:
            return self._refuse(event, "dependency cycle: " + " -> ".join(map(repr, cycle)))

        # valid: change state
        cs = self._client(event.client)
        created: list[tuple[TaskState, tuple[str, ...]]] = []
        counter = self._task_counter
        for spec in specs:
            if spec.key in tasks:
                continue  # deduplicate onto the existing task
            counter += 1
            key = spec.key
            head, sep, _ = key.rpartition("-")  # key_prefix(key), inlined
            ts = TaskState(key, head if sep else key, spec.run_spec, (-spec.priority, counter))
            ts.workers = spec.workers
            ts.allow_other_workers = spec.allow_other_workers
            ts.resources = spec.resources or None
            ts.retries = spec.retries
            ts.actor = spec.actor
            tasks[spec.key] = ts
            created.append((ts, spec.dependencies))
        self._task_counter = counter
        for ts, deps in created:
            for dep_key in deps:
                dep = tasks[dep_key]
                ts.dependencies[dep] = None
                dep.dependents[ts] = None
        if self._prioritize is not None and created:
            self._apply_ranks([ts for ts, _ in created])
        recs: Recs = {}
        wants = cs.wants
        name = cs.name
        for key in event.wanted:
            ts = tasks[key]
            # self._add_wants(cs, ts), inlined (once per task)
            wants[key] = wants.get(key, 0) + 1
            who_wants = ts.who_wants
            who_wants[name] = who_wants.get(name, 0) + 1
            if ts.state == "released":
                recs[ts] = "waiting"
            else:
                self._report_status(name, ts)
        # everything the graph needs goes to waiting; then what is runnable
        # starts in priority order (not in the order recommendations pop)
        runnable = []
        transition = self._transition
        story = self._story
        released_waiting = self._released_waiting
        while recs:
            ts, finish = recs.popitem()
            state = ts.state
            if finish == "processing" and state == "waiting":
                runnable.append(ts)
            elif finish == "waiting" and state == "released":
                released_waiting(ts, recs)  # transition(ts, finish, recs), the common case without the table
                if story is not None:
                    self._log(ts, state)
            else:
                transition(ts, finish, recs)
        if runnable:
            runnable.sort(key=_by_priority)
            ready_processing = self._ready_processing
            for ts in runnable:
                if ts.state == "waiting":  # transition(ts, "processing", recs), without the table
                    ready_processing(ts, recs)
                    if story is not None:
                        self._log(ts, "waiting")
                else:
                    transition(ts, "processing", recs)
                if recs:
                    self._transitions(recs)
        for ts, _ in created:
            if ts.state == "released" and not ts.dependents and not ts.who_wants:
                recs[ts] = "forgotten"
        self._transitions(recs)
        if self._hooks_graph_added:
            keys = tuple(ts.key for ts, _ in created)
            for hook in self._hooks_graph_added:
                hook(name, keys)

    # -- cancel / retry ----------------------------------------------------

    def _on_cancel_keys(self: SchedulerState, event: CancelKeys) -> None:
        """Cancel keys and, recursively, their dependents, for this client (or all)."""
        closure: dict[TaskState, None] = {}
        stack = [self.tasks[key] for key in event.keys if key in self.tasks]
        while stack:
            ts = stack.pop()
            if ts in closure:
                continue
            closure[ts] = None
            stack.extend(ts.dependents)
        outs = self._outs
        for ts in closure:
            # forced: every client's reference, but not those extensions hold (a queue's item
            # must stay a future its getter can use)
            clients = [c for c in ts.who_wants if not self.clients[c].holder] if event.force else [event.client]
            for client in clients:
                if self._drop_wants(client, ts) and client != FIRE_AND_FORGET:
                    outs.append(KeyCancelled(self._now, self._sid, client, ts.key))
        recs: Recs = {}
        for ts in closure:
            self._maybe_release(ts, recs)
            self._transitions(recs)

    def _on_retry_keys(self: SchedulerState, event: RetryKeys) -> None:
        """Put erred keys back to work, with the erred tasks they inherited the
        error from and the erred tasks that inherited it from them."""
        roots: dict[TaskState, None] = {}
        stack = [self.tasks[key] for key in event.keys if key in self.tasks]
        while stack:
            ts = stack.pop()
            if ts.state != "erred" or ts in roots:
                continue
            roots[ts] = None
            stack.extend(ts.dependencies)
        blamed = {ts.key for ts in roots}
        stack = [dts for ts in roots for dts in ts.dependents]
        while stack:
            ts = stack.pop()
            if ts.state != "erred" or ts in roots or ts.blamed not in blamed:
                continue
            roots[ts] = None
            stack.extend(ts.dependents)
        recs: Recs = {}
        outs = self._outs
        for ts in roots:
            for client in ts.who_wants:
                if client != FIRE_AND_FORGET:
                    outs.append(KeyRetried(self._now, self._sid, client, ts.key))
            self._transition(ts, "released", recs)
        for ts in roots:
            if ts.state == "released" and (ts.who_wants or ts.waiters):
                self._transitions({ts: "waiting"})
        self._transitions(recs)

    # -- data --------------------------------------------------------------

    def _on_scatter_request(self: SchedulerState, event: ScatterRequest) -> None:
        if event.workers is not None:
            pool = [self.workers.get(w) or self.workers_by_name.get(w) for w in event.workers]
            pool = [ws for ws in pool if ws is not None]
            if not pool:
                self._outs.append(
                    ScatterPlan(
                        self._now,
                        self._sid,
                        event.client,
                        event.request_id,
                        {},
                        f"none of the workers {list(event.workers)!r} is connected",
                    )
                )
                return
        else:
            pool = list(self.workers.values())
        if not pool:
            self._pending_scatters.append(event)
            return
        addresses = tuple(ws.address for ws in pool)
        placement = {}
        if event.broadcast:
            for key in event.keys:
                placement[key] = addresses
        else:
            start = self._scatter_counter
            n = len(addresses)
            for i, key in enumerate(event.keys):
                placement[key] = (addresses[(start + i) % n],)
            self._scatter_counter = start + len(event.keys)
        free_seqs = {ws.address: ws.free_seq for ws in pool}
        self._outs.append(
            ScatterPlan(self._now, self._sid, event.client, event.request_id, placement, "", free_seqs)
        )

    def _on_update_data(self: SchedulerState, event: UpdateData) -> None:
        """Keys a client put on workers: in memory there, wanted by that client."""
        cs = self._client(event.client)
        for item in event.keys:
            holders = [self.workers[w] for w in item.workers if w in self.workers]
            ts = self.tasks.get(item.key)
            if ts is None:
                ts = TaskState(item.key, key_prefix(item.key), None, (0, self._task_counter))
                self.tasks[item.key] = ts
            self._add_wants(cs, ts)
            if ts.state == "memory":
                for ws in holders:
                    if ws not in ts.who_has:
                        ts.who_has[ws] = None
                        ws.has_what[ts] = None
                        ws.nbytes += ts.nbytes
                self._report_status(cs.name, ts)
                continue
            if not holders:
                recs: Recs = {ts: "waiting"} if ts.state == "released" else {}
                self._transitions(recs)
                continue
            recs = {}
            state = ts.state
            if state == "erred":
                self._transition(ts, "released", recs)
                recs.pop(ts, None)
            elif state in ("waiting", "queued", "no-worker", "processing"):
                self._stop_for_data(ts)
            first, *others = holders
            self._processing_memory(ts, first, item.nbytes, item.typename, None, recs)
            for ws in others:
                ts.who_has[ws] = None
                ws.has_what[ts] = None
                ws.nbytes += item.nbytes
            self._transitions(recs)

    def _stop_for_data(self: SchedulerState, ts: TaskState) -> None:
        """A task about to be computed got its data another way: stop computing it."""
        state = ts.state
        if state == "processing":
            self._room_changed(self._unassign(ts, free=True))
        elif state == "queued":
            self.queued.remove(ts)
        elif state == "no-worker":
            del self.unrunnable[ts]
        ts.waiting_on.clear()
        ts.state = "released"  # _processing_memory then lets go of the inputs

    def _on_replicate(self: SchedulerState, event: Replicate) -> None:
        """Add copies on the least loaded workers, or drop extra ones (never the last)."""
        if event.workers is not None:
            pool = [self.workers.get(w) or self.workers_by_name.get(w) for w in event.workers]
            pool = [ws for ws in dict.fromkeys(pool) if ws is not None]
        else:
            pool = list(self.workers.values())
        if not pool:
            return
        wanted = len(pool) if event.n is None else max(1, min(event.n, len(pool)))
        acquire: dict = {}
        remove: dict = {}
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "memory" or ts.actor:
                continue
            holders = [ws for ws in ts.who_has if ws in pool]
            if len(holders) < wanted:
                others = sorted((ws for ws in pool if ws not in ts.who_has), key=lambda w: (w.nbytes, w.order))
                sources = tuple(ws.address for ws in ts.who_has)
                for ws in others[: wanted - len(holders)]:
                    acquire.setdefault(ws, {})[key] = sources
            else:
                extra = sorted(holders, key=lambda w: (-w.nbytes, -w.order))[: len(holders) - wanted]
                for ws in extra:
                    if len(ts.who_has) > 1:
                        del ts.who_has[ws]
                        del ws.has_what[ts]
                        ws.nbytes -= ts.nbytes
                        remove.setdefault(ws, []).append(key)
        for ws, who_has in acquire.items():
            nbytes = {key: self.tasks[key].nbytes for key in who_has}
            self._outs.append(AcquireReplicas(self._now, self._sid, ws.address, who_has, nbytes))
        for ws, keys in remove.items():
            ws.free_seq += 1
            self._outs.append(RemoveReplicas(self._now, self._sid, ws.address, tuple(keys), ws.free_seq))

    def _on_who_has(self: SchedulerState, event: WhoHasRequest) -> None:
        who_has = {}
        nbytes = {}
        for key in event.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "memory":
                who_has[key] = ()
            else:
                who_has[key] = tuple(ws.address for ws in ts.who_has)
                nbytes[key] = ts.nbytes
        self._outs.append(WhoHasReply(self._now, self._sid, event.client, event.request_id, who_has, nbytes))

    # -- info --------------------------------------------------------------

    def _on_scheduler_info(self: SchedulerState, event: SchedulerInfoRequest) -> None:
        """Answer now, or once ``event.n_workers`` workers are connected (see _answer_info_waiters)."""
        n = event.n_workers
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"SchedulerInfoRequest.n_workers must be an int >= 0, got {n!r}")
        if len(self.workers) >= n:
            self._reply_info(event)
        else:
            self._info_waiters.append(event)

    def _answer_info_waiters(self: SchedulerState) -> None:
        """A worker joined: answer the waiting requests it satisfies, oldest first."""
        count = len(self.workers)
        ready = [r for r in self._info_waiters if r.n_workers <= count]
        if ready:
            self._info_waiters = [r for r in self._info_waiters if r.n_workers > count]
            for request in ready:
                self._reply_info(request)

    def _reply_info(self: SchedulerState, request: SchedulerInfoRequest) -> None:
        """What the scheduler knows of each worker, in arrival order (fresh dicts: nothing shared)."""
        workers = {
            ws.address: {
                "name": ws.name,
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "resources": dict(ws.resources),
                "active": len(ws.processing),
                "stored": len(ws.has_what),
                "nbytes": ws.nbytes,
                "last_seen": ws.last_seen,
            }
            for ws in self.workers.values()
        }
        self._outs.append(SchedulerInfoReply(self._now, self._sid, request.client, request.request_id, workers))
