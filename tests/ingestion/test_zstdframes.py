"""ZstdFrameWalker: frame boundaries of real zstandard output, under any chunking and any truncation."""

from __future__ import annotations

import io
import random
import struct

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingestion.zstdframes import ZstdFrameWalker

ZSTD_MAGIC = struct.pack("<I", 0xFD2FB528)
BLOCK_MAX = 128 * 1024

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload(kind: str, size: int, seed: int) -> bytes:
    """Data that makes zstandard emit each block type: random -> raw, runs -> RLE, text -> compressed."""
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "runs":
        out = bytearray()
        while len(out) < size:
            out += bytes([rng.randrange(256)]) * rng.randrange(1, 3 * BLOCK_MAX)
        return bytes(out[:size])
    words = [b"alpha", b"beta", b'{"step": 1}', b"\n", b"0.125", b"gamma"]
    return b" ".join(rng.choices(words, k=size // 6 + 1))[:size]


def skippable(nibble: int, content: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A50 + nibble, len(content)) + content


sizes = st.sampled_from([0, 1, 100, 5000]) | st.integers(0, 3 * BLOCK_MAX + 10)


@st.composite
def zstd_frames(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Some zstd output (one or several frames) and the offsets where its frames end."""
    data = payload(draw(st.sampled_from(["random", "runs", "text"])), draw(sizes), draw(st.integers(0, 9)))
    levels = [-5, 1, 3, 9] + ([19] if len(data) < 50_000 else [])  # 19 is slow on big inputs
    compressor = zstandard.ZstdCompressor(
        level=draw(st.sampled_from(levels)),
        write_checksum=draw(st.booleans()),
        write_content_size=draw(st.booleans()),
        threads=draw(st.sampled_from([0, 2])),
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    mode = draw(st.sampled_from(["compress", "compressobj", "stream_writer"]))
    if mode == "compress":
        packed = compressor.compress(data)
        return packed, [len(packed)]
    if mode == "compressobj":  # one frame, flushed block by block
        cobj = compressor.compressobj()
        out = b""
        for piece in pieces:
            out += cobj.compress(piece)
            if draw(st.booleans()):
                out += cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        out += cobj.flush()
        return out, [len(out)]
    sink = io.BytesIO()  # stream_writer: ends a frame wherever FLUSH_FRAME is asked for
    ends = []
    with compressor.stream_writer(sink, closefd=False) as writer:
        for piece in pieces:
            writer.write(piece)
            if draw(st.booleans()):
                writer.flush(zstandard.FLUSH_FRAME)
                ends.append(sink.tell())
            else:
                writer.flush(zstandard.FLUSH_BLOCK)
    ends.append(sink.tell())
    return sink.getvalue(), ends


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, set[int]]:
    """Zstd frames and skippable frames back to back, and every offset that ends a frame (0 included)."""
    stream = b""
    boundaries = {0}
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:
            part = skippable(draw(st.integers(0, 15)), draw(st.binary(max_size=40)))
            ends = [len(part)]
        else:
            part, ends = draw(zstd_frames())
        boundaries.update(len(stream) + end for end in ends)
        stream += part
    return stream, boundaries


def walk(stream: bytes, chunk_sizes: list[int]) -> list[tuple[int, bool]]:
    """Feed ``stream`` in chunks of the given sizes (cycled) and report (offset, at_boundary) after each."""
    walker = ZstdFrameWalker()
    seen = [(0, walker.at_boundary())]
    pos = 0
    for size in iter_sizes(chunk_sizes, len(stream)):
        walker.feed(stream[pos : pos + size])
        pos = min(pos + size, len(stream))
        assert walker.offset == pos
        seen.append((pos, walker.at_boundary()))
    return seen


def iter_sizes(chunk_sizes: list[int], total: int):
    pos, i = 0, 0
    while pos < total:
        size = chunk_sizes[i % len(chunk_sizes)]
        yield size
        pos += size
        i += 1


def prefix_lengths(stream: bytes, boundaries: set[int], rng: random.Random) -> list[int]:
    """Every prefix length of a short stream; for a long one, all lengths near a frame's start or end
    (headers, last block, checksum) and a random sample of the rest."""
    if len(stream) <= 2000:
        return list(range(len(stream) + 1))
    near = {n + d for n in boundaries for d in range(-40, 41)}
    sample = rng.sample(range(len(stream) + 1), 200)
    return sorted(n for n in near | set(sample) if 0 <= n <= len(stream))


@FAST
@given(streams(), st.lists(st.sampled_from([1, 2, 3, 4, 5, 7, 64, 1000, 65536, 1 << 20]), min_size=1, max_size=6))
def test_boundaries_under_any_chunking(case, chunk_sizes):
    stream, boundaries = case
    zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True).read()  # libzstd accepts it
    chunk_sizes = [*chunk_sizes, max(1, len(stream) // 500)]  # small chunks, but not 400k feeds of 1 byte
    seen = walk(stream, chunk_sizes)
    for offset, at_boundary in seen:
        assert at_boundary == (offset in boundaries), offset
    assert seen[-1] == (len(stream), True)


@FAST
@given(streams(), st.randoms(use_true_random=False))
def test_every_truncation_is_seen(case, rng):
    stream, boundaries = case
    lengths = prefix_lengths(stream, boundaries, rng)
    view = memoryview(stream)
    for n in lengths:  # one feed per prefix: the path that reads whole fields out of one chunk
        walker = ZstdFrameWalker()
        walker.feed(view[:n])
        assert walker.at_boundary() == (n in boundaries), (n, len(stream))
    walker = ZstdFrameWalker()  # byte by byte up to the first frame end: fields straddle feeds
    first_end = min(boundaries - {0})
    for n in range(1, min(first_end, 3000) + 1):
        walker.feed(stream[n - 1 : n])
        assert walker.at_boundary() == (n == first_end)


@FAST
@given(streams(), st.binary(min_size=4, max_size=4), st.data())
def test_garbage_magic_raises(case, garbage, data):
    stream, boundaries = case
    magic = struct.unpack("<I", garbage)[0]
    if magic == 0xFD2FB528 or magic & ~0xF == 0x184D2A50:
        garbage = b"\x00" * 4
    at = data.draw(st.sampled_from(sorted(boundaries)))
    bad = stream[:at] + garbage + stream[at:]
    walker = ZstdFrameWalker()
    walker.feed(bad[:at])  # fine up to the garbage
    assert walker.at_boundary()
    walker.feed(bad[at : at + 3])  # not yet a whole magic number
    assert not walker.at_boundary()
    with pytest.raises(ValueError, match=f"bad magic number .* at offset {at}"):
        walker.feed(bad[at + 3 :])
    with pytest.raises(ValueError, match="bad magic"):  # and stays failed
        walker.feed(b"")
    assert not walker.at_boundary()


# Hand-built frames: every header layout, raw and RLE blocks, checked against libzstd itself.


def block(kind: str, content: bytes, last: bool) -> bytes:
    block_type, size = {"raw": (0, len(content)), "rle": (1, len(content))}[kind]
    stored = content if kind == "raw" else content[:1]
    return (last | block_type << 1 | size << 3).to_bytes(3, "little") + stored


def frame(blocks: list[tuple[str, bytes]], single_segment: bool, dict_flag: int, fcs_flag: int) -> bytes:
    content = b"".join(c for _, c in blocks)
    header = bytes([fcs_flag << 6 | single_segment << 5 | dict_flag])
    if not single_segment:
        header += bytes([(17 - 10) << 3])  # Window_Descriptor: 128 KiB
    header += b"\x00" * (0, 1, 2, 4)[dict_flag]  # Dictionary_ID 0: none
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_size:
        header += (len(content) - 256 if fcs_size == 2 else len(content)).to_bytes(fcs_size, "little")
    body = b"".join(block(kind, c, i == len(blocks) - 1) for i, (kind, c) in enumerate(blocks))
    return ZSTD_MAGIC + header + body


@pytest.mark.parametrize("single_segment", [False, True])
@pytest.mark.parametrize("dict_flag", [0, 1, 2, 3])
@pytest.mark.parametrize("fcs_flag", [0, 1, 2, 3])
def test_hand_built_header_layouts(single_segment, dict_flag, fcs_flag):
    if single_segment and fcs_flag == 0:
        blocks = [("raw", b"tiny"), ("rle", b"z" * 200)]  # a 1-byte content size
    elif not single_segment and fcs_flag == 0:
        blocks = [("rle", b"q" * BLOCK_MAX), ("raw", b"")]  # no content size
    else:
        blocks = [("raw", bytes(range(256)) * 3), ("rle", b"\x07" * 1000), ("raw", b"end")]
    packed = frame(blocks, single_segment, dict_flag, fcs_flag)
    expected = b"".join(c for _, c in blocks)
    assert zstandard.ZstdDecompressor().stream_reader(packed).read() == expected  # libzstd agrees
    stream = packed + skippable(3, b"meta") + packed
    boundaries = {0, len(packed), len(packed) + 12, len(stream)}
    for offset, at_boundary in walk(stream, [1]):
        assert at_boundary == (offset in boundaries), offset


def test_reserved_descriptor_bit_raises():
    packed = bytearray(zstandard.ZstdCompressor().compress(b"payload"))
    packed[4] |= 0x08
    with pytest.raises(ValueError, match="reserved bit"):
        ZstdFrameWalker().feed(packed)
    packed[4] &= ~0x08
    packed[4] |= 0x10  # the unused bit is not reserved: decoders ignore it
    ZstdFrameWalker().feed(packed)


def test_reserved_block_type_raises():
    packed = ZSTD_MAGIC + bytes([0x20, 5]) + (1 | 3 << 1 | 5 << 3).to_bytes(3, "little") + b"abcde"
    with pytest.raises(ValueError, match="reserved block type at offset 6"):
        ZstdFrameWalker().feed(packed)


def test_oversized_block_raises():
    packed = ZSTD_MAGIC + bytes([0x00, 0x38]) + (1 | (BLOCK_MAX + 1) << 3).to_bytes(3, "little")
    with pytest.raises(ValueError, match="block of 131073 bytes"):
        ZstdFrameWalker().feed(packed)


def test_empty_input_counts_as_complete():
    walker = ZstdFrameWalker()
    assert walker.at_boundary()
    walker.feed(b"")
    assert walker.at_boundary() and walker.offset == 0


def test_accepts_bytearray_and_memoryview():
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(b"x" * 300_000)
    walker = ZstdFrameWalker()
    walker.feed(bytearray(packed[:7]))
    walker.feed(memoryview(packed)[7:])
    assert walker.at_boundary()
