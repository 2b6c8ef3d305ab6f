"""A batch's stacked frames decoded from the lake's PNGs (no prepared frame store holds the selection).

The same frame buffer as ``trajectory()`` (:mod:`.framestack`) over the same decoded raw frames
(:func:`~pipeline.engine.pngdecode.raw_frame`), so a sampled observation is exactly the trajectory's.
With ``missing="error"`` (the default) a batch reads each row group of images it needs once
(:mod:`.frameread`), decodes on two threads and stacks every entry at once (:func:`_stack_batch`);
image bytes (by row group) and decoded raw frames are kept in two LRUs bounded by bytes. With
``missing="previous"`` each entry's stacks come from :func:`~pipeline.engine.trajectory.load_frames`,
cached per (entry, position) as finished stacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..lake.layout import EpisodeLocation
from .frameread import ByteLRU, ImageReader, check_images
from .framestack import element_ends, grayscale, raw_indices, resize, stacked_frames
from .pngdecode import raw_frame
from .sample_index import entry_runs
from .trajectory import FrameOptions, agent_step_numbers, load_frames

_ELEMENT_CHUNK = 1024  # stacked elements converted together: bounded memory for large RGB frames
_FRAME_OVERHEAD = 112  # bytes a cached numpy array costs beyond its pixels
_WORKING_COPIES = 6  # a batch's raw frames, this many times over: its working memory
_POOL_MIN = 64  # fewer frames than this are decoded on the calling thread
_DECODE_THREADS = 2  # the cores a training machine's loader usually has to itself


class DecodedFrames:
    """A sampler's stacks of frames made from the PNGs, through caches bounded by bytes.

    ``episodes`` are the sampler's (episode id, agent) entries at ``locations``; ``array_budget`` is
    the sampler's share for arrays (the entries' step numbers and image rows take a sixteenth and an
    eighth of it), ``frame_budget`` the frames' share; ``on_missing(e, exc)`` raises the error for an
    entry whose episode left the lake.
    """

    def __init__(self, locations: list[EpisodeLocation], episodes: list[tuple[str, str]], options: FrameOptions, *,
                 frequency: int, offset: int, array_budget: int, frame_budget: int,
                 on_missing: Callable[[int, BaseException], None]) -> None:
        self.options = options
        self._locations = locations
        self._episodes = episodes
        self._steps_paths = [location.table("steps") for location in locations]
        self._frequency = frequency
        self._offset = offset
        self._on_missing = on_missing
        self._frames_lru = ByteLRU(frame_budget)  # missing="previous": finished stacks
        self._raw_steps = ByteLRU(max(array_budget // 16, 1 << 20))  # step numbers per entry, for the frame buffer
        self._frame_rows = ByteLRU(max(array_budget // 8, 1 << 20))  # raw index -> row of steps.parquet, per entry
        # The frames' share: up to half for image bytes (a row group at a time; a hit saves a read of
        # ~0.2 ms for ~1.5 KB), the rest for decoded raw frames (a hit saves a decode of ~30-50 us for 7 KB).
        self._frame_budget = frame_budget
        self._images = ImageReader(frame_budget - frame_budget // 2)
        self._decoded = ByteLRU(frame_budget // 2)  # (entry, raw index) -> raw frame as decoded
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    @property
    def image_bytes(self) -> int:
        """Bytes of image files cached (a row group at a time)."""
        return self._images.groups.bytes

    def stacks(self, both_episode: np.ndarray, both_position: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stacked frames of a batch's ``k`` sampled steps and of the ``k`` steps after them: the
        entries ``both_episode`` at kept positions ``both_position``, sampled steps first."""
        if self.options.missing == "error":
            return self._batch_frames(both_episode, both_position, k)
        out: np.ndarray | None = None
        for e in np.unique(both_episode).tolist():
            rows = np.flatnonzero(both_episode == e)
            out = self._put(out, rows, self._stacks(e, both_position[rows]), e, k)
        assert out is not None
        return out[:k], out[k:]

    def _batch_frames(self, both_episode: np.ndarray, both_position: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's stacks, reading each row group of images they need once and decoding on every core.

        The same frame buffer as ``trajectory()`` over the same decoded raw frames (:func:`raw_frame`,
        as ``load_frames``): per entry :func:`stacked_frames`, or all entries at once
        (:func:`_stack_batch`, the same arithmetic) when every raw frame has one shape.
        """
        options = self.options
        frequency, offset = self._frequency, self._offset
        order, ordered, runs = entry_runs(both_episode)
        plans = []
        for first, end in runs:
            e = int(ordered[first])
            kept = offset + both_position[order[first:end]] * frequency
            needed = raw_indices(kept, options, skip=frequency)
            file_rows = self._rows_of(e, needed)
            if bool((file_rows < 0).any()):
                self._no_image(e, needed[file_rows < 0])
            plans.append((self._steps_paths[e], int(file_rows[0]), e, order[first:end], kept, needed, file_rows))
        plans.sort(key=lambda plan: plan[:2])  # by file and row: row groups read in order
        images: list[bytes | None] = []
        at, held, fill, total = [], [], [], 0
        for path, _, e, _, _, needed, file_rows in plans:
            def failed(_: Any, exc: BaseException, e: int = e) -> None:
                self._on_missing(e, exc)

            raw = needed.tolist()
            frames = [self._decoded.get((e, r)) for r in raw]
            missing = [i for i, frame in enumerate(frames) if frame is None]
            if missing:
                found = self._images.images(path, file_rows[missing], failed)
                if None in found:
                    self._no_image(e, needed[missing][[image is None for image in found]])
                fill.append((e, raw, frames, missing, len(images)))
                images.extend(found)
            at.append(total)
            total += len(frames)
            held.append(frames)
        fresh = self._decode(images)  # type: ignore[arg-type]
        # Decoded frames may use what the image bytes leave of the frames' share, less the batch's own
        # working memory (its raw frames a few times over: list, array, elements, outputs; measured
        # peak RSS with FrameOptions.atari() was 1397 MiB for a 1 GiB budget without this reserve)
        sample = fresh[0] if fresh else held[0][0] if held and held[0] else None
        working = _WORKING_COPIES * total * (0 if sample is None else sample.nbytes)
        # Half of what is left: ~60k small arrays cost about twice their bytes in the heap (clearing 412
        # MB of them returned 206 MB; peak RSS 1467 MiB for a 1 GiB budget after 212 batches without this)
        self._decoded.budget = max(0, (self._frame_budget - self._images.groups.bytes - working) // 2)
        for e, raw, frames, missing, start in fill:
            for i, frame in zip(missing, fresh[start:start + len(missing)], strict=True):
                frames[i] = frame
                self._decoded.put((e, raw[i]), frame, frame.nbytes + _FRAME_OVERHEAD)
        decoded = [frame for frames in held for frame in frames]
        shapes = {frame.shape for frame in decoded}
        out: np.ndarray | None = None
        if len(shapes) == 1:
            out = _stack_batch(decoded, [(plan[3], plan[4], plan[5], a) for plan, a in zip(plans, at, strict=True)],
                               2 * k, options, frequency)
        else:
            for (_, _, e, rows, kept, needed, _), a in zip(plans, at, strict=True):
                lookup = dict(zip(needed.tolist(), decoded[a:a + len(needed)], strict=True))
                stacks = stacked_frames(lookup.__getitem__, kept, options, skip=frequency,
                                        episode_id=self._episodes[e][0])
                out = self._put(out, rows, stacks, e, k)
        assert out is not None
        return out[:k], out[k:]

    def _put(self, out: np.ndarray | None, rows: np.ndarray, stacks: np.ndarray, e: int, k: int) -> np.ndarray:
        """``out`` (made for ``2 * k`` rows by the first entry) with entry ``e``'s ``stacks`` in its ``rows``."""
        if out is None:
            out = np.empty((2 * k, *stacks.shape[1:]), dtype=np.uint8)
        elif stacks.shape[1:] != out.shape[1:]:
            episode_id = self._episodes[e][0]
            raise DatasetError(f"episode {episode_id}: frames of shape {list(stacks.shape[1:])}, other sampled "
                               f"episodes have {list(out.shape[1:])}; pass resize=(height, width)",
                               episode_id=episode_id)
        out[rows] = stacks
        return out

    def _decode(self, images: list[bytes]) -> list[np.ndarray]:
        """Raw frames of image bytes, on two threads (Pillow's decoders release the GIL)."""
        gray = bool(self.options.grayscale)

        def decode(part: list[bytes]) -> list[np.ndarray]:
            return [raw_frame(image, gray_ok=gray) for image in part]

        if len(images) < _POOL_MIN:
            return decode(images)
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker has no threads of its own
            self._pool = ThreadPoolExecutor(max_workers=_DECODE_THREADS, thread_name_prefix="frame-decode")
            self._pool_pid = os.getpid()
        size = -(-len(images) // (2 * _DECODE_THREADS))
        parts = self._pool.map(decode, [images[i:i + size] for i in range(0, len(images), size)])
        return [frame for part in parts for frame in part]

    def _rows_of(self, e: int, raw: np.ndarray) -> np.ndarray:
        """Rows of the entry's ``steps.parquet`` holding its raw steps ``raw`` (-1: none)."""
        index = self._frame_rows.get(e)
        if index is None:
            location = self._locations[e]
            try:
                steps = self._agent_steps(e)
                rows = self._images.rows(location, steps)
            except Exception as exc:
                self._on_missing(e, exc)
                raise
            if len(rows) and rows[0] >= 0 and bool((np.diff(rows) == 1).all()):
                index = (int(rows[0]), None)  # the usual case: consecutive rows, nothing to keep
            else:
                index = (0, rows.astype(np.int32 if len(rows) and rows.max() < 2**31 else np.int64))
            self._frame_rows.put(e, index, 64 if index[1] is None else index[1].nbytes)
        first, rows = index
        return first + raw if rows is None else rows[raw].astype(np.int64)

    def _agent_steps(self, e: int) -> np.ndarray:
        raw_steps = self._raw_steps.get(e)
        if raw_steps is None:
            raw_steps = agent_step_numbers(self._locations[e], self._episodes[e][1])
            self._raw_steps.put(e, raw_steps, raw_steps.nbytes)
        return raw_steps

    def _no_image(self, e: int, raw: np.ndarray) -> None:
        episode_id = self._episodes[e][0]
        step = int(self._agent_steps(e)[raw].min())
        check_images([None], [step], episode_id)

    def _stacks(self, e: int, positions: np.ndarray) -> np.ndarray:
        """The stacked frames of entry ``e`` at kept ``positions``, through the frame cache.

        Made by the same frame buffer as ``trajectory()`` and ``to_d3rlpy`` (:func:`load_frames`, which
        reads and decodes only the raw frames these stacks need), so a sampled observation is exactly
        the trajectory's; cached per (entry, position) as the finished stack.
        """
        options = self.options
        found: dict[int, np.ndarray] = {}
        missing = []
        for p in positions.tolist():
            frame = self._frames_lru.get((e, p))
            if frame is None:
                missing.append(p)
            else:
                found[p] = frame
        if missing:
            wanted = np.asarray(sorted(set(missing)), dtype=np.int64)
            try:
                raw_steps = self._agent_steps(e)
                kept = self._offset + wanted * self._frequency
                decoded = load_frames(self._locations[e], raw_steps, options, kept=kept, skip=self._frequency)
            except Exception as exc:  # polars raises its own errors for a file removed underneath
                self._on_missing(e, exc)
                raise
            for p, view in zip(wanted.tolist(), decoded, strict=True):
                frame = found[p] = view.copy()  # a view would keep the whole decoded batch alive
                self._frames_lru.put((e, p), frame, frame.nbytes)
        return np.stack([found[p] for p in positions.tolist()])


def _stack_batch(decoded: list[np.ndarray], plans: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]], rows: int,
                 options: FrameOptions, frequency: int) -> np.ndarray:
    """:func:`stacked_frames` for many entries at once, over raw frames of one shape.

    ``plans`` are, per entry: the output rows, the kept raw steps, the raw indices decoded (sorted)
    and where they start in ``decoded``. Each stacked element is the max over its ``max_n`` raw frames
    (fewer at the episode's start), converted and resized as :func:`stacked_frames` does; the
    arithmetic is per frame, so doing it for the whole batch at once gives the same values.
    """
    black = len(decoded)
    frames = np.empty((black + 1, *decoded[0].shape), dtype=np.uint8)  # [F + 1, H, W(, C)]: black last
    np.stack(decoded, out=frames[:black])
    frames[black] = 0
    count = options.stack_n or 1
    out_rows, element_keys = [], []
    for out, kept, needed, at in plans:
        ends = element_ends(kept, options, skip=frequency)  # [K, S], -1: black
        ids = at + np.searchsorted(needed, np.maximum(ends, 0))
        element_keys.append(np.where(ends >= 0, ids, -1))
        out_rows.append(out)
    keys = np.concatenate(element_keys)  # [rows, S]: the decoded frame each element ends at, or -1
    shape = frames.shape[1:]
    convert = options.grayscale and frames.ndim == 4
    shrink = options.resize is not None and tuple(options.resize) != shape[:2]
    if options.max_n == 1 and not convert and not shrink:  # each element is a raw frame as it is
        elements, slot = frames, np.where(keys < 0, black, keys)
    else:
        unique, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(keys.shape)
        real = unique[unique >= 0]
        # Each element's raw frames: the one it ends at and the max_n - 1 before it in its episode
        # (clipped at the episode's start). An entry's decoded frames are its raw indices, sorted
        # and without gaps within each element's span (raw_indices), so raw index - j is id - j.
        raw_of = np.concatenate([plan[2] for plan in plans])
        built: np.ndarray | None = None
        for chunk in range(0, len(real), _ELEMENT_CHUNK):
            ids = real[chunk:chunk + _ELEMENT_CHUNK]
            element = frames[ids]
            for j in range(1, options.max_n):
                np.maximum(element, frames[np.where(raw_of[ids] - j >= 0, ids - j, ids)], out=element)
            if convert:
                element = grayscale(element, options.luma)
            if shrink:
                assert options.resize is not None
                element = resize(element, options.resize, options.resample)
            if built is None:  # black last
                built = np.zeros((len(real) + 1, *element.shape[1:]), dtype=np.uint8)
            built[chunk:chunk + len(ids)] = element
        elements = np.zeros((1, *shape), dtype=np.uint8) if built is None else built
        shape = elements.shape[1:]
        slot = inverse - (1 if unique[0] < 0 else 0)
        slot = np.where(keys < 0, len(real), slot)
    by_row = np.empty((rows, count), dtype=np.int64)
    by_row[np.concatenate(out_rows)] = slot  # each output row's elements, oldest first
    if options.stack_n is None:
        return elements[by_row[:, 0]]
    if options.framestack_axis_first:
        return elements[by_row]
    # Stack axis last: one element at a time into its strided slot, 3x faster than a moveaxis copy
    stacked = np.empty((rows, *shape, count), dtype=np.uint8)
    for s in range(count):
        stacked[..., s] = elements[by_row[:, s]]
    return stacked
