"""Minari: datasets made by Minari's own DataCollector, into the lake and back out, array for array.

Everything is local: the datasets are collected here over gymnasium's CartPole and Pendulum into a
temporary MINARI_DATASETS_PATH; nothing is downloaded.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cli import cli
from pipeline import DatasetError, Lake, MissingExtra, SourceError, ingest
from tests.helpers import episode, write_json

minari = pytest.importorskip("minari")
gym = pytest.importorskip("gymnasium")
pytest.importorskip("jax", reason="Minari's DataCollector needs jax (minari[create])")

from pipeline.ingestion.minari import import_minari  # noqa: E402  (after the skips: it is what they guard)

ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations")


@pytest.fixture(scope="module")
def minari_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(home))
        yield home


def collect(dataset_id: str, env_id: str, episodes: int, max_steps: int, data_format: str | None = None,
            **create: Any) -> Any:
    """A Minari dataset recorded by DataCollector from seeded random play."""
    env = minari.DataCollector(gym.make(env_id, max_episode_steps=max_steps), data_format=data_format)
    env.action_space.seed(16)
    for seed in range(episodes):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari's advice about author, code_permalink, ...
        return env.create_dataset(dataset_id, **create)


@pytest.fixture(scope="module")
def cartpole(minari_home: Path) -> Any:
    return collect("cartpole/random-v0", "CartPole-v1", episodes=4, max_steps=20, algorithm_name="random")


@pytest.fixture(scope="module")
def imported(cartpole: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, list[str]]:
    lake_path = tmp_path_factory.mktemp("lake") / "lake"
    results = list(import_minari("cartpole/random-v0", lake=lake_path))
    assert [r.status for r in results] == ["ingested"] * 4, [r.error for r in results]
    return Lake(lake_path), [str(r.episode_id) for r in results]


def in_minari_order(lake: Lake) -> pl.LazyFrame:
    """The lake's episodes in the order of the Minari episodes they came from."""
    index = pl.col("inference_config").str.json_path_match("$.minari.episode").cast(pl.Int64)
    return lake.episodes().sort(index)


def assert_same_episodes(source: Any, copy: Any) -> None:
    assert copy.total_episodes == source.total_episodes and copy.total_steps == source.total_steps
    for a, b in zip(source.iterate_episodes(), copy.iterate_episodes(), strict=True):
        for name in ARRAYS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), (a.id, name)


# -- Minari -> lake -> Minari ----------------------------------------------------------------


def test_round_trip_gives_back_the_same_arrays(imported: tuple[Lake, list[str]], cartpole: Any) -> None:
    lake, _ = imported
    copy = lake.to_minari("cartpole/roundtrip-v0", in_minari_order(lake), env="CartPole-v1")
    loaded = minari.load_dataset("cartpole/roundtrip-v0")  # what a Minari user does
    assert_same_episodes(cartpole, loaded)
    assert_same_episodes(cartpole, copy)
    assert loaded.spec.observation_space == cartpole.spec.observation_space  # Box(..., (4,), float32)
    assert loaded.spec.action_space == cartpole.spec.action_space == gym.spaces.Discrete(2)
    assert loaded.spec.env_spec.id == "CartPole-v1" and loaded.storage.metadata["algorithm_name"] == "random"
    seeds = [m["seed"] for m in loaded.storage.get_episode_metadata(range(4))]
    assert seeds == [0, 1, 2, 3]
    # Both ways for an episode to end occur in this dataset, so both flags made the trip.
    ends = [(bool(e.terminations[-1]), bool(e.truncations[-1])) for e in cartpole.iterate_episodes()]
    assert (True, False) in ends and (False, True) in ends


def test_imported_episodes_in_the_lake(imported: tuple[Lake, list[str]], cartpole: Any) -> None:
    lake, ids = imported
    rows = lake.episodes(episodes=ids).collect()
    assert rows["environment"].unique().to_list() == ["CartPole-v1"]
    assert rows["algorithm"].unique().to_list() == ["random"]
    assert rows["source"].to_list() == sorted(f"minari:cartpole/random-v0#episode-{i}" for i in range(4))
    config = rows["training_config"].str.json_path_match("$.minari.dataset_id").unique().to_list()
    assert config == ["cartpole/random-v0"]
    for index, episode_id in enumerate(ids):
        source = cartpole[index]
        trajectory = lake.trajectory(episode_id)
        assert trajectory.agent == "agent" and len(trajectory) == len(source)
        assert np.array_equal(trajectory.observations, source.observations[:-1])  # float32 values, exactly
        assert np.array_equal(trajectory.actions, source.actions)
        assert np.array_equal(trajectory.rewards, source.rewards)


