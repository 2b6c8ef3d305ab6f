"""Lake: snapshot, tables, partition pruning, SQL, labels, id prefixes; other readers of the lake."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline import AmbiguousEpisodeId, DatasetError, EpisodeNotFound, Lake
from pipeline.lake.tables import TABLES
from tests.dataset_lake import build_lake, copy_lake, documents, expected_agents, expected_episode
from tests.helpers import write_json

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dataset")
    return root / "lake", build_lake(root)


@pytest.fixture
def lake(built: tuple[Path, dict[str, str]]) -> Lake:
    return Lake(built[0])


@pytest.fixture
def ids(built: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return built[1]


# -- summary figures against the source JSON -------------------------------------------------


@pytest.mark.parametrize("name", ["lander", "full", "multi", "cart", "frames"])
def test_episode_figures_equal_the_source(lake: Lake, ids: dict[str, str], name: str) -> None:
    row = lake.episodes().filter(pl.col("episode_id") == ids[name]).collect().row(0, named=True)
    expected = expected_episode(documents()[name])
    assert {key: row[key] for key in expected} == expected


@pytest.mark.parametrize("name", ["lander", "full", "multi", "cart", "frames"])
def test_agent_figures_equal_the_source(lake: Lake, ids: dict[str, str], name: str) -> None:
    rows = lake.episode_agents().filter(pl.col("episode_id") == ids[name]).drop("environment", "episode_id")
    found = {row.pop("agent"): row for row in rows.collect().to_dicts()}
    assert found == expected_agents(documents()[name])


def test_unit_steps_equal_the_source(lake: Lake, ids: dict[str, str]) -> None:
    units = lake.unit_steps().filter(pl.col("episode_id") == ids["full"]).collect()
    source = [(step["number"], row["agent"], unit)
              for step in documents()["full"]["inference"]["steps"] for row in step.get("agent_steps") or ()
              for unit in row.get("unit_steps") or ()]
    assert units.select("step", "agent", "unit", "action", "rewards").rows() == [
        (n, agent, unit["unit"], unit["action"], unit["rewards"]) for n, agent, unit in source
    ]


def test_lunar_lander_component_totals_by_name(lake: Lake, ids: dict[str, str]) -> None:
    named = lake.label_rewards(lake.episode_agents(episodes=ids["lander"]), "reward_totals")
    got = dict(named.select("reward_name", "reward_totals").collect().rows())
    steps = documents()["lander"]["inference"]["steps"]
    names = documents()["lander"]["training"]["reward_mapping"]
    assert got == {name: sum(s["agent_steps"][0]["rewards"][i] for s in steps) for i, name in enumerate(names)}


# -- tables and partitions -------------------------------------------------------------------


def test_every_table_has_the_partition_columns_first(lake: Lake) -> None:
    for table in TABLES:
        assert lake.scan(table).collect_schema().names()[:2] == ["environment", "episode_id"]


def test_environment_names_come_back_unchanged_and_as_strings(lake: Lake) -> None:
    environments = lake.episodes().select("environment").collect()
    assert environments.schema["environment"] == pl.String
    assert sorted(environments["environment"]) == sorted(d["training"]["environment"] for d in documents().values())


def test_an_empty_lake_gives_empty_tables(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "nothing")
    assert len(lake) == 0
    for table in TABLES:
        frame = lake.scan(table).collect()
        assert frame.height == 0 and frame.columns[:2] == ["environment", "episode_id"]


def test_unknown_table_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(DatasetError, match="unknown table 'nope'; the tables are episodes, episode_agents, "):
        lake.scan("nope")


def _assert_scans_only(lake: Lake, plan: str, episode_id: str, table: str = "agent_steps") -> None:
    assert str(lake.resolve(episode_id).table(table)) in plan
    assert [loc.episode_id for loc in lake.locations if loc.episode_id in plan] == [episode_id]


def test_a_filter_on_environment_or_id_scans_only_that_episodes_file(lake: Lake, ids: dict[str, str]) -> None:
    by_environment = lake.agent_steps().filter(pl.col("environment") == "StarCraft/2m_vs_1z")
    by_id = lake.agent_steps().filter(pl.col("episode_id") == ids["cart"])
    by_prefix = lake.steps().filter(pl.col("episode_id").str.starts_with(ids["multi"][:10]))
    by_sql = lake.sql("SELECT step FROM agent_steps WHERE environment = '123'")
    _assert_scans_only(lake, by_environment.explain(), ids["full"])
    _assert_scans_only(lake, by_id.explain(), ids["cart"])
    _assert_scans_only(lake, by_prefix.explain(), ids["multi"], "steps")
    _assert_scans_only(lake, by_sql.explain(), ids["numeric"])  # type: ignore[union-attr]


def test_a_filtered_query_never_opens_other_episodes_files(built: tuple[Path, dict[str, str]],
                                                           tmp_path: Path) -> None:
    """Replace every other episode's files with garbage: the filtered queries must not notice."""
    ids = built[1]
    lake = Lake(copy_lake(built[0], tmp_path / "lake"))
    for location in lake.locations:
        if location.episode_id != ids["multi"]:
            for table in TABLES:
                location.table(table).write_bytes(b"not parquet")
    rows = lake.agent_steps().filter(pl.col("environment") == "Duel-v1").select("agent", "step").collect()
    assert rows.height == 7
    sql = lake.sql(f"SELECT count(*) AS n FROM steps WHERE episode_id = '{ids['multi']}'", eager=True)
    assert sql["n"].to_list() == [4]
    assert lake.steps(episodes=ids["multi"][:8]).collect().height == 4
    with pytest.raises(pl.exceptions.PolarsError):
        lake.agent_steps().collect()


