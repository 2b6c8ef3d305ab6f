"""This process's memory as Linux reports it; stdlib only, so the measured command pays no import for it."""

from __future__ import annotations


def status_kib(field: bytes) -> int:
    """A ``/proc/self/status`` field in KiB (``b"VmHWM:"``, ``b"VmRSS:"``); 0 where it is missing."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def shared_kib() -> int:
    """Resident pages this process shares with another (a forked child: with its parent)."""
    total = 0
    with open("/proc/self/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith((b"Shared_Clean:", b"Shared_Dirty:")):
                total += int(line.split()[1])
    return total
