"""Keep pyarrow from importing pandas in the processes this package owns.

``pa.array`` asks whether its input is a pandas object and, to know, imports pandas on its first
call in a process: 0.27 s on the development machine (measured), more than a small file's whole
ingest, and on the critical path of the two-process ingest, where the reader waits on a full pipe
while the writer imports. Our conversions only ever see lists, bytes and numpy arrays.

So the processes that are ours alone (the forked writer of :mod:`pipeline.split`, the default
batch workers, the ``ingest-pipeline run`` and ``validate`` commands) make ``import pandas`` fail;
pyarrow then treats pandas as not installed. A user's own process, which imports this package,
is never changed, and a process that already has pandas keeps it.
"""

from __future__ import annotations

import sys
from typing import Any


class _NoPandas:
    """A meta path finder (duck-typed: ``importlib.abc`` would cost the command's start-up ~2 ms)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("this ingest-pipeline process does without pandas "
                                      "(see pipeline/nopandas.py)", name=name)
        return None


def keep_pandas_out() -> None:
    """Make ``import pandas`` fail in this process from now on, unless pandas is already imported."""
    if "pandas" not in sys.modules and not any(isinstance(finder, _NoPandas) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())
