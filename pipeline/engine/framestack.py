"""Frames as observations: CrowdPlay's frame buffer (DeepMind style), for any chosen steps of an episode.

CrowdPlay (``crowdplay_datasets/deepmind.py``, ``MaxAndSkipAndWarpAndScaleAndStackFrameBuffer``) turns
an episode's raw RGB frames into observations. The observation of raw step ``t`` is:

- ``stack_n`` elements (default 4), oldest first, ending at raw steps ``t - (stack_n-1)*skip_n``, …,
  ``t - skip_n``, ``t``: ``skip_n`` (default 4) raw steps apart, whatever downsampling picks the steps;
- each element the pixel-wise maximum of ``max_n`` (default 2) consecutive raw frames, ending at its step;
- raw steps before the episode's start black (zeros);
- each element converted to grayscale (``cv2.cvtColor(..., COLOR_RGB2GRAY)``) and resized to 84x84 by
  area averaging (``cv2.resize(..., interpolation=INTER_AREA)``).

:func:`stacked_frames` computes that for the steps asked for only, given the raw frames by index,
so a sampler can ask for a few steps; :func:`raw_indices` says which raw frames it will read.
``FrameOptions.atari()`` is this processing; plain ``FrameOptions()`` keep the earlier behaviour
(one frame per element, stacked over the kept steps, the earliest repeated, Pillow's grayscale and
bilinear resize).

Grayscale and area resize are computed here in numpy, bit for bit as OpenCV 4.x/5.x compute them for
uint8 images (checked against ``cv2`` in ``tests/test_framestack.py``), so OpenCV is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import DatasetError

if TYPE_CHECKING:
    from .trajectory import FrameOptions

# A raw frame: RGB uint8 [H, W, 3] (or gray [H, W]), by raw step index (0 = the trajectory's first step).
FrameSource = Callable[[int], np.ndarray] | Sequence[np.ndarray] | np.ndarray

_CHUNK = 64  # raw elements processed (grayscale, resize) together: bounded memory, few numpy calls


def no_image(episode_id: str, step: int, *, none_before: bool = False) -> DatasetError:
    """The error of a frame that cannot be shown, worded the same by every reader of frames.

    ``none_before``: with ``missing="previous"``, no step before ``step`` has an image either.
    """
    if none_before:
        return DatasetError(f"episode {episode_id}: step {step} has no image, nor any step before it",
                            episode_id=episode_id)
    return DatasetError(f"episode {episode_id}: step {step} has no image "
                        f"(missing='previous' uses the latest image before it)", episode_id=episode_id)


def check_options(options: FrameOptions) -> None:
    """Refuse options that cannot be applied, with a message that names the option."""
    if options.stack_n is not None and options.stack_n < 1:
        raise DatasetError(f"stack_n must be at least 1, got {options.stack_n}")
    if options.max_n < 1:
        raise DatasetError(f"max_n must be at least 1, got {options.max_n}")
    if options.skip_n is not None and options.skip_n < 1:
        raise DatasetError(f"skip_n must be at least 1 (or None: the kept steps), got {options.skip_n}")
    for name, allowed in (("pad", ("repeat", "zeros")), ("resample", ("bilinear", "area")),
                          ("luma", ("pillow", "opencv")), ("missing", ("error", "previous"))):
        if getattr(options, name) not in allowed:
            raise DatasetError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                               f"not {getattr(options, name)!r}")
    if options.resize is not None and (len(options.resize) != 2 or min(options.resize) < 1):
        raise DatasetError(f"resize must be (height, width), both at least 1, got {options.resize}")


def element_ends(kept: np.ndarray, options: FrameOptions, *, skip: int = 1) -> np.ndarray:
    """``[K, S]``: the raw step each stacked element of each kept step ends at, oldest first.

    ``S`` is ``stack_n`` (1 without stacking). Elements are ``options.skip_n`` raw steps apart, or
    ``skip`` (the downsampling frequency: the kept steps) when it is None. An element before the
    episode's start is -1 with ``pad="zeros"`` (black); with ``pad="repeat"`` it is the stack's
    earliest element that exists (the first kept step, when stacking over the kept steps).
    """
    spacing = options.skip_n or skip
    count = options.stack_n or 1
    ends = np.asarray(kept, dtype=np.int64)[:, None] - spacing * np.arange(count - 1, -1, -1)[None, :]
    if options.pad == "repeat":
        return np.where(ends < 0, ends % spacing, ends)
    return np.where(ends < 0, -1, ends)


def raw_indices(kept: np.ndarray | Sequence[int], options: FrameOptions, *, skip: int = 1) -> np.ndarray:
    """The raw step indices (sorted, unique) whose frames :func:`stacked_frames` reads for ``kept``."""
    check_options(options)
    ends = np.unique(element_ends(np.asarray(kept, dtype=np.int64), options, skip=skip))
    ends = ends[ends >= 0]
    spans = ends[:, None] - np.arange(options.max_n)[None, :]
    return np.unique(spans[spans >= 0])


def stacked_frames(
    frames: FrameSource,
    kept: np.ndarray | Sequence[int],
    options: FrameOptions,
    *,
    skip: int = 1,
    episode_id: str | None = None,
) -> np.ndarray:
    """The processed (and stacked) uint8 frames of the raw steps ``kept``, in that order.

    ``frames`` gives a raw frame by raw step index: a callable, or a sequence / array ``[T, H, W, 3]``.
    Only the frames :func:`raw_indices` names are asked for, each once, in increasing order (at most
    ``max_n`` are held at a time). ``skip`` is the downsampling frequency, which spaces the stacked
    elements when ``options.skip_n`` is None. The result's axes are ``frame_layout(options)``.
    """
    check_options(options)
    kept = np.asarray(kept, dtype=np.int64)
    if kept.ndim != 1 or len(kept) == 0 or kept.min() < 0:
        raise DatasetError("kept steps must be a non-empty 1-D list of raw step indices >= 0")
    frame_at: Callable[[int], np.ndarray] = frames if callable(frames) else frames.__getitem__
    ends = element_ends(kept, options, skip=skip)
    unique = np.unique(ends[ends >= 0])
    elements = _elements(frame_at, unique.tolist(), options, episode_id)
    # One black element after the real ones, for the padding (-1 -> the last row).
    elements = np.concatenate([elements, np.zeros((1, *elements.shape[1:]), dtype=np.uint8)])
    return stack_elements(elements, unique, ends, options)


def stack_elements(elements: np.ndarray, unique: np.ndarray, ends: np.ndarray, options: FrameOptions) -> np.ndarray:
    """The stacks of ``ends`` (:func:`element_ends`) from ``elements`` ``[len(unique) + 1, *F]``: the
    element ending at each of ``unique`` (sorted), then a black one for the padding. Axes as
    :func:`stacked_frames` gives them (a prepared frame store's reader makes its stacks with this too)."""
    index = np.where(ends >= 0, np.searchsorted(unique, ends), len(unique))
    stacked = elements[index]  # [K, S, *F]
    if options.stack_n is None:
        return stacked[:, 0]
    return stacked if options.framestack_axis_first else np.moveaxis(stacked, 1, -1)


def processed_elements(frame_at: Callable[[int], np.ndarray], ends: list[int], options: FrameOptions,
                       episode_id: str | None = None) -> np.ndarray:
    """``[len(ends), *F]``: the stacked elements ending at raw steps ``ends`` (sorted), as
    :func:`stacked_frames` makes them: what a prepared frame store keeps (:mod:`pipeline.engine.prepared`)."""
    check_options(options)
    return _elements(frame_at, ends, options, episode_id)


def _elements(frame_at: Callable[[int], np.ndarray], ends: list[int], options: FrameOptions,
              episode_id: str | None) -> np.ndarray:
    """``[len(ends), *F]``: each element (max over its raw frames) in grayscale and resized."""
    where = f"episode {episode_id}: " if episode_id else ""
    held: dict[int, np.ndarray] = {}
    processed: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    for end in ends:
        first = max(0, end - options.max_n + 1)
        for index in [i for i in held if i < first]:
            del held[index]
        group = []
        for index in range(first, end + 1):
            if index not in held:
                held[index] = _raw(frame_at(index), options, episode_id, index)
            group.append(held[index])
        if len({frame.shape for frame in group}) > 1 and options.grayscale:
            # A grey frame may come as [H, W] (pngdecode.raw_frame): as RGB to meet an RGB one
            group = [np.repeat(f[:, :, None], 3, axis=2) if f.ndim == 2 else f for f in group]
        if len({frame.shape for frame in group}) > 1:
            raise DatasetError(f"{where}frames of different sizes {sorted({f.shape for f in group})} "
                               f"within one max over {options.max_n} frames", episode_id=episode_id)
        chunk.append(group[0] if len(group) == 1 else np.maximum.reduce(group))
        if len(chunk) == _CHUNK:
            processed.extend(_process(chunk, options))
            chunk = []
    processed.extend(_process(chunk, options))
    shapes = {frame.shape for frame in processed}
    if len(shapes) > 1:
        raise DatasetError(f"{where}frames of different sizes {sorted(shapes)}; pass resize=(height, width)",
                           episode_id=episode_id)
    return np.stack(processed)


def _raw(frame: np.ndarray, options: FrameOptions, episode_id: str | None, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    rgb = frame.ndim == 3 and frame.shape[2] == 3
    if frame.dtype != np.uint8 or not (rgb or (frame.ndim == 2 and options.grayscale)):
        where = f"episode {episode_id}: " if episode_id else ""
        raise DatasetError(f"{where}raw frame {index} must be uint8 RGB [H, W, 3] (or [H, W] for grayscale), "
                           f"got {frame.dtype} {list(frame.shape)}", episode_id=episode_id)
    return frame


def _process(chunk: list[np.ndarray], options: FrameOptions) -> list[np.ndarray]:
    """Grayscale and resize frames, several of one shape at a time."""
    out: list[np.ndarray] = []
    start = 0
    while start < len(chunk):
        stop = start + 1
        while stop < len(chunk) and chunk[stop].shape == chunk[start].shape:
            stop += 1
        batch = np.stack(chunk[start:stop])
        if options.grayscale and batch.ndim == 4:
            batch = grayscale(batch, options.luma)
        if options.resize is not None and tuple(options.resize) != batch.shape[1:3]:
            batch = resize(batch, options.resize, options.resample)
        out.extend(batch)
        start = stop
    return out


def grayscale(rgb: np.ndarray, luma: str = "opencv") -> np.ndarray:
    """RGB uint8 ``[..., 3]`` to grayscale uint8 ``[...]``: 0.299 R + 0.587 G + 0.114 B, rounded.

    Both formulas are fixed-point forms of ITU-R 601-2 luma. ``"opencv"`` is OpenCV's
    ``cvtColor(COLOR_RGB2GRAY)`` for uint8 (15-bit coefficients, as in OpenCV 4.x and 5.x);
    ``"pillow"`` is Pillow's ``convert("L")`` (16-bit). They differ by 1 grey level on 0.13% of the
    16.7 M colours and never by more (tests/test_framestack.py counts them).
    """
    weights, shift = _LUMA[luma]
    # In float32 the fixed-point sums are exact (whole numbers below 2**24, in any order of addition),
    # and so is the division by a power of two: twice as fast as uint32 arithmetic (measured).
    total = rgb.astype(np.float32) @ weights
    total += np.float32(1 << (shift - 1))
    total *= np.float32(1.0 / (1 << shift))
    return np.floor(total).astype(np.uint8)


# Coefficients of R, G, B summing to 2**shift: OpenCV's RGB2Gray<uchar> (15 bits), Pillow's L24 (16 bits).
_LUMA = {
    "opencv": (np.array([9798, 19235, 3735], dtype=np.float32), 15),
    "pillow": (np.array([19595, 38470, 7471], dtype=np.float32), 16),
}


def resize(frames: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """``[B, H, W(, C)]`` uint8 frames resized to ``size`` = (height, width).

    ``"area"`` shrinks by area averaging exactly as OpenCV's ``INTER_AREA`` (:func:`resize_area`);
    enlarging (either side) uses Pillow's bilinear filter instead, which is not OpenCV's output for
    that case (CrowdPlay only ever shrinks its 210x160 frames). ``"bilinear"`` is Pillow's bilinear.
    """
    height, width = size
    if resample == "area" and height <= frames.shape[1] and width <= frames.shape[2]:
        if frames.ndim == 4:  # area averaging works per channel: [B, C, H, W] and back
            return np.moveaxis(resize_area(np.moveaxis(frames, 3, 1), size), 1, 3)
        return resize_area(frames, size)
    return np.stack([np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
                     for frame in frames])


def resize_area(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink uint8 images ``[..., H, W]`` to ``size`` by area averaging, bit for bit as OpenCV.

    Each output pixel is the mean of the input area it covers, partly covered pixels weighted by the
    part covered. OpenCV computes this (``resizeArea_``) in float32 with its own order of operations
    and rounds half to even; with whole scale factors (``resizeAreaFast_``) it sums integers, and
    rounds half up for 2x2 blocks. This follows the same steps, so the results are equal, not close.
    """
    source_height, source_width = frames.shape[-2:]
    height, width = size
    if (height, width) == (source_height, source_width):
        return frames.copy()
    if height > source_height or width > source_width:
        raise DatasetError(f"area averaging only shrinks: {source_height}x{source_width} to {height}x{width}")
    # OpenCV works with the inverse of the inverse scale, so do the same (it decides the fast path).
    scale_y, scale_x = 1.0 / (height / source_height), 1.0 / (width / source_width)
    whole_y, whole_x = round(scale_y), round(scale_x)
    epsilon = np.finfo(np.float64).eps
    if abs(scale_y - whole_y) < epsilon and abs(scale_x - whole_x) < epsilon:
        blocks = frames.reshape(*frames.shape[:-2], height, whole_y, width, whole_x)
        sums = blocks.astype(np.int32).sum(axis=(-3, -1))
        if whole_y == whole_x == 2:
            return ((sums + 2) >> 2).astype(np.uint8)
        mean = sums.astype(np.float32) * np.float32(1.0 / (whole_y * whole_x))
        return np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    x_index, x_weight = _area_taps(source_width, width)
    y_index, y_weight = _area_taps(source_height, height)
    source = frames.astype(np.float32)
    rows = np.zeros((*frames.shape[:-1], width), dtype=np.float32)
    for index, weight in zip(x_index, x_weight, strict=True):  # each output column: its taps in order
        rows += source[..., index] * weight
    total = np.zeros((*frames.shape[:-2], height, width), dtype=np.float32)
    for index, weight in zip(y_index, y_weight, strict=True):
        total += weight[:, None] * rows[..., index, :]
    return np.clip(np.rint(total), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``computeResizeAreaTab``, as ``[taps, target]`` source indices and float32 weights.

    Output pixel ``d`` covers source ``[d*scale, (d+1)*scale)``; its taps (partly covered first
    pixel, whole pixels, partly covered last pixel) come in source order, as OpenCV adds them. Unused
    tap slots have weight 0, which adds exactly nothing.
    """
    scale = 1.0 / (target / source)
    taps: list[list[tuple[int, np.float32]]] = []
    for d in range(target):
        start = d * scale
        stop = start + scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), math.floor(stop)
        last = min(last, source - 1)
        first = min(first, last)
        row = []
        if first - start > 1e-3:
            row.append((first - 1, np.float32((first - start) / cell)))
        row.extend((s, np.float32(1.0 / cell)) for s in range(first, last))
        if stop - last > 1e-3:
            row.append((last, np.float32(min(min(stop - last, 1.0), cell) / cell)))
        taps.append(row)
    count = max(len(row) for row in taps)
    index = np.zeros((count, target), dtype=np.intp)
    weight = np.zeros((count, target), dtype=np.float32)
    for d, row in enumerate(taps):
        for k, (s, w) in enumerate(row):
            index[k, d], weight[k, d] = s, w
    index.flags.writeable = weight.flags.writeable = False
    return index, weight
