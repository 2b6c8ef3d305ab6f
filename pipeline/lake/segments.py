"""Segments: many episodes of one environment in one set of five larger Parquet files.

::

    environment=<name>/segment=<token>/
      episodes.parquet  episode_agents.parquet  steps.parquet  agent_steps.parquet  unit_steps.parquet

Each file's first column is ``episode_id`` (the rest is the table's schema, as in an episode folder),
and rows are sorted by it (stably: one episode's rows keep their order in the file it came from).
Row groups are small enough (:data:`ROW_GROUP_ROWS`) that the ``episode_id`` statistics of each row
group find one episode's rows without reading the others'. A segment is written once, in staging,
and never changed: a removal or a compaction writes a new segment under a new token.

The id is a column here, but a Hive partition key (the folder name) in an episode folder, because a
streamed episode's id is the hash of its whole input, known only after its last row was written.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DamagedFile
from . import damage
from .damage import open_verified, page_problem, reading
from .footer_map import footer_map_problem, open_groups, write_footer_map
from .layout import FOOTER_MAP, SEGMENT_INDEX, SEGMENT_PREFIX, EpisodeLocation
from .segment_index import index_count, index_holds, index_ids, index_problem, write_index
from .tables import SCHEMAS, TABLES
from .writer import COMPRESSION, fsync_path, image_group_rows, images_compress, table_compression

# pyarrow.compute (~30 ms to import: it builds a Python wrapper for each of its ~280 kernels) is imported
# by the functions that sort or filter, not with this module: every commit imports it (commit.py).

ID = "episode_id"
# Rows per row group: one small episode's rows are found by the episode_id statistics while a
# row group still compresses well. A trajectory decodes a whole row group of the step tables
# (4096 agent steps of 8 floats: ~0.1 MB); finding a whole id decodes the ids of one row group of
# each segment's episodes.parquet, and a trajectory one row group of episode_agents.parquet, so
# the summary tables' are small too (a scan of every row is no slower: measured 100k episodes).
ROW_GROUP_ROWS = 2_048
STEP_ROW_GROUP_ROWS = 4_096
_STEP_TABLES = ("steps", "agent_steps", "unit_steps")

_ids_cache: dict[tuple[str, int, int], list[str]] = {}
_group_ids_cache: dict[tuple[str, int, int, int], list[str]] = {}  # one row group's ids


def segment_schema(table: str) -> pa.Schema:
    """A table's schema in a segment: ``episode_id`` first, then the table's own columns."""
    return pa.schema([pa.field(ID, pa.string(), nullable=False), *SCHEMAS[table]])


def new_segment_name() -> str:
    """A folder name never used before: segments are immutable, so a path names one content."""
    return f"{SEGMENT_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:16]}"


def with_id(table: str, rows: pa.Table, episode_id: str) -> pa.Table:
    """An episode's rows of ``table`` (in the table's schema) with its ``episode_id`` column in front."""
    ids = pa.array([episode_id] * rows.num_rows, pa.string()) if rows.num_rows else pa.array([], pa.string())
    return rows.add_column(0, pa.field(ID, pa.string(), nullable=False), ids)


@contextlib.contextmanager
def _reading_ids(path: Path) -> Iterator[None]:
    """Damage is DamagedFile; a file gone (the segment swapped out since the listing) stays FileNotFoundError."""
    try:
        with reading(path):
            yield
    except DamagedFile as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise exc.__cause__ from None
        raise


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = os.stat(path)  # FileNotFoundError when the segment was swapped out: the caller's snapshot is stale
    return (str(path), stat.st_ino, stat.st_mtime_ns)


def segment_ids(folder: Path) -> list[str]:
    """The ids of the episodes a segment holds, sorted (cached: a segment never changes).

    From its id index when it has one (:mod:`.segment_index`), else from its ``episodes.parquet``.
    """
    path = folder / "episodes.parquet"
    key = _cache_key(path)
    ids = _ids_cache.get(key)
    if ids is None:
        ids = index_ids(folder)
        if ids is None:
            with _reading_ids(path):
                ids = pq.ParquetFile(path).read(columns=[ID]).column(ID).to_pylist()
        if len(_ids_cache) > 4096:
            _ids_cache.clear()
        _ids_cache[key] = ids
    return ids


def segment_count(folder: Path) -> int:
    """How many episodes a segment holds: from its id index's header, else its ``episodes.parquet`` footer."""
    path = folder / "episodes.parquet"
    key = _cache_key(path)
    ids = _ids_cache.get(key)
    if ids is not None:
        return len(ids)
    count = index_count(folder)
    if count is not None:
        return count
    with _reading_ids(path):
        return pq.read_metadata(path).num_rows


