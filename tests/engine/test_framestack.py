"""CrowdPlay's frame buffer: against an independent re-implementation, against OpenCV, and through the lake.

The reference buffer below is written plainly from CrowdPlay's description (``crowdplay_datasets/deepmind.py``,
``MaxAndSkipAndWarpAndScaleAndStackFrameBuffer``), not from ``pipeline/framestack.py``: a deque of the last
raw frames that starts full of black frames; each step's observation stacks ``stack_n`` elements, oldest
first, ``skip_n`` frames apart, each the max of ``max_n`` consecutive frames, warped to 84x84 gray.

Two warps: OpenCV itself (``cv2.cvtColor`` + ``cv2.resize(INTER_AREA)``, what CrowdPlay calls), for which the
comparison is pixel-exact; and plain numpy (real-valued luma, exact area averaging with rational weights,
rounded once), for which it is within 1 grey level, because OpenCV rounds the luma before averaging and
averages in float32. OpenCV comes with the test extra (``opencv-python-headless``); without it only the
numpy comparisons run.
"""

from __future__ import annotations

import base64
import io
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import DatasetError, FrameOptions, Lake, ingest
from pipeline.engine.framestack import grayscale, raw_indices, resize_area, stacked_frames
from tests.helpers import agent_step, write_json

Warp = Callable[[np.ndarray], np.ndarray]


def hand_made_frames(count: int = 12, height: int = 210, width: int = 160) -> np.ndarray:
    """Atari-sized RGB frames, each different: a tinted noisy background, a moving square, a moving line."""
    rng = np.random.default_rng(16)
    frames = rng.integers(0, 40, (count, height, width, 3), dtype=np.uint8)
    for k in range(count):
        frames[k, :, :, k % 3] += np.uint8(60 + 10 * k)
        frames[k, 10 + 12 * k:40 + 12 * k, 5 + 9 * k:35 + 9 * k] = (250, 200 - 15 * k, 30 + 15 * k)
        frames[k, :, (7 * k) % width] = 255
    return frames


def crowdplay_buffer(raw: np.ndarray, warp: Warp, *, max_n: int = 2, skip_n: int = 4, stack_n: int = 4) -> np.ndarray:
    """``[T, 84, 84, stack_n]``: CrowdPlay's observation of every raw step, oldest element first."""
    length = (stack_n - 1) * skip_n + max_n
    buffer = deque([np.zeros_like(raw[0])] * length, maxlen=length)
    observations = []
    for frame in raw:
        buffer.append(frame)
        back = list(buffer)[::-1]  # back[j] is the frame j steps ago (black before the start)
        offsets = range((stack_n - 1) * skip_n, -1, -skip_n)  # oldest first
        elements = [warp(np.max(np.stack(back[o:o + max_n]), axis=0)) for o in offsets]
        observations.append(np.stack(elements, axis=-1))
    return np.stack(observations)


def opencv_warp(frame: np.ndarray) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)