def test_importing_twice_stores_each_episode_once(imported: tuple[Lake, list[str]]) -> None:
    lake, ids = imported
    again = list(import_minari(minari.load_dataset("cartpole/random-v0"), lake=lake.path))
    assert [(r.status, r.episode_id) for r in again] == [("exists", i) for i in ids]


def test_continuous_actions_and_arrow_storage(minari_home: Path, tmp_path: Path) -> None:
    pendulum = collect("pendulum/random-v0", "Pendulum-v1", episodes=2, max_steps=8, data_format="arrow")
    assert pendulum.spec.action_space.shape == (1,)
    results = list(import_minari(minari_home / "pendulum" / "random-v0", lake=tmp_path / "lake"))  # by folder
    assert [r.status for r in results] == ["ingested"] * 2
    lake = Lake(tmp_path / "lake")
    assert lake.episodes().collect()["algorithm"].to_list() == ["minari"] * 2  # the dataset names none
    copy = lake.to_minari("pendulum/copy-v0", in_minari_order(lake), data_format="arrow")
    assert_same_episodes(pendulum, copy)
    assert copy.spec.action_space == pendulum.spec.action_space


# -- lake -> Minari ----------------------------------------------------------------------------


def test_a_lake_episode_repeats_its_last_observation(minari_home: Path, tmp_path: Path) -> None:
    document = episode(steps=3) | {"action_mapping": {"0": "left", "1": "right", "3": "fire"}}
    for i, step in enumerate(document["inference"]["steps"]):
        step["agent_steps"][0]["observation_space"] = [float(i), -1.5 * i]
        step["agent_steps"][0]["action"] = [0, 3, 1][i]
    result = ingest(write_json(tmp_path / "episode.json", document), lake=tmp_path / "lake")
    dataset = Lake(tmp_path / "lake").to_minari("lake/cartlike-v1", result.episode_id)
    (only,) = list(minari.load_dataset("lake/cartlike-v1").iterate_episodes())
    # N steps, N+1 observations: the lake has no observation after the last action, so the last repeats.
    assert only.observations.tolist() == [[0.0, -0.0], [1.0, -1.5], [2.0, -3.0], [2.0, -3.0]]
    assert only.observations.dtype == np.float64
    assert only.actions.tolist() == [0, 3, 1] and only.rewards.tolist() == [0.0, 1.0, 2.0]
    assert only.terminations.tolist() == [False, False, True] and only.truncations.tolist() == [False] * 3
    assert dataset.spec.action_space == gym.spaces.Discrete(4)  # 0..3, from the action mapping too
    assert dataset.spec.observation_space == gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    assert dataset.spec.env_spec is None and dataset.storage.metadata["algorithm_name"] == "PPO"


def test_float_actions_become_a_box(minari_home: Path, tmp_path: Path) -> None:
    document = episode(steps=2)
    document["inference"]["steps"][1]["agent_steps"][0]["action"] = 0.25
    result = ingest(write_json(tmp_path / "episode.json", document), lake=tmp_path / "lake")
    dataset = Lake(tmp_path / "lake").to_minari("lake/floaty-v0", result.episode_id)
    assert dataset.spec.action_space == gym.spaces.Box(-np.inf, np.inf, (1,), np.float64)
    assert dataset[0].actions.tolist() == [[1.0], [0.25]]


