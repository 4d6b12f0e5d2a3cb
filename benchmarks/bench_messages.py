"""The message codec alone: ``twofold.messages.dumps`` / ``loads``, microseconds per message.

For a few representative messages (the hot ones of a task's life, and one
large ``UpdateGraph``), times:

* ``batch``: ``dumps(list_of_N)`` and ``loads(bytes)`` of a batch of ``--batch``
  copies, divided by N: what a runtime connection pays per message (its
  frames carry batches);
* ``single``: ``dumps(msg)`` / ``loads(bytes)`` of one message alone.

Each figure is the best of ``--repeat`` timings (CPU time, one thread; the
best is the least disturbed by other load).  The packed size is per message.

    ./dev python benchmarks/bench_messages.py
    ./dev python benchmarks/bench_messages.py --batch 1000 --repeat 9
"""

from __future__ import annotations

import argparse
import time

from twofold.messages import ComputeTask, KeyInMemory, TaskFinished, TaskSpec, UpdateGraph, dumps, loads


def compute_task(i: int) -> ComputeTask:
    deps = [f"load-{i - 1:032x}", f"load-{i + 1:032x}"]
    return ComputeTask(
        now=12.5, stimulus_id=f"task-finished-{i:032x}-12.5", worker="tcp://127.0.0.1:40123",
        key=f"inc-{i:032x}", run_spec=bytes(180), priority=(0, 1, i),
        who_has={d: ("tcp://127.0.0.1:40125",) for d in deps}, nbytes={d: 28 for d in deps}, run_id=i,
    )  # fmt: skip


def task_finished(i: int) -> TaskFinished:
    return TaskFinished(
        now=1.5, stimulus_id=f"execute-{i:032x}", worker="tcp://127.0.0.1:40123", key=f"inc-{i:032x}",
        nbytes=28, typename="int", start=1.25, stop=1.5, run_id=i,
    )  # fmt: skip


def key_in_memory(i: int) -> KeyInMemory:
    return KeyInMemory(
        now=1.5, stimulus_id=f"task-finished-{i:032x}", client="Client-5b1f0e9a", key=f"inc-{i:032x}",
        nbytes=28, typename="int", inline=bytes(40),
    )  # fmt: skip


def update_graph(n: int) -> UpdateGraph:
    tasks = tuple(
        TaskSpec(key=f"inc-{i:032x}", run_spec=bytes(120), dependencies=(f"inc-{i - 1:032x}",) if i else (), priority=i)
        for i in range(n)
    )
    return UpdateGraph(now=0.5, stimulus_id="update-graph-1", client="Client-5b1f0e9a", tasks=tasks,
                       wanted=tuple(t.key for t in tasks))  # fmt: skip


def best_of(fn, arg, repeat: int, budget: float = 0.05) -> float:
    """Best CPU seconds per call of ``fn(arg)`` over ``repeat`` timings of about ``budget`` seconds each."""
    number = 1
    while True:  # calibrate: enough calls to fill the budget
        t0 = time.process_time()
        for _ in range(number):
            fn(arg)
        if time.process_time() - t0 >= budget / 4:
            break
        number *= 4
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(number):
            fn(arg)
        best = min(best, (time.process_time() - t0) / number)
    return best


def measure(make, batch: int, repeat: int) -> dict:
    msgs = [make(i) for i in range(batch)]
    blob = dumps(msgs)
    assert loads(blob) == tuple(msgs)
    one = msgs[0]
    one_blob = dumps(one)
    assert loads(one_blob) == one
    return {
        "batch dumps": best_of(dumps, msgs, repeat) / batch,
        "batch loads": best_of(loads, blob, repeat) / batch,
        "single dumps": best_of(dumps, one, repeat),
        "single loads": best_of(loads, one_blob, repeat),
        "bytes": len(blob) / batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1000, help="messages per batch")
    parser.add_argument("--tasks", type=int, default=1000, help="TaskSpecs in the UpdateGraph")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cases = [
        ("ComputeTask", compute_task, args.batch),
        ("TaskFinished", task_finished, args.batch),
        ("KeyInMemory", key_in_memory, args.batch),
        (f"UpdateGraph({args.tasks} tasks)", lambda i: update_graph(args.tasks), 1),
    ]
    columns = ["batch dumps", "batch loads", "batch total", "single dumps", "single loads", "bytes"]
    print(f"twofold.messages codec: us per message (batches of {args.batch}; best of {args.repeat})")
    print(f"{'':26}" + "".join(f"{c:>14}" for c in columns))
    for name, make, batch in cases:
        r = measure(make, batch, args.repeat)
        r["batch total"] = r["batch dumps"] + r["batch loads"]
        cells = [f"{r[c] * 1e6:,.2f}" if c != "bytes" else f"{r[c]:,.0f}" for c in columns]
        print(f"{name:26}" + "".join(f"{c:>14}" for c in cells))
        if "UpdateGraph" in name:
            per = (r["batch dumps"] * 1e6 / args.tasks, r["batch loads"] * 1e6 / args.tasks)
            print(f"{'  per TaskSpec':26}{per[0]:>14.2f}{per[1]:>14.2f}{sum(per):>14.2f}")


if __name__ == "__main__":
    main()
