"""Prepared frames: decode and process an episode's frames once, sample them by offset afterwards.

Sampling frames from PNGs costs a decode of 30-50 us per raw frame, 5-12 raw frames per transition,
so a lake larger than the cache samples at ~1,000 transitions/s. :func:`prepare_frames` writes, for
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

It holds both halves of the store's use, preparing (``prepare_frames`` to ``_prepare_entry``, with
the process pool) and reading (``covering_store``, ``PreparedFrames``), which share the element
options and the store key; the per-element machinery of reading is :mod:`.storeread`.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..cores import usable_cores
from ..errors import DatasetError
from ..lake.commit import Staging
from ..lake.framestore import (
    CODECS,
    FORMAT_VERSION,
    EntryIndex,
    encode,
    new_compressor,
    publish,
    read_index,
    store_entries,
    write_entry,
    write_options,
)
from ..lake.layout import EpisodeLocation, frame_entry_name, frame_store_path
from .frameread import ByteLRU
from .framestack import check_options, element_ends, no_image, processed_elements
from .pngdecode import raw_frame
from .sample_index import selected_entries
from .storeread import ElementRing, Filler
from .trajectory import FrameOptions, _images, agent_step_numbers

if TYPE_CHECKING:
    from .lake import Lake, Selection

_ENTRIES_PER_TASK = 8  # entries a worker prepares in one staging folder before publishing them
_ELEMENTS_PER_CHUNK = 256  # elements processed at once while preparing: bounded memory for large frames
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


# -- preparing -------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What :func:`prepare_frames` did: entries written, already there, or left out (and why)."""

    key: str
    store: Path
    prepared: int = 0
    present: int = 0  # already prepared: skipped
    skipped: list[tuple[str, str, str]] | None = None  # (episode id, agent, reason): the decode path serves them
    frames: int = 0  # elements written
    bytes: int = 0  # bytes written
    image_bytes: int = 0  # the PNG bytes they were made from
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the work, in whichever processes did it


@dataclass(frozen=True)
class _Task:
    lake: Path
    key: str
    options: FrameOptions
    codec: str
    entries: list[tuple[EpisodeLocation, str]]


def prepare_frames(lake: Lake, options: FrameOptions, episodes: Selection = None, agent: str | None = None, *,
                   codec: Literal["zstd", "raw"] = "zstd", workers: int | None = None,
                   progress: Callable[[PrepareReport, int], None] | None = None) -> PrepareReport:
    """Prepare the frame store of ``options`` for the selection (only what it lacks); see the module doc.

    ``workers`` processes (default: the usable cores) each prepare a few entries at a time, write them
    into their own staging folder and publish them with one ``rename`` each. ``progress(report, total)``
    is called after each group. Safe to run while others sample, prepare, ingest or ``gc``.
    """
    import time

    if codec not in CODECS:
        raise DatasetError(f"codec must be one of {', '.join(map(repr, CODECS))}, not {codec!r}")
    started = time.perf_counter()
    key = store_key(options)
    report = PrepareReport(key=key, store=frame_store_path(lake.path, key), skipped=[])
    locations, agents, _ = selected_entries(lake, episodes, agent, 1, 0)
    have = store_entries(lake.path, key)
    todo = []
    for location, name in zip(locations, agents, strict=True):
        if frame_entry_name(location.episode_id, name) in have:
            report.present += 1
        else:
            todo.append((location, name))
    total = len(locations)
    if not todo:
        report.seconds = time.perf_counter() - started
        return report
    write_options(lake.path, key, {**element_options(options), "codec_default": codec, "version": FORMAT_VERSION})
    tasks = [_Task(lake.path, key, options, codec, todo[i:i + _ENTRIES_PER_TASK])
             for i in range(0, len(todo), _ENTRIES_PER_TASK)]
    workers = max(1, min(workers or usable_cores(), len(tasks)))
    for result in _run(tasks, workers):
        prepared, skipped, frames, written, image_bytes, cpu = result
        report.cpu_seconds += cpu
        report.prepared += prepared
        assert report.skipped is not None
        report.skipped.extend(skipped)
        report.frames += frames
        report.bytes += written
        report.image_bytes += image_bytes
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report, total)
    report.seconds = time.perf_counter() - started
    return report


