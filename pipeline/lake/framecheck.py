"""``check`` for prepared frame stores: every entry file of every store verified, none read as frames.

A store (:mod:`pipeline.lake.framestore`) is derived from the lake, so a damaged file loses nothing:
deleting it and preparing it again is the remedy, and the problem says so. The cheap check reads
each file's index (its CRC32 verified, the offsets tiling the file, the header naming the file's own
episode, agent and store) and bounds each element's stored size by its codec; ``deep`` also decodes
every element, verifying its checksum (zstd's content checksum, or the raw element's CRC32) and its
size. Stores of another format version are left alone: no reader opens them (``frames ls`` lists
them for removal).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .framestore import (
    FORMAT_VERSION,
    MAGIC,
    OPTIONS_FILE,
    DamagedEntry,
    EntryIndex,
    element_bytes,
    read_index,
    rebuild_hint,
    stored_size_bounds,
)
from .layout import FRAMES, frame_entry_episode, frame_entry_name

DAMAGED_FRAMES = "damaged prepared frames"  # the start of a damaged entry's problem message
_DEEP_CHUNK = 1 << 24  # bytes of elements read and decoded at a time by the deep check: bounded memory


@dataclass(frozen=True)
class FrameProblem:
    """One damaged or unexpected file of a frame store."""

    path: Path
    message: str
    episode_id: str | None = None


def current_store(key: str) -> bool:
    """Whether store ``key`` has this version's format (other versions are never read)."""
    return key.startswith(f"v{FORMAT_VERSION}-")


def check_stores(lake: Path, *, deep: bool = False) -> tuple[int, list[FrameProblem]]:
    """(entry files checked, problems) over every current store of the lake; see the module doc."""
    checked = 0
    problems: list[FrameProblem] = []
    decompressor: Any = None
    for folder in _stores(lake):
        for path in sorted(folder.iterdir()):
            name = path.name
            if name.startswith(".") or name == OPTIONS_FILE:
                continue  # a writer's temporary file, the options the store was made with
            episode_id = frame_entry_episode(name)
            if episode_id is None or not path.is_file():
                problems.append(FrameProblem(path, "unexpected file in a prepared frame store (not an entry)"))
                continue
            checked += 1
            if deep and decompressor is None:
                import zstandard

                decompressor = zstandard.ZstdDecompressor()
            detail = verify_entry(path, deep=deep, decompressor=decompressor)
            if detail is not None:
                problems.append(FrameProblem(path, f"{DAMAGED_FRAMES}: {detail}; {rebuild_hint(path)}", episode_id))
    return checked, problems


def _stores(lake: Path) -> Iterator[Path]:
    try:
        folders = sorted((lake / FRAMES).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    for folder in folders:
        if folder.is_dir() and current_store(folder.name):
            yield folder


def verify_entry(path: Path, *, deep: bool = False, decompressor: Any = None) -> str | None:
    """What is wrong with one entry file (None: nothing); ``deep`` decodes every element."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return f"cannot be opened: {exc.strerror or exc}"
    try:
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            return "it does not start as a frame store entry"
        index = read_index(fd, path)
        if frame_entry_name(index.episode_id, index.agent) != path.name or index.key != path.parent.name:
            return (f"its header names episode {index.episode_id}, agent {index.agent!r} of store {index.key!r}, "
                    f"not this file's")
        problem = _sizes_problem(index)
        if problem is None and deep:
            problem = _elements_problem(fd, index, decompressor)
        return problem
    except DamagedEntry as exc:
        return exc.detail
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    finally:
        os.close(fd)


def _sizes_problem(index: EntryIndex) -> str | None:
    sizes = np.diff(index.offsets)
    low, high = stored_size_bounds(index.codec, index.element_size)
    wrong = (sizes != 0) & ((sizes < low) | (sizes > high) | ~index.present)
    if not bool(wrong.any()):
        return None
    i = int(np.argmax(wrong))
    if not index.present[i]:
        return f"an element is stored at step {int(index.steps[i])}, which its index says has no frame"
    return (f"the element of step {int(index.steps[i])} takes {int(sizes[i])} bytes, outside the {low} to {high} "
            f"a {index.codec} element of shape {list(index.shape)} can take")


def _elements_problem(fd: int, index: EntryIndex, decompressor: Any) -> str | None:
    """Decode every stored element, a chunk of the file at a time."""
    stored = np.flatnonzero(np.diff(index.offsets))
    at = 0
    while at < len(stored):
        first = int(index.offsets[stored[at]])
        stop = at + 1
        while stop < len(stored) and int(index.offsets[stored[stop] + 1]) - first <= _DEEP_CHUNK:
            stop += 1
        chunk = stored[at:stop]
        high = int(index.offsets[chunk[-1] + 1])
        data = memoryview(os.pread(fd, high - first, first))
        if len(data) != high - first:
            return f"cut short at byte {first + len(data)}"
        blobs = [data[int(index.offsets[i]) - first:int(index.offsets[i + 1]) - first] for i in chunk]
        try:
            element_bytes(blobs, index.element_size, index.codec, decompressor)
        except DamagedEntry as exc:
            where = "" if exc.item is None else f" (the element of step {int(index.steps[chunk[exc.item]])})"
            return f"{exc.detail}{where}"
        at = stop
    return None

