"""The bundled example ingests: the README's `make run` depends on it."""

from pathlib import Path

import polars as pl

from pipeline import ingest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lunar_lander.json"


def test_bundled_example_ingests_and_reads_back(lake):
    result = ingest(EXAMPLE, lake=lake)
    assert (result.status, result.steps, result.agent_steps) == ("ingested", 60, 60)
    episodes = pl.read_parquet(lake / "*" / "*" / "episodes.parquet", hive_partitioning=True)
    assert episodes["environment"].to_list() == ["LunarLander-v3"]
    assert episodes["episode_id"].to_list() == [result.episode_id]
