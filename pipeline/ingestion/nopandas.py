"""Keep pyarrow from importing pandas (and numpy) in the processes this package owns.

``pa.array`` asks whether its input is a pandas object and, to know, imports pandas on its first
call in a process: 0.27 s on the development machine (measured), more than a small file's whole
ingest, and on the critical path of the two-process ingest, where the reader waits on a full pipe
while the writer imports. Likewise ``import pyarrow`` imports numpy when it is installed (~40-100 ms
of every ``run``, more than pyarrow itself), although an ingest never needs it: our conversions
only ever see lists and bytes (widened by Arrow, see :mod:`pipeline.ingestion.tabulate`), and pyarrow works
without numpy.

So the processes that are ours alone (the forked writer of :mod:`pipeline.ingestion.parallel`, the default
batch workers, the ``ingest-pipeline run`` and ``validate`` commands) make ``import pandas`` and
``import numpy`` fail; pyarrow then treats them as not installed. A user's own process, which
imports this package, is never changed, and a process that already has pandas or numpy keeps it.
"""

from __future__ import annotations

import sys
from typing import Any

# Modules an ingest-only process does without (each only if it is not imported already).
LEFT_OUT = ("pandas", "numpy")


class _NoPandas:
    """A meta path finder refusing ``names`` (duck-typed: ``importlib.abc`` would cost start-up ~2 ms)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"this ingest-pipeline process does without {name.partition('.')[0]} "
                                      "(see pipeline/nopandas.py)", name=name)
        return None


def keep_pandas_out() -> None:
    """Make ``import pandas`` and ``import numpy`` fail in this process from now on (each unless
    already imported)."""
    if any(isinstance(finder, _NoPandas) for finder in sys.meta_path):
        return
    names = frozenset(name for name in LEFT_OUT if name not in sys.modules)
    if names:
        sys.meta_path.insert(0, _NoPandas(names))
