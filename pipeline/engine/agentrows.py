"""One agent's rows of an episode's ``agent_steps.parquet``, as numpy arrays in step order.

This is the read behind every trajectory, so it is written for a user's *first* call in a fresh
process, which one-time costs dominate (measured on a 100k-step episode, see BENCHMARKS.md):
polars' first scan costs ~25 ms where pyarrow reads the same columns in ~13 ms, polars' first
``explode`` another ~6 ms, and pyarrow's ``to_numpy``, ``pa.array`` and compute functions given
Python scalars import pandas (0.2-0.25 s). So the file is read with ``pq.ParquetFile`` and every
column becomes numpy through its Arrow buffers; selecting and ordering rows is numpy indexing.

Row groups are chosen from the ``agent`` column's statistics (the writer keeps them), so a
single-agent episode needs no filter at all, and the chosen row groups are decoded by two threads
(pyarrow releases the GIL), as ``pq.read_table`` does for its row groups.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..cores import usable_cores
from ..errors import DatasetError
from ..lake import damage
from ..lake.damage import open_verified, reading
from ..lake.segments import open_episode_groups

AGENT = "agent"
EPISODE = "episode_id"  # a column only in segments, which hold many episodes


class AgentRows:
    """Columns of one agent's rows; every array returned is a new, writable numpy array."""

    def __init__(self, table: pa.Table, rows: np.ndarray | None) -> None:
        self._table = table
        self._rows = rows  # positions in ``table``, in step order; None: every row, already in order
        self._length = table.num_rows if rows is None else len(rows)

    def __len__(self) -> int:
        return self._length

    @cached_property
    def steps(self) -> np.ndarray:
        """The step numbers of the rows."""
        return self.numbers("step")

    def numbers(self, column: str) -> np.ndarray:
        """A column of numbers without nulls (``DatasetError`` if it has one)."""
        chunks = self._table.column(column).chunks
        if any(chunk.null_count for chunk in chunks):
            raise DatasetError(f"agent_steps column {column!r} has null values")
        values = _concatenate([_primitive(chunk) for chunk in chunks], self._table.schema.field(column).type)
        return values if self._rows is None else values[self._rows]

    def valid(self, column: str) -> np.ndarray:
        """Per row, whether ``column`` has a value (is not null)."""
        chunks = self._table.column(column).chunks
        valid = np.concatenate([_validity(chunk) for chunk in chunks]) if chunks else np.ones(0, dtype=bool)
        return valid if self._rows is None else valid[self._rows]

    def lists(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """A list column as (length of each row's list, all the rows' values concatenated).

        A null list has length 0; a null value inside a list is a ``DatasetError``.
        """
        chunks = self._table.column(column).chunks
        item_type = self._table.schema.field(column).type.value_type
        parts = [_list_parts(chunk, column) for chunk in chunks]
        if self._rows is None and not any(chunk.null_count for chunk in chunks):
            # Every row, in order: within a chunk, the rows' values are one contiguous run.
            lengths = [np.diff(offsets) for offsets, _ in parts]
            runs = [values[offsets[0]:offsets[-1]] for offsets, values in parts]
            if len(lengths) == 1:  # already a new array (np.diff's), in the offsets' type
                return lengths[0], _concatenate(runs, item_type)
            return _concatenate(lengths, pa.int64()), _concatenate(runs, item_type)
        firsts, lengths, valid = [], [], []
        base = 0  # where the chunk's values start in the concatenated values
        for chunk, (offsets, values) in zip(chunks, parts, strict=True):
            firsts.append(offsets[:-1].astype(np.int64) + base)
            lengths.append(np.diff(offsets))
            valid.append(_validity(chunk))
            base += len(values)
        rows = slice(None) if self._rows is None else self._rows
        first = _concatenate(firsts, pa.int64())[rows]
        length = np.where(_concatenate(valid, pa.bool_())[rows], _concatenate(lengths, pa.int64())[rows], 0)
        return length, _gather(_concatenate([values for _, values in parts], item_type), first, length)


class AgentStepsFile:
    """An episode's ``agent_steps.parquet``, opened once: its footer says where each agent's rows are."""

    def __init__(self, path: str, episode_id: str | None = None) -> None:
        """``episode_id``: the file is a segment's, holding many episodes; read this one's rows."""
        self.path = path
        self.episode_id = episode_id
        # Dictionary-decoded, a segment's key columns compare as a few names, not a name per row.
        self._dictionary = None if episode_id is None else [AGENT, EPISODE]
        # Page checksums verified: a damaged page is DamagedFile, not a wrong number (cost: BENCHMARKS.md).
        # In a segment only the row groups whose episode_id range holds the episode are read, found
        # by its footer map or by bisection over the statistics, and only their agent statistics
        # are looked at.
        if episode_id is None:
            self._file = open_verified(path, read_dictionary=self._dictionary)
            self._groups = list(range(self._file.metadata.num_row_groups))
        else:
            with reading(path):
                self._file, self._groups = open_episode_groups(Path(path).parent, "agent_steps", episode_id,
                                                               read_dictionary=self._dictionary)
        metadata = self._file.metadata
        agent_index = _leaf_index(metadata, AGENT)
        self._ranges = {group: _min_max(metadata, group, agent_index) for group in self._groups}
        self._segment_rows: pa.Table | None = None  # in a segment: the episode's row groups, read once

    def only_agent(self, columns: list[str] | None = None) -> str | None:
        """The agent of every row, when there is only one (else None).

        In an episode's own file, when the statistics prove it; in a segment, from the episode's
        rows, read with ``columns`` (those a following :meth:`rows` wants) and kept for it: so a
        single-agent episode in a segment needs no read of ``episode_agents.parquet``.
        """
        if self.episode_id is not None:
            table = self._segment_table(columns or [])
            found = _values_where(table.column(AGENT), _equals(table.column(EPISODE), self.episode_id))
            return found.pop() if len(found) == 1 else None
        names = {self._ranges[group] for group in self._groups}
        if len(names) != 1:
            return None
        low, high = names.pop()
        return low if low is not None and low == high else None

    def rows(self, agent: str, columns: list[str]) -> AgentRows:
        """The rows of ``agent``: ``columns`` plus ``step``, in step order."""
        if self.episode_id is not None:
            table, exact = self._segment_table(columns), False
        else:
            groups, exact = _row_groups(self._ranges, agent)
            wanted = list(dict.fromkeys(["step", *columns] + ([] if exact else [AGENT])))
            with reading(self.path):
                table = self._read(groups, wanted)
        rows: np.ndarray | None = None
        if not exact:
            mask = _equals(table.column(AGENT), agent)
            if self.episode_id is not None:
                mask &= _equals(table.column(EPISODE), self.episode_id)
            rows = np.flatnonzero(mask)
        result = AgentRows(table, rows)
        steps = result.steps
        if len(steps) > 1 and not bool((steps[1:] > steps[:-1]).all()):
            order = np.argsort(steps, kind="stable")
            result = AgentRows(table, order if rows is None else rows[order])
        return result

    def _segment_table(self, columns: list[str]) -> pa.Table:
        """The row groups of a segment's file that hold the episode: ``step``, ``columns`` and the keys."""
        wanted = list(dict.fromkeys(["step", *columns, AGENT, EPISODE]))
        if self._segment_rows is None or not set(wanted) <= set(self._segment_rows.column_names):
            with reading(self.path):
                self._segment_rows = self._read(self._groups, wanted)
        return self._segment_rows

    def _read(self, groups: list[int], columns: list[str]) -> pa.Table:
        """Read ``groups``: two threads, each a contiguous run of about half the rows, when there are
        two CPUs and groups (splitting by count gave one thread 65% of a 100k-step episode's rows)."""
        if len(groups) < 2 or usable_cores() < 2:
            return self._file.read_row_groups(groups, columns=columns, use_threads=False)  # no pool start-up
        metadata = self._file.metadata
        rows = np.cumsum([metadata.row_group(group).num_rows for group in groups])
        half = 1 + int(np.argmin(np.maximum(rows[:-1], rows[-1] - rows[:-1])))

        def read(part: list[int]) -> pa.Table:
            # Without pyarrow's own column threads: starting its pool cost ~5 ms of a first call.
            file = pq.ParquetFile(self.path, metadata=metadata, read_dictionary=self._dictionary,
                                  page_checksum_verification=damage.VERIFY_PAGES)
            return file.read_row_groups(part, columns=columns, use_threads=False)

        with ThreadPoolExecutor(2) as pool:
            return pa.concat_tables(list(pool.map(read, [groups[:half], groups[half:]])))


def _row_groups(ranges: dict[int, tuple[str | None, str | None]], agent: str) -> tuple[list[int], bool]:
    """The row groups that may hold ``agent``'s rows, and whether they hold nothing else."""
    groups, exact = [], True
    for group, (low, high) in ranges.items():
        if low is None or high is None:
            groups.append(group)
            exact = False
        elif low <= agent <= high:
            groups.append(group)
            exact = exact and low == high
    return groups, exact


def _leaf_index(metadata: pq.FileMetaData, column: str) -> int | None:
    """The index of a top-level column's leaf in the file's row groups (None: no such column)."""
    schema = metadata.schema
    for index in range(len(schema)):
        if schema.column(index).path == column:
            return index
    return None


def _min_max(metadata: pq.FileMetaData, group: int, index: int | None) -> tuple[str | None, str | None]:
    if index is None:
        return None, None
    stats = metadata.row_group(group).column(index).statistics
    if stats is None or not stats.has_min_max:
        return None, None
    return stats.min, stats.max


def _equals(column: pa.ChunkedArray, text: str) -> np.ndarray:
    """Per row, whether a string column equals ``text`` (null: no), through the Arrow buffers."""
    if column.num_chunks == 0:
        return np.zeros(0, dtype=bool)
    return np.concatenate([_chunk_equals(chunk, text) for chunk in column.chunks])


def _values_where(column: pa.ChunkedArray, mask: np.ndarray) -> set[str]:
    """The distinct non-null strings of ``column`` at the rows where ``mask`` is true."""
    found: set[str] = set()
    start = 0
    for chunk in column.chunks:
        here = mask[start:start + len(chunk)] & _validity(chunk)
        start += len(chunk)
        if not here.any():
            continue
        if isinstance(chunk, pa.DictionaryArray):
            names = chunk.dictionary.to_pylist()
            # a set, not np.unique: that imports numpy.ma, 16 ms of a first trajectory (measured)
            found.update(names[code] for code in set(_primitive(chunk.indices)[here].tolist()))
        else:
            found.update(value for value, keep in zip(chunk.to_pylist(), here.tolist(), strict=True) if keep)
    return found


def _chunk_equals(chunk: pa.Array, text: str) -> np.ndarray:
    if isinstance(chunk, pa.DictionaryArray):
        names = chunk.dictionary.to_pylist()
        codes = _primitive(chunk.indices)
        matches = np.array([name == text for name in names], dtype=bool)
        equal = matches[codes] if len(names) else np.zeros(len(chunk), dtype=bool)
    else:
        equal = np.array([value == text for value in chunk.to_pylist()], dtype=bool)
    return equal & _validity(chunk)


def _primitive(array: pa.Array) -> np.ndarray:
    """A view of a fixed-width array's values (whatever sits under its nulls)."""
    dtype = np.dtype(array.type.to_pandas_dtype())  # the numpy type; imports nothing
    data = array.buffers()[1]
    if len(array) == 0 or data is None:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=array.offset + len(array))[array.offset:]


