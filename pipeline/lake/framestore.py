"""A prepared frame store: processed frame elements of (episode, agent)s, one file each, read by offset.

A derived, rebuildable artefact inside the lake (``_frames/<options-key>/``, see
:func:`~pipeline.lake.layout.frame_store_path`): what decoding an episode's PNGs and processing them
(max over ``max_n`` frames, grayscale, resize) gives, stored so that a sampler reads a frame with one
``pread`` and a small decompression instead of a PNG decode. Entries are named by the episode's
content-derived id, so an entry never holds another episode's data: an episode removed from the
lake is simply never asked for, and ``gc`` deletes its entry (:func:`remove_stale_entries`).

One entry file, written front to back with bounded memory (the index goes last, as in Parquet)::

    MAGIC | element 0 | element 1 | … | steps int64[T] | present uint8[T] | offsets int64[T+1] | header JSON
          | index start uint64 | header length uint32 | MAGIC

Element ``i`` is the processed element ending at the agent's raw step ``i`` (``steps[i]`` is its step
number), at bytes ``[offsets[i], offsets[i+1])`` of the file: each element compressed on its own
(``zstd``) or as it is (``raw``), so a random read touches one element's bytes. An element whose raw
frames are not all there is empty; ``present[i]`` says whether raw frame ``i`` had an image (or, with
``missing="previous"``, an earlier one to show), so a reader names the step exactly as decoding would.

Written into a staging folder and published by one ``rename`` (:func:`publish`): a reader sees a
whole entry or none. Two processes preparing the same entry write the same bytes; the second rename
replaces the first, and a reader holding the first open keeps reading it.
"""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LakeError
from .layout import FRAMES, FRAMES_SUFFIX, frame_entry_episode, frame_store_path
from .writer import fsync_path

MAGIC = b"IPFRAME1"
_TAIL = struct.Struct("<QI8s")  # index start, header length, magic
CODECS = ("zstd", "raw")
# zstd level 3: 1393 bytes a frame against 1430 at level 1, and no slower to decompress (9.8 us a
# 84x84 frame at 6% noise, single-threaded; benchmarks/sampler.py's frames, see BENCHMARKS.md).
ZSTD_LEVEL = 3
OPTIONS_FILE = "options.json"


@dataclass(frozen=True)
class EntryIndex:
    """What an entry file says about its elements (read once per entry by a reader)."""

    path: Path
    shape: tuple[int, ...]
    codec: str
    steps: np.ndarray  # int64 [T]: the raw steps' numbers
    present: np.ndarray  # bool [T]: raw frame i can be shown
    offsets: np.ndarray  # int64 [T + 1]: element i at [offsets[i], offsets[i + 1]) of the file

    @property
    def nbytes(self) -> int:
        return self.steps.nbytes + self.present.nbytes + self.offsets.nbytes + 256


def encode(element: np.ndarray, codec: str, compressor: Any = None) -> bytes:
    """One element's stored bytes (``compressor``: a ``zstandard.ZstdCompressor`` to reuse)."""
    data = np.ascontiguousarray(element, dtype=np.uint8).tobytes()
    if codec == "raw":
        return data
    if compressor is None:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return bytes(compressor.compress(data))


