"""One episode's parts through rules, tabulation and the writer: the counts, the files, and a check-only build."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import InvalidEpisode
from pipeline.ingestion.builder import EpisodeBuilder, Facts
from pipeline.lake.tables import SCHEMAS, TABLES
from tests.helpers import episode


def _build(document: dict, folder: Path | None):
    builder = EpisodeBuilder(folder)
    builder.part("training", document["training"])
    for step in document["inference"]["steps"]:
        builder.step(step)
    return builder.finish(Facts(source="e.json", content_hash="ab" * 32, source_bytes=123))


def test_a_built_episode_has_its_counts_and_five_files(tmp_path: Path) -> None:
    built = _build(episode(steps=4), tmp_path)
    assert (built.environment, built.steps, built.agent_steps, built.unit_steps) == ("CartPole-v1", 4, 4, 0)
    for table in TABLES:
        assert pq.read_schema(tmp_path / f"{table}.parquet").equals(SCHEMAS[table]), table
    row = pq.read_table(tmp_path / "episodes.parquet").to_pylist()[0]
    assert (row["source"], row["source_bytes"], row["length"], row["algorithm"]) == ("e.json", 123, 4, "PPO")


def test_a_check_only_build_writes_nothing_and_counts_the_same(tmp_path: Path) -> None:
    built = _build(episode(steps=4), None)
    assert (built.steps, built.agent_steps) == (4, 4)
    assert list(tmp_path.iterdir()) == []


def test_a_step_breaking_a_rule_stops_the_build_with_its_step_number() -> None:
    document = episode(steps=3)
    document["inference"]["steps"][2]["number"] = 1  # repeats step 1
    with pytest.raises(InvalidEpisode) as caught:
        _build(document, None)
    assert (caught.value.rule, caught.value.step) == ("step.number_unique", 1)
