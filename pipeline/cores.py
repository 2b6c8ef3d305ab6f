"""How many CPUs this process may use: sizes the two-process ingest, batch pools and read threads."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