def test_episodes_selection_builds_the_scan_from_those_files_only(lake: Lake, ids: dict[str, str]) -> None:
    frame = lake.agent_steps(episodes=[ids["cart"][:6], ids["numeric"]])
    assert sorted(frame.select("episode_id").unique().collect()["episode_id"]) == sorted([ids["cart"], ids["numeric"]])


def test_selection_by_a_filtered_frame(lake: Lake, ids: dict[str, str]) -> None:
    good = lake.episode_agents().filter(pl.col("total_reward") >= 5)
    chosen = {(loc.episode_id, agent) for loc, agent in lake.select(good)}
    expected = {(ids[name], agent) for name in ids for agent, figures in expected_agents(documents()[name]).items()
                if figures["total_reward"] >= 5}
    assert chosen == expected and chosen


# -- SQL -------------------------------------------------------------------------------------


def test_sql_sees_the_five_tables(lake: Lake, ids: dict[str, str]) -> None:
    counts = lake.sql(
        "SELECT (SELECT count(*) FROM episodes) AS e, (SELECT count(*) FROM episode_agents) AS a, "
        "(SELECT count(*) FROM steps) AS s, (SELECT count(*) FROM agent_steps) AS g, "
        "(SELECT count(*) FROM unit_steps) AS u", eager=True).row(0)
    docs = documents().values()
    assert counts == (
        len(ids), sum(expected_episode(d)["agents"] for d in docs), sum(expected_episode(d)["length"] for d in docs),
        sum(expected_episode(d)["agent_steps"] for d in docs), sum(expected_episode(d)["unit_steps"] for d in docs),
    )


def test_sql_joins_and_filters_like_the_readme(lake: Lake, ids: dict[str, str]) -> None:
    result = lake.sql("""
        SELECT e.environment, a.agent, a.total_reward
        FROM episode_agents a JOIN episodes e USING (episode_id)
        WHERE e.environment = 'Duel-v1' AND a.total_reward < 0
    """).collect()
    assert result.rows() == [("Duel-v1", "alpha", -4.5)]


def test_sql_label_tables(lake: Lake, ids: dict[str, str]) -> None:
    labelled = lake.sql(f"""
        SELECT s.step, s.agent, l.action_label
        FROM agent_steps s LEFT JOIN action_labels l ON s.episode_id = l.episode_id AND s.action = l.action
        WHERE s.episode_id = '{ids['multi']}' ORDER BY s.step, s.agent
    """).collect()
    assert labelled.rows() == [(0, "zeta", "left"), (1, "alpha", "fire"), (1, "zeta", "right"),
                               (2, "alpha", "fire"), (2, "zeta", "fire"), (3, "alpha", "fire"), (3, "zeta", "left")]
    names = lake.sql(f"SELECT component, reward_name FROM reward_labels WHERE episode_id = '{ids['lander']}' "
                     "ORDER BY component").collect()
    assert names.rows() == [(0, "Shaping"), (1, "Main engine"), (2, "Leg contact")]


# -- labels ----------------------------------------------------------------------------------


