"""Rows and columns of the tables (:class:`pipeline.ingestion.columns.Piece`) -> Arrow record batches.

The pyarrow half of tabulating, imported on an episode's first conversion: a small episode never
needs it (it is written by :mod:`pipeline.lake.smallparquet`; see ``tabulate.SMALL_ROWS``).
"""

from __future__ import annotations

from array import array
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..lake.tables import F64, LIST_F64, SCHEMAS

if TYPE_CHECKING:
    from .columns import Piece


def _float_fields(schema: pa.Schema) -> list[tuple[str, bool]]:
    """Names of float64 and list<float64> fields, each with whether it is a list."""
    return [(f.name, f.type == LIST_F64) for f in schema if f.type in (F64, LIST_F64)]


def _as_floats(rows: list[dict[str, Any]], fields: list[tuple[str, bool]]) -> None:
    """Turn every number in the float fields into a float (slow path for integers beyond 2^53)."""
    for row in rows:
        for name, is_list in fields:
            value = row.get(name)
            if value is not None:
                row[name] = [float(v) for v in value] if is_list else float(value)


def rows_to_batch(rows: list[dict[str, Any]], schema: pa.Schema,
                  columns: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    """Convert row dicts to a record batch of ``schema`` in one pass of pyarrow's C++ converter.

    Keys a row lacks become nulls; keys the schema does not name are ignored. ``columns`` are
    ready-made arrays for some fields (rows need not hold those keys). Integers beyond 2^53
    cannot become float64 exactly, which pyarrow refuses; docs/format.md accepts the rounding.
    """
    columns = columns or {}
    # Only the fields some row holds go through the converter, which looks every field up in every
    # row: most episodes fill 3-5 of agent_steps' 11 optional fields (100k rows of 4 keys: 29 -> 20 ms).
    present = set().union(*rows) if rows else set()
    fields = [field for field in schema if field.name not in columns and field.name in present]
    struct = pa.struct(fields)
    try:
        array = pa.array(rows, type=struct)
    except (pa.ArrowInvalid, OverflowError):
        _as_floats(rows, _float_fields(pa.schema(fields)))
        array = pa.array(rows, type=struct)
    converted = dict(zip([field.name for field in fields], array.flatten(), strict=True))
    converted.update(columns)
    return pa.RecordBatch.from_arrays(
        [converted[field.name] if field.name in converted else pa.nulls(len(rows), field.type) for field in schema],
        schema=schema)


def _floats(values: list[Any]) -> pa.Array:
    """A float64 array of Python numbers (integers beyond 2^53 rounded, as docs/format.md allows)."""
    try:
        return pa.array(values, F64)
    except (pa.ArrowInvalid, OverflowError):
        return pa.array([float(v) for v in values], F64)


def image_array(lengths: list[int], chunks: list[bytes], count: int) -> pa.Array:
    """A binary array of frames given as each row's length (-1: null) and the bytes, in chunks.

    The bytes are copied once, into memory of the right size: ``pa.array`` grows its data buffer
    by doubling, copying it again and touching fresh pages at each step (on a 100 MB file of 64x64
    frames its conversion of ~4,700 images (8 MB) a batch was 0.27 s of the writing process,
    py-spy, loaded). The offsets are int32: a batch holds a few MB of frames (see
    ``tabulate.BATCH_VALUES``), never 2 GB.
    """
    if not count:
        return pa.nulls(len(lengths), pa.binary())
    data = b"".join(chunks)
    nulls = lengths.count(-1)
    validity = None
    if nulls:
        validity = pa.array([n >= 0 for n in lengths], pa.bool_()).buffers()[1]
        lengths = [max(n, 0) for n in lengths]
    offsets = array("i", accumulate(lengths, initial=0))
    return pa.Array.from_buffers(pa.binary(), len(lengths), [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def _binary(values: list[bytes | None]) -> pa.Array:
    """A binary array of ``values`` (frames, or None), through :func:`image_array`."""
    frames = [value for value in values if value is not None]
    return image_array([-1 if value is None else len(value) for value in values], frames, len(frames))


def _bytes_as_floats(data: bytearray) -> pa.Array:
    """A float64 array of the bytes' values (0-255), widened by Arrow in bulk (no numpy needed)."""
    return pa.Array.from_buffers(pa.uint8(), len(data), [None, pa.py_buffer(data)]).cast(F64)


def float_list_array(offsets: list[int], chunks: list[bytearray | list[Any]]) -> pa.ListArray:
    """A ``list<float64>`` array from a :class:`~pipeline.ingestion.columns.FloatListColumn`'s offsets and runs."""
    parts = [_bytes_as_floats(chunk) if isinstance(chunk, bytearray) else _floats(chunk) for chunk in chunks]
    values = parts[0] if len(parts) == 1 else pa.concat_arrays(parts) if parts else pa.array([], F64)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _column(values: Any, type_: pa.DataType) -> pa.Array:
    """A column given beside the rows, converted in bulk."""
    if isinstance(values, list):
        if type_ == F64:
            return _floats(values)
        if type_ == pa.binary():
            return _binary(values)
        return pa.array(values, type_)
    return values.array()  # a FloatListColumn


def to_batch(table: str, piece: Piece) -> pa.RecordBatch:
    """The record batch of ``table`` holding ``piece``'s rows."""
    schema = SCHEMAS[table]
    columns = {name: _column(values, schema.field(name).type) for name, values in piece.columns.items()}
    if len(columns) == len(schema):
        return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)
    return rows_to_batch(piece.rows, schema, columns)
