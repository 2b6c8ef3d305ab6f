"""The frame store's entry files: what is written reads back, element by element, for both codecs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import LakeError
from pipeline.lake.framestore import element_bytes, encode, read_index, write_entry
from pipeline.lake.layout import frame_entry_episode, frame_entry_name


@st.composite
def _entries(draw: st.DrawFn) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, list[np.ndarray | None]]:
    shape = draw(st.sampled_from([(1, 1), (3, 5), (4, 2, 3)]))
    count = draw(st.integers(min_value=0, max_value=12))
    steps = np.array(sorted(draw(st.sets(st.integers(min_value=0, max_value=10**6), min_size=count,
                                         max_size=count))), dtype=np.int64)
    present = np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=bool)
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    elements: list[np.ndarray | None] = [
        rng.integers(0, 256, size=shape, dtype=np.uint8) if draw(st.booleans()) else None for _ in range(count)]
    return shape, steps, present, elements


@settings(max_examples=60, deadline=None)
@given(entry=_entries(), codec=st.sampled_from(["zstd", "raw"]))
def test_an_entry_reads_back_as_written(tmp_path_factory: pytest.TempPathFactory,
                                        entry: tuple[tuple[int, ...], np.ndarray, np.ndarray, list[np.ndarray | None]],
                                        codec: str) -> None:
    import zstandard

    shape, steps, present, elements = entry
    path = tmp_path_factory.mktemp("entry") / "e.frames"
    size = write_entry(path, episode_id="a" * 32, agent="p0", key="k", shape=lambda: shape, codec=codec,
                       steps=steps, present=present,
                       blobs=(b"" if e is None else encode(e, codec) for e in elements))
    assert size == path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        index = read_index(fd, path)
        assert index.shape == shape and index.codec == codec
        assert np.array_equal(index.steps, steps) and np.array_equal(index.present, present)
        for i, element in enumerate(elements):
            blob = os.pread(fd, int(index.offsets[i + 1] - index.offsets[i]), int(index.offsets[i]))
            if element is None:
                assert blob == b""
                continue
            data = element_bytes([blob], index.element_size, codec)[0]  # verified by its checksum
            assert np.array_equal(np.frombuffer(data, dtype=np.uint8).reshape(shape), element)
            if codec == "zstd":  # a plain zstd frame: any zstd reads it
                assert zstandard.ZstdDecompressor().decompress(blob) == bytes(data)
    finally:
        os.close(fd)


def test_a_cut_entry_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "e.frames"
    write_entry(path, episode_id="a" * 32, agent="p0", key="k", shape=lambda: (1,), codec="raw",
                steps=np.arange(2), present=np.ones(2, bool), blobs=[b"x", b"y"])
    path.write_bytes(path.read_bytes()[:10])
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(LakeError, match=f"{path}: not a frame store entry"):
            read_index(fd, path)
    finally:
        os.close(fd)


def test_too_many_or_too_few_elements_are_refused(tmp_path: Path) -> None:
    common = {"episode_id": "a" * 32, "agent": "p0", "key": "k", "shape": lambda: (1,), "codec": "raw",
              "steps": np.arange(2), "present": np.ones(2, bool)}
    with pytest.raises(LakeError, match="more elements than the 2 steps"):
        write_entry(tmp_path / "a.frames", blobs=[b"x", b"y", b"z"], **common)  # type: ignore[arg-type]
    with pytest.raises(LakeError, match="1 elements for 2 steps"):
        write_entry(tmp_path / "b.frames", blobs=[b"x"], **common)  # type: ignore[arg-type]
    with pytest.raises(LakeError, match="0 elements for 2 steps"):
        write_entry(tmp_path / "c.frames", blobs=[], **common)  # type: ignore[arg-type]


@given(agent=st.text(min_size=1, max_size=50))
def test_entry_names_are_safe_and_name_their_episode(agent: str) -> None:
    name = frame_entry_name("0123456789abcdef" * 2, agent)
    assert "/" not in name and len(name.encode()) < 100
    assert frame_entry_episode(name) == "0123456789abcdef" * 2
    assert frame_entry_episode("options.json") is None