def segment_holds(folder: Path, episode_id: str) -> bool:
    """Whether a segment holds ``episode_id`` (exactly), reading as little as it can.

    Its ids if already read; else a bisection of its id index (:mod:`.segment_index`); else, for a
    segment written before the index, the ``episode_id`` statistics of each row group of its
    ``episodes.parquet`` (the footer) rule out the row groups that cannot hold it, and only the
    id column of the one (rows are sorted) whose range covers it is read and bisected.
    """
    path = folder / "episodes.parquet"
    key = _cache_key(path)
    ids = _ids_cache.get(key)
    if ids is None:
        held = index_holds(folder, episode_id)
        if held is not None:
            return held
        with _reading_ids(path):
            file = pq.ParquetFile(path)
            groups = episode_row_groups(file.metadata, episode_id)
            ids = []
            for group in groups:  # rows are sorted: usually one group, whose range covers the id
                group_key = (*key, group)
                found = _group_ids_cache.get(group_key)
                if found is None:
                    found = file.read_row_group(group, columns=[ID], use_threads=False).column(ID).to_pylist()
                    if len(_group_ids_cache) > 4096:
                        _group_ids_cache.clear()
                    _group_ids_cache[group_key] = found
                ids.extend(found)
    at = bisect.bisect_left(ids, episode_id)
    return at < len(ids) and ids[at] == episode_id


def statistics_columns(table: str) -> list[str] | bool:
    """The columns whose row-group statistics a segment's file keeps.

    The step tables keep only their keys' (``episode_id``, ``step``, ``agent``, ``unit``): those are
    what readers prune row groups by, and statistics of every column of hundreds of row groups were
    15% of a footer each trajectory parses (406 KB for 1M agent steps; BENCHMARKS.md). The small
    summary tables keep all of theirs, for filters such as ``total_reward >= 100``.
    """
    if table not in _STEP_TABLES:
        return True
    return [ID, *(key for key in ("step", "agent", "unit") if key in SCHEMAS[table].names)]


def write_segment(folder: Path, tables: dict[str, pa.Table]) -> None:
    """Write five tables (each with ``episode_id``) and the id index as a segment in ``folder``, sorted, fsynced."""
    import pyarrow.compute as pc

    folder.mkdir(parents=True)
    for table in TABLES:
        rows = tables[table].cast(segment_schema(table))
        if rows.num_rows:
            rows = rows.take(pc.sort_indices(rows, sort_keys=[(ID, "ascending")]))  # a stable sort
        path = folder / f"{table}.parquet"
        group_rows = STEP_ROW_GROUP_ROWS if table in _STEP_TABLES else ROW_GROUP_ROWS
        if table == "steps":  # images: small row groups, so that a few steps' images are a cheap read
            group_rows = min(group_rows, image_group_rows(rows) or group_rows)
        # Dictionary encoding for every column: a segment's many episodes repeat names, and often
        # values (quantised observations, actions); pyarrow falls back to plain pages for a column
        # whose dictionary outgrows its page limit, so random floats cost nothing extra. Page
        # checksums as in an episode folder, so readers and `check --deep` find a damaged page.
        # Images with zstd where it pays, as an episode folder does with LZ4 (lake/writer.py): compaction is
        # off the ingest's path, and zstd stores frames' 600x400 PNGs in 3% fewer bytes.
        image_codec = COMPRESSION if images_compress(rows, COMPRESSION) else None
        pq.write_table(rows, path, row_group_size=group_rows,
                       compression=table_compression(rows.schema.names, image_codec),
                       use_dictionary=True, write_statistics=statistics_columns(table),
                       write_page_checksum=True)
        fsync_path(path)
        if table == "episodes":  # one row per episode, sorted: the index lists the same ids
            write_index(folder, rows.column(ID).to_pylist())
    write_footer_map(folder, list(_STEP_TABLES), ID)
    for name in (SEGMENT_INDEX, FOOTER_MAP):
        if (folder / name).exists():
            fsync_path(folder / name)
    fsync_path(folder)


