"""A batch's elements from a prepared frame store, with no Python work per element.

:class:`~pipeline.engine.prepared.PreparedFrames` asks for a batch's distinct elements at once
(sorted ``(entry << 32) | raw step`` keys). This module finds the ones already decoded in an
:class:`ElementRing`, reads the compressed bytes of the others with one ``preadv`` per run of
nearby elements of a file (:func:`scatter_read`: the kernel drops the bytes between them, so the
wanted elements land back to back in one buffer), and decompresses them straight into the ring's
next free slots, many zstd frames per call and on two threads (:func:`decode_into`). Each element
is then copied once more, by one ``np.take``, into the batch's stacks.

Measured on this machine (``BENCHMARKS.md``, "Sampler with prepared frames"): a ``pread`` into a
fresh ``bytes`` object cost 20-30 us where ``preadv`` into a buffer kept by the reader costs 2-8 us
(new pages are expensive in this VM), and ``multi_decompress_to_buffer`` returned one Python object
per element, to be copied into place one by one (~4 us each).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..cores import usable_cores
from ..errors import DatasetError

MERGE_GAP = 16 * 1024  # elements of one file closer than this are read by one preadv (the gap read and dropped)
_RUNS_PER_READ = 500  # at most 2 * this buffers per preadv call (IOV_MAX is 1024 on Linux)
_SPLIT_MIN = 64  # fewer elements than this are decompressed on the calling thread only
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: consecutive keys spread over the table


class ElementRing:
    """Decoded elements in one array of slots bounded by bytes; slot 0 is black.

    Slots are filled in turn (a ring: with uniform sampling no replacement order keeps more hits
    than another) and found through a hint table indexed by a hash of the key, checked against the
    slot's owner, so looking up or recording a batch's keys is a few numpy operations, whatever
    their number. A key whose hint another key overwrote is simply decoded again. Pages of the
    array are touched once when it is made (as huge pages where the kernel gives them).
    """

    def __init__(self, budget: int, bound: int) -> None:
        self.budget = budget
        self.bound = bound  # elements there are to hold: the selection's raw steps
        self.array: np.ndarray | None = None
        self.owner = np.full(1, -1, dtype=np.int64)  # slot -> key held (-1: none)
        self.hint = np.zeros(1, dtype=np.int64)  # hash of a key -> the slot it was last put in
        self.bits = 0
        self.hand = 1

    @property
    def ring(self) -> int:
        """Slots that hold elements (slot 0, black, is not one of them)."""
        return len(self.owner) - 1

    def reset(self, shape: tuple[int, ...], needed: int) -> None:
        """An empty ring for elements of ``shape``, with room for at least twice ``needed`` of them."""
        import mmap

        size = max(1, int(np.prod(shape)))
        count = max(min(self.budget // size, self.bound + 1), 2 * needed + 1)
        # Touched once here: filling fresh 4 KB pages one element at a time cost ~15 us an element
        # while sampling (measured), against ~0.4 s for 800 MB at once.
        memory = mmap.mmap(-1, count * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            memory.madvise(mmap.MADV_HUGEPAGE)
        flat = np.frombuffer(memory, dtype=np.uint8)
        flat[::4096] = 0
        self.array = flat.reshape(count, *shape)
        self.owner = np.full(count, -1, dtype=np.int64)
        self.bits = max(4, int(2 * count - 1).bit_length())  # a table of 2-4 hints a slot
        self.hint = np.zeros(1 << self.bits, dtype=np.int64)
        self.hand = 1

    def _hashes(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _HASH) >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The slot holding each key, -1 where none does."""
        if self.array is None:
            return np.full(len(keys), -1, dtype=np.int64)
        slots = self.hint[self._hashes(keys)]
        return np.where(self.owner[slots] == keys, slots, -1)

    def claim(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for the keys where ``slots`` is -1, the next ones in turn: which keys, and their slots
        (``slots`` is updated in place).

        A key found in a slot that this batch's new elements are about to overwrite is decoded
        again instead, so every slot of the batch holds its element when the stacks are gathered.
        """
        ring = self.ring
        while True:
            missing = slots < 0
            count = int(missing.sum())
            if count > ring:
                raise AssertionError("a ring smaller than its batch")  # reset() makes room for twice a batch
            clobbered = ~missing & ((slots - self.hand) % ring < count)
            if not bool(clobbered.any()):
                break
            slots[clobbered] = -1
        fresh = 1 + (self.hand - 1 + np.arange(count, dtype=np.int64)) % ring
        self.hand = (self.hand - 1 + count) % ring + 1
        self.owner[fresh] = -1  # until record(): a fill that fails half way leaves no slot holding a wrong key
        slots[missing] = fresh
        return missing, fresh

    def record(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Note that ``slots`` now hold ``keys``."""
        self.owner[slots] = keys
        self.hint[self._hashes(keys)] = slots


def scatter_read(fd_of: Callable[[int], int], entry: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                 into: bytearray, describe: Callable[[int], str]) -> np.ndarray:
    """Read byte ranges ``[starts, stops)`` of files ``fd_of(entry)`` back to back into ``into``.

    The ranges must be sorted by entry, then by start, without overlapping. Runs of touching ranges
    are one buffer; runs of one file less than :data:`MERGE_GAP` apart are one ``preadv``, the bytes
    between them read into a scratch buffer and dropped. Returns each range's start in ``into``
    (and, last, the total). ``describe(entry)`` names a file that turns out shorter than its index.
    """
    sizes = stops - starts
    at = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=at[1:])
    if len(into) < at[-1]:
        into.extend(bytes(int(at[-1]) - len(into)))
    if not len(sizes):
        return at
    new_file = np.r_[True, entry[1:] != entry[:-1]]
    first = np.flatnonzero(new_file | np.r_[True, starts[1:] != stops[:-1]])  # each run's first range
    last = np.r_[first[1:], len(sizes)] - 1
    run_start, run_stop = starts[first], stops[last]
    gaps = np.r_[0, run_start[1:] - run_stop[:-1]]
    read_starts = new_file[first] | (gaps > MERGE_GAP) | (np.arange(len(first)) % _RUNS_PER_READ == 0)
    reads = [*np.flatnonzero(read_starts).tolist(), len(first)]
    view = memoryview(into)
    scratch = memoryview(bytearray(MERGE_GAP))
    begin, end = at[first].tolist(), (at[last] + sizes[last]).tolist()
    gap_list, file_starts, files = gaps.tolist(), run_start.tolist(), entry[first].tolist()
    for a, b in itertools.pairwise(reads):
        buffers = [view[begin[a]:end[a]]]
        for r in range(a + 1, b):
            buffers.append(scratch[:gap_list[r]])
            buffers.append(view[begin[r]:end[r]])
        wanted = sum(len(buffer) for buffer in buffers)
        got = _preadv(fd_of(files[a]), buffers, file_starts[a])
        if got != wanted:
            raise DatasetError(f"{describe(files[a])}: the file ends before the elements its index names "
                               f"(read {got} of {wanted} bytes at {file_starts[a]}); delete it and prepare it again")
    return at


