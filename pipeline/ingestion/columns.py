"""The containers of a batch's rows before conversion: :class:`Piece`, and the columns kept beside the rows.

:class:`FloatListColumn` (observations and other number lists) and :class:`ImageColumn` (frames) hold
Python values as they come; :mod:`.arrowrows` converts them to Arrow, or :func:`python_columns` gives the
small writer (:mod:`pipeline.lake.smallparquet`) plain lists. Nothing here imports pyarrow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate, chain, islice
from typing import TYPE_CHECKING, Any

from ..lake.smallparquet_schemas import COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Piece:
    """Rows of one table, not converted yet: the parsed dicts and the columns they lack.

    ``columns`` maps a field to its values (a list, or a :class:`FloatListColumn`); every other field
    of the table is taken from the row dicts (missing keys are nulls). ``count`` is the number of rows.
    Converted to Arrow by :func:`pipeline.ingestion.arrowrows.to_batch`, or to Python columns for the small
    writer by :func:`python_columns`.
    """

    count: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, Any] = field(default_factory=dict)


def python_columns(table: str, piece: Piece) -> dict[str, list[Any]]:
    """Every field of ``table`` as a list of Python values, for :func:`pipeline.lake.smallparquet.encode`."""
    out: dict[str, list[Any]] = {}
    for name, _, _ in COLUMNS[table]:
        values = piece.columns.get(name)
        if values is None:
            values = [row.get(name) for row in piece.rows]
        elif isinstance(values, FloatListColumn):
            values = values.lists()
        elif isinstance(values, ImageColumn):
            values = values.values()
        out[name] = values
    return out


class ImageColumn:
    """The ``image`` column of a batch of steps: frames given one by one, or a batch's frames joined.

    The two-process ingest's reader sends a batch's frames as one bytes object and their lengths
    (:func:`pipeline.ingestion.parallel._frames_out`), so the writer never makes a bytes object per
    frame, or their base64 text, which the writer decodes into a list of frames; the single-process
    path appends each step's frame. Either way the Arrow array
    (:func:`pipeline.ingestion.arrowrows.image_array`) copies the bytes once, into memory of the
    right size, and the small writer gets each row's frame from :meth:`values`.
    """

    def __init__(self) -> None:
        self.lengths: list[int] = []  # of each row's frame; -1: no frame (null)
        self.chunks: list[bytes] = []
        self.count = 0  # rows with a frame

    def __len__(self) -> int:
        return len(self.lengths)

    def append(self, value: bytes | None) -> None:
        if value is None:
            self.lengths.append(-1)
        else:
            self.lengths.append(len(value))
            self.chunks.append(value)
            self.count += 1

    def extend_joined(self, lengths: list[int], chunks: list[bytes]) -> None:
        """Rows whose frames are ``chunks`` joined, cut at ``lengths`` (-1: a row without a frame)."""
        self.lengths += lengths
        self.chunks += chunks
        self.count += len(lengths) - lengths.count(-1)

    def array(self) -> pa.Array:
        from .arrowrows import image_array

        return image_array(self.lengths, self.chunks, self.count)

    def values(self) -> list[bytes | None]:
        """Each row's frame (None: no frame): for the small writer."""
        data = b"".join(self.chunks)
        out: list[bytes | None] = []
        start = 0
        for length in self.lengths:
            if length < 0:
                out.append(None)
            else:
                out.append(data[start : start + length])
                start += length
        return out


class FloatListColumn:
    """A ``list<float64>`` column built row by row from flat values, converted in bulk.

    A row's values are either bytes (every value an integer 0..255, one byte each; see
    :func:`pipeline.ingestion.rules.flatten_observation`) or a list of numbers. Consecutive rows of the same
    kind share one buffer, so a run of pixel observations is one ``uint8 -> float64`` cast.
    """

    def __init__(self) -> None:
        self.offsets = [0]
        self.values = 0
        self._chunks: list[bytearray | list[Any]] = []  # runs of rows of one kind

    def append(self, values: bytes | bytearray | list[Any]) -> None:
        """One row's values: bytes (``marshal`` turns a bytearray into bytes) or numbers."""
        self.values += len(values)
        self.offsets.append(self.values)
        chunks = self._chunks
        last = chunks[-1] if chunks else None
        if isinstance(values, list):
            if isinstance(last, list):
                last += values
            else:
                chunks.append(list(values))  # a copy: the chunk grows, the row's list must not
        elif isinstance(last, bytearray):
            last += values
        else:
            chunks.append(bytearray(values))

    def extend(self, rows: list[list[Any]]) -> None:
        """Many rows of numbers at once (lists, as the parser made them): what ``append`` of each does.

        Rows of integers from 0 to 255 (small integer observations) become one bytearray for all of
        them, as :func:`~pipeline.ingestion.rules.flatten_observation` makes of one row: ~8 ns a
        value, where the Arrow conversion of Python numbers costs ~40 ns (measured).
        """
        lengths = list(map(len, rows))
        self.offsets.extend(islice(accumulate(lengths, initial=self.values), 1, None))
        self.values += sum(lengths)
        chunks = self._chunks
        last = chunks[-1] if chunks else None
        if rows and rows[0] and type(rows[0][0]) is int:
            try:
                data = bytearray(chain.from_iterable(rows))
            except (TypeError, ValueError):  # a float, a negative number or one above 255
                pass
            else:
                if isinstance(last, bytearray):
                    last += data
                else:
                    chunks.append(data)
                return
        if isinstance(last, list):
            last.extend(chain.from_iterable(rows))
        else:
            chunks.append(list(chain.from_iterable(rows)))

    def array(self) -> pa.ListArray:
        from .arrowrows import float_list_array

        return float_list_array(self.offsets, self._chunks)

    def lists(self) -> list[list[Any]]:
        """Each row's values as a list (bytes' values as ints): for the small writer."""
        values = list(chain.from_iterable(self._chunks))
        offsets = self.offsets
        return [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


__all__ = ["FloatListColumn", "ImageColumn", "Piece", "python_columns"]
