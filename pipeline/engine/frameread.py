"""Image bytes of chosen steps, read a Parquet row group at a time, for a sampler's batches.

A sampled batch needs the images of a few steps in each of many episodes. Reading an episode's whole
``image`` column for each (as :func:`~pipeline.engine.trajectory.load_frames` does) cost ~19 ms per
episode a batch touched (measured, 2000-step episodes in one row group). :class:`ImageReader` instead
maps each step to its row of ``steps.parquet`` (once per episode: the ``step`` column only), groups
a batch's wanted rows by (file, row group), and reads each such row group once, with page checksums
verified as every engine read is. The files stay open (footer parsed once) in a small LRU, and the
row groups' image bytes (compressed: PNG) are kept in an LRU bounded by bytes.

How cheap a random read is depends on the row group's size: the lake writes steps tables that hold
images in small row groups (:data:`pipeline.lake.writer.IMAGE_GROUP_BYTES`); older lakes' larger row
groups are read the same way, only slower.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from ..lake.damage import open_verified, reading
from ..lake.layout import EpisodeLocation
from ..lake.segments import ID, episode_row_groups
from .framestack import no_image

_OPEN_FILES = 64
_PER_IMAGE = 64  # bytes a cached image costs beyond its own (the Python bytes object)


class ByteLRU:
    """A least-recently-used mapping bounded by the bytes of its values (at least one entry kept)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.budget and len(self._items) > 1:
            _, (_, freed) = self._items.popitem(last=False)
            self.bytes -= freed

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class _File:
    """An open steps file: its reader and the first row of each row group."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = str(path)
        # pre_buffer off: a row group's one small column chunk read plainly costs ~170 us of CPU
        # against ~280 us with pyarrow's pre-buffering (measured, 85-image row groups, checksums on)
        self.parquet = open_verified(path, pre_buffer=False)
        metadata = self.parquet.metadata
        counts = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


class ImageReader:
    """Image bytes by (episode location, step number), through a byte-bounded cache of row groups."""

    def __init__(self, budget: int) -> None:
        self._files: OrderedDict[str, _File] = OrderedDict()
        self.groups = ByteLRU(budget)  # (path, row group) -> list of image bytes (None: no image)

    def file(self, path: Path) -> _File:
        key = str(path)
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
            return found
        found = self._files[key] = _File(path)
        if len(self._files) > _OPEN_FILES:
            self._files.popitem(last=False)
        return found

    def rows(self, location: EpisodeLocation, steps: np.ndarray) -> np.ndarray:
        """The row of ``steps.parquet`` holding each of ``steps`` (-1: the table has no such step)."""
        path = location.table("steps")
        file = self.file(path)
        with reading(path):
            if not location.segment:
                first = 0
                found = file.parquet.read(columns=["step"], use_threads=False).column("step")
            else:
                groups = episode_row_groups(file.parquet.metadata, location.episode_id)
                if not groups:
                    return np.full(len(steps), -1, dtype=np.int64)
                table = file.parquet.read_row_groups(groups, columns=[ID, "step"], use_threads=False)
                ids = table.column(ID).to_pylist()
                start = bisect.bisect_left(ids, location.episode_id)
                stop = bisect.bisect_right(ids, location.episode_id)
                first = int(file.starts[groups[0]]) + start  # the episode's groups are consecutive
                found = table.column("step").slice(start, stop - start)
        numbers = found.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        order = np.argsort(numbers, kind="stable")
        at = np.searchsorted(numbers, steps, sorter=order)
        at = np.minimum(at, len(numbers) - 1) if len(numbers) else at
        rows = np.full(len(steps), -1, dtype=np.int64)
        if len(numbers):
            hit = numbers[order[at]] == steps
            rows[hit] = first + order[at[hit]]
        return rows

    def images(self, path: Path, rows: np.ndarray,
               on_error: Callable[[Path, BaseException], None]) -> list[bytes | None]:
        """The image bytes at ``rows`` of one steps file, reading each row group they fall in once."""
        file = self.file(path)
        groups = np.searchsorted(file.starts, rows, side="right") - 1
        within = (rows - file.starts[groups]).tolist()
        out: list[bytes | None] = []
        current, images = -1, []
        for group, at in zip(groups.tolist(), within, strict=True):
            if group != current:
                current, images = group, self._group(file, group, on_error)
            out.append(images[at])
        return out

    def _group(self, file: _File, group: int, on_error: Callable[[Path, BaseException], None]) -> list[bytes | None]:
        key = (file.key, group)
        images = self.groups.get(key)
        if images is not None:
            return images
        try:
            with reading(file.path):
                column = file.parquet.read_row_group(group, columns=["image"], use_threads=False)
        except Exception as exc:
            on_error(file.path, exc)
            raise
        images = column.column("image").to_pylist()
        size = column.nbytes + _PER_IMAGE * len(images)
        self.groups.put(key, images, size)
        return images


def check_images(images: list[bytes | None], steps: list[int], episode_id: str) -> None:
    """An error naming the first step without an image (as ``load_frames`` says it)."""
    for image, step in zip(images, steps, strict=True):
        if image is None:
            raise no_image(episode_id, step)

