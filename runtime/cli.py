"""``twofold scheduler`` and ``twofold worker``: a cluster from the command line.

    twofold scheduler [--host H] [--port P] [--scheduler-file F] [--policy NAME | --policy module:Name]
    twofold worker [ADDRESS | --scheduler-file F] [--nthreads N] [--nworkers N]
                   [--memory-limit M] [--resources "GPU=2 FPGA=1"] [--name NAME] [--no-nanny]

SIGINT or SIGTERM shuts down cleanly (workers leave the scheduler, nannies
stop their workers).  The shared secret comes from ``TWOFOLD_SECRET`` or
``--secret-file``; TLS from ``--tls-ca-file/--tls-cert/--tls-key``.
Logs go to stderr and say what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from twofold.runtime.nanny import EXIT_SCHEDULER_LOST, Nanny
from twofold.runtime.security import Security

logger = logging.getLogger("twofold.runtime.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twofold", description="Run a twofold scheduler or workers.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--secret-file", help="file holding the shared secret (else $TWOFOLD_SECRET)")
        p.add_argument("--tls-ca-file", help="CA certificate (PEM) that signs every node's certificate")
        p.add_argument("--tls-cert", help="this node's certificate (PEM)")
        p.add_argument("--tls-key", help="this node's private key (PEM), if not in --tls-cert")
        p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ... (default INFO)")

    s = sub.add_parser("scheduler", help="start a scheduler")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8786, help="port (0 = any free port; default 8786)")
    s.add_argument("--scheduler-file", help="write the scheduler's address here (JSON) once it is ready")
    s.add_argument("--policy", default=None,
                   help="scheduling policy: a shipped one by name (default, blevel, heft, ...) or module:Name, "
                        "a Policy class (made with no arguments) or instance importable from this process")
    common(s)

    w = sub.add_parser("worker", help="start workers for a scheduler")
    w.add_argument("address", nargs="?", help="the scheduler's address, e.g. tcp://127.0.0.1:8786")
    w.add_argument("--scheduler-file", help="read the scheduler's address from this file")
    w.add_argument("--nthreads", type=int, default=1, help="threads per worker (default 1)")
    w.add_argument("--nworkers", type=int, default=1, help="worker processes to start (default 1)")
    w.add_argument("--memory-limit", default=None, help="per worker, e.g. 4GB (default: no limit)")
    w.add_argument("--resources", default="", help='abstract resources, e.g. "GPU=2 MEM=10e9"')
    w.add_argument("--name", default=None, help="worker name (with --nworkers > 1, suffixed -0, -1, ...)")
    w.add_argument("--host", default="127.0.0.1", help="address the worker listens on (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=0, help="data port (0 = any free port; only with --no-nanny)")
    w.add_argument("--no-nanny", dest="nanny", action="store_false", help="run the worker in this process")
    w.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the scheduler (default 30)")
    common(w)
    return parser


def parse_resources(text: str) -> dict[str, float] | None:
    """``"GPU=2 MEM=1e9"`` (spaces or commas) -> ``{"GPU": 2.0, "MEM": 1e9}``."""
    out: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, amount = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(amount)
        except ValueError:
            raise SystemExit(f"twofold: --resources takes NAME=AMOUNT pairs like 'GPU=2', got {item!r}") from None
    return out or None


def _security(args: argparse.Namespace, role: str) -> Security:
    secret = os.environ.get("TWOFOLD_SECRET") or None
    if args.secret_file:
        try:
            with open(args.secret_file) as f:
                secret = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"twofold: cannot read --secret-file: {exc}") from None
    tls = {}
    if args.tls_ca_file or args.tls_cert:
        if not (args.tls_ca_file and args.tls_cert):
            raise SystemExit("twofold: TLS needs both --tls-ca-file and --tls-cert")
        tls = {"tls_ca_file": args.tls_ca_file, f"tls_{role}_cert": args.tls_cert, f"tls_{role}_key": args.tls_key}
    try:
        return Security(secret=secret, **tls)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"twofold: {exc}") from None


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def handler(signame: str) -> None:
        if stop.is_set():
            return
        logger.info("received %s: shutting down", signame)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig.name)


def _write_json(path: str, content: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)  # readers never see half a file


def read_scheduler_file(path: str, timeout: float = 0.0) -> str:
    """The ``address`` in a scheduler file, waiting up to ``timeout`` seconds for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                info = json.load(f)
            address = info["address"]
            if not isinstance(address, str):
                raise ValueError("address is not a string")
            return address
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a twofold/dask scheduler file (JSON with an 'address'): {exc}") from None


