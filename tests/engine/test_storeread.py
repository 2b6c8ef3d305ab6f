"""The prepared store's batch reading: the ring of decoded elements, scatter reads and batched decompression.

``tests/engine/test_prepared.py`` proves the sampler's batches equal the decoded ones end to end; these
pin each piece against a plain reference, including the cases a batch rarely meets: a ring barely
larger than a batch (hits overwritten by the same batch's new elements), many runs and gaps in one
read, a wrap of the ring inside a decompression, a second thread, and stored bytes that lie.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.engine.storeread as storeread
from pipeline import DatasetError
from pipeline.engine.storeread import MERGE_GAP, ElementRing, Filler, scatter_read

SHAPE = (3, 5)
SIZE = 15


def _element(key: int) -> np.ndarray:
    """A distinct element for every key (what the store would hold for it)."""
    return ((np.arange(SIZE, dtype=np.int64) * 7 + key * 31 + key // 251) % 256).astype(np.uint8).reshape(SHAPE)


def _serve(ring: ElementRing, keys: np.ndarray) -> np.ndarray:
    """What PreparedFrames does with a batch's sorted unique keys: find, claim, fill, record."""
    slots = ring.lookup(keys)
    if ring.array is None:
        ring.reset(SHAPE, len(keys))
        slots = ring.lookup(keys)
    missing, fresh = ring.claim(slots)
    assert ring.array is not None
    for key, slot in zip(keys[missing].tolist(), fresh.tolist(), strict=True):
        ring.array[slot] = _element(key)
    ring.record(keys[missing], fresh)
    return slots


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=12), min_size=1, max_size=30),
       room=st.integers(0, 40))
def test_every_slot_of_a_batch_holds_its_element(batches: list[list[int]], room: int) -> None:
    # From a ring of just twice the largest batch (every batch evicts, and new elements land on this
    # batch's own hits) to one that keeps everything.
    largest = max(len(set(b)) for b in batches)
    ring = ElementRing(budget=(2 * largest + 1 + room) * SIZE, bound=10_000)
    ring.reset(SHAPE, largest)
    for batch in batches:
        keys = np.unique(np.asarray(batch, dtype=np.int64) << 32 | np.asarray(batch, dtype=np.int64) % 7)
        slots = _serve(ring, keys)
        assert ring.array is not None
        assert len(set(slots.tolist())) == len(keys) and 0 not in slots.tolist()  # distinct, never the black slot
        for key, slot in zip(keys.tolist(), slots.tolist(), strict=True):
            assert np.array_equal(ring.array[slot], _element(key))
        assert ring.array is not None and not ring.array[0].any()  # slot 0 stays black


def test_a_ring_with_room_keeps_what_it_read() -> None:
    ring = ElementRing(budget=1000 * SIZE, bound=10_000)
    keys = np.arange(40, dtype=np.int64) + (np.arange(40, dtype=np.int64) % 3 << 32)
    keys.sort()
    first = _serve(ring, keys)
    assert ring.lookup(keys).tolist() == first.tolist()  # all hits, where they were put
    again = _serve(ring, keys)
    assert again.tolist() == first.tolist()


def test_a_hit_in_the_slots_a_batch_takes_is_decoded_again() -> None:
    ring = ElementRing(budget=5 * SIZE, bound=100)  # 4 slots besides black: a batch of 2 makes it the minimum
    ring.reset(SHAPE, 2)
    assert ring.ring == 4
    for keys in ([1, 2], [3, 4], [1, 5]):  # the third batch's new element lands in slot 1, where key 1 is
        slots = _serve(ring, np.asarray(keys, dtype=np.int64))
        assert ring.array is not None
        for key, slot in zip(keys, slots.tolist(), strict=True):
            assert np.array_equal(ring.array[slot], _element(key))
    assert ring.lookup(np.asarray([1, 5], dtype=np.int64)).tolist() != [-1, -1]


