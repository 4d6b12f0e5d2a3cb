"""The Client's view of a simulated cluster (the :class:`Backend` for ``twofold.sim``).

Messages to the scheduler and data to and from workers cross the simulated
network; every blocking call advances virtual time (``Clock.run_until``).
User objects never get pickled: the opaque bytes the machines carry are
references into the simulation's object registry.
"""

from __future__ import annotations

from types import CoroutineType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from twofold.client.backend import Backend, keys_by_worker
from twofold.errors import CommClosedError, error_class
from twofold.messages import AddClient, Message, RemoveClient, TaskError
from twofold.sim import actors
from twofold.sim.hosts import message_size
from twofold.sim.models import measure_nbytes
from twofold.sim.network import MESSAGE_OVERHEAD

if TYPE_CHECKING:
    from twofold.sim.cluster import SimCluster


class SimBackend(Backend):
    def __init__(self, cluster: SimCluster, client_id: str, node: str | None = None) -> None:
        self.cluster = cluster
        self.sim = sim = cluster._sim
        self.scheduler_address = sim.scheduler_address
        self._id = client_id
        self._receiver: Callable[[Message], None] | None = None
        self._closed = False
        #: SimCluster(serialize=True): the pickle round trips (``twofold.sim.wire``), else None
        self.wire = getattr(sim, "wire", None)
        sim.clients[client_id] = self
        if node is not None:
            # a task's client lives in its worker's process: it dies and is cut off with it
            sim.node_of[client_id] = node
        self.send([AddClient(sim.clock.now, f"{client_id}-hello", client_id)])

    def lose(self, reason: str) -> None:
        """The process this client lives in died: nothing more is sent or received, and
        the scheduler notices the broken connection one latency later (as it does a worker's)."""
        if self._closed:
            return
        self._closed = True
        sim = self.sim
        clock = sim.clock
        sim.dead.add(self._id)
        clock.at(sim.network.noticed(self._id, sim.scheduler_address), sim.scheduler.handle,
                 RemoveClient(clock.now, f"{self._id}-lost", self._id))

    # -- identity and time -------------------------------------------------------

    @property
    def virtual_clock(self) -> Any:
        return self.sim.clock

    def client_id(self) -> str:
        return self._id

    def new_token(self) -> str:
        return "%032x" % self.sim.rng.getrandbits(128)

    def now(self) -> float:
        return self.sim.clock.now

    # -- messages --------------------------------------------------------------

    def set_receiver(self, receiver: Callable[[Message], None]) -> None:
        self._receiver = receiver

    def flush_client(self) -> None:
        """Let the client send what it batched (releases of dropped futures)."""
        owner = getattr(self._receiver, "__self__", None)
        flush = getattr(owner, "_flush", None)
        if flush is not None and not self._closed:
            flush()

    def receive(self, msg: Message) -> None:
        if self._receiver is not None and not self._closed:
            self.sim.clock.touches += 1
            self._receiver(msg)

    def send(self, msgs: Sequence[Message], background: bool = False) -> None:
        if self._closed:
            raise CommClosedError(f"client {self._id} is closed")
        sim = self.sim
        network = sim.network
        for msg in msgs:
            if background:
                network.send(self._id, sim.scheduler_address, message_size(msg), sim.scheduler.handle, msg,
                             background=True)  # fmt: skip
            else:
                network.post(self._id, sim.scheduler_address, message_size(msg), sim.scheduler.handle, (msg,))

    # -- user objects ------------------------------------------------------------

    def dump_task(self, func: Callable, args: tuple, kwargs: dict) -> bytes:
        if self.wire is not None:  # the real run spec: its bytes cross the network
            return self.wire.encode_task(func, args, kwargs)
        return self.sim.put_object((func, args, kwargs))

    def load_error(self, error: TaskError) -> BaseException:
        if error.exception is not None:
            return self.sim.objects[error.exception]
        return error_class(error.typename)(error.message)

    def dump_value(self, obj: Any) -> bytes:
        if self.wire is not None:  # what the far end would load
            obj = self.wire.copy(obj)[0]
        return self.sim.put_object(obj)

    def run(self, workers: Sequence[str], function: bytes, wait: bool = True) -> dict[str, tuple[bool, Any]]:
        """Each worker runs it on arrival (a task-like greenlet, taking no virtual time) and
        answers over the network; a dead or cut-off worker answers CommClosedError."""
        sim = self.sim
        func, args, kwargs = sim.objects[function]
        results: dict[str, tuple[bool, Any]] = {}

        def arrived(worker: str, outcome: tuple[bool, Any]) -> None:
            results[worker] = outcome

        def failed(worker: str) -> None:
            results.setdefault(worker, (False, CommClosedError(f"could not run the function on {worker}: "
                                                               "worker gone or unreachable")))  # fmt: skip

        def execute(host: Any) -> None:
            sim.clock.spawn(self._run_on, host, func, args, kwargs, arrived, failed)

        for worker in workers:
            host = sim.workers.get(worker)
            if host is None:
                failed(worker)
                continue
            sim.network.send(self._id, worker, MESSAGE_OVERHEAD, execute, host, on_fail=lambda w=worker: failed(w))
        if not wait:
            return {}
        sim.clock.run_until(lambda: len(results) == len(workers))
        return {worker: results[worker] for worker in workers}

    def _run_on(self, host: Any, func: Any, args: tuple, kwargs: dict, arrived: Any, failed: Any) -> None:
        from twofold.client.remote import call_with
        from twofold.sim.hosts import run_coroutine

        incarnation = host.incarnation
        try:
            result = call_with(func, args, kwargs, "dask_worker", host)
            if type(result) is CoroutineType:
                result = run_coroutine(result)
            outcome: tuple[bool, Any] = (True, result)
        except Exception as exc:  # the user's error goes back to the user
            outcome = (False, exc)
        if incarnation != host.incarnation:
            return  # the worker died meanwhile: the client hears of it as a lost connection
        self.sim.network.send(host.address, self._id, MESSAGE_OVERHEAD, arrived, host.address, outcome,
                              on_fail=lambda: failed(host.address))

    def load_inline(self, data: bytes) -> Any:
        return self.sim.objects[data]

    # -- blocking ----------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """The Client's waits depend only on client state, which changes only when
        a message reaches a client or task code runs: a ``client_wait``."""
        return self.sim.clock.run_until(predicate, timeout, client_wait=True)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        clock = self.sim.clock
        alive = [True]

        def fire() -> None:
            if alive[0] and not self._closed and not self.sim.closed:
                callback()

        def cancel() -> None:
            alive[0] = False

        clock.at(clock.now + delay, fire, background=True)
        return cancel

    # -- data plane --------------------------------------------------------------

    def fetch(self, who_has: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, str]]:
        """Ask each key's holders in turn (one request per holder), over the network."""
        sim = self.sim
        data: dict[str, Any] = {}
        missing: dict[str, str] = {}
        pending = {key: list(holders) for key, holders in who_has.items()}
        for key, holders in pending.items():
            if not holders:
                missing[key] = ""
        # a dict as an ordered set: asking in hash order would differ between processes
        outstanding = {key: None for key, holders in pending.items() if holders}

        def ask(keys: list[str]) -> None:
            by_holder: dict[str, list[str]] = {}
            for key in keys:
                holders = pending[key]
                if not holders:
                    outstanding.pop(key, None)
                    continue
                by_holder.setdefault(holders.pop(0), []).append(key)
            for holder, group in by_holder.items():
                host = sim.workers.get(holder)
                if host is None:
                    sim.clock.soon(failed, holder, group)
                    continue
                sim.network.send(self._id, holder, MESSAGE_OVERHEAD, serve, host, group,
                                 on_fail=lambda h=holder, g=group: failed(h, g))

        unsendable: dict[str, str] = {}  # serialize=True: key -> why its holder could not send it

        def serve(host: Any, group: list[str]) -> None:
            found = {key: host.store[key] for key in group if key in host.store}
            errors = None
            if self.wire is not None:
                found, errors = host.ship(found)
            size = MESSAGE_OVERHEAD + sum(host.sizes.get(key, 0) for key in found)
            sim.network.send(host.address, self._id, size, arrived, host.address, group, found, errors,
                             on_fail=lambda: failed(host.address, group))

        def arrived(holder: str, group: list[str], found: dict, errors: dict | None) -> None:
            data.update(found)
            if errors:  # there, but it cannot come: no use asking another holder (the runtime's way)
                unsendable.update(errors)
                for key in errors:
                    outstanding.pop(key, None)
                group = [key for key in group if key not in errors]
            lacking = [key for key in group if key not in found]
            for key in found:
                outstanding.pop(key, None)
            if lacking:
                failed(holder, lacking)

        def failed(holder: str, group: list[str]) -> None:
            for key in group:
                missing[key] = holder
            ask(group)

        ask(list(outstanding))
        sim.clock.run_until(lambda: not outstanding)
        errors = {key: why for key, why in unsendable.items() if key not in data}
        if errors:
            from twofold.sim.wire import fetch_error

            raise fetch_error(errors)
        for key in data:
            missing.pop(key, None)
        return data, missing

    def put(
        self,
        placement: Mapping[str, Sequence[str]],
        data: Mapping[str, Any],
        free_seqs: Mapping[str, int] | None = None,
    ) -> dict[str, tuple[int, str]]:
        sim = self.sim
        if self.wire is not None:  # the copies the workers load; sizes from the real bytes
            shipped = {key: self.wire.ship(obj) for key, obj in data.items()}
            info = {key: (shipped[key][1], type(obj).__name__) for key, obj in data.items()}
            data = {key: shipped[key][0] for key in data}
        else:
            info = {key: (measure_nbytes(obj), type(obj).__name__) for key, obj in data.items()}
        by_worker = keys_by_worker(placement)
        waiting = set(by_worker)
        failures: list[str] = []

        def stored(worker: str) -> None:
            waiting.discard(worker)

        def failed(worker: str) -> None:
            failures.append(worker)
            waiting.discard(worker)

        def deliver(host: Any, keys: list[str]) -> None:
            after = free_seqs.get(host.address, -1) if free_seqs else -1
            host.put({k: data[k] for k in keys}, {k: info[k][0] for k in keys}, after)
            sim.network.send(host.address, self._id, MESSAGE_OVERHEAD, stored, host.address,
                             on_fail=lambda: failed(host.address))

        for worker, keys in by_worker.items():
            host = sim.workers.get(worker)
            if host is None:
                failed(worker)
                continue
            size = MESSAGE_OVERHEAD + sum(info[k][0] for k in keys)
            sim.network.send(self._id, worker, size, deliver, host, keys, on_fail=lambda w=worker: failed(w))
        sim.clock.run_until(lambda: not waiting)
        if failures:
            raise CommClosedError(f"could not scatter to {sorted(failures)}: worker gone or unreachable")
        return info

    def actor_call(self, worker: str, key: str, kind: str, name: str, args: tuple, kwargs: dict,
                   call: Any) -> None:
        """Over the network to the worker and back (see ``twofold.sim.actors``); a
        worker that is down when the request or its reply arrives fails the call
        ``connect_timeout`` later, through ``on_fail``."""
        if self._closed:
            raise CommClosedError(f"client {self._id} is closed")
        sim = self.sim
        clock = sim.clock

        def settle(ok: bool, value: Any) -> None:
            if call.settle(ok, value):
                clock.touches += 1  # a client wait looks again

        def lost(why: str) -> None:
            settle(False, call.lost(why))

        host = sim.workers.get(worker)
        if host is None:
            clock.soon(lost, "no such worker")
            return
        if self.wire is not None:  # the arguments as the worker loads them, sized from their pickle
            (args, kwargs), nbytes = self.wire.copy((args, kwargs))
            size = MESSAGE_OVERHEAD + nbytes
        else:
            size = MESSAGE_OVERHEAD + actors.payload_size(args, kwargs)
        sim.network.send(self._id, worker, size, actors.deliver, host, self._id, key, kind, name, args, kwargs,
                         settle, lost, on_fail=lambda: lost("its worker is gone or unreachable"))  # fmt: skip

    def topic_post(self, worker: str, name: str, subs: tuple[str, ...], payloads: tuple[bytes, ...]) -> None:
        """Over the network from this client's worker to ``worker`` (``WorkerHost.topic_post``):
        in order per link; lost if either end is down (nobody is told, nothing waits)."""
        if self._closed:
            raise CommClosedError(f"client {self._id} is closed")
        sim = self.sim
        host = sim.workers.get(worker)
        if host is None:
            return
        size = MESSAGE_OVERHEAD + sum(len(p) for p in payloads)
        sim.network.post(sim.node_of.get(self._id, self._id), worker, size, host.topic_post,
                         (host.incarnation, subs, payloads))  # fmt: skip

    def close(self) -> None:
        if self._closed:
            return
        sim = self.sim
        if not sim.closed:
            self.send([RemoveClient(sim.clock.now, f"{self._id}-bye", self._id)])
        self._closed = True
        # in flight messages still arrive; nothing new reaches a closed client
        sim.clock.at(sim.clock.now + sim.network.connect_timeout, sim.dead.add, self._id, background=True)