@cache
def area_matrix(source: int, target: int) -> np.ndarray:
    """``[target, source]``: the share of each source pixel in each output pixel's area (exact fractions)."""
    matrix = np.zeros((target, source))
    for d in range(target):
        low, high = Fraction(d * source, target), Fraction((d + 1) * source, target)
        for s in range(int(low), -(-high.numerator // high.denominator)):
            matrix[d, s] = float((min(high, s + 1) - max(low, s)) / (high - low))
    return matrix


def plain_warp(frame: np.ndarray, size: tuple[int, int] = (84, 84)) -> np.ndarray:
    luma = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    averaged = area_matrix(frame.shape[0], size[0]) @ luma @ area_matrix(frame.shape[1], size[1]).T
    return np.floor(averaged + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    return hand_made_frames()


@pytest.fixture(scope="module")
def reference(raw: np.ndarray) -> Callable[..., np.ndarray]:
    """CrowdPlay's observations of ``raw``: OpenCV's warp when installed, else the plain one."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return lambda **buffer: crowdplay_buffer(raw, plain_warp, **buffer)
    return lambda **buffer: crowdplay_buffer(raw, opencv_warp, **buffer)


def assert_same(ours: np.ndarray | None, expected: np.ndarray) -> None:
    """Pixel-exact against OpenCV; within 1 grey level against the plain numpy warp (see the top)."""
    assert ours is not None and ours.shape == expected.shape
    try:
        import cv2  # noqa: F401
    except ImportError:
        assert np.abs(ours.astype(int) - expected).max() <= 1
    else:
        assert np.array_equal(ours, expected)


# -- the buffer ------------------------------------------------------------------------------


def test_atari_is_crowdplays_buffer_pixel_exact(raw: np.ndarray) -> None:
    pytest.importorskip("cv2")
    expected = crowdplay_buffer(raw, opencv_warp)
    ours = stacked_frames(raw, np.arange(len(raw)), FrameOptions.atari())
    assert ours.shape == (12, 84, 84, 4) and ours.dtype == np.uint8
    assert np.array_equal(ours, expected)  # pixel-exact, every step, every stacked element
    # d3rlpy's form (CrowdPlay's stack_n=1, framestack_axis_first=True): the newest element, [1, 84, 84]
    single = stacked_frames(raw, np.arange(len(raw)), FrameOptions.atari(stack_n=1, framestack_axis_first=True))
    assert np.array_equal(single, np.moveaxis(crowdplay_buffer(raw, opencv_warp, stack_n=1), -1, 1))


def test_atari_without_opencv_is_within_one_grey_level(raw: np.ndarray) -> None:
    expected = crowdplay_buffer(raw, plain_warp)
    ours = stacked_frames(raw, np.arange(len(raw)), FrameOptions.atari())
    # Within 1 grey level: OpenCV rounds the luma to uint8 before averaging, and averages in float32.
    assert np.abs(ours.astype(int) - expected).max() <= 1
    # Before the start, black: elements end 12, 8, 4 and 0 steps back, so step 0 has three black
    # elements, step 5 two (-7, -3), step 11 one (-1: its max of frames -1 and -2).
    for step, black in ((0, 3), (5, 2), (11, 1)):
        assert [bool(ours[step, ..., i].any()) for i in range(4)] == [False] * black + [True] * (4 - black)


def test_each_element_is_the_max_of_two_frames_four_steps_apart(raw: np.ndarray) -> None:
    options = FrameOptions(grayscale=True, luma="opencv", stack_n=4, max_n=2, skip_n=4, pad="zeros")
    ours = stacked_frames(raw, [11], options)[0]  # no resize: the elements themselves, [210, 160, 4]
    for i, end in enumerate([-1, 3, 7, 11]):  # oldest first; -1 is before the start
        if end < 0:
            assert not ours[..., i].any()
        else:
            assert np.array_equal(ours[..., i], grayscale(np.maximum(raw[end], raw[end - 1]), "opencv"))


def test_a_few_steps_read_only_their_frames_once(raw: np.ndarray, reference: Callable[..., np.ndarray]) -> None:
    asked: list[int] = []

    def frame_at(index: int) -> np.ndarray:
        asked.append(index)
        return raw[index]

    kept = [9, 2]  # any order, as a sampler draws them
    ours = stacked_frames(frame_at, kept, FrameOptions.atari())
    assert_same(ours, reference()[kept])
    assert asked == [0, 1, 2, 4, 5, 8, 9]  # 9: max(9, 8), max(5, 4), max(1, 0), black; 2: max(2, 1), black...
    assert raw_indices(kept, FrameOptions.atari()).tolist() == asked


def test_downsampling_keeps_crowdplays_spacing(raw: np.ndarray, reference: Callable[..., np.ndarray]) -> None:
    """CrowdPlay adds every raw frame to its buffer and emits every f-th observation: skip_n stays 4."""
    expected = reference()
    for frequency, offset in ((4, 0), (3, 1)):
        kept = np.arange(offset, len(raw), frequency)
        assert_same(stacked_frames(raw, kept, FrameOptions.atari(), skip=frequency), expected[kept])


def test_default_options_stack_the_kept_steps_as_before() -> None:
    frames = np.arange(0, 60, 10, dtype=np.uint8)[:, None, None]  # six 1x1 gray frames 0, 10, ..., 50

    def stack(kept: list[int], skip: int = 1, **options: object) -> list[list[int]]:
        result = stacked_frames(frames, kept, FrameOptions(grayscale=True, stack_n=3, **options), skip=skip)
        return result[:, 0, 0, :].tolist()

    # Downsampled every 2nd step from 1: stacked over the kept steps, the first kept frame repeated.
    assert stack([1, 3, 5], skip=2) == [[10, 10, 10], [10, 10, 30], [10, 30, 50]]
    assert stack([1, 3, 5], skip=2, pad="zeros") == [[0, 0, 10], [0, 10, 30], [10, 30, 50]]
    # skip_n counts raw steps whatever the downsampling; "repeat" repeats the stack's earliest element.
    assert stack([1, 3, 5], skip=2, skip_n=1) == [[0, 0, 10], [10, 20, 30], [30, 40, 50]]
    assert stack([4, 5], skip_n=2, pad="repeat") == [[0, 20, 40], [10, 30, 50]]
    assert stack([0, 2], max_n=2) == [[0, 0, 0], [0, 10, 20]]  # max(frame, frame before); none before 0


def test_bad_options_are_named() -> None:
    frames = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    for options, message in [
        (FrameOptions(stack_n=0), "stack_n must be at least 1, got 0"),
        (FrameOptions(max_n=0), "max_n must be at least 1, got 0"),
        (FrameOptions(skip_n=0), r"skip_n must be at least 1 \(or None: the kept steps\), got 0"),
        (FrameOptions(pad="black"), "pad must be one of 'repeat', 'zeros', not 'black'"),  # type: ignore[arg-type]
        (FrameOptions(resample="cubic"), "resample must be one of 'bilinear', 'area', not 'cubic'"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(DatasetError, match=f"^{message}$"):
            stacked_frames(frames, [0], options)
    with pytest.raises(DatasetError, match=r"^kept steps must be a non-empty 1-D list of raw step indices >= 0$"):
        stacked_frames(frames, [], FrameOptions())
    with pytest.raises(DatasetError, match=r"raw frame 0 must be uint8 RGB \[H, W, 3\]"):
        stacked_frames(frames.astype(np.float32), [0], FrameOptions())


# -- grayscale and area resize ---------------------------------------------------------------


@pytest.fixture(scope="module")
def every_colour() -> np.ndarray:
    levels = np.arange(256, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([r, g, b], axis=-1).reshape(4096, 4096, 3)


def test_pillow_luma_is_pillows_L_and_differs_from_opencvs_by_one_at_most(every_colour: np.ndarray) -> None:
    pillow = grayscale(every_colour, "pillow")
    assert np.array_equal(pillow, np.asarray(Image.fromarray(every_colour).convert("L")))
    difference = np.abs(pillow.astype(int) - grayscale(every_colour, "opencv"))
    assert difference.max() == 1 and round(100 * np.count_nonzero(difference) / difference.size, 2) == 0.13


def test_opencv_luma_is_opencvs(every_colour: np.ndarray) -> None:
    cv2 = pytest.importorskip("cv2")
    assert np.array_equal(grayscale(every_colour, "opencv"), cv2.cvtColor(every_colour, cv2.COLOR_RGB2GRAY))


def test_area_resize_is_opencvs_inter_area() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    sizes = [(210, 160, 84, 84), (168, 168, 84, 84), (12, 10, 4, 5), (9, 9, 3, 3), (85, 85, 84, 84), (7, 7, 7, 7)]
    sizes += [(int(h), int(w), int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1)))
              for h, w in rng.integers(1, 100, (60, 2))]
    for height, width, to_height, to_width in sizes:
        for image in (rng.integers(0, 256, (height, width), dtype=np.uint8),
                      rng.integers(0, 2, (height, width), dtype=np.uint8) * np.uint8(255),  # many exact halves
                      rng.integers(0, 4, (height, width), dtype=np.uint8)):
            expected = cv2.resize(image, (to_width, to_height), interpolation=cv2.INTER_AREA)
            assert np.array_equal(resize_area(image, (to_height, to_width)), expected), (height, width, to_height, to_width)
    batch = rng.integers(0, 256, (5, 210, 160), dtype=np.uint8)  # several frames at once, as the buffer does
    assert np.array_equal(resize_area(batch, (84, 84)),
                          np.stack([cv2.resize(f, (84, 84), interpolation=cv2.INTER_AREA) for f in batch]))


def test_area_resize_averages_areas() -> None:
    rng = np.random.default_rng(8)
    for height, width, to_height, to_width in [(210, 160, 84, 84), (10, 7, 3, 2), (6, 6, 3, 2)]:
        image = rng.integers(0, 256, (height, width), dtype=np.uint8)
        exact = area_matrix(height, to_height) @ image.astype(float) @ area_matrix(width, to_width).T
        assert np.abs(resize_area(image, (to_height, to_width)) - exact).max() <= 0.5 + 1e-3
    assert np.array_equal(resize_area(np.full((210, 160), 77, np.uint8), (84, 84)), np.full((84, 84), 77))
    with pytest.raises(DatasetError, match="area averaging only shrinks: 2x2 to 84x84"):
        resize_area(np.zeros((2, 2), np.uint8), (84, 84))


# -- through the lake: trajectories, npz and d3rlpy use the same processing ------------------


def _png(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def frames_lake(tmp_path_factory: pytest.TempPathFactory, raw: np.ndarray) -> tuple[Lake, str]:
    root = tmp_path_factory.mktemp("framestack")
    document = {
        "training": {"environment": "SpaceInvaders", "algorithm": "human", "iterations": 1},
        "inference": {"steps": [
            {"number": 100 + i, "image": _png(frame),  # step numbers need not start at 0: raw steps are positions
             "agent_steps": [agent_step("game_0>player_0", action=i % 6, reward=float(i), observation_space=[i])]}
            for i, frame in enumerate(raw)
        ]},
    }
    result = ingest(write_json(root / "episode.json", document), lake=root / "lake")
    assert result.status == "ingested", result.error
    return Lake(root / "lake"), str(result.episode_id)


def test_lake_trajectories_use_crowdplays_buffer(frames_lake: tuple[Lake, str],
                                                reference: Callable[..., np.ndarray]) -> None:
    lake, episode_id = frames_lake
    expected = reference()
    trajectory = lake.trajectory(episode_id, frames=FrameOptions.atari())
    assert trajectory.frame_layout == "THWN"
    assert_same(trajectory.frames, expected)
    sampled = lake.trajectory(episode_id, frames=FrameOptions.atari(), downsample_frequency=4, downsample_offset=1)
    assert sampled.steps.tolist() == [101, 105, 109]
    assert_same(sampled.frames, expected[[1, 5, 9]])
    arrays = lake.to_numpy(episode_id, frames=FrameOptions.atari(), downsample_frequency=4)
    assert_same(arrays["frames"], expected[[0, 4, 8]])


def test_d3rlpy_gets_crowdplays_single_frames(frames_lake: tuple[Lake, str],
                                              reference: Callable[..., np.ndarray]) -> None:
    pytest.importorskip("d3rlpy")
    lake, episode_id = frames_lake
    dataset = lake.to_d3rlpy(episode_id, observation="frames", downsample_frequency=4,
                             frames=FrameOptions.atari(stack_n=1, framestack_axis_first=True))
    expected = np.moveaxis(reference(stack_n=1), -1, 1)[[0, 4, 8]]  # [3, 1, 84, 84], as CrowdPlay's offline script
    assert_same(np.concatenate([episode.observations for episode in dataset.episodes]), expected)


def test_plain_options_give_the_same_frames_as_before(frames_lake: tuple[Lake, str], raw: np.ndarray,
                                                     tmp_path: Path) -> None:
    """FrameOptions() without the new fields: Pillow's 'L' and bilinear resize, kept steps stacked."""
    lake, episode_id = frames_lake
    options = FrameOptions(grayscale=True, resize=(84, 84), stack_n=2)
    trajectory = lake.trajectory(episode_id, frames=options, downsample_frequency=3)
    before = [np.asarray(Image.fromarray(raw[i]).convert("L").resize((84, 84), Image.Resampling.BILINEAR))
              for i in (0, 3, 6, 9)]
    expected = np.stack([np.stack([before[max(k - 1, 0)], before[k]], axis=-1) for k in range(4)])
    assert np.array_equal(trajectory.frames, expected)
