"""Trajectories, to_numpy and to_d3rlpy from a prepared frame store: the same frames, bit for bit, as
decoding the PNGs; the same errors; and a damaged store never gives wrong frames."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.engine.trajectory
from pipeline import DatasetError, FrameOptions, Lake, LakeError
from pipeline.engine.prepared import store_key
from pipeline.engine.prepared_episode import DamagedFramesWarning, StoredFrames, prepare_command
from pipeline.lake.framestore import DamagedEntry
from pipeline.lake.layout import FRAMES, frame_entry_name
from tests.engine.test_prepared import OPTIONS, _episode, _lake, compacted_prepared_lake, standard_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return standard_lake(tmp_path_factory.mktemp("prepared-episode"))


def _same(a: np.ndarray | None, b: np.ndarray | None) -> None:
    """Equal bit for bit: values, dtype, shape, and memory layout."""
    assert a is not None and b is not None
    assert a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides
    assert np.array_equal(a, b)


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the PNG decode path fail, so that a passing read came from the store."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded PNGs where the store should have been read")

    monkeypatch.setattr(pipeline.engine.trajectory, "load_frames", refuse)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: store_key(o) + f"-stack{o.stack_n}")
@pytest.mark.parametrize(("frequency", "offset"), [(1, 0), (2, 1), (4, 0), (3, 2)])
def test_trajectories_from_the_store_equal_decoded_ones(lake: Lake, options: FrameOptions, frequency: int,
                                                        offset: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.prepare_frames(options, workers=1)
    wing = lake.episode_agents().filter(agent="wing")
    lake.prepare_frames(options, episodes=wing, workers=1)
    pairs = [(location.episode_id, None) for location in lake.locations] + [
        (episode_id, "wing") for episode_id in wing.collect()["episode_id"]]
    decoded: dict[tuple[str, str | None], Any] = {}
    common = {"frames": options, "downsample_frequency": frequency, "downsample_offset": offset}
    for episode_id, agent in pairs:
        try:
            decoded[episode_id, agent] = lake.trajectory(episode_id, agent, prepared=False, **common)
        except DatasetError as exc:  # downsampling keeps no step of a 1-step episode
            decoded[episode_id, agent] = str(exc)
    with monkeypatch.context() as patch:
        _no_decoding(patch)
        compared = 0
        for (episode_id, agent), expected in decoded.items():
            if isinstance(expected, str):
                with pytest.raises(DatasetError) as raised:
                    lake.trajectory(episode_id, agent, prepared=True, **common)
                assert str(raised.value) == expected
                continue
            stored = lake.trajectory(episode_id, agent, prepared=True, **common)
            _same(stored.frames, expected.frames)
            assert stored.frame_layout == expected.frame_layout
            assert np.array_equal(stored.steps, expected.steps) and np.array_equal(stored.rewards, expected.rewards)
            compared += 1
        assert compared >= 4


def test_to_numpy_and_npz_equal_with_a_partial_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = _lake(tmp_path, [_episode(n, 6 + n) for n in range(4)])
    options = FrameOptions.atari()
    ids = [location.episode_id for location in lake.locations]
    lake.prepare_frames(options, episodes=ids[:2], workers=1)  # half of them: the rest is decoded
    counts: list[StoredFrames] = []
    original = Lake._frame_reader

    def counted(self: Lake, frames: Any, prepared: bool | None) -> StoredFrames | None:
        reader = original(self, frames, prepared)
        counts.append(reader)  # type: ignore[arg-type]
        return reader

    monkeypatch.setattr(Lake, "_frame_reader", counted)
    mixed = lake.to_numpy(frames=options, downsample_frequency=2)
    assert (counts[-1].read, counts[-1].decoded) == (2, 2)
    decoded = lake.to_numpy(frames=options, downsample_frequency=2, prepared=False)
    assert counts[-1] is None
    assert mixed.keys() == decoded.keys()
    for name in mixed:
        _same(mixed[name], decoded[name])
    with pytest.raises(DatasetError, match=r"no prepared frames for 2 of the 4 selected episodes \(first: "
                                           r"[0-9a-f]{32}, agent 'p0'\) with these frame options \(store "
                                           r"v2-84x84-gray-max2-area-opencv-error\); run `ingest-pipeline frames "
                                           r"prepare --atari`"):
        lake.to_numpy(frames=options, prepared=True)
    lake.to_npz(tmp_path / "a.npz", frames=options, downsample_frequency=2)
    assert (counts[-1].read, counts[-1].decoded) == (2, 2)
    with np.load(tmp_path / "a.npz") as stored:  # (a file keeps no memory layout)
        assert stored["frames"].dtype == np.uint8 and np.array_equal(stored["frames"], decoded["frames"])


def test_to_d3rlpy_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("d3rlpy")
    lake = _lake(tmp_path, [_episode(n, 9 + n) for n in range(3)])
    options = FrameOptions.atari(stack_n=1, framestack_axis_first=True)
    common: dict[str, Any] = {"observation": "frames", "frames": options, "downsample_frequency": 4}
    decoded = lake.to_d3rlpy(**common, prepared=False)
    lake.prepare_frames(options, workers=1)
    with monkeypatch.context() as patch:
        _no_decoding(patch)
        stored = lake.to_d3rlpy(**common, prepared=True)
    assert len(stored.episodes) == len(decoded.episodes) == 3
    for a, b in zip(stored.episodes, decoded.episodes, strict=True):
        assert a.observations.dtype == b.observations.dtype == np.uint8
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)


@pytest.mark.parametrize("missing", ["error", "previous"])
@pytest.mark.parametrize("make", [lambda m: FrameOptions(grayscale=True, stack_n=4, missing=m),
                                  lambda m: FrameOptions.atari(missing=m)], ids=["plain", "atari"])
def test_missing_frames_give_the_decode_paths_error(tmp_path: Path, missing: str, make: Any) -> None:
    lake = _lake(tmp_path, [_episode(0, 12, without_image=frozenset({4, 5, 9})),
                            _episode(1, 8, without_image=frozenset({0, 1}))])
    options = make(missing)
    assert not lake.prepare_frames(options, workers=1).skipped
    outcomes = {"error": 0, "frames": 0}
    for location in lake.locations:
        for frequency in (1, 2, 3, 4):
            for offset in range(frequency):
                results = []
                for prepared in (True, False):
                    try:
                        results.append(lake.trajectory(location.episode_id, frames=options, prepared=prepared,
                                                       downsample_frequency=frequency, downsample_offset=offset))
                    except DatasetError as exc:
                        results.append(str(exc))
                if isinstance(results[1], str):
                    assert results[0] == results[1]
                    outcomes["error"] += "has no image" in results[1]
                else:
                    _same(results[0].frames, results[1].frames)
                    outcomes["frames"] += 1
    assert outcomes["error"] and outcomes["frames"]  # both kinds of outcome were compared


def test_prepared_true_names_the_command_and_false_never_opens_the_store(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lake = _lake(tmp_path, [_episode(0, 5)])
    episode_id = lake.locations[0].episode_id
    plain = FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)
    with pytest.raises(DatasetError, match=f"episode {episode_id}, agent 'p0': no prepared frames with these frame "
                                           f"options \\(store v2-84x84-gray-max1-bilinear-pillow-error\\); run "
                                           f"`ingest-pipeline frames prepare --resize 84x84 --grayscale`"):
        lake.trajectory(episode_id, frames=plain, prepared=True)
    assert lake.trajectory(episode_id, frames=plain).frames is not None  # None: decoded
    lake.prepare_frames(plain, workers=1)
    def refuse(*args: Any) -> None:
        raise AssertionError("read the store")

    monkeypatch.setattr(StoredFrames, "__call__", refuse)
    assert lake.trajectory(episode_id, frames=plain, prepared=False).frames is not None
    assert lake.trajectory(episode_id, prepared=True).frames is None  # no frames asked for: nothing to prepare


def test_prepare_command() -> None:
    assert prepare_command(FrameOptions.atari(stack_n=1)) == "ingest-pipeline frames prepare --atari"
    assert prepare_command(FrameOptions.atari(missing="previous")) == (
        "ingest-pipeline frames prepare --atari --missing-frames=previous")
    assert prepare_command(FrameOptions()) == "ingest-pipeline frames prepare"
    assert prepare_command(FrameOptions(resize=(20, 30), max_n=3, luma="opencv")) == (
        "ingest-pipeline frames prepare --resize 20x30 --max-n=3 --luma=opencv")


# -- damage ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict[str, Any]]:
    """A lake of one 7-step episode with both codecs' stores, and the decoded frames to compare with."""
    lake = _lake(tmp_path_factory.mktemp("damage"), [_episode(3, 7, without_image=frozenset({5}))])
    expected = {}
    for codec, options in (("zstd", FrameOptions.atari(missing="previous")),
                           ("raw", FrameOptions(grayscale=True, resize=(12, 10), stack_n=3, missing="previous"))):
        lake.prepare_frames(options, codec=codec, workers=1)  # type: ignore[arg-type]
        expected[codec] = (options, lake.trajectory(lake.locations[0].episode_id, frames=options, prepared=False))
    return lake, expected


_DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("zero"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("append"), st.just(0.0), st.integers(1, 16)),
)


def _damaged(data: bytes, damage: tuple[str, float, int]) -> bytes:
    kind, where, n = damage
    at = int(where * len(data))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << n)]) + data[at + 1:]
    if kind == "cut":
        return data[:at]
    if kind == "zero":
        return data[:at] + bytes(min(n, len(data) - at)) + data[at + n:]
    return data + b"\x00" * n


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codec=st.sampled_from(["zstd", "raw"]), damage=_DAMAGE)
def test_a_damaged_entry_never_gives_wrong_frames(small: tuple[Lake, dict[str, Any]], codec: str,
                                                  damage: tuple[str, float, int]) -> None:
    lake, expected = small
    options, decoded = expected[codec]
    episode_id = lake.locations[0].episode_id
    path = lake.path / FRAMES / store_key(options) / frame_entry_name(episode_id, "p0")
    original = path.read_bytes()
    changed = _damaged(original, damage)
    path.write_bytes(changed)
    try:
        with warnings.catch_warnings(record=True) as caught:  # automatic: the store, or the PNGs, never worse
            warnings.simplefilter("always")
            automatic = lake.trajectory(episode_id, frames=options)
        _same(automatic.frames, decoded.frames)
        assert all(issubclass(w.category, DamagedFramesWarning) for w in caught)
        try:  # required: the right frames or a clear error naming the file
            _same(lake.trajectory(episode_id, frames=options, prepared=True).frames, decoded.frames)
            required_failed = False
        except DamagedEntry as exc:
            assert str(exc).startswith(f"damaged prepared frames {path}: ")
            assert f"ingest-pipeline frames rm {path.parent.name} {episode_id}" in str(exc)
            assert caught and str(caught[0].message).startswith(str(exc))
            required_failed = True
        assert required_failed == bool(caught)
        sampler = lake.sampler(observation="frames", frames=options, batch_size=16, seed=1, prepared=True)
        reference = lake.sampler(observation="frames", frames=options, batch_size=16, seed=1, prepared=False)
        for j in range(2):
            try:
                batch = sampler.batch(j)
            except LakeError as exc:  # the sampler fails clearly too
                assert "damaged prepared frames" in str(exc) and str(path) in str(exc)
                break
            _same(batch.observations, reference.batch(j).observations)
        if changed == original:
            assert not caught
    finally:
        path.write_bytes(original)


def test_the_store_still_serves_trajectories_after_compaction(tmp_path: Path) -> None:
    lake, options = compacted_prepared_lake(tmp_path)
    for location in lake.locations:
        _same(lake.trajectory(location.episode_id, frames=options, prepared=True).frames,
              lake.trajectory(location.episode_id, frames=options, prepared=False).frames)
