"""Parquet writers for one episode's tables, flushing batches as they come.

Encoding and zstd compression run in pyarrow's C++ code with the GIL released, so writes go to
one background thread: the parser keeps the first core busy while the second compresses. At most
``MAX_IN_FLIGHT`` batches wait for the writer, which keeps memory flat.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LakeError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

# pyarrow is imported on first use (by EpisodeWriter), not with this module: the lake's layout code
# (commit.py imports fsync_path) and the command line's start-up do without it.

MAX_IN_FLIGHT = 2
COMPRESSION = "zstd"
# Steps tables that hold images are written in row groups of about this many image bytes: a reader
# that wants a few steps' images (the sampler) reads and verifies whole row groups, ~2.6 ms for a
# 2000-image group against ~0.2 ms for 64 images of 1.7 KB (measured, pyarrow 26, checksums on).
IMAGE_GROUP_BYTES = 128 * 1024
MIN_IMAGE_GROUP_ROWS = 16
# Dictionary encoding pays for names that repeat on every row, not for measurements.
_DICTIONARY_COLUMNS = ["agent", "unit", "algorithm", "source"]
# Image files (PNG, JPEG) are compressed already, but not always well: a general-purpose codec over
# them found ~0% in frames64's and random's 64x64 PNGs and 23-26% in frames' 600x400 ones (Pillow's
# default PNG level). So the image column is compressed only when a sample of the episode's first
# images shrinks by :data:`IMAGE_GAIN` under the codec (:func:`images_compress`), else stored as it
# is. At ingest the codec is LZ4 (LZ4_RAW), not zstd: on frames' 70 MB of PNG it stores 77.0% of
# the bytes against zstd's 74.5%, for 0.044 s of CPU against 0.16 s (measured, pyarrow 26, one
# process); compaction, off the ingest's path, writes zstd (lake/segments.py). The column's min/max
# statistics would only add a copy of two images per row group to the footer (~7% of frames'
# steps.parquet), for no reader.
_IMAGE_COLUMNS = frozenset({"image"})
IMAGE_CODEC = "lz4_raw"
IMAGE_GAIN = 0.9
_IMAGE_SAMPLE_BYTES = 256 * 1024


# A table's file is synced to disk as it grows, every this many bytes written (fdatasync, on a thread of
# its own: the writer thread goes on meanwhile), so that the fsyncs before the commit wait for the last
# few MiB only. On this machine's disk an fsync waits ~0.9 ms a MiB for what the device still holds,
# started writeback (sync_file_range) or not: 63 ms for 70 MB written at once, 50 ms with writeback
# started after each 5 MB, 0.2 ms after a fdatasync every 5 MB (measured). Done on the writer thread
# itself, the waits (~9 ms each) held the writer up and the whole ingest with it.
SYNC_EVERY_BYTES = 4 * 1024 * 1024
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents (its entries, for a directory) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def images_compress(rows: pa.RecordBatch | pa.Table, codec: str = IMAGE_CODEC) -> bool:
    """Whether ``codec`` shrinks the images of ``rows`` (their first :data:`_IMAGE_SAMPLE_BYTES`) to
    :data:`IMAGE_GAIN` of their size or less; False without images."""
    import pyarrow as pa

    if "image" not in rows.schema.names:
        return False
    sample, size = [], 0
    for value in rows.column("image").slice(0, 64).to_pylist():  # a batch's first images, not all of them
        if value:
            sample.append(value)
            size += len(value)
            if size >= _IMAGE_SAMPLE_BYTES:
                break
    if not size:
        return False
    data = b"".join(sample)
    return len(pa.Codec(codec).compress(data, asbytes=True)) <= IMAGE_GAIN * size


def table_compression(names: Sequence[str], image_codec: str | None, *,
                      image_groups: bool = False) -> str | dict[str, str]:
    """The ``compression`` argument for a table of columns ``names``: :data:`COMPRESSION` for every
    column but the images, which get ``image_codec`` (None: stored as they are).

    ``image_groups``: the table is cut into row groups of about :data:`IMAGE_GROUP_BYTES` of images,
    so each of its other columns comes in pages of a few dozen values; those get :data:`IMAGE_CODEC`
    too, because pyarrow's zstd makes a compression context for every page it compresses: on
    frames (100 MB) that cost ~0.05 s of CPU, to store 72 KB fewer of a 53 MB file (measured).
    """
    if not _IMAGE_COLUMNS.intersection(names):  # flat tables only: a nested column's name is its path
        return COMPRESSION
    other = IMAGE_CODEC if image_groups else COMPRESSION
    return {name: (image_codec or "none") if name in _IMAGE_COLUMNS else other for name in names}


def image_group_rows(rows: pa.RecordBatch | pa.Table) -> int | None:
    """Rows per row group for steps with images (about :data:`IMAGE_GROUP_BYTES` of them), else None."""
    if "image" not in rows.schema.names or rows.num_rows == 0:
        return None
    image_bytes = rows.column("image").nbytes
    if image_bytes <= IMAGE_GROUP_BYTES:
        return None
    return max(MIN_IMAGE_GROUP_ROWS, rows.num_rows * IMAGE_GROUP_BYTES // image_bytes)


class EpisodeWriter:
    """Writes the five tables of one episode as ``<table>.parquet`` files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._sinks: dict[str, pa.NativeFile] = {}  # the files the writers write to (closed after them)
        self._small: set[str] = set()  # tables written whole by write_columns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._in_flight: deque[Future[None]] = deque()
        self._closed = False
        self._synced: dict[str, int] = {}  # bytes of each table's file when its last early sync began
        self._syncer: ThreadPoolExecutor | None = None  # started by the first early sync
        self._sync: Future[None] | None = None  # the last early sync

    def path(self, table: str) -> Path:
        return self.folder / f"{table}.parquet"

    def write(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        """Queue one batch (or a small table) for ``table``; raise the writer's error, if any."""
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._wait_oldest()
        self._in_flight.append(self._pool.submit(self._write, table, batch))

    def write_columns(self, table: str, columns: Mapping[str, Sequence[Any]], num_rows: int) -> None:
        """Write the whole of ``table`` from Python values, with :mod:`.smallparquet` (no pyarrow).

        For a small episode: every field's ``num_rows`` values (see :func:`.smallparquet.encode`).
        """
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._wait_oldest()
        self._small.add(table)
        self._in_flight.append(self._pool.submit(self._write_columns, table, columns, num_rows))

    def _write_columns(self, table: str, columns: Mapping[str, Sequence[Any]], num_rows: int) -> None:
        from .smallparquet import encode

        self.path(table).write_bytes(encode(table, columns, num_rows))

    def _write(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        import pyarrow as pa

        group_rows = image_group_rows(batch) if table == "steps" else None
        writer = self._writers.get(table)
        if writer is None:
            writer = self._writers[table] = self._open(table, compress_images=images_compress(batch),
                                                       image_groups=group_rows is not None)
        if isinstance(batch, pa.RecordBatch):
            writer.write_batch(batch, row_group_size=group_rows)
        else:
            writer.write_table(batch, row_group_size=group_rows)
        self._sync_early(table)

    def _sync_early(self, table: str) -> None:
        """Sync ``table``'s file in the background once :data:`SYNC_EVERY_BYTES` more are written, one
        sync at a time (a table that grows while one runs is synced after a later batch); a failed
        sync's error is raised here, or by :meth:`close`."""
        written = self._sinks[table].tell()
        if written - self._synced.get(table, 0) < SYNC_EVERY_BYTES:
            return
        if self._sync is not None:
            if not self._sync.done():
                return
            self._sync.result()  # its error, if any: a later fsync may not report it again
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-sync")
        self._sync = self._syncer.submit(_datasync, self._sinks[table].fileno())
        self._synced[table] = written

    def _open(self, table: str, *, compress_images: bool = False, image_groups: bool = False) -> pq.ParquetWriter:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .tables import SCHEMAS

        schema = SCHEMAS[table]
        names = schema.names
        # Statistics on every column but lists and images, as smallparquet writes them: no reader prunes
        # by an observation's values, and pyarrow's min/max over them were ~11% of the writer's CPU on
        # 173k agent steps of 128 values (measured alone).
        statistics = [field.name for field in schema if field.name not in _IMAGE_COLUMNS
                      and not pa.types.is_list(field.type)]
        # Not BYTE_STREAM_SPLIT for floats: on pixel values it halved the writer's CPU and shrank the
        # file by a fifth, but on short decimals that repeat (3-place rewards and health) it broke up the
        # whole doubles zstd matches, and teams_plain's episode grew from 23.1 to 53.6 MB (measured).
        # pyarrow's own file (written without the GIL), opened here so that its descriptor is known.
        sink = self._sinks[table] = pa.OSFile(str(self.path(table)), "wb")
        return pq.ParquetWriter(
            sink, schema, compression=table_compression(
                names, IMAGE_CODEC if compress_images else None, image_groups=image_groups),
            use_dictionary=_DICTIONARY_COLUMNS, write_statistics=statistics,
            # A CRC32 per page, so that readers which verify them (``check --deep``, the engine's
            # pyarrow reads) tell a damaged page from data: without them most flipped bytes in a
            # zstd page decode silently to wrong values (measured: 32 of 40 200-byte flips).
            write_page_checksum=True,
        )

    def _wait_oldest(self) -> None:
        future = self._in_flight.popleft()
        try:
            future.result()
        except OSError as exc:
            raise LakeError(f"could not write {self.folder}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Finish every table (an empty file for a table without rows) and fsync files and folder."""
        try:
            while self._in_flight:
                self._wait_oldest()
            # Here, not on the writer thread: closing a file makes pyarrow copy the metadata of every row
            # group it wrote (~2.7 KB a row group of steps, live until then), and in this thread's malloc
            # arena that copy reuses what the finished batches freed; in the writer thread's own arena it
            # grew the process by as much again (1 GB of 64x64 frames, 5,700 row groups: child peak
            # 125 -> 116 MiB, measured; issue 15).
            self._close_all()
        except OSError as exc:
            raise LakeError(f"could not write {self.folder}: {exc.strerror or exc}") from exc
        finally:
            self._pool.shutdown(wait=True)
            self._stop_syncing()
            self._closed = True

    def _close_all(self) -> None:
        from .smallparquet_schemas import COLUMNS  # the tables' names, without importing pyarrow

        for table in COLUMNS:
            if table not in self._writers and table not in self._small:
                self._writers[table] = self._open(table)
        for writer in self._writers.values():
            writer.close()
        self._stop_syncing()
        if self._sync is not None:
            self._sync.result()
        for sink in self._sinks.values():
            sink.close()
        for table in COLUMNS:
            fsync_path(self.path(table))
        fsync_path(self.folder)

    def abort(self) -> None:
        """Stop writing after a failure; the caller removes the folder."""
        if self._closed:
            return
        for future in self._in_flight:
            future.cancel()
        self._pool.shutdown(wait=True)
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._stop_syncing()
        for sink in self._sinks.values():
            with contextlib.suppress(Exception):
                sink.close()
        self._closed = True

    def _stop_syncing(self) -> None:
        """Wait for the early sync (before the files close: its descriptor must stay theirs)."""
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
            self._syncer = None
