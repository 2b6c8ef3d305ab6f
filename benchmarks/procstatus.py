"""This process's memory as Linux reports it; stdlib only, so the measured command pays no import for it."""

from __future__ import annotations

import os


def status_kib(field: bytes) -> int:
    """A ``/proc/self/status`` field in KiB (``b"VmHWM:"``, ``b"VmRSS:"``); 0 where it is missing."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def shared_kib() -> int:
    """Resident pages this process (a forked child) shares with its parent, in KiB.

    ``Shared_Clean``/``Shared_Dirty`` count a page that any other process maps too, so a library
    only the child maps (pyarrow's, in the two-process ingest) counted as shared whenever an
    unrelated process on the machine had it loaded: 16 MiB in one run of frames64, 48 MiB in the next
    (measured on the shared 2-core machine). So a file's pages count only when the parent maps that
    file too; anonymous pages are shared by a fork alone, with the parent.
    """
    try:
        with open(f"/proc/{os.getppid()}/maps", "rb") as f:
            parent_files = {line.split(maxsplit=5)[5].strip() for line in f if len(line.split(maxsplit=5)) == 6}
    except OSError:
        parent_files = None
    total = 0
    counted = True
    with open("/proc/self/smaps", "rb") as f:
        for line in f:
            if line.startswith((b"Shared_Clean:", b"Shared_Dirty:")):
                if counted:
                    total += int(line.split()[1])
            elif not line[:1].isupper():  # a mapping's header: "start-end perms offset dev inode [path]"
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else b""
                counted = parent_files is None or not path.startswith(b"/") or path in parent_files
    return total
