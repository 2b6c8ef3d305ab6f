"""Prepared frames: decode and process an episode's frames once, sample them by offset afterwards.

Sampling frames from PNGs costs a decode of 30-50 us per raw frame, 5-12 raw frames per transition,
so a lake larger than the cache samples at ~1,000 transitions/s. :func:`.preparing.prepare_frames` writes, for
each selected (episode, agent), every *element* a stack can hold (the pixel-wise max over ``max_n``
raw frames, in grayscale and resized as the options say) into a frame store inside the lake
(:mod:`pipeline.lake.framestore`); :class:`PreparedFrames` then makes a batch's stacks from those
elements with one ``preadv`` per run of nearby elements and a zstd decompression of ~10 us per
element, many per call and on two threads (:mod:`.storeread`). Stacking itself (``stack_n``,
``skip_n``, padding, the stack axis, downsampling) happens at sampling time, so one store serves
every stacking of the same elements.

The store is keyed by what decides an element (:func:`store_key`): ``resize``, ``grayscale``,
``max_n``, ``resample``, ``luma`` and ``missing``. Elements are made by the same code as the decode
path (:func:`~pipeline.engine.framestack.processed_elements` over
:func:`~pipeline.engine.pngdecode.raw_frame`), so a sampled batch is the same, bit for bit, with or
without the store (``tests/engine/test_prepared.py``).

Memory: a reader keeps each touched entry's index (17 bytes a step) in an LRU bounded by bytes and
a bounded number of open files; element bytes are read with ``preadv`` (the page cache holds them,
outside the process's RSS) into two buffers kept between batches, and decoded elements live in one
ring bounded by the frames' share of the cache.

This module reads a store (``covering_store``, ``PreparedFrames``) and names it (``element_options``,
``store_key``); :mod:`.preparing` writes it; the per-element machinery of reading is :mod:`.storeread`.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DatasetError
from ..lake.framestore import (
    FORMAT_VERSION,
    EntryIndex,
    read_index,
    store_entries,
)
from ..lake.layout import frame_entry_name, frame_store_path
from .frameread import ByteLRU
from .framestack import check_options, element_ends, no_image
from .storeread import ElementRing, Filler
from .trajectory import FrameOptions

if TYPE_CHECKING:
    pass

_GATHER_SPLIT = 64  # batches of fewer stacks than this are gathered on the calling thread only
_OPEN_FILES = 256  # entry files kept open at least (a quarter of the process's limit, when that is more)


def element_options(options: FrameOptions) -> dict[str, Any]:
    """The options that decide a stored element (the rest decide only how elements are stacked)."""
    check_options(options)
    return {"resize": None if options.resize is None else list(options.resize), "grayscale": options.grayscale,
            "max_n": options.max_n, "resample": options.resample, "luma": options.luma, "missing": options.missing}


def store_key(options: FrameOptions) -> str:
    """The frame store folder name for ``options``: readable, and one per set of element options."""
    o = element_options(options)
    size = "orig" if o["resize"] is None else "x".join(map(str, o["resize"]))
    colour = "gray" if o["grayscale"] else "rgb"
    return f"v{FORMAT_VERSION}-{size}-{colour}-max{o['max_n']}-{o['resample']}-{o['luma']}-{o['missing']}"


# -- sampling --------------------------------------------------------------------------------


def covering_store(lake_path: Path, options: FrameOptions, entries: list[tuple[str, str]]) -> str | None:
    """The key of the store holding every one of ``entries`` (episode id, agent), else None."""
    key = store_key(options)
    have = store_entries(lake_path, key)
    if not have:
        return None
    return key if all(frame_entry_name(e, a) in have for e, a in entries) else None


def _open_files_limit() -> int:
    """How many entry files a reader keeps open: a quarter of the process's limit, at least 256."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return _OPEN_FILES
    return _OPEN_FILES if soft == resource.RLIM_INFINITY else max(_OPEN_FILES, soft // 4)


class PreparedFrames:
    """A batch's stacks from a prepared frame store (what :class:`.decoded_frames.DecodedFrames` makes from PNGs).

    Each distinct element of the batch is found in the ring of decoded elements
    (:class:`~pipeline.engine.storeread.ElementRing`) or read and decompressed straight into its next
    slots (:mod:`.storeread`), then every stack is gathered from the ring by one fancy index.
    """

    def __init__(self, lake_path: Path, key: str, entries: list[tuple[str, str]], options: FrameOptions,
                 index_budget: int, element_budget: int, elements: int,
                 on_missing: Callable[[int, BaseException], None]) -> None:
        self.store = frame_store_path(lake_path, key)
        self._folder = str(self.store)
        self.key = key
        self.entries = entries
        self.options = options
        self.index_budget = index_budget
        self.element_budget = element_budget
        self.elements = elements  # raw steps of all entries: no more elements than this to keep
        self._on_missing = on_missing
        self._reset()

    def _reset(self) -> None:
        self._indexes = ByteLRU(self.index_budget)
        self._ring = ElementRing(self.element_budget, self.elements)
        self._files: OrderedDict[int, int] = OrderedDict()  # entry -> open descriptor
        self._open_limit = min(len(self.entries), _open_files_limit())
        self._filler = Filler()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_indexes", "_ring", "_files", "_open_limit", "_filler"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown os may be gone
            self.close()

    def _path(self, e: int) -> str:
        return os.path.join(self._folder, frame_entry_name(*self.entries[e]))

    def _fd(self, e: int) -> int:
        fd = self._files.get(e)
        if fd is not None:
            self._files.move_to_end(e)
            return fd
        path = self._path(e)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            episode_id = self.entries[e][0]
            self._on_missing(e, exc)  # raises when the episode left the lake
            raise DatasetError(f"episode {episode_id}: its prepared frames ({path}) were removed while sampling; "
                               f"make a new sampler (it decodes the PNGs), or run `ingest-pipeline frames prepare`",
                               episode_id=episode_id) from exc
        if hasattr(os, "posix_fadvise"):  # random reads: no readahead around them
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        self._files[e] = fd  # closed by _close_spare(), between batches: the read threads hold them meanwhile
        return fd

    def _close_spare(self) -> None:
        while len(self._files) > self._open_limit:
            os.close(self._files.popitem(last=False)[1])

    def _index(self, e: int) -> EntryIndex:
        index = self._indexes.get(e)
        if index is None:
            fd = self._fd(e)
            index = read_index(fd, self.store / frame_entry_name(*self.entries[e]))
            self._indexes.put(e, index, index.nbytes)
        return index

    def stacks(self, entry: np.ndarray, kept: np.ndarray, *, skip: int) -> np.ndarray:
        """The stacks of raw steps ``kept`` of entries ``entry`` (one row each), in ``frame_layout`` order."""
        options = self.options
        ends = element_ends(kept, options, skip=skip)  # [R, S]; -1: black
        keys = np.where(ends >= 0, (entry[:, None].astype(np.int64) << 32) | np.maximum(ends, 0), -1)
        unique, inverse = np.unique(keys, return_inverse=True)
        black = int(np.searchsorted(unique, 0))  # the -1 in front, if any
        slots = np.zeros(len(unique), dtype=np.int64)  # slot 0 is black
        slots[black:] = self._slots(unique[black:], int(entry[0]))
        by_row = slots[inverse.reshape(keys.shape)]
        elements = self._ring.array
        assert elements is not None
        rows = len(kept)
        if options.stack_n is None:
            by_row = by_row[:, :1]
        if options.stack_n is None or options.framestack_axis_first:
            out = np.empty((rows, *by_row.shape[1:], *elements.shape[1:]), dtype=np.uint8)

            def gather(half: int) -> None:
                part = slice(half * (rows // 2), rows if half else rows // 2)
                np.take(elements, by_row[part], axis=0, out=out[part], mode="clip")  # clip: unbuffered
        else:
            # Stack axis last: one element at a time into its strided place, 3x faster than a moveaxis copy
            out = np.empty((rows, *elements.shape[1:], by_row.shape[1]), dtype=np.uint8)

            def gather(half: int) -> None:
                part = slice(half * (rows // 2), rows if half else rows // 2)
                for s in range(by_row.shape[1]):
                    out[part, ..., s] = elements[by_row[part, s]]

        if rows >= _GATHER_SPLIT:  # numpy copies without the GIL: each thread half the rows
            self._filler.pair(gather)
        else:
            gather(0)
            gather(1)
        return out[:, 0] if options.stack_n is None else out

    def _slots(self, keys: np.ndarray, first_entry: int) -> np.ndarray:
        """The ring slot of each element ``(entry << 32) | raw step`` (sorted), decoding the ones not held."""
        ring = self._ring
        self._close_spare()  # files a failed batch left open
        if ring.array is not None and 2 * len(keys) + 1 > len(ring.owner):  # a larger batch than it was made for
            ring.reset(ring.array.shape[1:], len(keys))
        slots = ring.lookup(keys)
        absent = slots < 0
        if not bool(absent.any()):
            if ring.array is None:  # no element at all (cannot happen with a stack ending at its step)
                ring.reset(self._index(first_entry).shape, 1)
            return slots
        if ring.array is None:
            ring.reset(self._index(int(keys[absent][0] >> 32)).shape, len(keys))
        missing, fresh = ring.claim(slots)  # may turn hits in the slots it takes into misses
        starts, stops, shape, codec = self._locate(keys[missing])
        assert ring.array is not None
        if ring.array.shape[1:] != shape:
            if not bool(missing.all()):  # this batch holds elements of both shapes
                episode_id = self.entries[int(keys[missing][0] >> 32)][0]
                raise DatasetError(f"episode {episode_id}: frames of shape {list(shape)}, other sampled episodes "
                                   f"have {list(ring.array.shape[1:])}; pass resize=(height, width)",
                                   episode_id=episode_id)
            ring.reset(shape, len(keys))
            slots = ring.lookup(keys)
            missing, fresh = ring.claim(slots)
        assert ring.array is not None
        entry = keys[missing] >> 32
        try:
            fds = {e: self._fd(e) for e in np.unique(entry).tolist()}
            self._filler.fill(ring.array.reshape(-1), int(np.prod(shape)), fresh, fds, entry, starts, stops, codec,
                              self._path)
        finally:
            self._close_spare()
        ring.record(keys[missing], fresh)
        return slots

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], str]:
        """Byte ranges of each element ``(entry << 32) | raw step`` (sorted), their shape and codec, after
        checking that every raw frame they need can be shown (a stored element is empty where one cannot)."""
        entry, raw = keys >> 32, keys & 0xFFFFFFFF
        starts = np.empty(len(raw), dtype=np.int64)
        stops = np.empty(len(raw), dtype=np.int64)
        bounds = np.flatnonzero(np.r_[True, entry[1:] != entry[:-1], True]).tolist()
        entries = entry[bounds[:-1]].tolist()
        indexes = []
        following = raw + 1
        for e, first, end in zip(entries, bounds[:-1], bounds[1:], strict=True):  # the one loop per entry
            index = self._index(e)
            indexes.append(index)
            offsets = index.offsets
            if len(offsets) <= int(following[end - 1]):  # more steps than the store's entry holds
                self._no_frame(e, index, raw[first:end])
            np.take(offsets, raw[first:end], out=starts[first:end])
            np.take(offsets, following[first:end], out=stops[first:end])
        shape, codec = indexes[0].shape, indexes[0].codec
        for e, index in zip(entries, indexes, strict=True):
            if index.shape != shape:
                episode_id = self.entries[e][0]
                raise DatasetError(f"episode {episode_id}: frames of shape {list(index.shape)}, other sampled "
                                   f"episodes have {list(shape)}; pass resize=(height, width)", episode_id=episode_id)
        empty = stops == starts
        if bool(empty.any()):
            e = int(entry[np.argmax(empty)])
            wanted = raw[entry == e]
            spans = (wanted[:, None] - np.arange(self.options.max_n)[None, :]).ravel()
            self._no_frame(e, self._index(e), spans[spans >= 0])
        return starts, stops, shape, codec

    def _no_frame(self, e: int, index: EntryIndex, spans: np.ndarray) -> None:
        """Raise what decoding the PNGs says for the first needed raw frame that cannot be shown."""
        episode_id = self.entries[e][0]
        if len(index.steps) <= int(spans.max()):
            raise DatasetError(f"episode {episode_id}: its prepared frames hold {len(index.steps)} steps, fewer than "
                               f"the lake's; delete {self.store} and prepare it again", episode_id=episode_id)
        lacking = np.unique(spans[~index.present[spans]])
        step = int(index.steps[lacking].min())
        raise no_image(episode_id, step, none_before=self.options.missing == "previous")

