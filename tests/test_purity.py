"""The state machines stay pure: no clocks, I/O, threads, processes, files or global randomness.

The first tests read the source with :mod:`ast` (nothing is imported), so a
forbidden import is caught even on a branch that never runs; the last one
imports the machines in a fresh interpreter and checks what that dragged in.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "core"

FORBIDDEN_MODULES = frozenset(
    {
        "socket", "asyncio", "threading", "_thread", "time", "datetime", "random", "secrets",
        "subprocess", "multiprocessing", "os", "io", "pathlib", "shutil", "tempfile", "selectors",
        "ssl", "concurrent", "signal", "logging", "pickle", "cloudpickle", "uuid",
    }
)  # fmt: skip

#: Not even transitively, through whatever twofold imports.
FORBIDDEN_AT_RUNTIME = ("socket", "asyncio", "threading", "subprocess", "random", "ssl", "selectors")


def pure_files() -> list[Path]:
    files = sorted((CORE / "scheduler").rglob("*.py")) + sorted((CORE / "worker").rglob("*.py"))
    files += [CORE / name for name in ("messages.py", "graph.py", "config.py", "errors.py")]
    return files


def violations(source: str, filename: str) -> list[str]:
    """``file:line: what`` for each forbidden import or ``open(`` call in ``source``."""
    found = []

    def forbidden(dotted: str | None) -> bool:
        return bool(dotted) and dotted.split(".")[0] in FORBIDDEN_MODULES

    for node in ast.walk(ast.parse(source, filename=filename)):
        where = f"{filename}:{node.lineno}" if hasattr(node, "lineno") else filename
        if isinstance(node, ast.Import):
            for alias in node.names:
                if forbidden(alias.name):
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            # relative imports (level > 0) stay inside twofold
            if node.level == 0 and forbidden(node.module):
                names = ", ".join(alias.name for alias in node.names)
                found.append(f"{where}: from {node.module} import {names}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                found.append(f"{where}: call to builtin open()")
            elif isinstance(func, ast.Attribute) and func.attr == "open" and (
                isinstance(func.value, ast.Name) and func.value.id == "builtins"
            ):
                found.append(f"{where}: call to builtins.open()")
            # dynamic imports of a literal forbidden name
            is_dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
                isinstance(func, ast.Attribute) and func.attr == "import_module"
            )
            if is_dynamic and node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
                if isinstance(name, str) and forbidden(name):
                    found.append(f"{where}: dynamic import of {name}")
    return found


def test_the_pure_files_exist():
    files = pure_files()
    missing = [str(f) for f in files if not f.is_file()]
    assert not missing, f"expected state machine files are missing: {missing}"
    # both machines are really there (guards against a silently empty glob)
    assert any(f.parent.name == "scheduler" and f.name == "machine.py" for f in files)
    assert any(f.parent.name == "worker" and f.name == "machine.py" for f in files)


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_impure_imports_or_open(path):
    found = violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not found, "impure code in a state machine module:\n  " + "\n  ".join(found)


def test_the_checker_catches_every_form():
    source = textwrap.dedent(
        """
        import math, time
        import os.path
        from concurrent.futures import ThreadPoolExecutor
        from datetime import datetime as dt
        from . import sibling
        from .time import thing
        from timeit import timeit

        def f():
            import random
            from asyncio import sleep
            with open("x") as fh:
                pass
            builtins.open("y")
            __import__("socket")
            importlib.import_module("uuid")
            obj.open()

        class C:
            def g(self):
                import pickle as p
        """
    )
    found = violations(source, "fake.py")
    lines = {int(s.split(":")[1]) for s in found}
    assert lines == {2, 3, 4, 5, 11, 12, 13, 15, 16, 17, 22}, found
    text = "\n".join(found)
    for needle in ("import time", "import os.path", "from concurrent.futures", "from datetime",
                   "import random", "from asyncio", "builtin open", "builtins.open",
                   "dynamic import of socket", "dynamic import of uuid", "import pickle"):  # fmt: skip
        assert needle in text, (needle, found)
    # allowed: math, relative imports (even .time), timeit (prefix of time only), obj.open()
    assert "math" not in text and "sibling" not in text and "timeit" not in text
    assert sum("open" in s for s in found) == 2


_PROBE = r"""
import json, sys, traceback

WATCHED = set(json.loads(sys.argv[1]))
blame = {}

class Blame:
    # records who imports a watched module first; never finds anything itself
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in WATCHED and top not in blame:
            stack = [f"{fs.filename}:{fs.lineno}" for fs in traceback.extract_stack()[:-1]
                     if not fs.filename.startswith("<frozen")]
            blame[top] = stack
        return None

before = set(sys.modules)
sys.meta_path.insert(0, Blame())
import twofold.scheduler, twofold.worker
new = set(sys.modules) - before
print(json.dumps({
    "twofold": sys.modules["twofold"].__file__,
    "preloaded": sorted(m for m in before if m.partition(".")[0] in WATCHED),
    "new": sorted(m for m in new if m.partition(".")[0] in WATCHED),
    "blame": blame,
}))
"""


def probe_imports(cwd: Path, also: str = "") -> dict:
    """Run the probe in a fresh interpreter; ``also`` appends modules to the import line."""
    script = _PROBE.replace("import twofold.scheduler, twofold.worker", "import twofold.scheduler, twofold.worker" + also)
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(FORBIDDEN_AT_RUNTIME)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(cwd),  # not the repo root
        env={k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_machines_pulls_in_no_io_modules(tmp_path):
    report = probe_imports(tmp_path)
    assert Path(report["twofold"]).is_file()
    new = report["new"]
    if new:
        lines = []
        for top in sorted({m.partition(".")[0] for m in new}):
            stack = report["blame"].get(top, [])
            ours = [frame for frame in stack if "/core/" in frame or "/twofold/" in frame]
            lines.append(f"{top}: via {ours[-1] if ours else '?'} -> {stack[-1] if stack else '?'}")
        pytest.fail("importing twofold.scheduler/twofold.worker imported:\n  " + "\n  ".join(lines))


def test_the_import_probe_sees_a_new_module(tmp_path):
    # asyncio is not preloaded by a bare interpreter; the probe must report it when imported
    report = probe_imports(tmp_path, also=", asyncio")
    assert "asyncio" not in report["preloaded"]
    assert "asyncio" in report["new"]
    assert "asyncio" in report["blame"]
