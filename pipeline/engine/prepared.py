"""Prepared frames: decode and process an episode's frames once, sample them by offset afterwards.

Sampling frames from PNGs costs a decode of 30-50 us per raw frame, 5-12 raw frames per transition,
so a lake larger than the cache samples at ~1,000 transitions/s. :func:`prepare_frames` writes, for
each selected (episode, agent), every *element* a stack can hold (the pixel-wise max over ``max_n``
raw frames, in grayscale and resized as the options say) into a frame store inside the lake
(:mod:`pipeline.lake.framestore`); :class:`PreparedFrames` then makes a batch's stacks from those
elements with a few ``pread`` calls and a zstd decompression of ~10 us per element, in C on two
threads. Stacking itself (``stack_n``, ``skip_n``, padding, the stack axis, downsampling) happens at
sampling time, so one store serves every stacking of the same elements.

The store is keyed by what decides an element (:func:`store_key`): ``resize``, ``grayscale``,
``max_n``, ``resample``, ``luma`` and ``missing``. Elements are made by the same code as the decode
path (:func:`~pipeline.engine.framestack.processed_elements` over
:func:`~pipeline.engine.pngdecode.raw_frame`), so a sampled batch is the same, bit for bit, with or
without the store (``tests/engine/test_prepared.py``).

Memory: a reader keeps each touched entry's index (17 bytes a step) in an LRU bounded by bytes and
a bounded number of open files; element bytes are read with ``pread`` (the page cache holds them,
outside the process's RSS) and the batch's elements are the only frames held.

Longer than our ~400-line guide: it holds both halves of the store's use, preparing (``prepare_frames``
to ``_prepare_entry``, with the process pool) and reading (``_Slab``, ``covering_store``,
``PreparedFrames``), which share the element options and the store key; the cut is a ``prepare``
module beside this one, once the reading side stops changing with the sampling-speed work.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
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
    DamagedEntry,
    EntryIndex,
    element_bytes,
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
from .framestack import check_options, element_ends, processed_elements
from .pngdecode import raw_frame
from .trajectory import FrameOptions, _images, agent_step_numbers

if TYPE_CHECKING:
    from .lake import Lake, Selection

_ENTRIES_PER_TASK = 8  # entries a worker prepares in one staging folder before publishing them
_ELEMENTS_PER_CHUNK = 256  # elements processed at once while preparing: bounded memory for large frames
_OPEN_FILES = 256
_MERGE_GAP = 16 * 1024  # a batch's element reads closer than this in one file become one pread
_THREADS = 2  # zstd decompression threads (it runs in C, without the GIL)


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

    from .sampler import _index

    if codec not in CODECS:
        raise DatasetError(f"codec must be one of {', '.join(map(repr, CODECS))}, not {codec!r}")
    started = time.perf_counter()
    key = store_key(options)
    report = PrepareReport(key=key, store=frame_store_path(lake.path, key), skipped=[])
    locations, agents, _ = _index(lake, episodes, agent, 1, 0)
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


class _Slab:
    """Decoded elements in one array of slots bounded by bytes; slot 0 is black. Slots are reused in
    turn: with uniform sampling no replacement order keeps more hits than another, and this one costs
    no bookkeeping per hit. Pages of the array are touched (count toward RSS) only as slots fill."""

    def __init__(self, budget: int, bound: int) -> None:
        self.budget = budget
        self.bound = bound  # elements there are to hold: the selection's raw steps
        self.array: np.ndarray | None = None
        self.owner = np.zeros(0, dtype=np.int64)  # slot -> key held (-1: none)
        self.where: dict[int, int] = {}  # key -> slot
        self.hand = 1

    def reset(self, shape: tuple[int, ...], needed: int) -> None:
        """An empty slab for elements of ``shape``, with room for at least twice ``needed`` of them."""
        size = max(1, int(np.prod(shape)))
        count = max(min(self.budget // size, self.bound + 1), 2 * needed + 1)
        # Touched once here, as huge pages where the kernel gives them: filling fresh 4 KB pages one
        # element at a time cost ~15 us an element while sampling (measured: it doubled the time to
        # place a decompressed element), against ~0.4 s for 800 MB at once.
        memory = mmap.mmap(-1, count * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            memory.madvise(mmap.MADV_HUGEPAGE)
        flat = np.frombuffer(memory, dtype=np.uint8)
        flat[::4096] = 0
        self.array = flat.reshape(count, *shape)
        self.owner = np.full(count, -1, dtype=np.int64)
        self.where = {}
        self.hand = 1

    def take(self, count: int, protected: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``count`` slots for ``keys``, none of them ``protected`` (held by this batch's other elements)."""
        size = len(self.owner)
        candidates = 1 + (self.hand - 1 + np.arange(count + len(protected))) % (size - 1)
        if len(protected):
            candidates = candidates[~np.isin(candidates, protected)]
        slots = candidates[:count]
        self.hand = int(slots[-1]) % (size - 1) + 1 if count else self.hand
        old = self.owner[slots]
        where = self.where
        for key in old[old >= 0].tolist():
            del where[key]
        self.owner[slots] = keys
        where.update(zip(keys.tolist(), slots.tolist(), strict=True))
        return slots


