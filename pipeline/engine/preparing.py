"""Preparing frame stores: decode and process an episode's frames once, for :mod:`.prepared` to read.

:func:`prepare_frames` writes, for each selected (episode, agent) that its store lacks, every element a
stack can hold (see :mod:`.prepared`), a few entries per task on a process pool; each task writes its
entries into its own staging folder and publishes each with one ``rename``
(:func:`pipeline.lake.framestore.publish`), so preparing is safe while others sample, ingest or ``gc``.
Elements are made by the same code as the decode path
(:func:`~pipeline.engine.framestack.processed_elements` over :func:`~pipeline.engine.pngdecode.raw_frame`).
"""

from __future__ import annotations

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
    encode,
    new_compressor,
    publish,
    store_entries,
    write_entry,
    write_options,
)
from ..lake.layout import EpisodeLocation, frame_entry_name, frame_store_path
from .framestack import processed_elements
from .pngdecode import raw_frame
from .prepared import element_options, store_key
from .sample_index import selected_entries
from .trajectory import FrameOptions, _images, agent_step_numbers

if TYPE_CHECKING:
    from .lake import Lake, Selection

_ENTRIES_PER_TASK = 8  # entries a worker prepares in one staging folder before publishing them
_ELEMENTS_PER_CHUNK = 256  # elements processed at once while preparing: bounded memory for large frames


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
