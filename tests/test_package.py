"""The package imports, and a plain (non-editable) wheel install has the right layout.

``pyproject.toml`` maps folders to packages (``core/`` -> ``twofold``,
``runtime/`` -> ``twofold.runtime``, ``sim/`` -> ``twofold.sim``); an
editable install can hide a mapping mistake that a wheel would expose, so the
second test builds a wheel and imports from it alone.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Never copied into the build tree: environments, VCS data and build leftovers
#: (a stale build/lib would leak deleted modules into the wheel).
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"
)


def test_public_packages_import_and_all_names_exist():
    import twofold
    import twofold.runtime
    import twofold.sim

    assert twofold.runtime.__name__ == "twofold.runtime"
    assert twofold.sim.__name__ == "twofold.sim"
    assert isinstance(twofold.__all__, (list, tuple)) and twofold.__all__
    assert len(set(twofold.__all__)) == len(twofold.__all__), "duplicates in twofold.__all__"
    missing = [name for name in twofold.__all__ if not hasattr(twofold, name)]
    assert not missing, f"twofold.__all__ names that do not exist: {missing}"
    namespace: dict = {}
    exec("from twofold import *", namespace)
    assert set(twofold.__all__) <= set(namespace)


@pytest.mark.parametrize("name", ["twofold.scheduler", "twofold.worker", "twofold.messages"])
def test_subpackages_import_and_their_all_names_exist(name):
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names that do not exist: {missing}"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def _missing_build_requirements(python: str) -> list[str]:
    """What ``pip wheel --no-build-isolation`` needs but ``python`` lacks."""
    probe = (
        "import importlib.util as u\n"
        "missing = []\n"
        "if u.find_spec('setuptools') is None:\n"
        "    missing.append('setuptools')\n"
        "elif u.find_spec('wheel') is None and u.find_spec('setuptools.command.bdist_wheel') is None:\n"
        "    missing.append('wheel')\n"
        "print(' '.join(missing))\n"
    )
    return _run([python, "-c", probe]).stdout.split()


def test_plain_wheel_install_imports_from_the_wheel(tmp_path):
    python = sys.executable
    # Build from a clean copy of the source tree so the repository gets no build/ or
    # egg-info litter and no stale build output can reach the wheel.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCES)
    dist = tmp_path / "dist"
    build = _run(
        [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    if build.returncode != 0:
        missing = _missing_build_requirements(python)
        if missing:
            pytest.skip(
                f"cannot build a wheel without build isolation: {', '.join(missing)} not installed "
                f"in {python} (pyproject.toml's build-system.requires)"
            )
        pytest.fail(f"pip wheel failed:\n{build.stdout}\n{build.stderr}")
    wheels = sorted(dist.glob("twofold-*.whl"))
    assert len(wheels) == 1, f"expected one twofold wheel, got {[w.name for w in dist.iterdir()]}"

    site = tmp_path / "site"
    install = _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0])],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    for folder in ("twofold", "twofold/scheduler", "twofold/worker", "twofold/runtime", "twofold/sim"):
        assert (site / folder / "__init__.py").is_file(), f"{folder}/__init__.py is not in the wheel"
    for folder in ("core", "runtime", "sim"):
        assert not (site / folder).exists(), f"source folder {folder}/ was installed as a top-level package"

    # Only the wheel's copy is importable: PYTHONPATH is the target, cwd is outside the repository,
    # and -s keeps user site-packages out; the venv's site-packages still provides the
    # dependencies, so its editable-install finder is what we must not hit.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(site)
    imported = _run(
        [
            python,
            "-s",
            "-c",
            "import twofold, twofold.sim, twofold.runtime, twofold.scheduler, twofold.worker; "
            "import twofold.messages, twofold.graph, twofold.config, twofold.errors; "
            "print(twofold.__file__)\n"
            "for m in (twofold.sim, twofold.runtime, twofold.scheduler, twofold.worker, twofold.messages): "
            "print(m.__file__)",
        ],
        cwd=str(tmp_path),
        env=env,
    )
    assert imported.returncode == 0, f"importing the installed wheel failed:\n{imported.stderr}"
    site_root = site.resolve()
    files = [Path(line).resolve() for line in imported.stdout.split()]
    assert len(files) == 6, imported.stdout
    for file in files:
        assert file.is_relative_to(site_root), f"{file} was imported instead of the copy in {site_root}"