def _preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
    """``os.preadv`` where the system has it, else one ``pread`` copied into the buffers."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, buffers, offset)
    data = os.pread(fd, sum(len(b) for b in buffers), offset)
    done = 0
    for buffer in buffers:
        part = data[done:done + len(buffer)]
        buffer[:len(part)] = part
        done += len(part)
    return done


class Filler:
    """Reads and decompresses a batch's missing elements into their slots, half of them on a second thread.

    Each half has its own buffer of compressed bytes and its own zstd context (neither is shared
    between threads); ``preadv`` and zstd run without the GIL, so the halves overlap on two cores.
    """

    def __init__(self) -> None:
        self._buffers = [bytearray(), bytearray()]  # kept between batches: new pages are dear here
        self._contexts: list[Any] = [None, None]
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def fill(self, flat: np.ndarray, size: int, slots: np.ndarray, fds: dict[int, int], entry: np.ndarray,
             starts: np.ndarray, stops: np.ndarray, codec: str, describe: Callable[[int], str]) -> None:
        """Element ``i`` (bytes ``[starts[i], stops[i])`` of file ``fds[entry[i]]``) into slot ``slots[i]`` of
        ``flat`` (``size`` bytes a slot). ``slots`` are consecutive but for at most one wrap back to slot 1."""
        count = len(slots)

        def run(half: int, low: int, high: int) -> None:
            packed = self._buffers[half]
            at = scatter_read(fds.__getitem__, entry[low:high], starts[low:high], stops[low:high], packed,
                              describe)
            self._decode(flat, size, slots[low:high], packed, at, codec, half)

        if count < _SPLIT_MIN:
            run(0, 0, count)
        else:
            self.pair(lambda half: run(half, half * (count // 2), count if half else count // 2))

    def pair(self, work: Callable[[int], Any]) -> None:
        """``work(0)`` on the calling thread while ``work(1)`` runs on the other one (one after the other
        when this process may use only one core)."""
        if self._pid != os.getpid():  # first use, or a forked worker, which has no threads of its own
            self._pid = os.getpid()
            single = usable_cores() < 2
            self._pool = None if single else ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-store")
        if self._pool is None:
            work(0)
            work(1)
            return
        pending = self._pool.submit(work, 1)
        try:
            work(0)
        finally:
            pending.result()

    def _decode(self, flat: np.ndarray, size: int, slots: np.ndarray, packed: bytearray, at: np.ndarray, codec: str,
                half: int) -> None:
        breaks = [0, *(np.flatnonzero(np.diff(slots) != 1) + 1).tolist(), len(slots)]  # the ring's wrap
        source, target = memoryview(packed), memoryview(flat)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(breaks):
            slot, low, high, n = int(slots[a]), int(at[a]), int(at[b]), b - a
            destination = target[slot * size:(slot + n) * size]
            if codec == "raw":
                if high - low != n * size:
                    raise DatasetError(f"stored elements of {high - low} bytes where {n} of {size} were expected; "
                                       f"delete the store's entries and prepare them again")
                destination[:] = source[low:high]
                continue
            if self._contexts[half] is None:
                import zstandard

                self._contexts[half] = zstandard.ZstdDecompressor()
            reader = self._contexts[half].stream_reader(source[low:high], read_across_frames=True)
            if reader.readinto(destination) != n * size or reader.read(1):
                raise DatasetError(f"stored elements decompressed to other sizes than {size} bytes each; delete the "
                                   f"store's entries and prepare them again")
