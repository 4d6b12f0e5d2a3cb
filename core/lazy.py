"""Package attributes loaded on first use (PEP 562 module ``__getattr__``).

A worker process imports the machines, not the Client; a simulator-only
program never needs the socket runtime.  Packages list such names with the
module that defines them, and this makes the module-level hooks.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, namespace: dict[str, Any],
                    table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name in ``table`` is
    imported from its module when first read, then kept in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
