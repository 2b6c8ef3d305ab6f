"""A prepared frame store: processed frame elements of (episode, agent)s, one file each, read by offset.

A derived, rebuildable artefact inside the lake (``_frames/<options-key>/``, see
:func:`~pipeline.lake.layout.frame_store_path`): what decoding an episode's PNGs and processing them
(max over ``max_n`` frames, grayscale, resize) gives, stored so that a sampler reads a frame with one
``pread`` and a small decompression instead of a PNG decode. Entries are named by the episode's
content-derived id, so an entry never holds another episode's data: an episode removed from the
lake is simply never asked for, and ``gc`` deletes its entry (:func:`remove_stale_entries`).

One entry file, written front to back with bounded memory (the index goes last, as in Parquet)::

    MAGIC | element 0 | element 1 | … | steps int64[T] | present uint8[T] | offsets int64[T+1] | header JSON
          | index start uint64 | header length uint32 | index CRC32 uint32 | MAGIC

Element ``i`` is the processed element ending at the agent's raw step ``i`` (``steps[i]`` is its step
number), at bytes ``[offsets[i], offsets[i+1])`` of the file: each element compressed on its own
(``zstd``) or as it is (``raw``), so a random read touches one element's bytes. An element whose raw
frames are not all there is empty; ``present[i]`` says whether raw frame ``i`` had an image (or, with
``missing="previous"``, an earlier one to show), so a reader names the step exactly as decoding would.

Every byte is covered by a check, so damage is found rather than read as frames (format version 2;
version 1 had none: 42% of single-bit flips in a zstd element decompressed to wrong pixels without an
error, measured): the index by the CRC32 in the tail, a ``zstd`` element by its frame's content
checksum (4 bytes, verified by zstd itself as it decompresses), a ``raw`` element by a CRC32 of its
bytes appended to them. :func:`element_bytes` decodes and verifies a batch of elements.

Written into a staging folder and published by one ``rename`` (:func:`publish`): a reader sees a
whole entry or none. Two processes preparing the same entry write the same bytes; the second rename
replaces the first, and a reader holding the first open keeps reading it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LakeError
from .layout import FRAMES, FRAMES_SUFFIX, frame_entry_episode, frame_store_path
from .writer import fsync_path

# The store's format version: in every store key (``v2-…``), so stores of another version are never read.
FORMAT_VERSION = 2
MAGIC = b"IPFRAME2"
_TAIL = struct.Struct("<QII8s")  # index start, header length, CRC32 of the index, magic
_CRC = struct.Struct("<I")  # a raw element's CRC32, after its bytes
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
    episode_id: str = ""
    agent: str = ""
    key: str = ""

    @property
    def nbytes(self) -> int:
        return self.steps.nbytes + self.present.nbytes + self.offsets.nbytes + 256

    @property
    def element_size(self) -> int:
        """An element's bytes once decoded."""
        return int(np.prod(self.shape)) if self.shape else 0


class DamagedEntry(LakeError):
    """A prepared frame store file that does not read back as written: ``path``, ``detail`` and, when
    known, the ``item`` (of a batch of elements) that failed. The store is derived from the lake, so
    the remedy is always to delete the file and prepare it again; readers never use what it holds."""

    def __init__(self, path: Path | str, detail: str, item: int | None = None) -> None:
        self.path = Path(path)
        self.detail = detail
        self.item = item
        super().__init__(f"damaged prepared frames {path}: {detail}; {rebuild_hint(self.path)}" if str(path)
                         else detail)


def rebuild_hint(path: Path) -> str:
    """How to replace a damaged entry file: frames are derived from the lake, so delete and prepare again."""
    key, episode_id = path.parent.name, frame_entry_episode(path.name) or "EPISODE_ID"
    return (f"prepared frames are derived from the lake and safe to delete: `ingest-pipeline frames rm {key} "
            f"{episode_id}` deletes them, `ingest-pipeline frames prepare --store {key} {episode_id}` makes them "
            f"again (until then, readers decode the PNGs)")


def new_compressor() -> Any:
    """The zstd compressor of stored elements: level :data:`ZSTD_LEVEL`, with each frame's content checksum."""
    import zstandard

    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)


def encode(element: np.ndarray, codec: str, compressor: Any = None) -> bytes:
    """One element's stored bytes (``compressor``: one of :func:`new_compressor`'s to reuse)."""
    data = np.ascontiguousarray(element, dtype=np.uint8).tobytes()
    if codec == "raw":
        return data + _CRC.pack(zlib.crc32(data))
    return bytes((compressor or new_compressor()).compress(data))


