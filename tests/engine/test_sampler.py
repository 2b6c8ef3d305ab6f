"""The sampler: transitions equal trajectory()'s, uniform, within episodes, deterministic, bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipeline import DatasetError, FrameOptions, Lake, ingest
from pipeline.engine.sampler import Batch, Sampler, kept_count
from tests.dataset_lake import gray_png, multi_agent_episode
from tests.helpers import agent_step, write_json

LENGTHS = (3, 7, 12, 1)


def _episode(n: int, length: int) -> dict[str, Any]:
    """``length`` steps with 4x3 gray frames; every value says (episode, step) so mix-ups show."""
    return {
        "training": {"environment": "Sampled-v0", "algorithm": "DQN", "iterations": 1, "config": {"n": n}},
        "inference": {"steps": [
            {"number": 10 * i + n, "image": gray_png((40 * n + 3 * i) % 256, (4, 3)),
             "agent_steps": [agent_step(action=(n + i) % 4, reward=float(100 * n + i),
                                        observation_space=[float(n), float(i)])]}
            for i in range(length)
        ]},
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("sampler")
    documents = [_episode(n, length) for n, length in enumerate(LENGTHS)] + [multi_agent_episode()]
    for n, document in enumerate(documents):
        result = ingest(write_json(root / f"{n}.json", document), lake=root / "lake")
        assert result.status == "ingested", result.error
    return Lake(root / "lake")


def _frame_ids(lake: Lake) -> list[str]:
    return [loc.episode_id for loc in lake.locations if loc.environment == "Sampled-v0"]


def _check_against_trajectories(lake: Lake, sampler: Sampler, batch: Batch, **options: Any) -> None:
    for k in range(len(batch)):
        episode_id, agent = sampler.episodes[int(batch.episodes[k])]
        t = lake.trajectory(episode_id, agent, **options)
        i = int(batch.positions[k])
        assert batch.steps[k] == t.steps[i]
        assert batch.actions[k] == t.actions[i] and batch.rewards[k] == t.rewards[i]
        assert bool(batch.terminals[k]) == bool(t.terminals[i])
        mine = t.frames if sampler.observation == "frames" else t.observations.reshape(len(t), -1)
        assert mine is not None
        assert np.array_equal(batch.observations[k], mine[i])
        following = np.zeros_like(mine[i]) if t.terminals[i] else mine[i + 1]  # never the next episode's
        assert np.array_equal(batch.next_observations[k], following)


@pytest.mark.parametrize("cache_bytes", [1 << 20, 200])  # resident arrays / an LRU of a few episodes
@pytest.mark.parametrize(("frequency", "offset"), [(1, 0), (2, 1), (3, 0)])
def test_vector_transitions_equal_trajectory(lake: Lake, cache_bytes: int, frequency: int, offset: int) -> None:
    sampler = lake.sampler(batch_size=64, seed=3, cache_bytes=cache_bytes, downsample_frequency=frequency,
                           downsample_offset=offset)
    for j in range(3):
        _check_against_trajectories(lake, sampler, sampler.batch(j), downsample_frequency=frequency,
                                    downsample_offset=offset)


@pytest.mark.parametrize("options", [
    FrameOptions(grayscale=True, stack_n=4),
    FrameOptions(grayscale=True, stack_n=3, framestack_axis_first=True),
    FrameOptions(resize=(2, 2)),
    # CrowdPlay's buffer (max of 2 raw frames, elements 3 raw steps apart, black before the start): the
    # sampler must give what trajectory() and to_d3rlpy give.
    FrameOptions(grayscale=True, stack_n=4, max_n=2, skip_n=3, pad="zeros"),
])
def test_frame_transitions_equal_trajectory(lake: Lake, options: FrameOptions) -> None:
    sampler = lake.sampler(_frame_ids(lake), batch_size=48, observation="frames", frames=options, seed=1,
                           downsample_frequency=2, cache_bytes=2000)
    for j in range(3):
        batch = sampler.batch(j)
        assert batch.observations.dtype == np.uint8
        _check_against_trajectories(lake, sampler, batch, frames=options, downsample_frequency=2)


def test_every_transition_equally_likely(lake: Lake) -> None:
    sampler = lake.sampler(batch_size=1000, seed=7)
    counts = np.zeros(sampler.transitions, dtype=np.int64)
    draws = 60
    for j in range(draws):
        np.add.at(counts, sampler.batch(j).indices, 1)
    expected = draws * 1000 / sampler.transitions
    # Binomial counts: 5 standard deviations either side (a false alarm about once in 10^5 runs).
    bound = 5 * np.sqrt(expected * (1 - 1 / sampler.transitions))
    assert np.abs(counts - expected).max() < bound, (counts, expected)
    assert sampler.transitions == sum(LENGTHS) + 4  # the two-agent episode: its first agent, zeta, 4 steps


def test_episodes_and_agents_from_a_selection_frame(lake: Lake) -> None:
    frame = lake.episode_agents().filter(pl.col("agent") == "alpha")
    sampler = lake.sampler(frame, batch_size=32)
    assert [agent for _, agent in sampler.episodes] == ["alpha"] and sampler.transitions == 3
    batch = sampler.batch(0)
    assert set(batch.steps.tolist()) <= {1, 2, 3} and (batch.actions == 2).all()
    with pytest.raises(DatasetError, match="has no agent 'nobody'; its agents: zeta, alpha"):
        lake.sampler(frame, agent="nobody")


def test_deterministic_whatever_the_cache(lake: Lake) -> None:
    big = lake.sampler(batch_size=16, seed=11)
    small = lake.sampler(batch_size=16, seed=11, cache_bytes=1)
    again = lake.sampler(batch_size=16, seed=11)
    for j in (5, 0, 3):
        a, b, c = big.batch(j), small.batch(j), again.batch(j)
        for x, y, z in zip(a, b, c, strict=True):
            assert np.array_equal(x, y) and np.array_equal(x, z)
    assert not np.array_equal(big.batch(0).indices, lake.sampler(batch_size=16, seed=12).batch(0).indices)
    assert [b.indices.tolist() for b in _take(big, 3)] == [big.batch(j).indices.tolist() for j in range(3)]


def _take(sampler: Sampler, n: int) -> list[Batch]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(n)]


def test_epochs_visit_every_transition_once_each(lake: Lake) -> None:
    sampler = lake.sampler(batch_size=5, epochs=2, seed=2)
    batches = list(sampler)
    assert sampler.num_batches == len(batches) == 2 * -(-sampler.transitions // 5)
    half = len(batches) // 2
    for epoch in (batches[:half], batches[half:]):
        assert sorted(np.concatenate([b.indices for b in epoch]).tolist()) == list(range(sampler.transitions))
    with pytest.raises(DatasetError, match=f"batch {len(batches)} is out of range"):
        sampler.batch(len(batches))


def test_kept_count_matches_downsampling() -> None:
    for length in range(0, 9):
        for frequency in (1, 2, 3):
            for offset in range(frequency):
                assert kept_count(length, frequency, offset) == len(range(offset, length, frequency))


def test_too_short_episodes_are_skipped(lake: Lake) -> None:
    sampler = lake.sampler(_frame_ids(lake), downsample_frequency=3, downsample_offset=2)
    assert sorted(sampler.lengths.tolist()) == sorted(kept_count(n, 3, 2) for n in LENGTHS if n > 2)


def test_bad_options_say_so(lake: Lake) -> None:
    with pytest.raises(DatasetError, match="observation must be 'vector' or 'frames', not 'pixels'"):
        lake.sampler(observation="pixels")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="batch_size must be at least 1, got 0"):
        lake.sampler(batch_size=0)
    with pytest.raises(DatasetError, match="no episode selected: nothing to sample"):
        lake.sampler([])


def test_a_removed_episode_asks_for_a_refresh(tmp_path: Path) -> None:
    for n in range(2):
        assert ingest(write_json(tmp_path / f"{n}.json", _episode(n, 5)), lake=tmp_path / "lake").status == "ingested"
    lake = Lake(tmp_path / "lake")
    sampler = lake.sampler(batch_size=64, cache_bytes=1)
    gone = lake.locations[0].episode_id
    Lake(tmp_path / "lake").remove([gone])
    with pytest.raises(DatasetError, match=f"episode {gone} was removed from the lake after this sampler's "
                                           f"snapshot was taken: call lake.refresh\\(\\) and make a new sampler"):
        sampler.batch(0)


@pytest.mark.parametrize("options", [
    FrameOptions(grayscale=True, stack_n=4),
    FrameOptions(grayscale=True, stack_n=4, max_n=2, skip_n=3, pad="zeros", luma="opencv", resample="area"),
])
def test_frames_from_segments_with_small_row_groups(tmp_path: Path, options: FrameOptions,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Row groups of 4 steps: an episode's images span several, and a row group holds several episodes'.
    import pipeline.lake.segments

    monkeypatch.setattr(pipeline.lake.segments, "STEP_ROW_GROUP_ROWS", 4)
    for n, length in enumerate((9, 5, 13, 2)):
        result = ingest(write_json(tmp_path / f"{n}.json", _episode(n, length)), lake=tmp_path / "lake")
        assert result.status == "ingested", result.error
    lake = Lake(tmp_path / "lake")
    lake.compact()
    lake = Lake(tmp_path / "lake")
    assert all(location.segment for location in lake.locations)
    for frequency in (1, 2):
        sampler = lake.sampler(batch_size=40, observation="frames", frames=options, seed=3,
                               downsample_frequency=frequency, cache_bytes=3000)
        for j in range(3):
            _check_against_trajectories(lake, sampler, sampler.batch(j), frames=options,
                                        downsample_frequency=frequency)


@pytest.mark.parametrize("missing", ["error", "previous"])
def test_frames_of_two_shapes_need_a_resize(tmp_path: Path, missing: str) -> None:
    for n, size in enumerate([(4, 3), (5, 3)]):
        document = _episode(n, 6)
        for step in document["inference"]["steps"]:
            step["image"] = gray_png(7 * n, size)
        assert ingest(write_json(tmp_path / f"{n}.json", document), lake=tmp_path / "lake").status == "ingested"
    lake = Lake(tmp_path / "lake")
    mixed = lake.sampler(batch_size=64, observation="frames", frames=FrameOptions(grayscale=True, stack_n=2,
                                                                                  missing=missing))
    with pytest.raises(DatasetError, match=r"^episode [0-9a-f]{32}: frames of shape \[3, [45], 2\], other sampled "
                                           r"episodes have \[3, [45], 2\]; pass resize=\(height, width\)$"):
        mixed.batch(0)
    resized = lake.sampler(batch_size=64, observation="frames", frames=FrameOptions(grayscale=True, stack_n=2,
                                                                                    missing=missing, resize=(2, 2)))
    batch = resized.batch(0)
    assert batch.observations.shape == (64, 2, 2, 2)
    assert set(batch.episodes.tolist()) == {0, 1}


def _batch_in_child(sampler: Sampler, queue: Any) -> None:
    queue.put(sampler.batch(5).observations)


def test_frames_in_a_forked_worker_after_the_parent_sampled(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    # The parent's decode threads do not exist in a forked child: it must start its own, not wait forever.
    import multiprocessing

    import pipeline.engine.decoded_frames

    monkeypatch.setattr(pipeline.engine.decoded_frames, "_POOL_MIN", 1)
    sampler = lake.sampler(_frame_ids(lake), batch_size=64, observation="frames",
                           frames=FrameOptions(grayscale=True, stack_n=4), seed=2)
    sampler.batch(0)  # enough frames to decode on the thread pool
    assert sampler._decoded_frames is not None and sampler._decoded_frames._pool is not None
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_batch_in_child, args=(sampler, queue))
    child.start()
    observations = queue.get(timeout=60)
    child.join(timeout=60)
    assert np.array_equal(observations, sampler.batch(5).observations)
