"""What chaos_test tells the user: fault plans as code, replay snippets, the failure message, progress.

Why code and not a repr: the point of a failure report is the next step,
which is to replay it.  A plan is printed as ``Fault(...)`` calls with
floats in ``repr`` form (they round-trip exactly, and a fault 1e-12 s off
is a different run), inside a snippet that builds the very cluster the
failing run had.  Everything here is a pure function of the records, so
two identical runs print identical messages.
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from twofold.sim.chaos import ChaosReport, SeedRun, Setup
    from twofold.sim.faults import Fault


def fault_code(fault: Fault) -> str:
    """``Fault("crash", "worker-1", 3.2, end=4.0)``: only what differs from the defaults."""
    parts = [_q(fault.kind), _q(fault.target), repr(fault.at)]
    if fault.end is not None:
        parts.append(f"end={fault.end!r}")
    if fault.peer is not None:
        parts.append(f"peer={_q(fault.peer)}")
    if fault.factor != 1.0:
        parts.append(f"factor={fault.factor!r}")
    return f"Fault({', '.join(parts)})"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan_code(plan: Sequence[Fault], indent: str = "") -> str:
    """A list display of the plan, one fault per line."""
    if not plan:
        return "[]"
    inner = "".join(f"{indent}    {fault_code(f)},\n" for f in plan)
    return f"[\n{inner}{indent}]"


def describe(exc: BaseException) -> str:
    """``TypeName: message`` (possibly several lines: pytest's assertion rewriting adds some)."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def _scenario_name(scenario: Callable) -> tuple[str, str | None]:
    name = getattr(scenario, "__qualname__", None) or getattr(scenario, "__name__", None) or "scenario"
    module = getattr(scenario, "__module__", None)
    return name, (None if module in (None, "__main__") else module)


def replay_snippet(setup: Setup, seed: int, plan: Sequence[Fault]) -> str:
    """Copy-pasteable code that rebuilds the cluster of a run and runs the scenario on it."""
    name, module = _scenario_name(setup.scenario)
    local = module is None or "<locals>" in name
    args = [f"n_workers={setup.n_workers}", f"threads_per_worker={setup.threads_per_worker}", f"seed={seed}",
            f'name="chaos-{seed}"', "validate=True"]
    if setup.delays:
        args.append(f"chaos={setup.delays!r}".replace("'", '"'))
    args += [f"{key}={value!r}" for key, value in setup.options.items()]
    lines = ["from twofold import Client", "from twofold.sim import Fault, SimCluster"]
    if not local:
        lines.append(f"from {module} import {name.split('.')[0]}")
    call = f"{name.rsplit('.', 1)[-1]}(client)  # your scenario: define or import it" if local else f"{name}(client)"
    lines += [
        "",
        # closing the cluster (the with block) frees its fixed name for the next replay
        "with SimCluster(",
        *(f"    {a}," for a in args),
        f"    faults_plan={plan_code(plan, '    ')},",
        ") as cluster, Client(cluster) as client:",
        f"    {call}",
    ]
    return "\n".join(lines)


def failure_message(setup: Setup, report: ChaosReport, plan: Sequence[Fault], error: BaseException,
                    n_seeds: int, rerun_options: Mapping[str, Any]) -> str:
    name, _ = _scenario_name(setup.scenario)
    failed = report.failures[0]
    out = [
        f"{name} failed under chaos on seed {failed.seed} (seed {report.seeds.index(failed.seed) + 1} of "
        f"{n_seeds}; {len(plan)} random faults; failed at t={failed.virtual_time:.6g} virtual seconds)",
        "",
        _indent(describe(error)),
        f"    (raised at {where(error)})",
    ]
    others = [r.seed for r in report.failures[1:]]
    if others:
        out += ["", f"Other failing seeds: {others}"]
    shrunk = report.shrunk
    if shrunk is None:
        out += ["", "Replay it (fault plan not shrunk):", "", _indent(replay_snippet(setup, failed.seed, plan))]
    elif not shrunk.reproduced:
        replayed = "it passed" if shrunk.error is None else f"it failed differently: {shrunk.error}"
        out += ["", "WARNING: replaying the same seed and plan did not fail the same way, so the scenario is",
                "not deterministic (state kept between runs? wall-clock time? randomness not from the",
                f"cluster?). On replay {replayed}. Not shrunk. The run was:", "", _indent(shrunk.snippet)]
    else:
        if not shrunk.plan:
            out += ["", f"It fails on seed {failed.seed} without any faults (message delays only): "
                        "the bug is not fault-related."]
        else:
            note = ("removing any one of them makes it pass" if shrunk.minimal
                    else "the replay budget ran out before minimality was checked")
            out += ["", f"Shrunk to {len(shrunk.plan)} of {len(plan)} faults in {shrunk.replays} replays ({note}):",
                    "", _indent(f"faults_plan = {plan_code(shrunk.plan)}")]
        if shrunk.error != failed.error:
            out += ["", "The shrunk replay fails (same type, same place) with:", "", _indent(shrunk.error or "")]
        out += ["", f"Replay it (deterministic; trace digest {shrunk.digest[:16]}):", "", _indent(shrunk.snippet)]
    options = "".join(f", {key}={value!r}" for key, value in rerun_options.items())
    out += ["", f"Re-run this seed: chaos_test({name.rsplit('.', 1)[-1]}, seeds=[{failed.seed}]{options})"]
    return "\n".join(out)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


class Progress:
    """One line per seed on stderr; a ``\\r`` counter while shrinking on a terminal."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.tty = enabled and sys.stderr.isatty()

    def _line(self, text: str, end: str = "\n") -> None:
        if self.enabled:
            sys.stderr.write(text + end)
            sys.stderr.flush()

    def seed(self, index: int, run: SeedRun) -> None:
        status = "ok  " if run.ok else "FAIL"
        text = (f"chaos {index + 1}/{self.total} seed={run.seed}: {status} t={run.virtual_time:.3f}s virtual, "
                f"{run.wall_time:.2f}s wall, {run.n_faults} faults")
        self._line(text if run.ok else f"{text}: {run.error.splitlines()[0]}")

    def done(self, runs: Sequence[SeedRun]) -> None:
        self._line(f"chaos: {len(runs)} seeds passed ({sum(r.wall_time for r in runs):.2f}s wall)")

    def shrinking(self, seed: int, n: int) -> None:
        self._line(f"chaos: shrinking the {n}-fault plan of seed {seed} ...")

    def replay(self, replays: int, best: int) -> None:
        if self.tty:
            self._line(f"\rchaos: {replays} replays, smallest failing plan so far: {best} faults", end="")

    def shrunk(self, before: int, after: int, replays: int, wall: float, reproduced: bool) -> None:
        if self.tty:
            self._line("")
        if not reproduced:
            self._line("chaos: the failure did not reproduce on replay; not shrunk")
        else:
            self._line(f"chaos: shrunk {before} -> {after} faults in {replays} replays ({wall:.2f}s wall)")
