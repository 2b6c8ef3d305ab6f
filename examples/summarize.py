"""Print a short polars summary of a lake: ``python examples/summarize.py [LAKE]``."""

from __future__ import annotations

import sys

import polars as pl

from pipeline.lake.layout import list_episodes, resolve_lake


def main() -> None:
    lake = resolve_lake(sys.argv[1] if len(sys.argv) > 1 else None)
    files = [str(loc.table("episodes")) for loc in list_episodes(lake)]
    if not files:
        print(f"{lake}: no episodes yet")
        return
    episodes = pl.scan_parquet(files, hive_partitioning=True,
                               hive_schema={"environment": pl.String, "episode_id": pl.String})
    summary = (
        episodes.group_by("environment", "algorithm")
        .agg(pl.len().alias("episodes"), pl.col("length").sum().alias("steps"),
             pl.col("total_reward").mean().round(3).alias("mean_total_reward"))
        .sort("environment", "algorithm")
        .collect()
    )
    print(f"lake: {lake}")
    print(summary)


if __name__ == "__main__":
    main()
