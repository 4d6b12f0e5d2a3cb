"""The coordination primitives' scheduler side: one small pure machine per primitive."""

from __future__ import annotations


def coordination_extensions() -> list:
    """Fresh instances of every coordination extension, for one scheduler."""
    return []
