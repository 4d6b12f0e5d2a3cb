"""Fetching inputs from peers: batched per peer, bounded in flight.

Tasks in ``fetch`` sit in ``data_needed`` (by priority) and in
``data_needed_per_peer`` for every peer that holds them (a plain dict per
peer, sorted when a transfer is planned: per-peer lists are short, and a
SortedDict per peer cost more to create than everything else a fetch does).  At most
``transfer_incoming_count_limit`` peers are fetched from at once; one
``GatherDeps`` asks a peer for every needed key it holds, by priority, up
to ``transfer_message_bytes_limit`` bytes (always at least one key).  A peer
that cannot be reached is dropped from every task's holders; a key nobody
else holds becomes ``missing`` and the scheduler is told (``MissingData``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twofold.messages import AddReplicas, GatherDeps, GatherFailure, GatherSuccess, MissingData

if TYPE_CHECKING:
    from twofold.worker.machine import WorkerState
    from twofold.worker.state import WTask


class Transfers:
    """Mixin of :class:`~twofold.worker.WorkerState`."""

    def _learn_holders(self: WorkerState, ts: WTask, holders) -> None:
        fetching = ts.state == "fetch"
        for peer in holders:
            if peer != self.address and peer not in ts.who_has:
                ts.who_has[peer] = None
                if fetching:
                    self._index_peer(ts, peer)

    def _index_peer(self: WorkerState, ts: WTask, peer: str) -> None:
        per_peer = self.data_needed_per_peer.get(peer)
        if per_peer is None:
            self.data_needed_per_peer[peer] = {ts.order: ts}
        else:
            per_peer[ts.order] = ts

    def _want_fetch(self: WorkerState, ts: WTask, report: bool = False, errant: str = "") -> None:
        """``ts`` (released or missing) is needed here: queue a fetch if anyone has it.

        With no known holder it is ``missing``; with ``report`` the scheduler
        is told (``MissingData``; ``errant`` is the peer that lacked it, if any),
        and answers with ``RefreshWhoHas`` or by recomputing it.
        """
        if not ts.who_has:
            if not ts.dependents and ts.state != "memory":
                # a replica nobody here needs, and nobody to get it from: drop it
                self._forget(ts)
                return
            self._set(ts, "missing")
            if report:
                self._outs.append(MissingData(self._now, self._sid, self.address, ts.key, errant))
            return
        self._set(ts, "fetch")
        self._order(ts)
        self.data_needed[ts.order] = ts
        for peer in ts.who_has:
            self._index_peer(ts, peer)

    def _drop_fetch(self: WorkerState, ts: WTask) -> None:
        if ts.state != "fetch":
            return
        del self.data_needed[ts.order]
        per_peer_all = self.data_needed_per_peer
        for peer in ts.who_has:
            per_peer = per_peer_all.get(peer)
            if per_peer is not None:
                per_peer.pop(ts.order, None)
                if not per_peer:
                    del per_peer_all[peer]
        self._set(ts, "released")

    def _ensure_communicating(self: WorkerState) -> None:
        data_needed = self.data_needed
        in_flight = self.in_flight
        limit = self.config.transfer_incoming_count_limit
        i = 0
        while data_needed and len(in_flight) < limit and i < len(data_needed):
            ts = data_needed.peekitem(i)[1]
            peer = next((p for p in ts.who_has if p not in in_flight), None)
            if peer is None:
                i += 1  # every holder is busy with another transfer of ours
                continue
            self._gather_from(peer)

    def _gather_from(self: WorkerState, peer: str) -> None:
        budget = self.config.transfer_message_bytes_limit
        batch: dict = {}
        total = 0
        per_peer = self.data_needed_per_peer[peer]
        for order in sorted(per_peer):  # by priority
            ts = per_peer[order]
            if batch and total + ts.nbytes > budget:
                break
            total += max(ts.nbytes, 0)
            batch[ts] = None
        for ts in batch:
            self._drop_fetch(ts)
            self._set(ts, "flight")
            ts.coming_from = peer
        self.in_flight[peer] = batch
        self._outs.append(GatherDeps(self._now, self._sid, peer, tuple([ts.key for ts in batch]), total))

    def _on_gather_success(self: WorkerState, ev: GatherSuccess) -> None:
        # (the batch may be empty or gone: its keys were scattered here meanwhile)
        batch = self.in_flight.pop(ev.peer, None) or {}
        arrived = ev.nbytes
        replicas = {}
        asked = set()
        for ts in batch:
            asked.add(ts.key)
            key = ts.key
            nbytes = arrived.get(key)
            if nbytes is None:
                ts.who_has.pop(ev.peer, None)
                self._transfer_failed(ts, ev.peer)
                continue
            state = ts.state
            if state == "flight":
                self._put_in_memory(ts, nbytes)
                replicas[key] = nbytes
            elif state == "cancelled":
                self._delete.append(key)
                self._forget(ts)
            elif state == "resumed":
                self._put_in_memory(ts, nbytes)
                self._unlink_inputs(ts)
                self._to_scheduler_finished(ts, "", 0.0, 0.0, None)
        for key in arrived:
            if key not in asked:
                # taken out of the transfer meanwhile (scattered here): keep it only if it is ours
                ts = self.tasks.get(key)
                if ts is None or ts.state != "memory":
                    self._delete.append(key)
        if replicas:
            self._outs.append(AddReplicas(self._now, self._sid, self.address, replicas))

    def _on_gather_failure(self: WorkerState, ev: GatherFailure) -> None:
        """``peer`` is unreachable: it holds nothing any more, as far as we know."""
        peer = ev.peer
        batch = self.in_flight.pop(peer, None) or {}
        self.data_needed_per_peer.pop(peer, None)
        for ts in list(self.tasks.values()):  # rare event: a full scan is fine
            if peer in ts.who_has:
                del ts.who_has[peer]
                if ts.state == "fetch" and not ts.who_has:
                    self._drop_fetch(ts)
                    self._want_fetch(ts, report=True, errant=peer)
        for ts in batch:
            self._transfer_failed(ts, peer)

    def _transfer_failed(self: WorkerState, ts: WTask, peer: str) -> None:
        state = ts.state
        ts.coming_from = None
        if state == "flight":
            self._set(ts, "released")
            self._want_fetch(ts, report=True, errant=peer)
        elif state == "cancelled":
            self._forget(ts)
        elif state == "resumed":
            ts.previous = ts.next = None
            self._set(ts, "released")
            self._start_waiting(ts)