# --------------------------------------------------------------------------
# twofold scheduler
# --------------------------------------------------------------------------


def load_policy(spec: str):
    """The policy ``--policy`` names: a shipped one (``blevel``) or ``module:Name``
    (a Policy class, made with no arguments, or an instance); ValueError saying why not."""
    import importlib

    from twofold.scheduler.policies import POLICIES

    if spec in POLICIES:
        return POLICIES[spec]()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--policy takes a shipped policy ({', '.join(POLICIES)}) or module:Name, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--policy {spec}: cannot import {module_name!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"--policy {spec}: {module_name!r} has no {attr!r}") from None
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as exc:
            raise ValueError(f"--policy {spec}: {attr} cannot be made with no arguments ({exc});"
                             f" name a module-level instance instead") from None
    from twofold.scheduler.policies.base import check_policy

    try:
        check_policy(obj)  # the checks the scheduler makes, before anything listens
    except TypeError as exc:
        raise ValueError(f"--policy {spec}: {exc}") from None
    return obj


async def _run_scheduler(args: argparse.Namespace) -> int:
    from twofold.runtime.scheduler import SchedulerServer

    policy = None
    if args.policy is not None:
        try:
            policy = load_policy(args.policy)
        except ValueError as exc:
            logger.error("%s", exc)
            return 2
        logger.info("scheduling policy: %r", policy)
    sec = _security(args, "scheduler")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop)
    try:
        server = await SchedulerServer(args.host, args.port, secret=sec.secret, policy=policy,
                                       ssl=sec.server_context("scheduler")).start()  # fmt: skip
    except (OSError, ValueError) as exc:
        logger.error("cannot start the scheduler on %s:%s: %s", args.host, args.port, exc)
        return 1
    if args.scheduler_file:
        _write_json(args.scheduler_file, {"type": "Scheduler", "id": "twofold-scheduler", "address": server.address,
                                          "pid": os.getpid()})  # fmt: skip
        logger.info("wrote the scheduler file %s", args.scheduler_file)
    logger.info("scheduler ready at %s", server.address)
    await asyncio.wait([loop.create_task(stop.wait()), loop.create_task(server.stopped.wait())],
                       return_when=asyncio.FIRST_COMPLETED)  # (a signal, or Client.shutdown)
    await server.close()
    if args.scheduler_file:
        try:
            os.unlink(args.scheduler_file)
        except OSError:
            pass
    return 0


# --------------------------------------------------------------------------
# twofold worker
# --------------------------------------------------------------------------


def _address(args: argparse.Namespace) -> str:
    if args.address and args.scheduler_file:
        raise SystemExit("twofold: give the scheduler's ADDRESS or --scheduler-file, not both")
    if args.address:
        return args.address
    if args.scheduler_file:
        try:
            return read_scheduler_file(args.scheduler_file, timeout=args.timeout)
        except FileNotFoundError:
            raise SystemExit(f"twofold: no scheduler file at {args.scheduler_file} after {args.timeout} s") from None
        except ValueError as exc:
            raise SystemExit(f"twofold: {exc}") from None
    raise SystemExit("twofold: worker needs the scheduler's ADDRESS or --scheduler-file")