def read_tables(locations: Iterable[EpisodeLocation]) -> dict[str, pa.Table]:
    """The rows of some episodes (folders or segments), every table with ``episode_id``."""
    import pyarrow.compute as pc

    by_segment: dict[Path, set[str]] = {}
    parts: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
    for location in locations:
        if location.segment:
            by_segment.setdefault(location.path, set()).add(location.episode_id)
            continue
        for table in TABLES:
            parts[table].append(with_id(table, pq.ParquetFile(location.table(table)).read(), location.episode_id))
    for folder, ids in by_segment.items():
        wanted = pa.array(sorted(ids), pa.string())
        for table in TABLES:
            rows = pq.ParquetFile(folder / f"{table}.parquet").read()
            if len(wanted) != len(segment_ids(folder)):
                rows = rows.filter(pc.is_in(rows.column(ID), value_set=wanted))
            parts[table].append(rows)
    return {table: pa.concat_tables(found) if found else segment_schema(table).empty_table()
            for table, found in parts.items()}


def episode_rows(location: EpisodeLocation, table: str, columns: list[str] | None = None) -> pa.Table:
    """One episode's rows of ``table`` (``columns`` of them), from its folder or its segment.

    In a segment only the row groups whose ``episode_id`` statistics can hold the episode are read.
    """
    path = location.table(table)
    with reading(path):  # page checksums verified; damage is DamagedFile naming the file
        if not location.segment:
            return open_verified(path).read(columns=columns)
        file, groups = open_episode_groups(location.path, table, location.episode_id)
        wanted = None if columns is None else list(dict.fromkeys([ID, *columns]))
        rows = file.read_row_groups(groups, columns=wanted, use_threads=False)  # no pool start-up (~5 ms)
    # Rows are sorted by id, so the episode's are one run: found by bisection, taken by a slice
    # (a compute kernel given a Python string would import pandas: 0.4 s of a first trajectory).
    ids = rows.column(ID).to_pylist()
    first = bisect.bisect_left(ids, location.episode_id)
    rows = rows.slice(first, bisect.bisect_right(ids, location.episode_id) - first)
    return rows.drop_columns([ID]) if columns is None or ID not in columns else rows


def open_episode_groups(folder: Path, table: str, episode_id: str,
                        **options: Any) -> tuple[pq.ParquetFile, list[int]]:
    """A segment's ``table`` (page checksums verified) and its row groups that can hold ``episode_id``.

    Through the footer map when the segment has one (:mod:`.footer_map`: the file is opened with
    a footer of just those groups), else by parsing the whole footer and bisecting its statistics.
    """
    file = open_groups(folder, table, episode_id, ID, page_checksum_verification=damage.VERIFY_PAGES, **options)
    if file is not None:
        return file, list(range(file.metadata.num_row_groups))
    file = open_verified(folder / f"{table}.parquet", **options)
    return file, episode_row_groups(file.metadata, episode_id)


def episode_row_groups(metadata: pq.FileMetaData, episode_id: str) -> list[int]:
    """The row groups of a segment file whose ``episode_id`` range holds ``episode_id``.

    Rows are sorted by id, so the groups' ranges are in order: the first candidate is found by
    bisection over the statistics, reading O(log n) of them rather than every group's (a large
    segment's agent_steps.parquet has hundreds of groups).
    """
    count = metadata.num_row_groups
    index = metadata.schema.to_arrow_schema().get_field_index(ID)  # the first column: leaf 0
    bounds: dict[int, tuple[str, str] | None] = {}

    def bound(group: int) -> tuple[str, str] | None:
        if group not in bounds:
            stats = metadata.row_group(group).column(index).statistics
            bounds[group] = (stats.min, stats.max) if stats is not None and stats.has_min_max else None
        return bounds[group]

    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        found = bound(middle)
        if found is None:  # no statistics (not written by this package): every group's, one by one
            return [g for g in range(count) if (b := bound(g)) is None or b[0] <= episode_id <= b[1]]
        if found[1] < episode_id:
            low = middle + 1
        else:
            high = middle
    groups = []
    while low < count and (found := bound(low)) is not None and found[0] <= episode_id:
        groups.append(low)
        low += 1
    return groups