def _file(tmp_path: Path, size: int, seed: int) -> tuple[int, bytes]:
    data = np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    path = tmp_path / f"f{seed}"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY), data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=st.lists(st.lists(st.tuples(st.integers(0, 3 * MERGE_GAP // 2), st.integers(0, 300)), max_size=40),
                      min_size=1, max_size=3),
       use_preadv=st.booleans())
def test_scatter_read_puts_each_range_back_to_back(tmp_path: Path, spans: list[list[tuple[int, int]]],
                                                   use_preadv: bool) -> None:
    # (gap before, length) per range: touching ranges (gap 0), gaps kept in one read, gaps that split reads
    entry, starts, stops, files, expected = [], [], [], {}, []
    for e, ranges in enumerate(spans):
        mine, at = [], 0
        for gap, length in ranges:
            mine.append((at + gap, at + gap + length))
            at += gap + length
        files[e] = _file(tmp_path, at + 10, e)
        for start, stop in mine:
            entry.append(e)
            starts.append(start)
            stops.append(stop)
            expected.append(files[e][1][start:stop])
    into = bytearray(b"x" * 5)
    with pytest.MonkeyPatch.context() as patch:
        if not use_preadv:
            patch.delattr(os, "preadv", raising=False)
        placed = scatter_read(lambda e: files[e][0], np.asarray(entry, dtype=np.int64),
                              np.asarray(starts, dtype=np.int64), np.asarray(stops, dtype=np.int64), into, str)
    assert bytes(into[:placed[-1]]) == b"".join(expected)
    assert [bytes(into[a:b]) for a, b in itertools.pairwise(placed.tolist())] == expected
    for fd, _ in files.values():
        os.close(fd)


def test_scatter_read_splits_reads_of_many_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fd, data = _file(tmp_path, 20_000, 1)
    starts = np.arange(0, 20_000, 16, dtype=np.int64)  # 1,250 runs, 8 bytes each with 8 between: one file
    calls: list[int] = []
    real = os.preadv

    def counted(fd: int, buffers: list[memoryview], offset: int) -> int:
        assert len(buffers) <= 1024  # IOV_MAX
        calls.append(len(buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counted)
    into = bytearray()
    at = scatter_read(lambda e: fd, np.zeros(len(starts), dtype=np.int64), starts, starts + 8, into, str)
    assert bytes(into[:at[-1]]) == b"".join(data[a:a + 8] for a in starts.tolist())
    assert len(calls) == 3
    os.close(fd)


def test_a_file_shorter_than_its_index_is_named(tmp_path: Path) -> None:
    fd, _ = _file(tmp_path, 100, 2)
    with pytest.raises(DatasetError, match=r"entry 0: the file ends before the elements its index names \(read 40 "
                                           r"of 50 bytes at 60\); delete it and prepare it again"):
        scatter_read(lambda e: fd, np.zeros(1, dtype=np.int64), np.asarray([60]), np.asarray([110]), bytearray(),
                     lambda e: f"entry {e}")
    os.close(fd)


def _store(tmp_path: Path, elements: list[np.ndarray], codec: str) -> tuple[dict[int, int], np.ndarray, np.ndarray]:
    """One file holding ``elements`` back to back, compressed each on its own: its descriptor and ranges."""
    compressor = zstandard.ZstdCompressor(level=3)
    blobs = [e.tobytes() if codec == "raw" else compressor.compress(e.tobytes()) for e in elements]
    offsets = np.r_[0, np.cumsum([len(b) for b in blobs])].astype(np.int64)
    path = tmp_path / f"store-{codec}"
    path.write_bytes(b"".join(blobs))
    return {0: os.open(path, os.O_RDONLY)}, offsets[:-1], offsets[1:]


@pytest.mark.parametrize("codec", ["zstd", "raw"])
@pytest.mark.parametrize(("count", "first_slot"), [(5, 1), (200, 1), (200, 150)])  # one thread; two; two and a wrap
def test_fill_decodes_each_element_into_its_slot(tmp_path: Path, codec: str, count: int, first_slot: int) -> None:
    keys = list(range(count))
    keys[3] = keys[2]  # identical elements too: identical compressed bytes, each decoded into its own slot
    elements = [_element(k) for k in keys]
    fds, starts, stops = _store(tmp_path, elements, codec)
    ring = 300
    slots = 1 + (first_slot - 1 + np.arange(count)) % ring
    flat = np.zeros((ring + 1) * SIZE, dtype=np.uint8)
    Filler().fill(flat, SIZE, slots, fds, np.zeros(count, dtype=np.int64), starts, stops, codec, str)
    table = flat.reshape(ring + 1, *SHAPE)
    for element, slot in zip(elements, slots.tolist(), strict=True):
        assert np.array_equal(table[slot], element)
    untouched = np.setdiff1d(np.arange(ring + 1), slots)
    assert not table[untouched].any()
    os.close(fds[0])


def test_fill_refuses_elements_of_another_size(tmp_path: Path) -> None:
    elements = [_element(k) for k in range(4)]
    elements[2] = np.zeros(SIZE + 1, dtype=np.uint8)
    fds, starts, stops = _store(tmp_path, elements, "zstd")
    flat = np.zeros(10 * SIZE, dtype=np.uint8)
    with pytest.raises(DatasetError, match=f"stored elements decompressed to other sizes than {SIZE} bytes each"):
        Filler().fill(flat, SIZE, np.arange(1, 5), fds, np.zeros(4, dtype=np.int64), starts, stops, "zstd", str)
    os.close(fds[0])


def test_fill_in_a_forked_process_makes_its_own_thread(tmp_path: Path) -> None:
    elements = [_element(k) for k in range(100)]
    fds, starts, stops = _store(tmp_path, elements, "zstd")
    filler = Filler()
    flat = np.zeros(101 * SIZE, dtype=np.uint8)
    filler.fill(flat, SIZE, np.arange(1, 101), fds, np.zeros(100, dtype=np.int64), starts, stops, "zstd", str)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result is its exit status
        flat[:] = 0
        filler.fill(flat, SIZE, np.arange(1, 101), fds, np.zeros(100, dtype=np.int64), starts, stops, "zstd", str)
        os._exit(0 if np.array_equal(flat[SIZE:].reshape(100, *SHAPE), np.stack(elements)) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert storeread._SPLIT_MIN <= 100  # the two-thread path was the one taken
    os.close(fds[0])


def test_fill_on_one_core_stays_on_the_calling_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storeread, "usable_cores", lambda: 1)
    elements = [_element(k) for k in range(100)]
    fds, starts, stops = _store(tmp_path, elements, "zstd")
    filler = Filler()
    flat = np.zeros(101 * SIZE, dtype=np.uint8)
    filler.fill(flat, SIZE, np.arange(1, 101), fds, np.zeros(100, dtype=np.int64), starts, stops, "zstd", str)
    assert np.array_equal(flat[SIZE:].reshape(100, *SHAPE), np.stack(elements))
    assert filler._pool is None
    os.close(fds[0])