def test_label_actions_for_agents_and_units(lake: Lake, ids: dict[str, str]) -> None:
    agents = lake.label_actions(lake.agent_steps(episodes=ids["full"])).select("step", "agent", "action_label")
    assert agents.collect().rows() == [(0, "team_red", "fire"), (0, "team_blue", "noop"), (2, "team_red", "noop")]
    units = lake.label_actions(lake.unit_steps(episodes=ids["full"])).select("unit", "action", "action_label")
    assert units.collect().rows() == [("marine_1", 0.0, "hold"), ("marine_2", -1.0, None)]


def test_label_actions_without_a_mapping_gives_nulls(lake: Lake, ids: dict[str, str]) -> None:
    labelled = lake.label_actions(lake.agent_steps(episodes=ids["cart"])).collect()
    assert labelled["action_label"].to_list() == [None] * 4


def test_label_rewards_per_step(lake: Lake, ids: dict[str, str]) -> None:
    frame = lake.agent_steps(episodes=ids["full"]).filter(pl.col("agent") == "team_red").select(
        "episode_id", "step", "rewards")
    rows = lake.label_rewards(frame).select("step", "reward_name", "rewards").collect().rows()
    assert rows == [(0, "damage", 1.5), (0, "kills", 0.0), (2, "damage", 2.25), (2, "kills", 1.0)]


# -- episode ids -----------------------------------------------------------------------------


def test_resolve_a_unique_prefix(lake: Lake, ids: dict[str, str]) -> None:
    for episode_id in ids.values():
        short = next(episode_id[:n] for n in range(1, 33)
                     if sum(other.startswith(episode_id[:n]) for other in ids.values()) == 1)
        assert lake.resolve(short).episode_id == episode_id
        assert lake.resolve(episode_id.upper()).episode_id == episode_id


def test_resolve_unknown_and_empty_ids(lake: Lake) -> None:
    with pytest.raises(EpisodeNotFound) as info:
        lake.resolve("zzzz")
    assert str(info.value) == f"no episode 'zzzz' in {lake.path}"
    with pytest.raises(EpisodeNotFound, match=r"^an episode id cannot be empty$"):
        lake.resolve("")


