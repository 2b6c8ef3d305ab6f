"""Trajectories: arrays equal to the source values, agents, shapes, frames, stacking, downsampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pipeline.engine.trajectory
from pipeline import DatasetError, EpisodeNotFound, FrameOptions, Lake, ingest
from pipeline.engine.trajectory import stack_frames
from tests.dataset_lake import agent_rows, build_lake, documents, gray_png, total
from tests.helpers import agent_step, episode, write_json


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict[str, str]]:
    root = tmp_path_factory.mktemp("trajectories")
    ids = build_lake(root)
    return Lake(root / "lake"), ids


@pytest.fixture
def lake(built: tuple[Lake, dict[str, str]]) -> Lake:
    return built[0]


@pytest.fixture
def ids(built: tuple[Lake, dict[str, str]]) -> dict[str, str]:
    return built[1]


def _ingest(tmp_path: Path, document: dict) -> tuple[Lake, str]:
    result = ingest(write_json(tmp_path / "episode.json", document), lake=tmp_path / "lake")
    assert result.status == "ingested", result.error
    return Lake(tmp_path / "lake"), str(result.episode_id)


# -- arrays against the source ---------------------------------------------------------------


def test_vector_observations_and_vector_rewards_equal_the_source(lake: Lake, ids: dict[str, str]) -> None:
    trajectory = lake.trajectory(ids["lander"])
    rows = agent_rows(documents()["lander"], "lander")
    assert trajectory.agent == "lander" and len(trajectory) == 60
    assert np.array_equal(trajectory.steps, [n for n, _ in rows])
    assert np.array_equal(trajectory.observations, np.array([row["observation_space"] for _, row in rows]))
    assert trajectory.observations.shape == (60, 8)
    assert np.array_equal(trajectory.actions, [row["action"] for _, row in rows])
    assert np.array_equal(trajectory.rewards, [total(row) for _, row in rows])
    assert np.array_equal(trajectory.reward_components, np.array([row["rewards"] for _, row in rows]))
    assert trajectory.reward_names == ("Shaping", "Main engine", "Leg contact")
    assert trajectory.terminals.tolist() == [False] * 59 + [True]
    assert trajectory.frames is None and trajectory.environment == "LunarLander-v3"
    arrays = ("steps", "observations", "actions", "rewards", "terminals", "reward_components")
    assert all(getattr(trajectory, name).flags.writeable for name in arrays)  # e.g. normalised in place


def test_matrix_observations_equal_the_source(lake: Lake, ids: dict[str, str]) -> None:
    trajectory = lake.trajectory(ids["full"], "team_red")
    rows = agent_rows(documents()["full"], "team_red")
    assert trajectory.observations.shape == (2, 2, 3)
    assert np.array_equal(trajectory.observations, np.array([row["observation_space"] for _, row in rows], float))
    assert np.array_equal(trajectory.reward_components, [[1.5, 0], [2.25, 1]])
    assert np.array_equal(trajectory.rewards, [1.5, 3.25])
    assert trajectory.steps.tolist() == [0, 2] and trajectory.terminals.tolist() == [False, True]


def test_scalar_rewards_have_no_components(lake: Lake, ids: dict[str, str]) -> None:
    trajectory = lake.trajectory(ids["cart"])
    assert trajectory.reward_components is None and trajectory.reward_names is None
    assert trajectory.rewards.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert trajectory.observations.tolist() == [[0.0, 1.0, 2.0]] * 4
    assert trajectory.actions.dtype == np.float64 and trajectory.steps.dtype == np.int64


def test_steps_come_in_step_order_whatever_the_file_order(tmp_path: Path) -> None:
    document = episode(steps=0)
    document["inference"]["steps"] = [
        {"number": n, "agent_steps": [agent_step(reward=float(n), observation_space=[n])]} for n in (7, 2, 5)]
    lake, episode_id = _ingest(tmp_path, document)
    trajectory = lake.trajectory(episode_id)
    assert trajectory.steps.tolist() == [2, 5, 7]
    assert trajectory.rewards.tolist() == [2.0, 5.0, 7.0]
    assert trajectory.observations.tolist() == [[2.0], [5.0], [7.0]]


# -- agents ----------------------------------------------------------------------------------


def test_default_agent_is_the_first_to_appear(lake: Lake, ids: dict[str, str]) -> None:
    assert lake.agents(ids["full"]) == ["team_red", "team_blue"]  # same first step: as the file lists them
    assert lake.agents(ids["multi"]) == ["zeta", "alpha"]  # zeta acts from step 0, alpha from step 1
    assert lake.trajectory(ids["multi"]).agent == "zeta"
    alpha = lake.trajectory(ids["multi"], "alpha")
    assert alpha.steps.tolist() == [1, 2, 3] and alpha.rewards.tolist() == [-1.5] * 3


def test_unknown_agent_or_episode_is_a_clear_error(lake: Lake, ids: dict[str, str]) -> None:
    with pytest.raises(DatasetError) as info:
        lake.trajectory(ids["multi"], "nobody")
    assert str(info.value) == f"episode {ids['multi']} has no agent 'nobody'; its agents: zeta, alpha"
    assert info.value.agent == "nobody" and info.value.episode_id == ids["multi"]
    with pytest.raises(EpisodeNotFound, match=r"^no episode 'ffffffffff' in "):
        lake.trajectory("ffffffffff")


def test_an_episode_without_agent_steps(tmp_path: Path) -> None:
    lake, episode_id = _ingest(tmp_path, episode(steps=0) | {"inference": {"steps": [{"number": 0}]}})
    with pytest.raises(DatasetError, match=f"^episode {episode_id} has no agent steps$"):
        lake.trajectory(episode_id)


@pytest.mark.parametrize(("first", "later", "shapes"), [
    ([0.0, 1.0, 2.0], [[1, 2], [3, 4]], "[3] to [2, 2]"),  # another number of dimensions
    ([[1, 2, 3], [4, 5, 6]], [[1, 2], [3, 4], [5, 6]], "[2, 3] to [3, 2]"),  # same size, other shape
])
def test_observation_shapes_must_not_change_within_a_trajectory(tmp_path: Path, first, later, shapes) -> None:
    document = episode(steps=3)
    for step in document["inference"]["steps"][:2]:
        step["agent_steps"][0]["observation_space"] = first
    document["inference"]["steps"][2]["agent_steps"][0]["observation_space"] = later
    lake, episode_id = _ingest(tmp_path, document)
    with pytest.raises(DatasetError) as info:
        lake.trajectory(episode_id)
    assert str(info.value) == (f"episode {episode_id}, agent 'p0': observation shape changes from {shapes} "
                               f"at step 2; one trajectory needs one shape")


# -- frames, stacking and downsampling -------------------------------------------------------


def test_frames_are_loaded_only_when_asked(lake: Lake, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real = pipeline.engine.trajectory.raw_frame
    monkeypatch.setattr(pipeline.engine.trajectory, "raw_frame", lambda data, **options: decoded.append(data) or real(
        data, **options))
    lake.trajectory(ids["frames"])
    assert decoded == []
    trajectory = lake.trajectory(ids["frames"], frames=True, downsample_frequency=3, downsample_offset=2)
    assert len(decoded) == 2 and trajectory.steps.tolist() == [2, 5]


def test_frames_as_decoded(lake: Lake, ids: dict[str, str]) -> None:
    rgb = lake.trajectory(ids["frames"], frames=True)
    assert rgb.frames is not None and rgb.frames.shape == (6, 2, 2, 3) and rgb.frames.dtype == np.uint8
    assert rgb.frame_layout == "THWC"
    assert rgb.frames[:, 0, 0, 0].tolist() == [10, 20, 30, 40, 50, 60]
    gray = lake.trajectory(ids["frames"], frames=FrameOptions(grayscale=True))
    assert gray.frames is not None and gray.frames.shape == (6, 2, 2) and gray.frame_layout == "THW"
    assert np.array_equal(gray.frames, np.repeat(np.arange(10, 70, 10, dtype=np.uint8), 4).reshape(6, 2, 2))


def test_stacking_and_downsampling_against_a_hand_computed_example(lake: Lake, ids: dict[str, str]) -> None:
    # Steps 0..5 have rewards 1..6 and gray frames 10..60. Keeping every 2nd step from offset 1 keeps
    # steps 1, 3, 5 (frames 20, 40, 60); each reward adds the skipped step after it: 2+3, 4+5, 6.
    # Stacking 2 frames, oldest first, the first frame repeated before the start:
    options = FrameOptions(grayscale=True, stack_n=2, framestack_axis_first=True)
    trajectory = lake.trajectory(ids["frames"], frames=options, downsample_frequency=2, downsample_offset=1)
    assert trajectory.steps.tolist() == [1, 3, 5]
    assert trajectory.rewards.tolist() == [5.0, 9.0, 6.0]
    assert trajectory.actions.tolist() == [1.0, 1.0, 1.0]
    assert trajectory.observations.tolist() == [[1.0, -1.0], [3.0, -3.0], [5.0, -5.0]]
    assert trajectory.terminals.tolist() == [False, False, True]
    assert trajectory.frames is not None and trajectory.frames.shape == (3, 2, 2, 2)
    assert trajectory.frame_layout == "TNHW"
    assert trajectory.frames[:, :, 0, 0].tolist() == [[20, 20], [20, 40], [40, 60]]
    last = lake.trajectory(ids["frames"], frames=FrameOptions(grayscale=True, stack_n=2),
                           downsample_frequency=2, downsample_offset=1)
    assert last.frames is not None and last.frames.shape == (3, 2, 2, 2) and last.frame_layout == "THWN"
    assert last.frames[:, 0, 0, :].tolist() == [[20, 20], [20, 40], [40, 60]]


def test_downsampled_reward_components_add_up(lake: Lake, ids: dict[str, str]) -> None:
    full = lake.trajectory(ids["lander"])
    sampled = lake.trajectory(ids["lander"], downsample_frequency=4, downsample_offset=1)
    assert sampled.steps.tolist() == list(range(1, 60, 4))
    assert sampled.reward_components is not None and full.reward_components is not None
    expected = [[sum(column) for column in zip(*full.reward_components[i:i + 4], strict=True)]
                for i in range(1, 60, 4)]
    assert np.allclose(sampled.reward_components, expected, rtol=0, atol=1e-12)
    assert np.isclose(sampled.rewards.sum(), full.rewards[1:].sum())


def test_crowdplay_processing_shapes(lake: Lake, ids: dict[str, str]) -> None:
    # CrowdPlay's buffer reads the raw frames 1 and 4 steps back too; this episode has an image every 5th step.
    stacked = lake.trajectory(ids["lander"], frames=FrameOptions.atari(missing="previous"), downsample_frequency=5)
    assert stacked.frames is not None and stacked.frames.shape == (12, 84, 84, 4)
    first = lake.trajectory(ids["lander"], frames=FrameOptions.atari(stack_n=1, framestack_axis_first=True,
                                                                     missing="previous"), downsample_frequency=5)
    assert first.frames is not None and first.frames.shape == (12, 1, 84, 84)
    assert np.array_equal(first.frames[:, 0], stacked.frames[..., -1])


def test_resize_takes_height_then_width(lake: Lake, ids: dict[str, str]) -> None:
    trajectory = lake.trajectory(ids["frames"], frames=FrameOptions(resize=(3, 5)))
    assert trajectory.frames is not None and trajectory.frames.shape == (6, 3, 5, 3)
    assert trajectory.frames[2].min() == trajectory.frames[2].max() == 30  # a flat image stays flat


def test_missing_images_fail_or_repeat_the_previous_one(lake: Lake, ids: dict[str, str]) -> None:
    with pytest.raises(DatasetError) as info:
        lake.trajectory(ids["lander"], frames=True)
    assert str(info.value) == (f"episode {ids['lander']}: step 1 has no image "
                               f"(missing='previous' uses the latest image before it)")
    held = lake.trajectory(ids["lander"], frames=FrameOptions(missing="previous"))
    every_fifth = lake.trajectory(ids["lander"], frames=True, downsample_frequency=5)
    assert held.frames is not None and every_fifth.frames is not None
    assert np.array_equal(held.frames, np.repeat(every_fifth.frames, 5, axis=0))


def test_frames_of_different_sizes_need_resize(tmp_path: Path) -> None:
    document = episode(steps=2)
    document["inference"]["steps"][0]["image"] = gray_png(1, (2, 2))
    document["inference"]["steps"][1]["image"] = gray_png(1, (3, 2))
    lake, episode_id = _ingest(tmp_path, document)
    with pytest.raises(DatasetError, match=r"frames of different sizes .*; pass resize=\(height, width\)"):
        lake.trajectory(episode_id, frames=True)
    assert lake.trajectory(episode_id, frames=FrameOptions(resize=(4, 4))).frames.shape == (2, 4, 4, 3)  # type: ignore


@pytest.mark.parametrize(("frequency", "offset"), [(0, 0), (2, 2), (1, -1)])
def test_bad_downsampling_is_a_clear_error(lake: Lake, ids: dict[str, str], frequency: int, offset: int) -> None:
    with pytest.raises(DatasetError, match=r"^downsampling needs frequency >= 1 and 0 <= offset < frequency"):
        lake.trajectory(ids["cart"], downsample_frequency=frequency, downsample_offset=offset)


def test_downsampling_past_the_end_keeps_nothing(lake: Lake, ids: dict[str, str]) -> None:
    with pytest.raises(DatasetError, match="downsampling keeps no step of its 4"):
        lake.trajectory(ids["cart"], downsample_frequency=9, downsample_offset=5)


def test_stack_frames_by_hand() -> None:
    frames = np.arange(3)[:, None] * 10 + np.arange(2)[None, :]  # [T=3, F=2]: [[0, 1], [10, 11], [20, 21]]
    first = stack_frames(frames, 3, axis_first=True)
    assert first.tolist() == [[[0, 1], [0, 1], [0, 1]], [[0, 1], [0, 1], [10, 11]], [[0, 1], [10, 11], [20, 21]]]
    assert np.array_equal(stack_frames(frames, 3, axis_first=False), np.moveaxis(first, 1, -1))
    assert stack_frames(frames, 1, axis_first=True).tolist() == [[[0, 1]], [[10, 11]], [[20, 21]]]
    with pytest.raises(DatasetError, match="stack_n must be at least 1, got 0"):
        stack_frames(frames, 0, axis_first=True)


def test_previous_needs_an_earlier_image(tmp_path: Path) -> None:
    document = episode(steps=3)
    document["inference"]["steps"][1]["image"] = gray_png(7)
    lake, episode_id = _ingest(tmp_path, document)
    with pytest.raises(DatasetError) as info:
        lake.trajectory(episode_id, frames=FrameOptions(missing="previous"))
    assert str(info.value) == f"episode {episode_id}: step 0 has no image, nor any step before it"
    held = lake.trajectory(episode_id, frames=FrameOptions(missing="previous", grayscale=True),
                           downsample_frequency=2, downsample_offset=1)
    assert held.steps.tolist() == [1] and held.frames is not None and held.frames.max() == 7


def test_default_agent_follows_first_appearance_even_when_steps_are_out_of_order(tmp_path):
    """episode_agents.parquet lists agents by first step, then by their place in that step."""
    import json

    from pipeline import Lake, ingest

    def agent(name):
        return {"agent": name, "action": 0, "reward": 1.0, "observation_space": [0.0]}

    document = {
        "training": {"environment": "Order-v0", "algorithm": "x", "iterations": 1},
        "inference": {"steps": [
            {"number": 5, "agent_steps": [agent("B")]},
            {"number": 3, "agent_steps": [agent("A"), agent("B")]},
            {"number": 9, "agent_steps": [agent("C"), agent("A")]},
        ]},
    }
    path = tmp_path / "order.json"
    path.write_text(json.dumps(document))
    result = ingest(path, lake=tmp_path / "lake")
    lake = Lake(tmp_path / "lake")
    assert lake.agents(result.episode_id) == ["A", "B", "C"]
    assert lake.trajectory(result.episode_id).steps.tolist() == [3, 9]
