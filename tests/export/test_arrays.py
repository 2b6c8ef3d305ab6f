"""Exports: numpy arrays, .npz round trip, d3rlpy datasets and a short d3rlpy training run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import DatasetError, FrameOptions, Lake, MissingExtra, ingest
from pipeline.export.arrays import channels_first
from tests.dataset_lake import build_lake
from tests.helpers import episode, write_json


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict[str, str]]:
    root = tmp_path_factory.mktemp("exports")
    ids = build_lake(root, ["lander", "cart", "numeric", "frames", "multi", "full"])
    return Lake(root / "lake"), ids


@pytest.fixture
def lake(built: tuple[Lake, dict[str, str]]) -> Lake:
    return built[0]


@pytest.fixture
def ids(built: tuple[Lake, dict[str, str]]) -> dict[str, str]:
    return built[1]


def test_to_numpy_concatenates_trajectories_in_order(lake: Lake, ids: dict[str, str]) -> None:
    arrays = lake.to_numpy([ids["cart"], ids["numeric"]])
    cart, numeric = lake.trajectory(ids["cart"]), lake.trajectory(ids["numeric"])
    assert np.array_equal(arrays["observations"], np.concatenate([cart.observations, numeric.observations]))
    assert np.array_equal(arrays["rewards"], np.concatenate([cart.rewards, numeric.rewards]))
    assert arrays["terminals"].tolist() == [False, False, False, True, False, True]
    assert arrays["steps"].tolist() == [0, 1, 2, 3, 0, 1]
    assert arrays["episode"].tolist() == [0, 0, 0, 0, 1, 1]
    assert arrays["episode_ids"].tolist() == [ids["cart"], ids["numeric"]]
    assert arrays["environments"].tolist() == ["CartPole-v1", "123"]
    assert arrays["agents"].tolist() == ["p0", "p0"]
    assert "reward_components" not in arrays and "frames" not in arrays


def test_the_agent_comes_from_a_selection_frame(lake: Lake, ids: dict[str, str]) -> None:
    losers = lake.episode_agents().filter(pl.col("total_reward") < 0)
    chosen = sorted((t.episode_id, t.agent) for t in lake.trajectories(losers))
    assert chosen == sorted([(ids["multi"], "alpha"), (ids["full"], "team_blue")])
    arrays = lake.to_numpy(losers.filter(pl.col("environment") == "Duel-v1"))
    assert arrays["agents"].tolist() == ["alpha"] and arrays["rewards"].tolist() == [-1.5] * 3


def test_npz_round_trip(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    options = {"frames": FrameOptions(missing="previous", grayscale=True, stack_n=2), "downsample_frequency": 2}
    arrays = lake.to_numpy(ids["lander"], **options)
    path = lake.to_npz(tmp_path / "lander.npz", ids["lander"], **options)
    assert path == tmp_path / "lander.npz" and not list(tmp_path.glob(".*partial"))
    with np.load(path) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for key, value in arrays.items():
            assert np.array_equal(loaded[key], value), key
    assert arrays["frames"].shape == (30, 40, 60, 2) and str(arrays["frame_layout"]) == "THWN"
    assert arrays["reward_names"].tolist() == ["Shaping", "Main engine", "Leg contact"]
    assert arrays["reward_components"].shape == (30, 3)


def test_npz_keeps_the_name_it_was_given(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    assert lake.to_npz(tmp_path / "cart.data", ids["cart"]).exists()
    assert not (tmp_path / "cart.data.npz").exists()


def test_exporting_nothing_is_an_error(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^no episode selected: nothing to export$"):
        lake.to_npz(tmp_path / "x.npz", [])
    assert not (tmp_path / "x.npz").exists()


def test_differently_shaped_observations_cannot_be_concatenated(lake: Lake, ids: dict[str, str]) -> None:
    with pytest.raises(DatasetError, match=r"^the trajectories differ in observation shape: \[\(3,\), \(8,\)\]"):
        lake.to_numpy([ids["cart"], ids["lander"]])


def test_channels_first_for_every_layout() -> None:
    t, n, h, w, c = 2, 3, 4, 5, 6
    base = np.arange(t * n * h * w * c).reshape(t, n, h, w, c)  # TNHWC
    expected = base.transpose(0, 1, 4, 2, 3).reshape(t, n * c, h, w)
    assert np.array_equal(channels_first(base, "TNHWC"), expected)
    assert np.array_equal(channels_first(base.transpose(0, 2, 3, 4, 1), "THWCN"), expected)
    gray = base[..., 0]  # TNHW
    assert np.array_equal(channels_first(gray, "TNHW"), gray)
    assert np.array_equal(channels_first(gray.transpose(0, 2, 3, 1), "THWN"), gray)
    assert channels_first(gray[:, 0], "THW").shape == (t, 1, h, w)
    assert np.array_equal(channels_first(base[:, 0], "THWC"), base[:, 0].transpose(0, 3, 1, 2))


def test_d3rlpy_missing_gives_the_install_line(lake: Lake, ids: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # makes `import d3rlpy` raise ImportError
    with pytest.raises(MissingExtra) as info:
        lake.to_d3rlpy(ids["cart"])
    assert str(info.value) == "d3rlpy export needs d3rlpy, which is not installed: pip install 'ingest-pipeline[rl]'"
    assert isinstance(info.value, ImportError)


def test_d3rlpy_dataset_round_trip(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    d3rlpy = pytest.importorskip("d3rlpy")
    from pipeline.export.arrays import dump_d3rlpy

    dataset = lake.to_d3rlpy(ids["lander"])
    trajectory = lake.trajectory(ids["lander"])
    assert len(dataset.episodes) == 1
    stored = dataset.episodes[0]
    assert np.array_equal(stored.observations, trajectory.observations.astype(np.float32))
    assert np.array_equal(stored.actions.ravel(), trajectory.actions)
    assert np.array_equal(stored.rewards.ravel(), trajectory.rewards.astype(np.float32))
    assert stored.terminated
    assert dataset.dataset_info.action_space == d3rlpy.constants.ActionSpace.DISCRETE
    path = dump_d3rlpy(dataset, tmp_path / "lander.h5")
    with open(path, "rb") as file:
        loaded = d3rlpy.dataset.ReplayBuffer.load(file, d3rlpy.dataset.InfiniteBuffer())
    assert np.array_equal(loaded.episodes[0].observations, stored.observations)


def test_d3rlpy_frames_are_channels_first(lake: Lake, ids: dict[str, str]) -> None:
    pytest.importorskip("d3rlpy")
    options = FrameOptions(grayscale=True, stack_n=4, resize=(8, 8))
    dataset = lake.to_d3rlpy(ids["frames"], observation="frames", frames=options)
    observations = dataset.episodes[0].observations
    assert observations.shape == (6, 4, 8, 8) and observations.dtype == np.uint8
    assert observations[:, :, 0, 0].tolist() == [[10, 10, 10, 10], [10, 10, 10, 20], [10, 10, 20, 30],
                                                 [10, 20, 30, 40], [20, 30, 40, 50], [30, 40, 50, 60]]


def test_d3rlpy_refuses_negative_discrete_actions(tmp_path: Path) -> None:
    pytest.importorskip("d3rlpy")
    document = episode(steps=3)
    document["inference"]["steps"][1]["agent_steps"][0]["action"] = -1
    result = ingest(write_json(tmp_path / "episode.json", document), lake=tmp_path / "lake")
    with pytest.raises(DatasetError) as info:
        Lake(tmp_path / "lake").to_d3rlpy(str(result.episode_id))
    assert str(info.value) == ("discrete actions must be 0 or more for d3rlpy, found -1 "
                               "(-1 conventionally means no/unknown action)")


def test_discrete_bc_trains_a_few_steps_on_exported_data(lake: Lake, ids: dict[str, str]) -> None:
    d3rlpy = pytest.importorskip("d3rlpy")
    dataset = lake.to_d3rlpy([ids["lander"], ids["lander"]])
    algo = d3rlpy.algos.DiscreteBCConfig(batch_size=16).create(device="cpu:0")
    history = algo.fit(dataset, n_steps=20, n_steps_per_epoch=10, show_progress=False,
                       logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=1000)
    assert [epoch for epoch, _ in history] == [1, 2]
    assert all(np.isfinite(metrics["loss"]) for _, metrics in history)
    actions = algo.predict(lake.trajectory(ids["lander"]).observations[:5].astype(np.float32))
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1, 2, 3}