def _validity(array: pa.Array) -> np.ndarray:
    """Per element, whether it is not null, from the validity bitmap."""
    bitmap = array.buffers()[0]
    if array.null_count == 0 or bitmap is None:
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[array.offset:array.offset + len(array)].astype(bool)


def _list_parts(chunk: pa.Array, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A list chunk's rows' start positions in its values (plus the end), and a view of its values."""
    values = chunk.values
    if values.null_count:
        raise DatasetError(f"agent_steps column {column!r} has null values inside its lists")
    offset_type = np.int64 if pa.types.is_large_list(chunk.type) else np.int32
    offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type, count=chunk.offset + len(chunk) + 1) \
        if len(chunk) else np.zeros(1, dtype=offset_type)
    return offsets[chunk.offset:], _primitive(values)  # no copy: new arrays cost page faults on a first call


def _concatenate(views: list[np.ndarray], arrow_type: pa.DataType) -> np.ndarray:
    if not views:
        return np.zeros(0, dtype=np.dtype(arrow_type.to_pandas_dtype()))
    return np.concatenate(views) if len(views) > 1 else views[0].copy()


def _gather(values: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The values of the rows starting at ``first`` with ``lengths``, concatenated in row order."""
    total = int(lengths.sum())
    if total == 0:
        return values[:0].copy()
    if bool((lengths == lengths[0]).all()):
        width = int(lengths[0])
        return values[first[:, None] + np.arange(width)].reshape(-1)
    ends = np.cumsum(lengths)
    return values[np.arange(total) - np.repeat(ends - lengths - first, lengths)]