def test_export_refusals_leave_nothing(imported: tuple[Lake, list[str]], minari_home: Path) -> None:
    lake, ids = imported
    before = sorted(p.relative_to(minari_home) for p in minari_home.rglob("*"))
    with pytest.raises(DatasetError, match=r"^a Minari dataset 'cartpole/random-v0' already exists at .*; "
                                           r"choose another name or version \(-vN\)$"):
        lake.to_minari("cartpole/random-v0", ids)
    with pytest.raises(DatasetError, match="Malformed dataset ID: not an id!"):
        lake.to_minari("not an id!", ids)
    with pytest.raises(DatasetError, match=r"^no episode selected: nothing to export$"):
        lake.to_minari("cartpole/none-v0", [])
    with pytest.raises(DatasetError, match=r"^Minari could not write dataset 'cartpole/bad-v0': "):
        lake.to_minari("cartpole/bad-v0", ids, data_format="csv")
    assert sorted(p.relative_to(minari_home) for p in minari_home.rglob("*")) == before


# -- import: the ordinary ingest path --------------------------------------------------------


def buffers_dataset(dataset_id: str, observations: list[np.ndarray], rewards: list[float], space: Any) -> None:
    buffer = minari.data_collector.EpisodeBuffer(
        observations=np.stack(observations), actions=np.zeros(len(rewards), np.int64), rewards=rewards,
        terminations=[False] * (len(rewards) - 1) + [True], truncations=[False] * len(rewards), infos={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, [buffer], observation_space=space,
                                           action_space=gym.spaces.Discrete(2))


def test_an_invalid_episode_is_refused_by_the_ordinary_rules(minari_home: Path, tmp_path: Path) -> None:
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    buffers_dataset("odd/nan-v0", [np.zeros(2)] * 3, [1.0, float("nan")], space)
    (result,) = import_minari("odd/nan-v0", lake=tmp_path / "lake")
    assert result.status == "invalid" and result.error is not None
    # NaN is not JSON: the document carries it as written (NaN), and the parser refuses that step.
    assert (result.error.rule, result.error.path) == ("file.json", "inference.steps[1]")  # type: ignore[attr-defined]
    assert str(result.error).startswith("minari:odd/nan-v0#episode-0: inference.steps[1] (at or before byte ")
    assert len(Lake(tmp_path / "lake")) == 0


def test_spaces_the_format_cannot_hold_are_named(minari_home: Path, tmp_path: Path) -> None:
    space = gym.spaces.Box(0, 255, (2, 2, 3), np.uint8)
    buffers_dataset("odd/pixels-v0", [np.zeros((2, 2, 3), np.uint8)] * 2, [1.0], space)
    with pytest.raises(SourceError) as info:
        list(import_minari("odd/pixels-v0", lake=tmp_path / "lake"))
    assert str(info.value) == (f"odd/pixels-v0: observation space {space} does not fit the episode format "
                               f"(numbers in 1-D or 2-D arrays)")


# -- the command line and the missing extra ---------------------------------------------------


def test_cli_import_minari(cartpole: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    lake = str(tmp_path / "lake")
    first = runner.invoke(cli, ["import", "minari", "cartpole/random-v0", "--lake", lake])
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("minari:cartpole/random-v0#episode-0: ingested episode ")
    assert f"({len(cartpole[0])} steps, {len(cartpole[0])} agent steps, 0 unit steps, " in lines[0]
    assert first.stderr == "4 episodes: 4 ingested, 0 already present, 0 invalid, 0 failed\n"
    again = runner.invoke(cli, ["import", "minari", str(Path(cartpole.spec.data_path).parent), "--lake", lake,
                                "--json"])
    assert again.exit_code == 0 and again.stderr.startswith("4 episodes: 0 ingested, 4 already present")
    assert [line.count('"status": "exists"') for line in again.stdout.splitlines()] == [1] * 4
    missing = runner.invoke(cli, ["import", "minari", "nobody/nothing-v0", "--lake", lake])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: nobody/nothing-v0: no local Minari dataset with this id in ")
    assert missing.stderr.endswith("(and no such folder); nothing is downloaded\n")


def test_missing_minari_gives_the_install_line(imported: tuple[Lake, list[str]], monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    lake, ids = imported
    monkeypatch.setitem(sys.modules, "minari", None)  # makes `import minari` raise ImportError
    with pytest.raises(MissingExtra) as info:
        lake.to_minari("cartpole/other-v0", ids)
    line = "Minari datasets needs minari, which is not installed: pip install 'ingest-pipeline[minari]'"
    assert str(info.value) == line
    result = CliRunner().invoke(cli, ["import", "minari", "cartpole/random-v0", "--lake", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr == f"Error: {line}\n"
