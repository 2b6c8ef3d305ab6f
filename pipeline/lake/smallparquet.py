"""A small Parquet encoder of our own, for the lake's five tables only, with no pyarrow.

Importing pyarrow (and pyarrow.parquet) is ~0.12 s of a process (BENCHMARKS.md, Start-up): most of
an ingest of a tiny file. So an episode small enough (see :mod:`pipeline.ingestion.tabulate`,
``SMALL_ROWS``) is written by this module instead, from the same rows and columns the pyarrow path
converts. The files it writes read back, with pyarrow, polars and DuckDB, as the same Arrow tables
as pyarrow's (tests/lake/test_smallparquet.py): the same Parquet schema, the ``ARROW:schema``
key-value metadata pyarrow stores (per table constants in :mod:`.smallparquet_schemas`, generated
by :func:`generate_schemas` from :mod:`.tables` and pinned by a test), the same values.

What it writes: one row group (none for a table without rows), one uncompressed PLAIN data page
(v1) per column with its CRC32, definition and repetition levels RLE-encoded, and min/max
statistics with null counts on every column that is not a list or binary (the readers prune by
``agent``, ``step`` and ids; strings of more than :data:`_MAX_STATISTICS` bytes get none, as
pyarrow's default). Uncompressed: the tables of a small episode are a few KB, and ``zstandard``
costs ~4 ms to import (measured); compaction rewrites them with zstd.

The format: https://github.com/apache/parquet-format (``parquet.thrift``); the footer is Thrift's
compact protocol, https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import zlib
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from .smallparquet_schemas import ARROW_SCHEMAS, COLUMNS

MAGIC = b"PAR1"
CREATED_BY = "ingest-pipeline smallparquet"
# Parquet physical types, repetitions, converted types, encodings (parquet.thrift).
_BOOLEAN, _INT32, _INT64, _DOUBLE, _BYTE_ARRAY = 0, 1, 2, 5, 6
_REQUIRED, _OPTIONAL, _REPEATED = 0, 1, 2
_UTF8, _LIST, _TIMESTAMP_MICROS = 0, 3, 10
_PLAIN, _RLE = 0, 3
# Compact protocol types.
_T_I32, _T_I64, _T_BINARY, _T_LIST, _T_STRUCT = 5, 6, 8, 9, 12
# parquet-cpp's default max_statistics_size: larger min/max values are not written.
_MAX_STATISTICS = 4096
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# kind -> (physical type, converted type or None, logical type as a compact-protocol union, or b"")
_PHYSICAL: dict[str, tuple[int, int | None, bytes]] = {
    "int64": (_INT64, None, b""),
    "int32": (_INT32, None, b""),
    "float64": (_DOUBLE, None, b""),
    "bool": (_BOOLEAN, None, b""),
    "string": (_BYTE_ARRAY, _UTF8, b"\x1c\x00\x00"),  # LogicalType.STRING (field 1): an empty struct
    "binary": (_BYTE_ARRAY, None, b""),
    # LogicalType.TIMESTAMP (field 8): {isAdjustedToUTC: true, unit: {MICROS: {}}}
    "timestamp_us_utc": (_INT64, _TIMESTAMP_MICROS, b"\x8c\x11\x1c\x2c\x00\x00\x00\x00"),
}
_LIST_LOGICAL = b"\x3c\x00\x00"  # LogicalType.LIST (field 3): an empty struct


class _Out:
    """Thrift compact protocol, the few forms the footer and page headers use."""

    __slots__ = ("buf", "last")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.last = [0]  # the last field id, one per open struct

    def varint(self, value: int) -> None:
        buf = self.buf
        while value >= 0x80:
            buf.append((value & 0x7F) | 0x80)
            value >>= 7
        buf.append(value)

    def field(self, fid: int, kind: int) -> None:
        delta = fid - self.last[-1]
        if 0 < delta <= 15:
            self.buf.append(delta << 4 | kind)
        else:  # pragma: no cover - our field ids always increase by at most 15
            self.buf.append(kind)
            self.varint((fid << 1) ^ (fid >> 63))
        self.last[-1] = fid

    def i32(self, fid: int, value: int, kind: int = _T_I32) -> None:
        self.field(fid, kind)
        self.varint((value << 1) ^ (value >> 63))

    def i64(self, fid: int, value: int) -> None:
        self.i32(fid, value, _T_I64)

    def binary(self, fid: int, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self.field(fid, _T_BINARY)
        self.varint(len(data))
        self.buf += data

    def raw(self, fid: int, kind: int, data: bytes) -> None:
        """A field whose encoded value is ``data``."""
        self.field(fid, kind)
        self.buf += data

    def begin(self, fid: int | None = None) -> None:
        """A struct: as field ``fid``, or as an element of a list (None)."""
        if fid is not None:
            self.field(fid, _T_STRUCT)
        self.last.append(0)

    def end(self) -> None:
        self.buf.append(0)
        self.last.pop()

    def list_of(self, fid: int, kind: int, size: int) -> None:
        self.field(fid, _T_LIST)
        if size < 15:
            self.buf.append(size << 4 | kind)
        else:
            self.buf.append(0xF0 | kind)
            self.varint(size)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _levels(runs: list[list[int]]) -> bytes:
    """Levels as RLE runs of the RLE/bit-packed hybrid (bit width <= 8), with their 4-byte length."""
    out = bytearray()
    for value, count in runs:
        out += _varint(count << 1)
        out.append(value)
    return struct.pack("<i", len(out)) + out


def _add_run(runs: list[list[int]], value: int, count: int = 1) -> None:
    if runs and runs[-1][0] == value:
        runs[-1][1] += count
    elif count:
        runs.append([value, count])


def _plain(kind: str, values: list[Any]) -> bytes:
    """PLAIN encoding of non-null values of a column of ``kind``."""
    if kind in ("int64", "timestamp_us_utc"):
        return array("q", values).tobytes()
    if kind == "float64":
        return array("d", values).tobytes()
    if kind == "int32":
        return array("i", values).tobytes()
    if kind == "bool":
        out = bytearray((len(values) + 7) // 8)
        for i, value in enumerate(values):
            if value:
                out[i >> 3] |= 1 << (i & 7)
        return bytes(out)
    pack = struct.Struct("<I").pack
    return b"".join(pack(len(value)) + value for value in values)


def _stored(kind: str, values: list[Any]) -> list[Any]:
    """Non-null values as they are stored: floats, encoded text, microseconds."""
    if kind == "float64":
        return [float(value) for value in values]  # ints beyond 2^53 round, as docs/format.md allows
    if kind == "string":
        return [value.encode() for value in values]
    if kind == "timestamp_us_utc":
        return [(value - _EPOCH) // dt.timedelta(microseconds=1) for value in values]
    return values


def _statistics(kind: str, values: list[Any], nulls: int) -> bytes:
    """A ``Statistics`` struct: null count, and min/max (NaN ignored; none when every value is NaN)."""
    out = _Out()
    out.last = [0]
    out.i64(3, nulls)
    if kind == "float64":
        values = [value for value in values if not math.isnan(value)]
    if values and kind != "binary":
        low, high = min(values), max(values)
        if kind == "float64":  # -0.0 and 0.0 compare equal: widen, as the format asks
            low = -0.0 if low == 0 else low
            high = 0.0 if high == 0 else high
        low_bytes, high_bytes = _plain(kind, [low]), _plain(kind, [high])
        if kind in ("string", "binary"):
            low_bytes, high_bytes = low_bytes[4:], high_bytes[4:]
        if len(low_bytes) <= _MAX_STATISTICS and len(high_bytes) <= _MAX_STATISTICS:
            out.binary(5, high_bytes)
            out.binary(6, low_bytes)
    out.buf.append(0)
    return bytes(out.buf)


def _flat_page(kind: str, nullable: bool, values: Sequence[Any]) -> tuple[bytes, int, bytes | None]:
    """(page body, level count, statistics) of a column that is not a list."""
    present = [value for value in values if value is not None] if nullable else list(values)
    stored = _stored(kind, present)
    body = b""
    if nullable:
        runs: list[list[int]] = []
        for value in values:
            _add_run(runs, 0 if value is None else 1)
        body = _levels(runs)
    body += _plain(kind, stored)
    stats = None if kind == "binary" else _statistics(kind, stored, len(values) - len(present))
    return body, len(values), stats


def _list_page(kind: str, nullable: bool, values: Sequence[Any]) -> tuple[bytes, int, None]:
    """(page body, level count, None) of a one-level list column with nullable elements."""
    base = 1 if nullable else 0  # the definition level of an empty list
    rep: list[list[int]] = []
    dfn: list[list[int]] = []
    present: list[Any] = []
    for value in values:
        if value is None:
            _add_run(rep, 0)
            _add_run(dfn, 0)
        elif not value:
            _add_run(rep, 0)
            _add_run(dfn, base)
        else:
            _add_run(rep, 0)
            _add_run(rep, 1, len(value) - 1)
            if None in value:
                for item in value:
                    _add_run(dfn, base + 1 if item is None else base + 2)
                present += [item for item in value if item is not None]
            else:
                _add_run(dfn, base + 2, len(value))
                present += value
    levels = sum(count for _, count in dfn)
    return _levels(rep) + _levels(dfn) + _plain(kind, _stored(kind, present)), levels, None


def _leaf_schema(out: _Out, name: str, kind: str, repetition: int) -> None:
    physical, converted, logical = _PHYSICAL[kind]
    out.begin(None)
    out.i32(1, physical)
    out.i32(3, repetition)
    out.binary(4, name)
    if converted is not None:
        out.i32(6, converted)
    if logical:
        out.raw(10, _T_STRUCT, logical)
    out.end()


def _schema(out: _Out, columns: Sequence[tuple[str, str, bool]]) -> int:
    """The ``FileMetaData.schema`` list (field 2); returns the number of leaf columns (one a field:
    lists are one level deep)."""
    lists = sum(1 for _, kind, _ in columns if kind.startswith("list<"))
    out.list_of(2, _T_STRUCT, 1 + len(columns) + 2 * lists)
    out.begin(None)
    out.binary(4, "schema")
    out.i32(5, len(columns))
    out.end()
    for name, kind, nullable in columns:
        repetition = _OPTIONAL if nullable else _REQUIRED
        if kind.startswith("list<"):
            out.begin(None)
            out.i32(3, repetition)
            out.binary(4, name)
            out.i32(5, 1)
            out.i32(6, _LIST)
            out.raw(10, _T_STRUCT, _LIST_LOGICAL)
            out.end()
            out.begin(None)
            out.i32(3, _REPEATED)
            out.binary(4, "list")
            out.i32(5, 1)
            out.end()
            _leaf_schema(out, "element", kind[5:-1], _OPTIONAL)
        else:
            _leaf_schema(out, name, kind, repetition)
    return len(columns)


def _page_header(size: int, levels: int, crc: int) -> bytes:
    out = _Out()
    out.i32(1, 0)  # DATA_PAGE
    out.i32(2, size)
    out.i32(3, size)
    out.i32(4, crc - (1 << 32) if crc >= 1 << 31 else crc)  # the CRC32 as a signed i32
    out.begin(5)  # DataPageHeader
    out.i32(1, levels)
    out.i32(2, _PLAIN)
    out.i32(3, _RLE)
    out.i32(4, _RLE)
    out.end()
    out.buf.append(0)
    return bytes(out.buf)


def encode(table: str, columns: Mapping[str, Sequence[Any]], num_rows: int) -> bytes:
    """The Parquet file of ``table`` (one of :data:`pipeline.lake.tables.TABLES`) holding ``columns``.

    ``columns`` maps every field of the table to its ``num_rows`` Python values (None for null; a list
    column's values are lists, whose items may be None): ints, floats (ints are taken as floats
    where the field is float64), bools, str, bytes, and ``datetime`` for ``ingested_at``.
    """
    spec = COLUMNS[table]
    data = bytearray(MAGIC)
    chunks: list[tuple[str, str, int, int, int, bytes | None]] = []
    if num_rows:
        for name, kind, nullable in spec:
            values = columns[name]
            if len(values) != num_rows:
                raise ValueError(f"{table}.{name}: {len(values)} values for {num_rows} rows")
            if kind.startswith("list<"):
                body, levels, stats = _list_page(kind[5:-1], nullable, values)
            else:
                body, levels, stats = _flat_page(kind, nullable, values)
            header = _page_header(len(body), levels, zlib.crc32(body))
            offset = len(data)
            data += header
            data += body
            chunks.append((name, kind, offset, len(header) + len(body), levels, stats))
    data += _footer(table, spec, chunks, num_rows)
    return bytes(data)


def _footer(table: str, spec: Sequence[tuple[str, str, bool]],
            chunks: list[tuple[str, str, int, int, int, bytes | None]], num_rows: int) -> bytes:
    out = _Out()
    out.i32(1, 2)  # version
    leaves = _schema(out, spec)
    out.i64(3, num_rows)
    out.list_of(4, _T_STRUCT, 1 if chunks else 0)
    if chunks:
        out.begin(None)  # RowGroup
        out.list_of(1, _T_STRUCT, len(chunks))
        total = 0
        for name, kind, offset, size, levels, stats in chunks:
            is_list = kind.startswith("list<")
            leaf = kind[5:-1] if is_list else kind
            out.begin(None)  # ColumnChunk
            out.i64(2, 0)  # file_offset (deprecated; pyarrow writes 0)
            out.begin(3)  # ColumnMetaData
            out.i32(1, _PHYSICAL[leaf][0])
            out.list_of(2, _T_I32, 2)
            out.varint(_PLAIN << 1)
            out.varint(_RLE << 1)
            path = [name, "list", "element"] if is_list else [name]
            out.list_of(3, _T_BINARY, len(path))
            for part in path:
                encoded = part.encode()
                out.varint(len(encoded))
                out.buf += encoded
            out.i32(4, 0)  # UNCOMPRESSED
            out.i64(5, levels)
            out.i64(6, size)
            out.i64(7, size)
            out.i64(9, offset)
            if stats is not None:
                out.raw(12, _T_STRUCT, stats)
            out.end()
            out.end()
            total += size
        out.i64(2, total)
        out.i64(3, num_rows)
        out.i64(5, chunks[0][2])
        out.i64(6, total)
        out.i32(7, 0, kind=4)  # ordinal, an i16
        out.end()
    out.list_of(5, _T_STRUCT, 1)
    out.begin(None)  # KeyValue
    out.binary(1, "ARROW:schema")
    out.binary(2, ARROW_SCHEMAS[table])
    out.end()
    out.binary(6, CREATED_BY)
    out.list_of(7, _T_STRUCT, leaves)
    for _ in range(leaves):
        out.buf += b"\x1c\x00\x00"  # ColumnOrder.TYPE_ORDER: TypeDefinedOrder {}
    out.buf.append(0)
    return bytes(out.buf) + struct.pack("<i", len(out.buf)) + MAGIC


def generate_schemas() -> str:
    """The text of :mod:`.smallparquet_schemas`, from :mod:`.tables` and pyarrow (run when a schema changes):

    ``python -c "from pipeline.lake.smallparquet import generate_schemas as g; print(g(), end='')"
    > pipeline/lake/smallparquet_schemas.py``
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .tables import SCHEMAS

    kinds = {pa.int64(): "int64", pa.int32(): "int32", pa.float64(): "float64", pa.bool_(): "bool",
             pa.string(): "string", pa.binary(): "binary", pa.timestamp("us", tz="UTC"): "timestamp_us_utc"}
    lines = ['"""Generated by :func:`pipeline.lake.smallparquet.generate_schemas` from :mod:`pipeline.lake.tables`;',
             'do not edit (tests/lake/test_smallparquet.py regenerates it and compares)."""', "",
             "COLUMNS: dict[str, tuple[tuple[str, str, bool], ...]] = {"]
    for name, schema in SCHEMAS.items():
        lines.append(f"    {name!r}: (")
        for field in schema:
            if pa.types.is_list(field.type):
                if not field.type.value_field.nullable:  # pragma: no cover - none today
                    raise ValueError(f"{name}.{field.name}: list items must be nullable")
                kind = f"list<{kinds[field.type.value_type]}>"
            else:
                kind = kinds[field.type]
            lines.append(f"        ({field.name!r}, {kind!r}, {field.nullable}),")
        lines.append("    ),")
    lines += ["}", "", "# The ARROW:schema key-value metadata pyarrow writes for each table (base64 of its IPC",
              "# schema).", "ARROW_SCHEMAS: dict[str, bytes] = {"]
    for name, schema in SCHEMAS.items():
        sink = io.BytesIO()
        pq.write_table(schema.empty_table(), sink)
        value = pq.read_metadata(io.BytesIO(sink.getvalue())).metadata[b"ARROW:schema"]
        lines.append(f"    {name!r}: (")
        for start in range(0, len(value), 96):
            lines.append(f"        {value[start:start + 96]!r}")
        lines.append("    ),")
    lines += ["}", ""]
    return "\n".join(lines)
