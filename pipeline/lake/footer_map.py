"""A map of a segment's Parquet footers, so that reading one episode parses one row group's metadata.

A segment's step tables have hundreds of row groups, and pyarrow parses a file's whole footer
before it reads any of them: 345 KB, ~2.2 ms (quiet) for the ``agent_steps.parquet`` of 25,000
small episodes, where the episode's rows are one row group. So :func:`write_footer_map` records,
when the segment is written, where each row group's metadata lies in the footer (and its
``episode_id`` range); :func:`open_groups` reads the footer's head and tail and just the row groups
that can hold an episode (three ``pread``\\ s), makes them a footer of their own, and opens the file
with it. The pages read are the same bytes, their checksums verified as always.

::

    segment=<token>/footers.json   <CRC32 of the rest, 8 hex digits>\n
                                   {"agent_steps": {"footer": [offset, length], "head": h, "tail": t,
                                    "groups": [[start, end, rows, min_id, max_id], ...]}, "steps": {...}}

The map is written in the segment's staging folder and published by the same rename. It is only
a shortcut: when it is missing (older segments), damaged (its CRC), or the footer it gives does
not describe the episode's row groups (their row counts and ``episode_id`` statistics, which are
the file's own), readers parse the whole footer as before; ``check`` compares it with the footers.

The footer is Thrift's compact protocol (``FileMetaData``; ``row_groups`` is its field 4); the
few lines below walk it without decoding it, to find where each row group's struct starts and
ends. https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .layout import FOOTER_MAP

_ROW_GROUPS = 4  # FileMetaData.row_groups
_LIST, _STRUCT = 9, 12


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes, pos: int, kind: int) -> int:
    """The position after a value of compact-protocol type ``kind`` starting at ``pos``."""
    if kind in (1, 2):  # a boolean field's value is in its type
        return pos
    if kind == 3:
        return pos + 1
    if kind in (4, 5, 6):
        return _varint(data, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == 8:
        size, pos = _varint(data, pos)
        return pos + size
    if kind in (9, 10):
        header = data[pos]
        pos += 1
        size, item = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(data, pos)
        if item in (1, 2):  # booleans in a list are a byte each
            return pos + size
        for _ in range(size):
            pos = _skip(data, pos, item)
        return pos
    if kind == 11:
        size, pos = _varint(data, pos)
        if size:
            types = data[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(data, _skip(data, pos, types >> 4), types & 0x0F)
        return pos
    if kind == _STRUCT:
        while True:
            header = data[pos]
            pos += 1
            if header == 0:
                return pos
            if header >> 4 == 0:  # a long-form field id follows
                pos = _varint(data, pos)[1]
            pos = _skip(data, pos, header & 0x0F)
    raise ValueError(f"unknown thrift compact type {kind}")


def row_group_spans(footer: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """Where ``FileMetaData.row_groups`` lies in a footer: (head, tail, each row group's (start, end)).

    ``footer[:head]`` ends with the field's header; ``footer[tail:]`` is every field after the list.
    """
    pos = field = 0
    while True:
        header = footer[pos]
        pos += 1
        if header == 0:
            raise ValueError("the footer has no row groups")
        if header >> 4:
            field += header >> 4
        else:
            zigzag, pos = _varint(footer, pos)
            field = (zigzag >> 1) ^ -(zigzag & 1)
        kind = header & 0x0F
        if field == _ROW_GROUPS and kind == _LIST:
            head = pos
            list_header = footer[pos]
            pos += 1
            count = list_header >> 4
            if count == 15:
                count, pos = _varint(footer, pos)
            spans = []
            for _ in range(count):
                start = pos
                pos = _skip(footer, pos, _STRUCT)
                spans.append((start, pos))
            return head, pos, spans
        pos = _skip(footer, pos, kind)


def _footer(path: Path) -> tuple[int, bytes]:
    """(offset, bytes) of a Parquet file's footer."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(size - 8)
        length = struct.unpack("<i", file.read(4))[0]
        offset = size - 8 - length
        file.seek(offset)
        return offset, file.read(length)


def table_map(path: Path, id_column: str) -> dict[str, Any]:
    """The map of one file: its footer's place, the span, rows and id range of each row group."""
    offset, footer = _footer(path)
    head, tail, spans = row_group_spans(footer)
    metadata = pq.ParquetFile(path).metadata
    if metadata.num_row_groups != len(spans):
        raise ValueError(f"{path}: {len(spans)} row groups in the footer, pyarrow sees {metadata.num_row_groups}")
    index = metadata.schema.to_arrow_schema().get_field_index(id_column)
    groups = []
    for number, (start, end) in enumerate(spans):
        group = metadata.row_group(number)
        stats = group.column(index).statistics
        low, high = (stats.min, stats.max) if stats is not None and stats.has_min_max else ("", "")
        groups.append([start, end, group.num_rows, low, high])
    return {"footer": [offset, len(footer)], "head": head, "tail": tail, "groups": groups}


def map_bytes(tables: dict[str, Any]) -> bytes:
    """A footer map file's content: the CRC32 line, then the JSON."""
    body = orjson.dumps(tables)
    return b"%08x\n" % zlib.crc32(body) + body


def read_map(path: Path) -> dict[str, Any] | None:
    """A footer map file's tables, or None when it is missing or damaged."""
    try:
        data = path.read_bytes()
        crc, body = data[:8], data[9:]
        if data[8:9] != b"\n" or int(crc, 16) != zlib.crc32(body):
            return None
        found = orjson.loads(body)
    except (OSError, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    return found if isinstance(found, dict) else None


def write_footer_map(folder: Path, tables: list[str], id_column: str) -> None:
    """Write ``folder``'s footer map for the ``tables`` (their files already written)."""
    (folder / FOOTER_MAP).write_bytes(map_bytes({table: table_map(folder / f"{table}.parquet", id_column)
                                                 for table in tables}))


_maps: dict[str, dict[str, Any] | None] = {}


def _table_map(folder: Path, table: str) -> dict[str, Any] | None:
    key = str(folder)
    if key not in _maps:
        _maps[key] = read_map(folder / FOOTER_MAP)
        if len(_maps) > 1024:
            _maps.clear()
    found = _maps.get(key)
    return None if found is None else found.get(table)


def _list_header(count: int) -> bytes:
    if count < 15:
        return bytes([count << 4 | _STRUCT])
    out = bytearray([0xF0 | _STRUCT])
    while True:
        if count < 0x80:
            out.append(count)
            return bytes(out)
        out.append(count & 0x7F | 0x80)
        count >>= 7


def open_groups(folder: Path, table: str, episode_id: str, id_column: str, **options: Any) -> pq.ParquetFile | None:
    """The segment's ``table`` opened with a footer of only the row groups that can hold
    ``episode_id`` (its row groups are then 0, 1, …); None when there is no usable map."""
    mapped = _table_map(folder, table)
    if mapped is None:
        return None
    try:
        groups = mapped["groups"]
        highs = [group[4] for group in groups]
        first = bisect.bisect_left(highs, episode_id)
        chosen = []
        while first < len(groups) and groups[first][3] <= episode_id:
            chosen.append(groups[first])
            first += 1
        if not chosen:
            chosen = groups[:1]  # holds no such rows: any one group gives the empty answer
        offset, _length = mapped["footer"]
        with open(folder / f"{table}.parquet", "rb") as file:
            fd = file.fileno()
            parts = [os.pread(fd, mapped["head"], offset), _list_header(len(chosen))]
            parts += [os.pread(fd, end - start, offset + start) for start, end, *_ in chosen]
            parts.append(os.pread(fd, _length - mapped["tail"], offset + mapped["tail"]))
        footer = b"".join(parts)
        metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + struct.pack("<i", len(footer)) + b"PAR1"))
        if metadata.num_row_groups != len(chosen):
            return None
        index = metadata.schema.to_arrow_schema().get_field_index(id_column)
        for number, group in enumerate(chosen):  # the metadata pread is the chosen group's own
            found = metadata.row_group(number)
            stats = found.column(index).statistics
            if (found.num_rows != group[2] or stats is None or not stats.has_min_max
                    or (stats.min, stats.max) != (group[3], group[4])):
                return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException):
        return None
    return pq.ParquetFile(folder / f"{table}.parquet", metadata=metadata, **options)


def footer_map_problem(folder: Path, tables: list[str], id_column: str) -> str | None:
    """What is wrong with the segment's footer map (it must describe its files' footers), or None.

    A segment without one is fine (written before it existed).
    """
    path = folder / FOOTER_MAP
    if not path.exists():
        return None
    stored = read_map(path)
    if stored is None:
        return "the footer map is damaged (CRC mismatch or not a map)"
    try:
        actual = {table: table_map(folder / f"{table}.parquet", id_column) for table in tables}
    except (OSError, ValueError, IndexError, pa.ArrowException) as exc:
        return f"the footers cannot be mapped: {exc}"
    if stored != orjson.loads(orjson.dumps(actual)):
        return "the footer map differs from the footers of the step tables"
    return None
