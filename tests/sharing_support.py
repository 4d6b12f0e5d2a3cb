"""Task functions of test_sharing.py (module level: worker processes import them by name)."""

from __future__ import annotations

from twofold import get_client


def read_dataset(name):
    return get_client().gather(get_client().get_dataset(name))


def read_metadata(path):
    return get_client().get_metadata(path)


def log_from_task(topic, i):
    get_client().log_event(topic, {"task": i})
    return i
