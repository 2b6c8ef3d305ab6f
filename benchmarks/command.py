"""Run the ``ingest-pipeline`` command line in this process, recording its peak memory for the runner.

    python -m benchmarks.command MEMORY_FILE run FILE --lake DIR --jobs 1 --json

The same as ``ingest-pipeline run FILE ...`` (``cli.py``'s ``main()``, run as a script, so the working
tree's ``pipeline`` is imported lazily as the command does), with one addition for the benchmark:
on exit (also through ``os._exit``, as ``run`` and ``validate`` leave) it writes to MEMORY_FILE this
process's peak RSS (VmHWM) and, when the two-process ingest
forked a child, the child's VmHWM and the pages it still shared with this process as it finished
(see ``benchmarks/measure.py``). The hook costs no import: it is set with ``os.register_at_fork``
and only touches ``multiprocessing.util``, which the two-process ingest has imported already.
Nothing of the pipeline is changed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from benchmarks.procstatus import shared_kib, status_kib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path: str, fields: dict[str, int]) -> None:
    with open(path, "a", encoding="ascii") as f:
        f.write(" ".join(f"{k}={v}" for k, v in fields.items()) + "\n")


def _in_forked_child(path: str) -> None:
    """Record the child's memory as multiprocessing ends it (it leaves through os._exit, never atexit)."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    original: Any = getattr(util, "_exit_function")  # noqa: B009 - private, absent from the stubs

    def exit_function(*args: object, **kwargs: object) -> None:
        try:
            _write(path, {"child_hwm_kib": status_kib(b"VmHWM:"), "child_shared_kib": shared_kib()})
        finally:
            original(*args, **kwargs)

    setattr(util, "_exit_function", exit_function)  # noqa: B010 - private, absent from the stubs


def _record_before_leaving(path: str, parent: int) -> None:
    """Record this process's memory also when the command ends it at once (``cli._leave``: run and
    validate leave through ``os._exit``, past the ``finally`` below); a forked child's ``os._exit`` is
    left alone (its memory is recorded by :func:`_in_forked_child`)."""
    leave = os._exit

    def record_and_leave(code: int) -> None:
        if os.getpid() == parent:
            _write(path, {"hwm_kib": status_kib(b"VmHWM:")})
        leave(code)

    os._exit = record_and_leave  # type: ignore[assignment]


def main() -> None:
    path, *argv = sys.argv[1:]
    parent = os.getpid()
    os.register_at_fork(after_in_child=lambda: _in_forked_child(path) if os.getppid() == parent else None)
    _record_before_leaving(path, parent)
    # The runner starts us in the checkout it measures (``--pipeline``); its cli.py is the command.
    root = os.getcwd() if os.path.exists("cli.py") else REPO
    sys.argv = [os.path.join(root, "cli.py"), *argv]
    sys.path[0] = root  # as `python cli.py`: the script's folder first
    code = 0
    try:
        import runpy

        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        _write(path, {"hwm_kib": status_kib(b"VmHWM:")})
    sys.exit(code)


if __name__ == "__main__":
    main()
