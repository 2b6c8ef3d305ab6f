"""A snapshot of a lake: its committed entries at one moment, and LazyFrames over exactly their files.

A :class:`Snapshot` lists the committed episode folders and segments once, when it is taken, and builds
every table over exactly the files of those entries, so every table it gives describes the same
episodes, whatever ingests commit or fail alongside. ``environment`` and ``episode_id`` come from the
folder names (a segment's ids from a column inside it); a filter on either is pushed down to the file
list, so other episodes' files are not opened. A compaction or removal that rebuilt an environment
folder since makes the snapshot stale: :meth:`Snapshot.check_fresh` and :meth:`Snapshot.ids_read` say so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import polars as pl
import pyarrow as pa

from ..errors import LakeError, StaleSnapshot
from ..lake.layout import Entry, EpisodeLocation, list_lake, locations_of, read_generation
from ..lake.tables import SCHEMAS

PARTITIONS = {"environment": pl.String, "episode_id": pl.String}
_SEGMENT_PARTITIONS = {"environment": pl.String, "segment": pl.String}


@cache
def _table_schema(table: str) -> pl.Schema:
    """The table's Arrow schema in polars types.

    From an empty table made of no batches: ``Schema.empty_table()`` imports pandas, which was 0.22 s
    of a fresh process's first query (measured).
    """
    empty = pa.Table.from_batches([], schema=SCHEMAS[table])
    return pl.Schema(pl.from_arrow(empty).schema)  # type: ignore[union-attr]


class Snapshot:
    """The committed entries (episode folders and segments) of the lake at ``path``, listed now."""

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise LakeError(f"{path} is a file, not a lake folder; give --lake the lake's folder")
        try:
            listing = list_lake(path)
        except OSError as exc:
            raise LakeError(f"cannot read the lake {path}: {exc.strerror or exc}") from exc
        self.path = path
        # Entries (folders and segments), not one object per episode: a snapshot of 100,000
        # episodes in a few segments is taken in milliseconds; locations are made when asked for.
        self.entries: list[Entry] = listing.entries
        self.generations: dict[str, str] = listing.generations
        self._locations: tuple[EpisodeLocation, ...] | None = None

    @property
    def locations(self) -> tuple[EpisodeLocation, ...]:
        """Where the snapshot's episodes live (folders or segments), sorted by environment then id."""
        if self._locations is None:
            with self.ids_read():
                self._locations = tuple(locations_of(self.entries))
        return self._locations

    def __len__(self) -> int:
        with self.ids_read():
            return sum(entry.count() for entry in self.entries)

    @contextlib.contextmanager
    def ids_read(self) -> Iterator[None]:
        """Around a read of segments' ids (made lazily, after the listing): a segment gone means
        a compaction or removal swapped its environment folder since the snapshot was taken."""
        try:
            yield
        except FileNotFoundError as exc:
            folder = Path(exc.filename or "").parent.parent.name or "an environment"
            raise StaleSnapshot(f"the snapshot of {self.path} is stale: {folder} was compacted or had episodes "
                                "removed since it was taken; call lake.refresh() and query again") from exc

    def check_fresh(self, locations: Iterable[EpisodeLocation] | None = None) -> None:
        """Raise :class:`~pipeline.errors.StaleSnapshot` if a compaction or removal has since
        rebuilt an environment folder the snapshot (or ``locations``) reads."""
        folders = ({entry.path.parent.name: entry.path.parent for entry in self.entries} if locations is None
                   else {loc.path.parent.name: loc.path.parent for loc in locations})
        for name, folder in folders.items():
            if read_generation(folder) != self.generations.get(name, ""):
                raise StaleSnapshot(f"the snapshot of {self.path} is stale: {name} was compacted or had "
                                    "episodes removed since it was taken; call lake.refresh() and query again")

    def scan(self, table: str, locations: list[EpisodeLocation] | None = None) -> pl.LazyFrame:
        """``table`` (one of the five) of every episode of the snapshot, or of ``locations`` only.

        ``environment`` and ``episode_id`` come first; the other columns are the table's schema.
        """
        schema = _table_schema(table)
        name = f"{table}.parquet"
        files: list[str] = []
        segments: dict[str, list[str]] = {}
        if locations is None:
            self.check_fresh()
            for entry in self.entries:
                if entry.segment:  # every row of it: its ids are not needed
                    segments[os.path.join(entry.path, name)] = []
                else:
                    files.append(os.path.join(entry.path, name))
        else:
            self.check_fresh(locations)
            files = list(dict.fromkeys(str(loc.table(table)) for loc in locations if not loc.segment))
            for location in locations:
                if location.segment:
                    segments.setdefault(str(location.table(table)), []).append(location.episode_id)
        if not files and not segments:
            return pl.LazyFrame(schema={**PARTITIONS, **schema})
        frames = []
        if files:
            frame = pl.scan_parquet(files, schema=schema, hive_partitioning=True, hive_schema=PARTITIONS,
                                    missing_columns="insert", extra_columns="ignore")
            frames.append(frame.select(*PARTITIONS, *schema))
        if segments:
            # A segment holds its episodes' rows with an episode_id column; its files never change,
            # so the snapshot's episodes of a segment are all its rows unless a selection picks some.
            frame = pl.scan_parquet(list(segments), schema={"episode_id": pl.String, **schema},
                                    hive_partitioning=True, hive_schema=_SEGMENT_PARTITIONS,
                                    missing_columns="insert", extra_columns="ignore")
            if locations is not None:
                frame = frame.filter(pl.col("episode_id").is_in([i for ids in segments.values() for i in ids]))
            frames.append(frame.select(*PARTITIONS, *schema))
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")
