"""What a failed polars read of a snapshot means: a damaged file named, a stale snapshot, or the error as is.

polars names no file in its errors (and verifies no page checksums), so on a polars error the footers
of the snapshot's files are read (~0.1 ms each) to find the damaged one; when every footer reads, the
pages of up to 1 GB of files are verified, and past that the error names no file but says to run
``ingest-pipeline check --deep``. :meth:`pipeline.Lake.reading` applies it around a collect.
"""

from __future__ import annotations

import polars as pl

from ..errors import DamagedFile, DatasetError, StaleSnapshot
from ..lake.damage import find_damaged
from ..lake.tables import TABLES
from .snapshot import Snapshot

# How much of the snapshot's files a failed polars read verifies, page by page, to name the damaged one.
_PAGE_SEARCH_BYTES = 1 << 30


def read_error(snapshot: Snapshot, exc: BaseException) -> BaseException:
    """The error behind a failed polars read of the snapshot: DamagedFile when a file is damaged."""
    locations = snapshot.locations
    gone = [location for location in locations if not location.path.exists()]
    if gone:
        return StaleSnapshot(f"episode {gone[0].episode_id} was removed or compacted after this snapshot of "
                             f"{snapshot.path} was taken; take a new one (Lake.refresh())",
                             episode_id=gone[0].episode_id)
    # A segment's files hold many episodes: each file is searched once.
    files = dict.fromkeys(location.table(table) for location in locations for table in TABLES)
    damaged = find_damaged(files, page_budget=_PAGE_SEARCH_BYTES)
    if damaged:
        return damaged[0]
    text = " ".join(str(exc).split("\n\n", 1)[0].split())
    if any(word in text.lower() for word in ("parquet", "decompress", "thrift", "page", "out of spec")):
        return DamagedFile(None, f"polars: {text}")
    if isinstance(exc, pl.exceptions.PanicException):  # a BaseException: never let it through as such
        return DatasetError(f"polars failed reading {snapshot.path}: {text}")
    return exc
