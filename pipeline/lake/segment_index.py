"""A segment's id index: its episode ids, sorted, in fixed-size records, so that an id is found
without opening any of the segment's Parquet files.

::

    segment=<token>/episode_ids.idx    header: b"EPIDX\\0\\1\\0", record count (uint32 LE), CRC32 of the records
                                       then one 16-byte record per episode: its id's 32 hex digits as bytes

It is written into the segment's staging folder with the five tables and published by the same
rename, so it can never describe other episodes than the segment's own (and, like them, it never
changes). Whether a segment holds an id is a bisection over the records: ~15 reads of 16 bytes
whatever the segment's size, where the Parquet route parses a footer and decodes a row group of ids.

An id range in the folder name (min/max) would not do: ids are content hashes, so every segment's
range is nearly the whole space and rules nothing out. Segments written before this index, or
holding ids that are not 32 hex digits, have none; readers then use the row-group statistics
(:func:`pipeline.lake.segments.segment_holds`). External readers list ``*.parquet`` and never see it.
"""

from __future__ import annotations

import bisect
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from .layout import SEGMENT_INDEX

_MAGIC = b"EPIDX\x00\x01\x00"  # name, format version 1
_HEADER = struct.Struct("<8sII")  # magic, record count, CRC32 of the records
RECORD = 16
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def indexable(ids: Sequence[str]) -> bool:
    """Whether ``ids`` can be indexed: every one 32 lowercase hex digits (what ingest gives)."""
    return all(_HEX_ID.fullmatch(episode_id) for episode_id in ids)


def index_bytes(ids: Sequence[str]) -> bytes:
    """The index file's content for a segment's ``ids`` (sorted, unique, :func:`indexable`)."""
    records = b"".join(bytes.fromhex(episode_id) for episode_id in ids)
    return _HEADER.pack(_MAGIC, len(ids), zlib.crc32(records)) + records


def write_index(folder: Path, ids: Sequence[str]) -> bool:
    """Write ``folder``'s index for its sorted ``ids``; False (nothing written) if they are not indexable."""
    if not indexable(ids):
        return False
    (folder / SEGMENT_INDEX).write_bytes(index_bytes(ids))
    return True


class _Records(Sequence[bytes]):
    """The records of an open index file, read one at a time (for :mod:`bisect`)."""

    def __init__(self, fd: int, count: int) -> None:
        self._fd = fd
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # bisect only passes ints
        return os.pread(self._fd, RECORD, _HEADER.size + RECORD * index)


def _open(folder: Path) -> tuple[int, int] | None:
    """(fd, record count) of a well-formed index, or None when there is none (or it is cut or foreign)."""
    try:
        fd = os.open(folder / SEGMENT_INDEX, os.O_RDONLY)
    except FileNotFoundError:
        if not folder.is_dir():  # the segment itself is gone: the caller's snapshot is stale
            raise
        return None
    try:
        header = os.pread(fd, _HEADER.size, 0)
        if len(header) == _HEADER.size:
            magic, count, _crc = _HEADER.unpack(header)
            if magic == _MAGIC and os.fstat(fd).st_size == _HEADER.size + RECORD * count:
                return fd, count
    except OSError:
        pass
    os.close(fd)
    return None


def index_holds(folder: Path, episode_id: str) -> bool | None:
    """Whether the segment holds ``episode_id``, by bisecting its index; None when it has no usable index."""
    opened = _open(folder)
    if opened is None:
        return None
    fd, count = opened
    try:
        if not _HEX_ID.fullmatch(episode_id):
            return False  # an indexed segment holds only such ids
        key = bytes.fromhex(episode_id)
        records = _Records(fd, count)
        at = bisect.bisect_left(records, key)
        return at < count and records[at] == key
    finally:
        os.close(fd)


def index_count(folder: Path) -> int | None:
    """How many episodes the segment holds, from its index's header; None when it has no usable index."""
    opened = _open(folder)
    if opened is None:
        return None
    os.close(opened[0])
    return opened[1]


def index_ids(folder: Path) -> list[str] | None:
    """The segment's ids, sorted, from its index (CRC checked); None when it has no usable index."""
    opened = _open(folder)
    if opened is None:
        return None
    fd, count = opened
    try:
        data = os.pread(fd, _HEADER.size + RECORD * count, 0)
    finally:
        os.close(fd)
    if len(data) != _HEADER.size + RECORD * count:
        return None
    records = memoryview(data)[_HEADER.size:]
    if zlib.crc32(records) != _HEADER.unpack_from(data)[2]:
        return None
    return [records[at:at + RECORD].hex() for at in range(0, len(records), RECORD)]


def index_problem(folder: Path, ids: Sequence[str]) -> str | None:
    """What is wrong with the segment's index given its ``ids`` (sorted, from episodes.parquet), or None.

    A segment without an index is fine (written before it existed); one with an index must list
    exactly its episodes.
    """
    path = folder / SEGMENT_INDEX
    if not path.exists():
        return None
    if index_count(folder) is None:
        return "the episode id index is cut short or not an index"
    found = index_ids(folder)
    if found is None:
        return "the episode id index is damaged (CRC mismatch)"
    if found != list(ids):
        return "the episode id index differs from the ids in episodes.parquet"
    return None