def write_entry(path: Path, *, episode_id: str, agent: str, key: str, shape: Callable[[], tuple[int, ...]],
                codec: str, steps: np.ndarray, present: np.ndarray, blobs: Iterable[bytes]) -> int:
    """Write one entry file (``blobs``: each raw step's stored element, ``b""`` for none); its size.

    ``shape()`` (an element's shape) is asked for after the elements are written: they decide it.
    """
    if codec not in CODECS:
        raise LakeError(f"frame store codec must be one of {', '.join(CODECS)}, not {codec!r}")
    count = len(steps)
    offsets = np.empty(count + 1, dtype=np.int64)
    with open(path, "wb") as out:
        out.write(MAGIC)
        at = len(MAGIC)
        written = 0
        for blob in blobs:
            if written >= count:
                raise LakeError(f"{path}: more elements than the {count} steps")
            offsets[written] = at
            out.write(blob)
            at += len(blob)
            written += 1
        if written != count:
            raise LakeError(f"{path}: {written} elements for {count} steps")
        offsets[count] = at
        header = json.dumps({"episode_id": episode_id, "agent": agent, "key": key, "count": count,
                             "shape": list(shape()), "codec": codec}).encode()
        out.write(np.asarray(steps, dtype=np.int64).tobytes())
        out.write(np.asarray(present, dtype=np.uint8).tobytes())
        out.write(offsets.tobytes())
        out.write(header)
        out.write(_TAIL.pack(at, len(header), MAGIC))
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def read_index(fd: int, path: Path) -> EntryIndex:
    """An open entry file's index (one ``pread`` of its tail, one of its index)."""
    size = os.fstat(fd).st_size
    if size < len(MAGIC) + _TAIL.size:
        raise LakeError(f"{path}: not a frame store entry (too short); run `ingest-pipeline gc` or delete it")
    start, length, magic = _TAIL.unpack(os.pread(fd, _TAIL.size, size - _TAIL.size))
    if magic != MAGIC or start > size:
        raise LakeError(f"{path}: not a frame store entry; delete it (it is rebuilt by `frames prepare`)")
    index = os.pread(fd, size - _TAIL.size - start, start)
    header = json.loads(index[len(index) - length:])
    count = int(header["count"])
    steps = np.frombuffer(index, dtype=np.int64, count=count)
    present = np.frombuffer(index, dtype=np.uint8, count=count, offset=8 * count).astype(bool)
    offsets = np.frombuffer(index, dtype=np.int64, count=count + 1, offset=9 * count)
    return EntryIndex(path=path, shape=tuple(header["shape"]), codec=header["codec"], steps=steps.copy(),
                      present=present, offsets=offsets.copy())


def publish(lake: Path, key: str, staged: list[Path]) -> None:
    """Move staged entry files into the store ``key`` (each one ``rename``), then flush the folder."""
    store = frame_store_path(lake, key)
    store.mkdir(parents=True, exist_ok=True)
    for path in staged:
        os.rename(path, store / path.name)
    fsync_path(store)


def write_options(lake: Path, key: str, description: dict[str, Any]) -> None:
    """Record which options a store was prepared with (for people and ``frames ls``), once."""
    store = frame_store_path(lake, key)
    store.mkdir(parents=True, exist_ok=True)
    target = store / OPTIONS_FILE
    if target.exists():
        return
    temporary = store / f".{OPTIONS_FILE}.{uuid.uuid4().hex}.tmp"  # one per writer, threads included
    temporary.write_text(json.dumps(description, indent=1) + "\n")
    os.replace(temporary, target)


def store_entries(lake: Path, key: str) -> set[str]:
    """The entry file names of store ``key`` (empty when it was never prepared)."""
    try:
        return {name for name in os.listdir(frame_store_path(lake, key)) if name.endswith(FRAMES_SUFFIX)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


@dataclass(frozen=True)
class StoreSummary:
    """One prepared frame store: its key, options, entries and bytes on disk."""

    key: str
    options: dict[str, Any]
    entries: int
    bytes: int


def list_stores(lake: Path) -> list[StoreSummary]:
    """Every prepared frame store of the lake."""
    try:
        folders = sorted(p for p in (lake / FRAMES).iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    found = []
    for folder in folders:
        try:
            options = json.loads((folder / OPTIONS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            options = {}
        files = [p for p in folder.iterdir() if p.name.endswith(FRAMES_SUFFIX)]
        found.append(StoreSummary(folder.name, options, len(files), sum(p.stat().st_size for p in files)))
    return found


def remove_stale_entries(lake: Path, live: set[str], listed_at: float) -> list[Path]:
    """Delete entries of episodes not in ``live`` (the ids of a listing taken at ``listed_at``).

    An entry written after the listing is kept whatever its id: its episode may have been ingested
    after the listing. Stray temporary files of a killed ``write_options`` go too.
    """
    removed: list[Path] = []
    try:
        folders = [p for p in (lake / FRAMES).iterdir() if p.is_dir()]
    except FileNotFoundError:
        return removed
    for folder in folders:
        for path in folder.iterdir():
            episode_id = frame_entry_episode(path.name)
            stray = path.name.startswith(".") and path.name.endswith(".tmp")
            if (episode_id is None or episode_id in live) and not stray:
                continue
            try:
                if path.stat().st_mtime >= listed_at or (stray and time.time() - path.stat().st_mtime < 3600):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
