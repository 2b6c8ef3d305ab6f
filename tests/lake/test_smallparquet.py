"""The small Parquet writer (pipeline/lake/smallparquet.py): its files read back as pyarrow's do.

Each table is written both ways from the same values: by pyarrow (the large-file path, through
``pipeline.ingestion.arrowrows``) and by the small encoder; pyarrow, polars and DuckDB must read the
same schema and the same values from both, and pyarrow the same statistics.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given

import pipeline
from pipeline.ingestion.arrowrows import to_batch
from pipeline.ingestion.columns import Piece, python_columns
from pipeline.ingestion.tabulate import BATCH_ROWS, SMALL_ROWS, SMALL_ROWS_VARIABLE
from pipeline.lake import smallparquet
from pipeline.lake.damage import page_problem
from pipeline.lake.layout import list_episodes
from pipeline.lake.smallparquet import encode, generate_schemas
from pipeline.lake.tables import SCHEMAS, TABLES
from tests.helpers import full_episode, write_json
from tests.ingestion.test_roundtrip import PROPERTY, valid_episodes

NAN, INF = float("nan"), float("inf")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Rows that reach every case of the encoder: nulls, NaN and infinities, -0.0, int64 extremes, text
# beyond ASCII and longer than the statistics limit, empty lists against null lists, null items.
AGENT_ROWS = {
    "step": [0, 1, INT64_MIN, INT64_MAX, 7],
    "agent": ["a", "bé 東京", "", "x" * 5000, "\U0001f600"],
    "action": [1.0, NAN, INF, -0.0, -INF],
    "reward": [None, 1, 2.5, None, 2**53],
    "rewards": [[1.0, None], None, [], [NAN], [0.5, 0.25]],
    "total_reward": [1, 2, 3, 4, -1e308],
    "observation": [[1.0] * 3, [], [2.0**60], [None], [0, 255]],
    "observation_shape": [[3], [0], [1], [1], [2]],
    "action_distribution": [None] * 5,
    "health": [None] * 5,
    "value_estimate": [1.0, None, None, 0.0, NAN],
    "predicted_reward": [NAN, NAN, None, NAN, NAN],
    "enemy_agent_health": [None, [], None, [1.0], []],
    "enemy_unit_health": [None, None, None, None, None],
    "custom_metrics": [None, '{"a": "ü"}', None, "x", "{}"],
}
EPISODE_ROW = {
    "source": "/tmp/ep.json", "content_hash": "ab" * 32, "source_bytes": 123,
    "ingested_at": dt.datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=dt.UTC), "pipeline_version": "0.1",
    "algorithm": "PPO", "training_parallel": True, "num_gpus": 0.5, "iterations": INT64_MAX,
    "training_config": "{}", "reward_mapping": ["a", None, "ü"], "inference_parallel": False,
    "inference_config": "{}", "action_mapping": None, "length": 5, "agent_steps": 5, "unit_steps": 0,
    "agents": 2, "images": 0, "first_step": INT64_MIN, "last_step": INT64_MAX, "total_reward": NAN,
}


def _both(table: str, columns: dict[str, list[Any]]) -> tuple[bytes, bytes]:
    """``columns`` written by the small encoder and by pyarrow (as EpisodeWriter does: checksums on)."""
    count = len(next(iter(columns.values())))
    ours = encode(table, columns, count)
    theirs = io.BytesIO()
    pq.write_table(pa.Table.from_batches([to_batch(table, Piece(count, columns={
        name: list(values) for name, values in columns.items()}))]), theirs, write_page_checksum=True)
    return ours, theirs.getvalue()


def _comparable(rows: list[dict[str, Any]]) -> str:
    """Rows as text: NaN equals NaN, and -0.0 differs from 0.0."""
    return repr(rows)


def _assert_same(ours: bytes, theirs: bytes) -> None:
    mine, reference = pq.read_table(io.BytesIO(ours)), pq.read_table(io.BytesIO(theirs))
    assert mine.schema.equals(reference.schema, check_metadata=True)
    assert _comparable(mine.to_pylist()) == _comparable(reference.to_pylist())
    left, right = pl.read_parquet(io.BytesIO(ours)), pl.read_parquet(io.BytesIO(theirs))
    assert left.schema == right.schema
    assert _comparable(left.to_dicts()) == _comparable(right.to_dicts())
    assert pq.read_metadata(io.BytesIO(ours)).schema.equals(pq.read_metadata(io.BytesIO(theirs)).schema)


def test_the_generated_schemas_are_current() -> None:
    """smallparquet_schemas.py is what generate_schemas() makes from tables.py today."""
    assert (Path(smallparquet.__file__).parent / "smallparquet_schemas.py").read_text() == generate_schemas()
    assert tuple(smallparquet.COLUMNS) == TABLES


@pytest.mark.parametrize("table", TABLES)
def test_an_empty_table_reads_as_pyarrows(table: str) -> None:
    ours = encode(table, {}, 0)
    theirs = io.BytesIO()
    pq.write_table(SCHEMAS[table].empty_table(), theirs)
    assert pq.read_metadata(io.BytesIO(ours)).num_row_groups == 0
    _assert_same(ours, theirs.getvalue())
    assert pq.read_table(io.BytesIO(ours)).schema == SCHEMAS[table]


def test_extreme_values_read_back_equal() -> None:
    _assert_same(*_both("agent_steps", AGENT_ROWS))
    _assert_same(*_both("episodes", {name: [value] for name, value in EPISODE_ROW.items()}))


def test_duckdb_reads_the_same_rows(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    for table, columns in (("agent_steps", AGENT_ROWS),
                           ("episodes", {name: [value] for name, value in EPISODE_ROW.items()})):
        ours, theirs = _both(table, columns)
        (tmp_path / "ours.parquet").write_bytes(ours)
        (tmp_path / "theirs.parquet").write_bytes(theirs)
        found = [repr(duckdb.sql(f"SELECT * FROM '{tmp_path / name}.parquet'").fetchall())
                 for name in ("ours", "theirs")]
        assert found[0] == found[1]


def test_statistics_are_pyarrows_on_every_flat_column() -> None:
    """What readers prune row groups by (agent, step, ids, ...): pyarrow writes them on every column."""
    for table, columns in (("agent_steps", AGENT_ROWS),
                           ("episodes", {name: [value] for name, value in EPISODE_ROW.items()})):
        ours, theirs = (pq.read_metadata(io.BytesIO(data)).row_group(0) for data in _both(table, columns))
        for index in range(ours.num_columns):
            mine, reference = ours.column(index).statistics, theirs.column(index).statistics
            if "." in ours.column(index).path_in_schema:  # a list's items: none written
                assert mine is None or not mine.has_min_max
                continue
            assert mine.null_count == reference.null_count
            assert mine.has_min_max == reference.has_min_max, ours.column(index).path_in_schema
            if mine.has_min_max:
                assert repr((mine.min, mine.max)) == repr((reference.min, reference.max)), ours.column(index)


def test_a_damaged_page_is_found_by_its_checksum(tmp_path: Path) -> None:
    data = bytearray(encode("agent_steps", AGENT_ROWS, 5))
    path = tmp_path / "agent_steps.parquet"
    path.write_bytes(bytes(data))
    assert page_problem(path) is None
    data[30] ^= 0x01  # in the first column's page (the footer is at the end)
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="CRC"):
        pq.ParquetFile(path, page_checksum_verification=True).read()
    assert page_problem(path) is not None


@contextmanager
def _small_rows(value: int) -> Iterator[None]:
    before = os.environ.get(SMALL_ROWS_VARIABLE)
    os.environ[SMALL_ROWS_VARIABLE] = str(value)
    try:
        yield
    finally:
        if before is None:
            del os.environ[SMALL_ROWS_VARIABLE]
        else:
            os.environ[SMALL_ROWS_VARIABLE] = before


def _ingest_both_ways(folder: Path, doc: dict[str, Any]) -> tuple[Path, Path]:
    """The episode ingested through pyarrow (small path off) and through the small writer."""
    path = folder / "episode.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    lakes = (folder / "arrow", folder / "small")
    for lake, rows in zip(lakes, (0, BATCH_ROWS), strict=True):
        with _small_rows(rows):
            assert pipeline.ingest(path, lake=lake).status == "ingested"
    return lakes


def _episode_files(lake: Path) -> dict[str, Path]:
    (location,) = list_episodes(lake)
    return {table: Path(location.path) / f"{table}.parquet" for table in TABLES}


def _assert_lakes_equal(arrow: Path, small: Path) -> None:
    theirs, ours = _episode_files(arrow), _episode_files(small)
    for table in TABLES:
        assert pq.read_metadata(ours[table]).created_by == smallparquet.CREATED_BY
        assert pq.read_metadata(theirs[table]).created_by.startswith("parquet-cpp")
        mine, reference = pq.read_table(ours[table]), pq.read_table(theirs[table])
        assert mine.schema.equals(reference.schema, check_metadata=True)
        if table == "episodes":  # the moment of the ingest differs
            assert mine.column("ingested_at").type == reference.column("ingested_at").type
            mine, reference = mine.drop_columns(["ingested_at"]), reference.drop_columns(["ingested_at"])
        assert _comparable(mine.to_pylist()) == _comparable(reference.to_pylist()), table
        left = pl.read_parquet(ours[table]).drop("ingested_at", strict=False)
        right = pl.read_parquet(theirs[table]).drop("ingested_at", strict=False)
        assert _comparable(left.to_dicts()) == _comparable(right.to_dicts()), table


@PROPERTY
@given(doc=valid_episodes())
def test_generated_episodes_written_both_ways_read_back_equal(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _assert_lakes_equal(*_ingest_both_ways(Path(folder), doc))


def test_every_optional_field_written_both_ways_reads_back_equal(tmp_path: Path) -> None:
    _assert_lakes_equal(*_ingest_both_ways(tmp_path, full_episode()))


def test_python_columns_take_every_field_from_rows_or_columns() -> None:
    piece = Piece(2, [{"agent": "a", "action": 1}, {"agent": "b", "action": 2, "health": 0.5}],
                  {"step": [3, 4], "total_reward": [1.0, 2.0]})
    columns = python_columns("agent_steps", piece)
    assert list(columns) == SCHEMAS["agent_steps"].names
    assert columns["step"] == [3, 4] and columns["agent"] == ["a", "b"] and columns["health"] == [None, 0.5]
    assert columns["custom_metrics"] == [None, None]


def test_small_episodes_compact_and_check(tmp_path: Path) -> None:
    """Episodes the small writer wrote compact into a segment that reads back the same rows."""
    lake = tmp_path / "lake"
    for seed in range(3):
        doc = full_episode()
        doc["training"]["iterations"] = 10 + seed
        with _small_rows(SMALL_ROWS):
            assert pipeline.ingest(write_json(tmp_path / f"ep{seed}.json", doc), lake=lake).status == "ingested"
    assert all(pq.read_metadata(Path(location.path) / "steps.parquet").created_by == smallparquet.CREATED_BY
               for location in list_episodes(lake))
    before = pipeline.Lake(lake).agent_steps().collect().sort(["episode_id", "step", "agent"])
    assert pipeline.check(lake, deep=True).ok
    pipeline.compact(lake, min_entries=2)
    assert all(location.segment for location in list_episodes(lake))
    after = pipeline.Lake(lake).agent_steps().collect().sort(["episode_id", "step", "agent"])
    assert before.equals(after)
    assert pipeline.check(lake, deep=True).ok