def covering_store(lake_path: Path, options: FrameOptions, entries: list[tuple[str, str]]) -> str | None:
    """The key of the store holding every one of ``entries`` (episode id, agent), else None."""
    key = store_key(options)
    have = store_entries(lake_path, key)
    if not have:
        return None
    return key if all(frame_entry_name(e, a) in have for e, a in entries) else None


class PreparedFrames:
    """A batch's stacks from a prepared frame store (what ``Sampler._batch_frames`` makes from PNGs)."""

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
        self._slab = _Slab(self.element_budget, self.elements)
        self._files: OrderedDict[int, int] = OrderedDict()  # entry -> open descriptor
        self._decompressor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_indexes", "_slab", "_files", "_decompressor"):
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

    def _fd(self, e: int) -> int:
        fd = self._files.get(e)
        if fd is not None:
            self._files.move_to_end(e)
            return fd
        episode_id, agent = self.entries[e]
        path = os.path.join(self._folder, frame_entry_name(episode_id, agent))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            self._on_missing(e, exc)  # raises when the episode left the lake
            raise DatasetError(f"episode {episode_id}: its prepared frames ({path}) were removed while sampling; "
                               f"make a new sampler (it decodes the PNGs), or run `ingest-pipeline frames prepare`",
                               episode_id=episode_id) from exc
        self._files[e] = fd
        if len(self._files) > _OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        return fd

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
        valid = ends >= 0
        keys = np.where(valid, (entry[:, None].astype(np.int64) << 32) | np.maximum(ends, 0), -1)
        unique, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(keys.shape)
        real = unique[unique >= 0]
        slots = self._slots(real, int(entry[0]))
        by_row = np.where(valid, slots[np.maximum(inverse - (len(unique) - len(real)), 0)], 0)
        elements = self._slab.array
        assert elements is not None
        count = options.stack_n or 1
        if options.stack_n is None:
            return elements[by_row[:, 0]]
        if options.framestack_axis_first:
            return elements[by_row]
        stacked = np.empty((len(kept), *elements.shape[1:], count), dtype=np.uint8)
        for s in range(count):
            stacked[..., s] = elements[by_row[:, s]]
        return stacked

    def _slots(self, keys: np.ndarray, first_entry: int) -> np.ndarray:
        """The slab slot of each element ``(entry << 32) | raw step`` (sorted), reading the ones not held."""
        slab = self._slab
        if slab.array is not None and 2 * len(keys) + 1 > len(slab.owner):  # a larger batch than it was made for
            slab.reset(slab.array.shape[1:], len(keys))
        get = slab.where.get
        slots = np.fromiter((get(key, -1) for key in keys.tolist()), dtype=np.int64, count=len(keys))
        absent = slots < 0
        if not bool(absent.any()):
            if slab.array is None:  # no element at all (cannot happen with a stack ending at its step)
                slab.reset(self._index(first_entry).shape, 1)
            return slots
        missing = keys[absent]
        entry, raw = missing >> 32, missing & 0xFFFFFFFF
        starts, stops, shape, codec = self._locate(entry, raw)
        assert shape is not None
        if slab.array is None or slab.array.shape[1:] != shape:
            if slab.array is not None and not bool(absent.all()):  # this batch holds elements of both shapes
                episode_id = self.entries[int(entry[0])][0]
                raise DatasetError(f"episode {episode_id}: frames of shape {list(shape)}, other sampled episodes "
                                   f"have {list(slab.array.shape[1:])}; pass resize=(height, width)",
                                   episode_id=episode_id)
            slab.reset(shape, len(keys))
        fresh = slab.take(len(missing), protected=slots[~absent], keys=missing)
        slots[absent] = fresh
        self._fill(slab, fresh, self._read(entry, starts, stops), codec, entry)
        return slots

    def _fill(self, slab: _Slab, slots: np.ndarray, blobs: list[memoryview], codec: str, entry: np.ndarray) -> None:
        """Decode stored elements into their slots (each verified by its checksum; ``entry``: whose each is)."""
        array = slab.array
        assert array is not None
        shape = array.shape[1:]
        if self._decompressor is None and codec == "zstd":
            import zstandard

            self._decompressor = zstandard.ZstdDecompressor()
        n = len(blobs)
        try:
            decoded = element_bytes(blobs, int(np.prod(shape)), codec, self._decompressor,
                                    threads=_THREADS if n >= 64 else 1)
        except DamagedEntry as exc:  # name the file: the store is derived, deleting it is the remedy
            e = int(entry[exc.item or 0])
            raise DamagedEntry(self.store / frame_entry_name(*self.entries[e]), exc.detail) from exc
        for i, slot in enumerate(slots.tolist()):
            array[slot] = np.frombuffer(decoded[i], dtype=np.uint8).reshape(shape)

    def _locate(self, entry: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None,
                                                                    str]:
        """Byte ranges of each element, after checking that every raw frame it needs can be shown."""
        starts = np.empty(len(raw), dtype=np.int64)
        stops = np.empty(len(raw), dtype=np.int64)
        shape: tuple[int, ...] | None = None
        codec = "zstd"
        bounds = np.flatnonzero(np.r_[True, entry[1:] != entry[:-1], True]) if len(entry) else np.array([0])
        max_n = self.options.max_n
        for first, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            e = int(entry[first])
            index = self._index(e)
            wanted = raw[first:end]
            spans = (wanted[:, None] - np.arange(max_n)[None, :]).ravel()
            spans = spans[spans >= 0]
            if len(index.steps) <= int(wanted.max()) or not bool(index.present[spans].all()):
                self._no_frame(e, index, spans)
            if shape is None:
                shape, codec = index.shape, index.codec
            elif index.shape != shape:
                episode_id = self.entries[e][0]
                raise DatasetError(f"episode {episode_id}: frames of shape {list(index.shape)}, other sampled "
                                   f"episodes have {list(shape)}; pass resize=(height, width)", episode_id=episode_id)
            starts[first:end] = index.offsets[wanted]
            stops[first:end] = index.offsets[wanted + 1]
        return starts, stops, shape, codec

    def _no_frame(self, e: int, index: EntryIndex, spans: np.ndarray) -> None:
        """Raise what decoding the PNGs says for the first needed raw frame that cannot be shown."""
        episode_id = self.entries[e][0]
        if len(index.steps) <= int(spans.max()):
            raise DatasetError(f"episode {episode_id}: its prepared frames hold {len(index.steps)} steps, fewer than "
                               f"the lake's; delete {self.store} and prepare it again", episode_id=episode_id)
        lacking = np.unique(spans[~index.present[spans]])
        step = int(index.steps[lacking].min())
        if self.options.missing == "previous":
            raise DatasetError(f"episode {episode_id}: step {step} has no image, nor any step before it",
                               episode_id=episode_id)
        raise DatasetError(f"episode {episode_id}: step {step} has no image "
                           f"(missing='previous' uses the latest image before it)", episode_id=episode_id)

    def _read(self, entry: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[memoryview]:
        """The bytes of each range, reading ranges of one file that lie close together with one pread."""
        order = np.lexsort((starts, entry))
        s, t, f = starts[order], stops[order], entry[order]
        new = np.r_[True, (f[1:] != f[:-1]) | (s[1:] - t[:-1] > _MERGE_GAP)] if len(s) else np.zeros(0, bool)
        groups = [*np.flatnonzero(new).tolist(), len(s)]
        out: list[memoryview] = [memoryview(b"")] * len(s)
        for a, b in itertools.pairwise(groups):
            e = int(f[a])
            low, high = int(s[a]), int(t[a:b].max())
            data = memoryview(os.pread(self._fd(e), high - low, low))
            for i, (x, y) in zip(order[a:b].tolist(), zip(s[a:b].tolist(), t[a:b].tolist(), strict=True),
                                 strict=True):
                out[i] = data[x - low:y - low]
        return out