_Result = tuple[int, list[tuple[str, str, str]], int, int, int, float]


def _run(tasks: list[_Task], workers: int) -> Iterator[_Result]:
    if workers == 1:
        yield from map(_prepare_task, tasks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future[Any]] = set()
        queue = iter(tasks)
        for task in queue:  # at most 2 tasks per worker in flight: results stream back in order of completion
            pending.add(pool.submit(_prepare_task, task))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = next(as_completed(pending))
            pending.remove(done)
            yield done.result()
            following = next(queue, None)
            if following is not None:
                pending.add(pool.submit(_prepare_task, following))


def _prepare_task(task: _Task) -> _Result:
    """Prepare a few entries into one staging folder, then publish each with one rename."""
    import time

    cpu = time.process_time()
    compressor = new_compressor()
    skipped: list[tuple[str, str, str]] = []
    frames = written = image_bytes = 0
    with Staging(task.lake) as staging:
        staged = []
        for location, agent in task.entries:
            path = staging.folder / frame_entry_name(location.episode_id, agent)
            outcome = _prepare_entry(path, location, agent, task.options, task.key, task.codec, compressor)
            if isinstance(outcome, str):
                skipped.append((location.episode_id, agent, outcome))
                continue
            staged.append(path)
            frames += outcome[0]
            written += outcome[1]
            image_bytes += outcome[2]
        publish(task.lake, task.key, staged)
    return len(staged), skipped, frames, written, image_bytes, time.process_time() - cpu


def _prepare_entry(path: Path, location: EpisodeLocation, agent: str, options: FrameOptions, key: str, codec: str,
                   compressor: Any) -> tuple[int, int, int] | str:
    """Write one entry file: (elements, bytes, image bytes), or why it cannot be stored."""
    episode_id = location.episode_id
    steps = agent_step_numbers(location, agent)
    images = _images(location)
    with_image = np.array(sorted(step for step, image in images.items() if image is not None), dtype=np.int64)
    if options.missing == "previous":  # the latest step with an image at or before each step
        at = np.searchsorted(with_image, steps, side="right") - 1
        source = np.where(at >= 0, with_image[np.maximum(at, 0)], -1) if len(with_image) else np.full_like(steps, -1)
    else:
        source = np.where(np.isin(steps, with_image), steps, -1)
    present = source >= 0
    count = len(steps)
    # An element exists where each of its max_n raw frames (fewer at the start) can be shown.
    usable = present.copy()
    for j in range(1, options.max_n):
        usable[j:] &= present[:-j]
    ends = np.flatnonzero(usable).tolist()

    @lru_cache(maxsize=options.max_n + 1)
    def decoded(step: int) -> np.ndarray:
        return raw_frame(images[step] or b"", gray_ok=options.grayscale)

    def frame_at(index: int) -> np.ndarray:
        return decoded(int(source[index]))

    shape: tuple[int, ...] | None = None
    stored: dict[int, bytes] = {}

    def blobs() -> Iterator[bytes]:
        nonlocal shape
        ready = 0
        for start in range(0, len(ends), _ELEMENTS_PER_CHUNK):
            chunk = ends[start:start + _ELEMENTS_PER_CHUNK]
            elements = processed_elements(frame_at, chunk, options, episode_id)
            if shape is None:
                shape = elements.shape[1:]
            elif elements.shape[1:] != shape:
                raise _Unstorable(f"elements of shapes {list(shape)} and {list(elements.shape[1:])}")
            for end, element in zip(chunk, elements, strict=True):
                stored[end] = encode(element, codec, compressor)
            while ready < count and (ready in stored or not usable[ready]):
                yield stored.pop(ready, b"")
                ready += 1
        while ready < count:
            yield b""
            ready += 1

    try:
        size = write_entry(path, episode_id=episode_id, agent=agent, key=key, shape=lambda: shape or (),
                           codec=codec, steps=steps, present=present, blobs=blobs())
    except (_Unstorable, DatasetError) as exc:  # frames of different sizes, an undecodable frame
        path.unlink(missing_ok=True)
        return str(exc)
    shown = set(source[present].tolist())
    return len(ends), size, sum(len(images[step] or b"") for step in shown)


class _Unstorable(Exception):
    pass


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