def folder_bytes(path: Path) -> int:
    """The size on disk of an episode folder or a segment (its files)."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            total += entry.stat().st_size
    return total


# -- check ---------------------------------------------------------------------------------------

# What the episodes row says each table holds (as in pipeline.lake.check).
_COUNTS = {"steps": "length", "agent_steps": "agent_steps", "unit_steps": "unit_steps", "episode_agents": "agents"}


def check_segment(folder: Path, deep: bool) -> list[tuple[Path, str]]:
    """Problems of one segment: (path, message) pairs; none for what compaction and group commits write."""
    import pyarrow.compute as pc

    problems: list[tuple[Path, str]] = []
    expected = {f"{t}.parquet" for t in TABLES} | {SEGMENT_INDEX, FOOTER_MAP}
    for entry in folder.iterdir():
        if entry.name not in expected:
            problems.append((entry, "unexpected file in a segment"))
    files: dict[str, pa.Table] = {}
    for table in TABLES:
        path = folder / f"{table}.parquet"
        if not path.exists():
            problems.append((path, "missing table"))
            continue
        if deep:  # every page read and its checksum verified
            damaged = page_problem(path)
            if damaged is not None:
                problems.append((path, f"damaged: {damaged}"))
                continue
        try:
            parquet = pq.ParquetFile(path)
            if not parquet.schema_arrow.equals(segment_schema(table)):
                problems.append((path, "schema differs from the table's declared schema (with episode_id)"))
                continue
            keys = [ID, *[c for c in ("step", "agent", "unit") if c in SCHEMAS[table].names]]
            if table == "episodes":
                keys += list(_COUNTS.values())
            files[table] = parquet.read(columns=keys)
        except (OSError, pa.ArrowException) as exc:
            problems.append((path, f"cannot be read as Parquet: {exc}"))
    if problems or "episodes" not in files:
        return problems
    episodes = files["episodes"]
    ids = episodes.column(ID)
    if pc.count_distinct(ids).as_py() != len(ids):
        problems.append((folder / "episodes.parquet", "an episode appears twice"))
    indexed = index_problem(folder, ids.to_pylist())
    if indexed is not None:
        problems.append((folder / SEGMENT_INDEX, indexed))
    mapped = footer_map_problem(folder, list(_STEP_TABLES), ID)
    if mapped is not None:
        problems.append((folder / FOOTER_MAP, mapped))
    for table, rows in files.items():
        column = rows.column(ID)
        if len(column) > 1 and not pc.all(pc.less_equal(column[:-1], column[1:])).as_py():
            problems.append((folder / f"{table}.parquet", "rows are not sorted by episode_id"))
    for table, count in _COUNTS.items():
        counted = files[table].group_by(ID).aggregate([([], "count_all")])
        joined = episodes.select([ID, count]).join(counted, ID, join_type="full outer")
        wrong = joined.filter(pc.invert(pc.equal(pc.fill_null(joined.column(count), -1),
                                                  pc.fill_null(joined.column("count_all"), 0))))
        if wrong.num_rows:
            first = wrong.column(ID)[0].as_py()
            problems.append((folder / f"{table}.parquet",
                             f"row counts differ from the episodes' {count} for {wrong.num_rows} episode(s), "
                             f"e.g. episode {first}"))
    if deep and not problems:
        problems.extend(_check_keys(folder, files))
    return problems


def _check_keys(folder: Path, files: dict[str, pa.Table]) -> list[tuple[Path, str]]:
    problems = []

    def unique(table: str, keys: list[str], what: str) -> None:
        rows = files[table]
        if rows.num_rows and rows.group_by(keys).aggregate([]).num_rows != rows.num_rows:
            problems.append((folder / f"{table}.parquet", what))

    def within(table: str, other: str, keys: list[str], what: str) -> None:
        rows = files[table].select(keys).group_by(keys).aggregate([])
        known = files[other].select(keys).group_by(keys).aggregate([])
        if rows.join(known, keys, join_type="left anti").num_rows:
            problems.append((folder / f"{table}.parquet", what))

    unique("steps", [ID, "step"], "step numbers are not unique within an episode")
    unique("agent_steps", [ID, "step", "agent"], "an agent appears twice in one step")
    unique("unit_steps", [ID, "step", "agent", "unit"], "a unit appears twice in one agent step")
    within("agent_steps", "steps", [ID, "step"], "has steps that are not in steps.parquet")
    within("unit_steps", "agent_steps", [ID, "step", "agent"], "has unit steps without their agent step")
    agents = files["agent_steps"].select([ID, "agent"]).group_by([ID, "agent"]).aggregate([])
    summary = files["episode_agents"].select([ID, "agent"])
    if (agents.join(summary, [ID, "agent"], join_type="left anti").num_rows
            or summary.join(agents, [ID, "agent"], join_type="left anti").num_rows):
        problems.append((folder / "episode_agents.parquet", "agents differ from those in agent_steps"))
    return problems
