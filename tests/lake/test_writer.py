"""The Parquet writer: every table written with its declared schema, one row group per batch, errors as LakeError."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import LakeError
from pipeline.lake import writer as writer_module
from pipeline.lake.tables import SCHEMAS, STEPS, TABLES
from pipeline.lake.writer import EpisodeWriter


def _steps(numbers: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(numbers, pa.int64()), pa.array(range(len(numbers)), pa.int64()),
         pa.array([b"img"] * len(numbers), pa.binary())], schema=STEPS)


def test_every_table_is_written_with_its_schema_even_without_rows(tmp_path: Path) -> None:
    writer = EpisodeWriter(tmp_path)
    writer.write("steps", _steps([0, 1, 2]))
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    for table in TABLES:
        read = pq.read_table(tmp_path / f"{table}.parquet")
        assert read.schema.equals(SCHEMAS[table]), table
    assert pq.read_table(tmp_path / "steps.parquet").column("step").to_pylist() == [0, 1, 2]
    assert pq.read_table(tmp_path / "agent_steps.parquet").num_rows == 0


def test_each_batch_becomes_one_row_group_in_order(tmp_path: Path) -> None:
    writer = EpisodeWriter(tmp_path)
    for start in range(0, 50, 10):
        writer.write("steps", _steps(list(range(start, start + 10))))
    writer.close()
    meta = pq.ParquetFile(tmp_path / "steps.parquet").metadata
    assert meta.num_row_groups == 5
    assert pq.read_table(tmp_path / "steps.parquet").column("step").to_pylist() == list(range(50))
    stats = meta.row_group(2).column(0).statistics
    assert (stats.min, stats.max) == (20, 29), "readers prune row groups by these statistics"


def test_a_failing_disk_is_a_lake_error_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    writer = EpisodeWriter(folder)
    folder.rmdir()
    writer.write("steps", _steps([0]))
    with pytest.raises(LakeError, match=f"could not write {folder}"):
        writer.close()


def test_abort_after_a_failure_raises_nothing_more(tmp_path: Path) -> None:
    writer = EpisodeWriter(tmp_path)
    writer.write("steps", _steps([0]))
    writer.abort()
    writer.abort()  # twice is harmless: the caller's cleanup may run more than once


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("finish", ["close", "abort"])
def test_no_file_stays_open_after_the_episode(tmp_path: Path, finish: str) -> None:
    """A batch of ten thousand files must not leak a descriptor per table (the writer opens the files itself)."""
    before = _open_descriptors()
    writer = EpisodeWriter(tmp_path)
    writer.write("steps", _steps([0, 1]))
    writer.write("agent_steps", pa.Table.from_pylist([], schema=SCHEMAS["agent_steps"]))
    getattr(writer, finish)()
    assert _open_descriptors() <= before


def test_tables_are_whole_when_synced_as_they_grow(tmp_path: Path, monkeypatch) -> None:
    """Files are synced in the background every SYNC_EVERY_BYTES (here after every batch); the tables
    are the same, and every sync is over before the files close."""
    synced: list[int] = []
    real = writer_module._datasync

    def datasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(writer_module, "SYNC_EVERY_BYTES", 1)
    monkeypatch.setattr(writer_module, "_datasync", datasync)
    writer = EpisodeWriter(tmp_path)
    for first in range(0, 30, 3):
        writer.write("steps", _steps([first, first + 1, first + 2]))
    writer.close()
    assert pq.read_table(tmp_path / "steps.parquet").column("step").to_pylist() == list(range(30))
    assert synced  # it did sync early (one at a time: some batches find the last still running)


def test_a_failed_early_sync_fails_the_episode(tmp_path: Path, monkeypatch) -> None:
    """A disk error met by a background sync is the episode's error: after a failed fsync, Linux may
    not report the lost pages to the next one, so it must not be dropped."""

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module, "SYNC_EVERY_BYTES", 1)
    monkeypatch.setattr(writer_module, "_datasync", failing)
    writer = EpisodeWriter(tmp_path)
    with pytest.raises(LakeError, match="Input/output error"):
        for first in range(0, 30, 3):
            writer.write("steps", _steps([first, first + 1, first + 2]))
        writer.close()
    writer.abort()


def _image_steps(images: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(range(len(images)), pa.int64()), pa.array(range(len(images)), pa.int64()),
         pa.array(images, pa.binary())], schema=STEPS)


def _image_compression(folder: Path) -> set[str]:
    meta = pq.ParquetFile(folder / "steps.parquet").metadata
    column = meta.schema.names.index("image")
    return {meta.row_group(g).column(column).compression for g in range(meta.num_row_groups)}


def _codec_names(path: Path, column: str = "image") -> set[str]:
    """The codec of each chunk of ``column`` as the Parquet footer names it (DuckDB spells LZ4_RAW out;
    pyarrow calls both LZ4 codecs "LZ4")."""
    duckdb = pytest.importorskip("duckdb")
    return {row[0] for row in duckdb.sql(
        f"SELECT compression FROM parquet_metadata('{path}') WHERE path_in_schema = '{column}'").fetchall()}


def test_images_are_compressed_only_when_it_shrinks_them(tmp_path: Path) -> None:
    """Frames that a codec shrinks (a poorly compressed image file) take less disk, with LZ4 at ingest and
    zstd in a compacted segment; already dense ones are stored as they are (no CPU spent for nothing);
    either way they read back byte for byte, through pyarrow and polars."""
    import random

    import polars as pl

    from pipeline.lake.segments import with_id, write_segment

    rng = random.Random(7)
    redundant = [bytes([i % 7]) * 3000 + rng.randbytes(100) for i in range(60)]
    dense = [rng.randbytes(3000) for _ in range(60)]
    for name, images, ingest_codec, segment_codec in (("redundant", redundant, "LZ4_RAW", "ZSTD"),
                                                      ("dense", dense, "UNCOMPRESSED", "UNCOMPRESSED")):
        folder = tmp_path / name
        folder.mkdir()
        writer = EpisodeWriter(folder)
        writer.write("steps", _image_steps(images))
        writer.close()
        assert _codec_names(folder / "steps.parquet") == {ingest_codec}, name
        # Row groups of ~128 KB of images: the step numbers come a few dozen a page, LZ4 rather than zstd.
        assert _codec_names(folder / "steps.parquet", "step") == {"LZ4_RAW"}, name
        assert pq.read_table(folder / "steps.parquet").column("image").to_pylist() == images
        assert pl.read_parquet(folder / "steps.parquet")["image"].to_list() == images
        tables = {table: with_id(table, pq.read_table(folder / f"{table}.parquet"), name) for table in TABLES}
        write_segment(tmp_path / f"{name}-segment", tables)
        assert _codec_names(tmp_path / f"{name}-segment" / "steps.parquet") == {segment_codec}, name
        assert pq.read_table(tmp_path / f"{name}-segment" / "steps.parquet").column("image").to_pylist() == images
    assert (tmp_path / "redundant" / "steps.parquet").stat().st_size < sum(map(len, redundant)) // 2


def test_steps_without_images_keep_zstd(tmp_path: Path) -> None:
    """The light codec is for tables cut by image bytes only: steps without frames stay zstd."""
    writer = EpisodeWriter(tmp_path)
    writer.write("steps", pa.RecordBatch.from_arrays(
        [pa.array(range(5000), pa.int64()), pa.array(range(5000), pa.int64()), pa.nulls(5000, pa.binary())],
        schema=STEPS))
    writer.close()
    assert _codec_names(tmp_path / "steps.parquet", "step") == {"ZSTD"}


def test_statistics_are_kept_where_readers_prune_and_values_read_back(tmp_path: Path) -> None:
    """Min/max on the scalar columns (step, agent, rewards: what readers and filters prune by) and none on
    lists; and the values read back the same with pyarrow, polars and DuckDB, negative zeros, NaNs,
    infinities and nulls included."""
    import duckdb
    import polars as pl

    from pipeline.lake.tables import AGENT_STEPS

    n = 500
    floats = [float(v) for v in range(n)]
    floats[:5] = [-0.0, float("nan"), float("inf"), -1e308, 5e-324]
    columns = {
        "step": pa.array(range(n), pa.int64()),
        "agent": pa.array(["a"] * n, pa.string()),
        "action": pa.array(floats, pa.float64()),
        "reward": pa.array([None if i % 7 == 0 else v / 3 for i, v in enumerate(floats)], pa.float64()),
        "total_reward": pa.array(floats, pa.float64()),
        "observation": pa.array([[v, v / 7, -v] for v in floats], pa.list_(pa.float64())),
        "observation_shape": pa.array([[3]] * n, pa.list_(pa.int32())),
    }
    rows = pa.RecordBatch.from_arrays(
        [columns.get(field.name, pa.nulls(n, field.type)) for field in AGENT_STEPS], schema=AGENT_STEPS)
    writer = EpisodeWriter(tmp_path)
    writer.write("agent_steps", rows)
    writer.close()
    path = tmp_path / "agent_steps.parquet"
    group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert chunks["step"].statistics.has_min_max and chunks["reward"].statistics.has_min_max
    assert chunks["observation.list.element"].statistics is None
    written = pa.Table.from_batches([rows])
    assert repr(pq.read_table(path).to_pylist()) == repr(written.to_pylist())  # as text: NaN != NaN
    assert repr(pl.read_parquet(path).to_dicts()) == repr(pl.from_arrow(written).to_dicts())
    ((count, negative_zeros, observations),) = duckdb.sql(
        f"select count(*), count(*) filter (where action = 0 and sign(1 / action) < 0), "
        f"sum(list_sum(observation)) filter (where step > 4) from '{path}'").fetchall()
    assert (count, negative_zeros) == (n, 1)
    assert observations == pytest.approx(sum(v + v / 7 - v for v in floats[5:]))