def stored_size_bounds(codec: str, element_size: int) -> tuple[int, int]:
    """The least and most bytes a stored non-empty element of ``element_size`` bytes can take."""
    if codec == "raw":
        return element_size + _CRC.size, element_size + _CRC.size
    # A zstd frame: magic (4), header (2-14), a block header (3), a byte, checksum (4); at most the
    # input in raw blocks (3 bytes of header per 128 KB block) with the largest header and the checksum.
    return 14, element_size + 3 * (element_size // (128 << 10) + 1) + 4 + 14 + 4


def element_bytes(blobs: Sequence[Any], element_size: int, codec: str, decompressor: Any = None,
                  threads: int = 1) -> list[Any]:
    """Each stored element of ``blobs`` decoded to its ``element_size`` bytes, verified by its checksum.

    Raises :class:`DamagedEntry` (path empty, ``item`` the failing blob's index) for any element that
    does not decode whole: the caller names the file. ``decompressor``: a ``zstandard.ZstdDecompressor``.
    """
    if codec == "raw":
        out = []
        for item, blob in enumerate(blobs):
            view = memoryview(blob)
            payload, check = view[:-_CRC.size], view[-_CRC.size:]
            if len(view) != element_size + _CRC.size or zlib.crc32(payload) != _CRC.unpack(check)[0]:
                raise DamagedEntry("", "a raw element's CRC32 does not match its bytes", item)
            out.append(payload)
        return out
    import zstandard

    if not blobs:
        return []
    decompressor = decompressor or zstandard.ZstdDecompressor()
    sizes = np.full(len(blobs), element_size, dtype=np.uint64)
    try:
        decoded = decompressor.multi_decompress_to_buffer(blobs, decompressed_sizes=sizes.tobytes(), threads=threads)
    except zstandard.ZstdError as exc:  # which one: zstd's message names it ("item N"), else try each
        found = re.search(r"item (\d+)", str(exc))
        failed = int(found.group(1)) if found else None
        if failed is None or failed >= len(blobs):
            failed = _failing(blobs, decompressor)
        raise DamagedEntry("", f"an element does not decompress ({exc})", failed) from exc
    out = [decoded[i] for i in range(len(blobs))]
    for item, data in enumerate(out):
        if len(data) != element_size:
            raise DamagedEntry("", f"an element decompresses to {len(data)} bytes, not {element_size}", item)
    return out


def _failing(blobs: Sequence[Any], decompressor: Any) -> int | None:
    import zstandard

    for item, blob in enumerate(blobs):
        try:
            decompressor.decompress(blob)
        except zstandard.ZstdError:
            return item
    return None


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
        crc = 0
        for part in (np.asarray(steps, dtype=np.int64).tobytes(), np.asarray(present, dtype=np.uint8).tobytes(),
                     offsets.tobytes(), header):
            out.write(part)
            crc = zlib.crc32(part, crc)
        out.write(_TAIL.pack(at, len(header), crc, MAGIC))
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def read_index(fd: int, path: Path) -> EntryIndex:
    """An open entry file's index (one ``pread`` of its tail, one of its index), verified by its CRC.

    Raises :class:`DamagedEntry` when the file is not a whole entry of this format.
    """
    size = os.fstat(fd).st_size
    if size < len(MAGIC) + _TAIL.size:
        raise DamagedEntry(path, f"not a frame store entry (too short: {size} bytes)")
    start, length, crc, magic = _TAIL.unpack(os.pread(fd, _TAIL.size, size - _TAIL.size))
    if magic != MAGIC:
        old = magic[:7] == MAGIC[:7]
        raise DamagedEntry(path, "a frame store entry of another format version" if old
                           else "not a frame store entry (no end marker: cut short, or another file)")
    if not len(MAGIC) <= start <= size - _TAIL.size - length:
        raise DamagedEntry(path, f"its tail points outside the file (index at {start}, header of {length} bytes)")
    index = os.pread(fd, size - _TAIL.size - start, start)
    if zlib.crc32(index) != crc:
        raise DamagedEntry(path, "its index does not match its CRC32")
    try:
        header = json.loads(index[len(index) - length:])
        count = int(header["count"])
        shape = tuple(int(n) for n in header["shape"])
        codec = str(header["codec"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedEntry(path, f"its header does not read ({exc})") from exc
    if count < 0 or 17 * count + 8 + length != len(index) or codec not in CODECS:
        raise DamagedEntry(path, f"its header does not describe its index ({count} steps, codec {codec!r})")
    steps = np.frombuffer(index, dtype=np.int64, count=count)
    present = np.frombuffer(index, dtype=np.uint8, count=count, offset=8 * count).astype(bool)
    offsets = np.frombuffer(index, dtype=np.int64, count=count + 1, offset=9 * count)
    if offsets[0] != len(MAGIC) or offsets[-1] != start or bool((np.diff(offsets) < 0).any()):
        raise DamagedEntry(path, "its element offsets do not tile the file")
    return EntryIndex(path=path, shape=shape, codec=codec, steps=steps.copy(), present=present,
                      offsets=offsets.copy(), episode_id=str(header.get("episode_id", "")),
                      agent=str(header.get("agent", "")), key=str(header.get("key", "")))


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
    """One prepared frame store: its key, options, entries and bytes on disk, and (given the lake's
    episode ids) how many of them it covers and how many entries are of episodes no longer there."""

    key: str
    options: dict[str, Any]
    entries: int
    bytes: int
    episodes: int | None = None  # the lake's episodes with an entry here (None: not counted)
    stale: int | None = None  # entries of episodes not in the lake (gc removes them)

    @property
    def current(self) -> bool:
        """Whether readers use it: stores of other format versions are never read."""
        return self.key.startswith(f"v{FORMAT_VERSION}-")


def list_stores(lake: Path, live: set[str] | None = None) -> list[StoreSummary]:
    """Every prepared frame store of the lake (with coverage of the episode ids ``live``, when given)."""
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
        size = sum(p.stat().st_size for p in files)
        if live is None:
            found.append(StoreSummary(folder.name, options, len(files), size))
            continue
        ids = [frame_entry_episode(p.name) for p in files]
        found.append(StoreSummary(folder.name, options, len(files), size, episodes=len(live.intersection(ids)),
                                  stale=sum(1 for i in ids if i not in live)))
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