def test_resolve_an_ambiguous_prefix(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake_path = copy_lake(built[0], tmp_path / "lake")
    source = Lake(lake_path).resolve(built[1]["cart"]).path
    for digit in "12":  # two more copies of an episode, under ids that share the prefix "abcd"
        shutil.copytree(source, source.with_name("episode_id=abcd" + digit * 28))
    lake = Lake(lake_path)
    with pytest.raises(AmbiguousEpisodeId) as info:
        lake.resolve("abc")
    assert str(info.value) == (f"episode id prefix 'abc' is ambiguous: it matches 2 episodes "
                               f"(abcd{'1' * 28}, abcd{'2' * 28})")
    assert lake.resolve("abcd2").episode_id == "abcd" + "2" * 28


# -- snapshots -------------------------------------------------------------------------------


def _episode_ids_per_table(lake: Lake) -> dict[str, set[str]]:
    return {table: set(lake.scan(table).select("episode_id").collect()["episode_id"]) for table in TABLES}


_INGEST = """
import sys
from pipeline import ingest
source = sys.stdin.buffer if sys.argv[1] == "-" else sys.argv[1]
sys.exit(0 if ingest(source, lake=sys.argv[2], name=sys.argv[1]).ok else 1)
"""


def _ingest_command(lake: Path, source: str) -> list[str]:
    return [sys.executable, "-c", _INGEST, source, str(lake)]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_a_snapshot_keeps_its_episodes_while_another_process_ingests(
        built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake_path = copy_lake(built[0], tmp_path / "lake")
    lake = Lake(lake_path)
    before = {loc.episode_id for loc in lake.locations}
    source = write_json(tmp_path / "new.json", documents()["multi"] | {
        "training": {"environment": "Duel-v1", "algorithm": "Other", "iterations": 9}})
    process = subprocess.Popen(_ingest_command(lake_path, str(source)), env=_subprocess_env())
    seen = []
    while process.poll() is None and len(seen) < 50:  # read while it runs, as often as we manage
        seen.append(_episode_ids_per_table(lake))
    assert process.wait() == 0
    seen.append(_episode_ids_per_table(lake))
    for tables in seen:
        assert tables["episodes"] == tables["episode_agents"] == tables["steps"] == before
        assert tables["agent_steps"] <= before and tables["unit_steps"] <= before
    after = _episode_ids_per_table(lake.refresh())
    assert len(after["episodes"] - before) == 1
    assert after["episodes"] == after["episode_agents"] == after["steps"] == after["agent_steps"]


def test_a_killed_ingest_is_never_seen(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake_path = copy_lake(built[0], tmp_path / "lake")
    before = _episode_ids_per_table(Lake(lake_path))
    process = subprocess.Popen(_ingest_command(lake_path, "-"), stdin=subprocess.PIPE, env=_subprocess_env())
    assert process.stdin is not None
    process.stdin.write(b'{"training": {"environment": "Duel-v1", "algorithm": "X", "iterations": 1},'
                        b' "inference": {"steps": [')
    process.stdin.write(b",".join(b'{"number": %d, "agent_steps": [{"agent": "a", "action": 0, "reward": 1,'
                                  b' "observation_space": [1, 2]}]}' % i for i in range(2000)))
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not list((lake_path / "_staging").glob("*/episode")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list((lake_path / "_staging").glob("*/episode")), "the ingest never started staging"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdin.close()
    lake = Lake(lake_path)
    assert _episode_ids_per_table(lake) == before
    assert len(lake) == len(before["episodes"])


# -- other readers ---------------------------------------------------------------------------


def test_duckdb_reads_the_lake_as_the_readme_says(built: tuple[Path, dict[str, str]], lake: Lake) -> None:
    duckdb = pytest.importorskip("duckdb")
    query = f"""
        SELECT environment, count(*) AS episodes, avg(total_reward) AS mean_reward
        FROM read_parquet('{built[0]}/*/*/episodes.parquet', hive_partitioning = true,
                          hive_types = {{'environment': VARCHAR, 'episode_id': VARCHAR}})
        GROUP BY environment ORDER BY environment
    """
    expected = (lake.episodes().group_by("environment").agg(pl.len(), pl.col("total_reward").mean())
                .sort("environment").collect().rows())
    assert duckdb.sql(query).fetchall() == expected


def test_pandas_reads_the_lake_as_the_readme_says(built: tuple[Path, dict[str, str]], lake: Lake) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds

    pytest.importorskip("pandas")
    root = str(built[0])
    hive = ds.partitioning(pa.schema([("environment", pa.string()), ("episode_id", pa.string())]), flavor="hive")
    files = glob.glob(f"{root}/*/*/agent_steps.parquet")
    agent_steps = ds.dataset(files, format="parquet", partitioning=hive, partition_base_dir=root).to_table().to_pandas()
    expected = lake.agent_steps().select("environment", "episode_id", "step", "agent", "total_reward").collect()
    got = agent_steps[["environment", "episode_id", "step", "agent", "total_reward"]]
    assert sorted(map(tuple, got.itertuples(index=False))) == sorted(expected.rows())
    assert set(got["environment"]) >= {"123", "StarCraft/2m_vs_1z"}


# -- the README's examples -------------------------------------------------------------------


def _crowdplay_episode(score: float, task: str, source: str) -> dict:
    steps = [{"number": i, "agent_steps": [
        {"agent": "game_0>player_0", "action": 1, "reward": score / 2, "observation_space": [0.0]},
        {"agent": "game_0>player_1", "action": 0, "reward": 1.0, "observation_space": [1.0]},
    ]} for i in range(2)]
    return {"training": {"environment": "SpaceInvaders", "algorithm": "human", "iterations": 1,
                         "config": {"task": task, "source": source}},
            "inference": {"steps": steps}}


def test_the_readme_crowdplay_selections_run(tmp_path: Path) -> None:
    import re

    from pipeline import ingest

    wanted = {}
    for name, score, task, source in [("good", 120, "insideout", "mturk"), ("low", 60, "insideout", "mturk"),
                                      ("task", 150, "outsidein", "mturk"), ("channel", 150, "insideout", "lab")]:
        result = ingest(write_json(tmp_path / f"{name}.json", _crowdplay_episode(score, task, source)),
                        lake=tmp_path / "lake")
        wanted[name] = result.episode_id
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### The CrowdPlay examples"):readme.index("Trajectories (`get_processed")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict = {"pl": pl, "lake": Lake(tmp_path / "lake")}
    exec(blocks[1], namespace)
    assert namespace["chosen"].select("episode_id").collect()["episode_id"].to_list() == [wanted["good"]]
    exec(blocks[2], namespace)
    assert sorted(namespace["chosen"].collect()["episode_id"]) == sorted(wanted.values())
