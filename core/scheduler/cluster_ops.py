"""Cluster operations: replicate, rebalance, retire workers — answered once done.

Each request (``ClusterOpRequest``) becomes an *operation* holding the copies
it is waiting for: ``(key, worker) -> source``, a copy of ``key`` asked of
``worker`` with ``AcquireReplicas``; ``source`` (rebalance) is the worker to
drop its copy once the new one is in place, so the last copy is never
dropped.  A copy is *settled* when the worker reports it (``AddReplicas``,
the ``replicas_added`` hook), or given up when the worker leaves or the key
is no longer in memory (lost, released).  When nothing is pending the
operation ends: replicate and rebalance reply; retire looks again for keys
only the retiring workers hold (results computed meanwhile), moves those in
a further round, and once there are none removes the workers from the
scheduler, closes them (``CloseWorker`` with :data:`RETIRE_REASON`, which the
drivers read as "stop, do not restart") and replies ``{address: info}``.

Settling is event driven; a sweep timer (every ``SWEEP`` seconds while an
operation is pending; a background timer, so on the simulator an operation
nothing can finish is reported as a stall rather than ticking forever) also
settles copies given up for reasons no hook reports (a client released the
key).

Choices, deterministic (workers in arrival order, ties by it):
* replicate: new copies go to the pool's least loaded workers (bytes held);
  extra copies (more than ``n`` in the pool) are dropped at once, most loaded
  holder first, never the last copy.  A target that dies is not replaced.
* rebalance: dask's simple algorithm over the pool: the mean of the bytes
  each worker holds (of the keys considered); from workers above it, biggest
  keys first, to the least loaded worker below it that lacks the key, while
  the sender stays at or above the mean and the receiver at or below it.
* retire: a key only retiring workers hold goes to the least loaded other
  worker.  With no other worker to take it the request is refused
  (``ValueError``) and nothing changes; if the last other workers die during
  the retirement, the request fails the same way and the retiring workers
  are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twofold.messages import AcquireReplicas, CloseWorker, RemoveReplicas
from twofold.messages_ops import RETIRE_REASON, ClusterOpRequest
from twofold.scheduler.coordination.base import CoordinationExtension, Refused

#: seconds between sweeps while an operation waits
SWEEP = 0.5
#: retire gives up after this many rounds of moves (tasks keep finishing on the retiring workers)
MAX_ROUNDS = 20


@dataclass(frozen=True, slots=True)
class ClusterOpsStatistics:
    #: operations waiting for copies
    pending: int


class _Op:
    __slots__ = ("number", "event", "pending", "retiring", "rounds")

    def __init__(self, number: int, event: ClusterOpRequest):
        self.number = number
        self.event = event
        #: (key, target address) -> source address to drop afterwards, or ""
        self.pending: dict[tuple[str, str], str] = {}
        #: retire: address -> WorkerInfo still retiring
        self.retiring: dict[str, Any] = {}
        self.rounds = 0


def _load(ws) -> tuple:
    return (ws.nbytes, ws.order)


class ClusterOps(CoordinationExtension):
    name = "cluster_ops"
    timer_prefix = "clusterops"
    request_type = ClusterOpRequest
    actions = {"replicate": "_replicate", "rebalance": "_rebalance", "retire": "_retire"}

    def __init__(self) -> None:
        super().__init__()
        self._ops: dict[int, _Op] = {}
        self._numbers = 0

    # -- requests ------------------------------------------------------------

    def _pool(self, names: Any) -> list:
        state = self.state
        if names is None:
            return list(state.workers.values())
        if not isinstance(names, tuple) or not all(isinstance(w, str) for w in names):
            raise Refused("TypeError", "workers must be a tuple of worker addresses or names, or None")
        pool = {}
        for name in names:
            ws = state.workers.get(name) or state.workers_by_name.get(name)
            if ws is None:
                raise Refused("ValueError", f"unknown worker {name!r}; the scheduler's workers are "
                                            f"{list(state.workers)}")  # fmt: skip
            pool[ws] = None
        return list(pool)

    def _memory_keys(self, keys: Any, what: str) -> list:
        if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
            raise Refused("TypeError", "keys must be a tuple of str")
        tasks = self.state.tasks
        chosen = []
        for key in dict.fromkeys(keys):
            ts = tasks.get(key)
            if ts is None or ts.state in ("released", "forgotten") or not ts.who_wants:
                raise Refused("CancelledError", f"cannot {what} {key!r}: it was released or cancelled")
            if ts.state != "memory":
                raise Refused("ValueError", f"cannot {what} {key!r}: it is {ts.state}, not in memory")
            if not ts.actor:
                chosen.append(ts)
        return chosen

    def _start(self, event: ClusterOpRequest) -> _Op:
        self._numbers += 1
        op = self._ops[self._numbers] = _Op(self._numbers, event)
        return op

    def _acquire(self, op: _Op, plan: dict, source: dict | None = None) -> None:
        """Send ``plan`` (target WorkerInfo -> [TaskState]) as AcquireReplicas, recording the copies."""
        for ws, chosen in plan.items():
            who_has = {ts.key: tuple(h.address for h in ts.who_has) for ts in chosen}
            nbytes = {ts.key: ts.nbytes for ts in chosen}
            for ts in chosen:
                op.pending[(ts.key, ws.address)] = source.get((ts.key, ws.address), "") if source else ""
            self.send(AcquireReplicas(self.now, self.stimulus_id, ws.address, who_has, nbytes))

    def _drop_copies(self, drops: dict) -> None:
        """Drop copies now (WorkerInfo -> [TaskState]), each only while another copy exists."""
        for ws, chosen in drops.items():
            keys = []
            for ts in chosen:
                if ws in ts.who_has and len(ts.who_has) > 1:
                    del ts.who_has[ws]
                    del ws.has_what[ts]
                    ws.nbytes -= ts.nbytes
                    keys.append(ts.key)
            if keys:
                ws.free_seq += 1
                self.send(RemoveReplicas(self.now, self.stimulus_id, ws.address, tuple(keys), ws.free_seq))

    def _replicate(self, event: ClusterOpRequest) -> None:
        n = event.n
        if n is not None and (not isinstance(n, int) or isinstance(n, bool)):
            raise Refused("TypeError", f"n must be an int >= 1 or None, got {n!r}")
        if n is not None and n < 1:
            raise Refused("ValueError", f"n must be >= 1 (replicate cannot delete data), got {n!r}")
        pool = self._pool(event.workers)
        chosen = self._memory_keys(event.keys, "replicate")
        if not pool:
            raise Refused("ValueError", "no workers to replicate to")
        wanted = len(pool) if n is None else min(n, len(pool))
        in_pool = dict.fromkeys(pool)
        op = self._start(event)
        plan: dict = {}
        drops: dict = {}
        for ts in chosen:
            holders = [ws for ws in ts.who_has if ws in in_pool]
            if len(holders) < wanted:
                others = sorted((ws for ws in pool if ws not in ts.who_has), key=_load)
                for ws in others[: wanted - len(holders)]:
                    plan.setdefault(ws, []).append(ts)
            elif len(holders) > wanted:
                for ws in sorted(holders, key=lambda w: (-w.nbytes, -w.order))[: len(holders) - wanted]:
                    drops.setdefault(ws, []).append(ts)
        self._drop_copies(drops)
        self._acquire(op, plan)
        self._settle(op)

    def _rebalance(self, event: ClusterOpRequest) -> None:
        pool = self._pool(event.workers)
        if event.keys is None:
            chosen = [ts for ts in self.state.tasks.values() if ts.state == "memory" and not ts.actor]
        else:
            chosen = self._memory_keys(event.keys, "rebalance")
        op = self._start(event)
        in_pool = dict.fromkeys(pool)
        considered = dict.fromkeys(chosen)
        load = {ws: 0 for ws in pool}
        for ts in chosen:
            for ws in ts.who_has:
                if ws in in_pool:
                    load[ws] += max(ts.nbytes, 0)
        if pool:
            mean = sum(load.values()) / len(pool)
            plan: dict = {}
            source: dict = {}
            moving: set = set()
            senders = sorted((ws for ws in pool if load[ws] > mean), key=lambda w: (-load[w], w.order))
            for sender in senders:
                keys = sorted((ts for ts in sender.has_what if ts in considered and ts not in moving),
                              key=lambda t: (-t.nbytes, t.key))  # fmt: skip
                for ts in keys:
                    size = max(ts.nbytes, 0)
                    if load[sender] - size < mean or size == 0:
                        continue
                    receivers = sorted((ws for ws in pool if load[ws] + size <= mean and ws not in ts.who_has),
                                       key=lambda w: (load[w], w.order))  # fmt: skip
                    if not receivers:
                        continue
                    target = receivers[0]
                    plan.setdefault(target, []).append(ts)
                    source[(ts.key, target.address)] = sender.address
                    moving.add(ts)
                    load[sender] -= size
                    load[target] += size
            self._acquire(op, plan, source)
        self._settle(op)

    def _retire(self, event: ClusterOpRequest) -> None:
        state = self.state
        if not isinstance(event.close, bool) or not isinstance(event.remove, bool):
            raise Refused("TypeError", "close and remove must be True or False")
        if event.workers is None:
            # the idle workers (nothing processing), fewest bytes first, always keeping one
            idle = sorted((ws for ws in state.workers.values() if not ws.processing), key=_load)
            keep = len(state.workers) - len(idle)
            pool = idle if keep else idle[:-1]
        else:
            pool = self._pool(event.workers)
        op = self._start(event)
        op.retiring = {ws.address: ws for ws in pool}
        if not self._plan_retire(op):
            del self._ops[op.number]
            return
        self._settle(op)

    def _plan_retire(self, op: _Op) -> bool:
        """Move what only retiring workers hold; False (request failed, op to drop) if impossible."""
        retiring = op.retiring
        stranded: dict = {}
        for ws in retiring.values():
            for ts in ws.has_what:
                if not ts.actor and all(h.address in retiring for h in ts.who_has):
                    stranded[ts] = None
        if not stranded:
            return True
        op.rounds += 1
        others = [ws for ws in self.state.workers.values() if ws.address not in retiring]
        if not others or op.rounds > MAX_ROUNDS:
            keys = [ts.key for ts in stranded][:5]
            why = "no other worker to take them" if not others else f"still changing after {MAX_ROUNDS} rounds"
            self.fail(op.event, "ValueError", f"cannot retire {sorted(retiring)}: keys {keys} have no copy "
                                              f"elsewhere and {why}; no worker was retired")  # fmt: skip
            return False
        load = {ws: ws.nbytes for ws in others}
        plan: dict = {}
        for ts in sorted(stranded, key=lambda t: (-t.nbytes, t.key)):
            target = min(others, key=lambda w: (load[w], w.order))
            plan.setdefault(target, []).append(ts)
            load[target] += max(ts.nbytes, 0)
        self._acquire(op, plan)
        return True

    # -- settling ------------------------------------------------------------

    def _settle(self, op: _Op) -> None:
        state = self.state
        tasks, workers = state.tasks, state.workers
        drops: dict = {}
        for pair, source in list(op.pending.items()):
            key, address = pair
            ts = tasks.get(key)
            ws = workers.get(address)
            if ts is None or ts.state != "memory" or ws is None:
                del op.pending[pair]
            elif ws in ts.who_has:
                del op.pending[pair]
                src = workers.get(source) if source else None
                if src is not None:
                    drops.setdefault(src, []).append(ts)
        self._drop_copies(drops)
        if op.pending:
            self.set_timer(self.now + SWEEP, "sweep", background=True)
            return
        if op.event.action != "retire":
            del self._ops[op.number]
            self.reply(op.event, None)
            return
        op.retiring = {a: ws for a, ws in op.retiring.items() if a in workers}
        if not self._plan_retire(op):
            del self._ops[op.number]
            return
        if op.pending:
            self.set_timer(self.now + SWEEP, "sweep", background=True)
            return
        del self._ops[op.number]
        self._finish_retire(op)

    def _finish_retire(self, op: _Op) -> None:
        state = self.state
        event = op.event
        retired = {}
        for address, ws in op.retiring.items():
            retired[address] = {
                "type": "Worker", "id": ws.name, "host": address.rpartition(":")[0].rpartition("/")[-1],
                "name": ws.name, "nthreads": ws.nthreads, "memory_limit": ws.memory_limit,
                "resources": dict(ws.resources), "stored": len(ws.has_what), "nbytes": ws.nbytes,
                "last_seen": ws.last_seen,
            }  # fmt: skip
            if event.remove or event.close:
                for ts in ws.processing:
                    ts.suspicious -= 1  # a graceful retirement does not count against its tasks
                state._remove_worker(ws)
                if event.close:
                    self.send(CloseWorker(self.now, self.stimulus_id, address, RETIRE_REASON))
        self.reply(event, retired)

    # -- hooks ---------------------------------------------------------------

    def replicas_added(self, ws, keys: tuple[str, ...]) -> None:
        if not self._ops:
            return
        address = ws.address
        for op in list(self._ops.values()):
            if any((key, address) in op.pending for key in keys):
                self._settle(op)

    def worker_removed(self, ws) -> None:
        # (called before the worker's data is dropped: settle once the removal is done)
        if self._ops:
            self.set_timer(self.now, "sweep", background=True)

    def client_removed(self, client: str) -> None:
        for number, op in list(self._ops.items()):
            if op.event.client == client:
                del self._ops[number]

    def on_other_timer(self, arg: str) -> None:
        if arg == "sweep":
            for op in list(self._ops.values()):
                if op.number in self._ops:
                    self._settle(op)

    def expired(self, waiter) -> None:  # (no waiters: operations have no timeout)
        pass

    # -- inspection ----------------------------------------------------------

    def validate(self) -> None:
        for op in self._ops.values():
            assert op.pending, f"{self.name}: operation {op.number} waits for nothing"

    def statistics(self) -> Any:
        return ClusterOpsStatistics(len(self._ops))
