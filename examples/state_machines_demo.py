"""A scripted run of the scheduler and worker state machines, printed step by step.

No network and no simulator: the hand-wired router (``twofold.handwired``)
carries every message, and this script decides when tasks finish, when a
worker dies, and when a task fails.  Run it with ``./dev demo``.
"""

from __future__ import annotations

from twofold.handwired import HandWired
from twofold.messages import ReleaseKeys, TaskSpec, UpdateGraph


def show(c: HandWired, title: str) -> None:
    print(f"\n== {title}  (t={c.now:g})")
    s = c.scheduler
    by_state: dict[str, list[str]] = {}
    for ts in s.tasks.values():
        where = f"@{ts.processing_on.address}" if ts.processing_on else ""
        if ts.who_has:
            where = "@" + ",".join(ws.address for ws in ts.who_has)
        by_state.setdefault(ts.state, []).append(ts.key + where)
    for state, keys in by_state.items():
        print(f"   scheduler {state:<10} {' '.join(keys)}")
    for address, ws in c.workers.items():
        states = " ".join(f"{t.key}:{t.state}" for t in ws.tasks.values()) or "(idle)"
        print(f"   worker {address:<4} {states}")


def step(c: HandWired, what: str, action) -> None:
    """Do one thing, then carry every message it caused (and their answers)."""
    print(f"-> {what}")
    action()
    while c.links:
        link = next(iter(c.links))
        msg = c.links[link][0]
        detail = getattr(msg, "key", None) or getattr(msg, "keys", "")
        print(f"     {link[0]:>9} -> {link[1]:<9} {msg.op} {detail}")
        c.deliver(link)


def main() -> None:
    c = HandWired(n_workers=2, nthreads=1)
    print("A scheduler and two one-thread workers (w0, w1), wired by hand.")
    graph = [
        TaskSpec("load-1", b"<fn>"),
        TaskSpec("load-2", b"<fn>"),
        TaskSpec("clean-1", b"<fn>", ("load-1",)),
        TaskSpec("clean-2", b"<fn>", ("load-2",)),
        TaskSpec("total-1", b"<fn>", ("clean-1", "clean-2")),
    ]
    step(c, "client submits load -> clean -> total (wants total-1)",
         lambda: c.to_scheduler(UpdateGraph(c.now, "submit", "alice", tuple(graph), ("total-1",))))
    show(c, "loads are running")
    a = c.scheduler.tasks["load-1"].processing_on.address
    b = c.scheduler.tasks["load-2"].processing_on.address
    step(c, f"{a} finishes load-1 (1 MB)", lambda: c.finish(a, "load-1", nbytes=1_000_000))
    c.now = 1.0
    step(c, f"{b} dies while running load-2", lambda: c.kill(b))
    show(c, f"after {b}'s death: load-2 is recomputed on {a}")
    print(f"   load-2 has now been on {c.scheduler.tasks['load-2'].suspicious} worker that died "
          f"(KilledWorker after {c.scheduler.config.allowed_failures + 1})")
    c.now = 2.0
    c.drain(nbytes=1_000)
    show(c, "drained: everything finished")
    for msg in c.received("alice"):
        print(f"   alice received {msg.op} {msg.key}")
    step(c, "alice releases total-1", lambda: c.to_scheduler(ReleaseKeys(c.now, "release", "alice", ("total-1",))))
    c.drain()
    show(c, "released: nothing left anywhere")
    s = c.scheduler
    print(f"\n{c.events} events handled; scheduler knows {len(s.tasks)} tasks; "
          f"worker stores hold {sum(len(v) for v in c.stores.values())} keys.")


if __name__ == "__main__":
    main()