async def _run_worker(args: argparse.Namespace) -> int:
    from twofold.runtime.local import parse_memory

    address = _address(args)
    sec = _security(args, "worker")
    resources = parse_resources(args.resources)
    if args.nthreads < 1 or args.nworkers < 1:
        raise SystemExit("twofold: --nthreads and --nworkers must be >= 1")
    try:
        memory_limit = parse_memory(args.memory_limit)
    except ValueError as exc:
        raise SystemExit(f"twofold: {exc}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _stop_on_signals(loop, stop)
    if not args.nanny:
        if args.nworkers != 1:
            raise SystemExit("twofold: --nworkers > 1 needs nannies (drop --no-nanny)")
        return await _worker_in_process(args, address, sec, resources, memory_limit, stop)
    names = [args.name] if args.nworkers == 1 else [f"{args.name}-{i}" if args.name else None
                                                     for i in range(args.nworkers)]  # fmt: skip
    nannies = [Nanny(address, nthreads=args.nthreads, name=name, memory_limit=memory_limit, resources=resources,
                     host=args.host, secret=sec.secret, extra_args=[*sec.worker_cli_args(), "--log-level", args.log_level])
              for name in names]  # fmt: skip
    for nanny in nannies:
        await nanny.start()
    logger.info("started %d worker process(es) with nannies for %s", len(nannies), address)
    ended = asyncio.gather(*(n.finished for n in nannies))
    stopper = loop.create_task(stop.wait())
    await asyncio.wait([ended, stopper], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        await asyncio.gather(*(n.close() for n in nannies))
        return 0
    stopper.cancel()
    reasons = ended.result()
    logger.info("all workers ended: %s", "; ".join(reasons))
    if any("lost the scheduler" in r for r in reasons):
        return EXIT_SCHEDULER_LOST
    return 0 if all(r.endswith("exited with code 0") for r in reasons) else 1  # (0: all retired or shut down)


async def _worker_in_process(args, address, sec, resources, memory_limit, stop) -> int:
    from twofold.client.dask_default import worker_process_started
    from twofold.errors import CommClosedError, ProtocolError
    from twofold.errors import TimeoutError as TwofoldTimeoutError
    from twofold.messages_ops import RESTART_REASON, RETIRE_REASON, SHUTDOWN_REASON
    from twofold.runtime.nanny import EXIT_RESTART
    from twofold.runtime.worker import WorkerServer

    worker_process_started()  # a task's bare dask .compute() runs through its client (no dask import here)

    worker = WorkerServer(address, nthreads=args.nthreads, name=args.name, resources=resources,
                          memory_limit=memory_limit, host=args.host, port=args.port, secret=sec.secret,
                          ssl_server=sec.server_context("worker"),
                          ssl_client=sec.client_context(address, "worker") if sec.tls else None,
                          connect_timeout=args.timeout)  # fmt: skip
    try:
        await worker.start()
    except (OSError, ProtocolError, TwofoldTimeoutError, CommClosedError, ValueError) as exc:
        logger.error("worker cannot join the scheduler at %s: %s", address, exc)
        return EXIT_SCHEDULER_LOST
    stopper = asyncio.get_running_loop().create_task(stop.wait())
    await asyncio.wait([worker.finished, stopper], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        await worker.close("asked to stop")
        return 0
    stopper.cancel()
    reason = worker.finished.result()
    logger.warning("worker %s stopped: %s", worker.address, reason)
    if reason.startswith("lost the scheduler"):
        return EXIT_SCHEDULER_LOST
    if reason.endswith((RETIRE_REASON, SHUTDOWN_REASON)):
        return 0  # retired (retire_workers) or shut down: the nanny does not start another
    if reason.endswith(RESTART_REASON):
        return EXIT_RESTART  # Client.restart: the nanny starts a fresh one at once
    return 4  # closed by the scheduler (e.g. missed heartbeats): the nanny starts a fresh one


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        raise SystemExit(f"twofold: unknown --log-level {args.log_level!r}")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s {args.command}[{os.getpid()}] %(levelname)s %(name)s: %(message)s")  # fmt: skip
    runner = _run_scheduler if args.command == "scheduler" else _run_worker
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
