"""Tell whether a Zstandard stream ends exactly at a frame boundary, without decompressing it.

Why this exists: the ``.zst`` reader we decompress with (python-zstandard's
``ZstdDecompressor().stream_reader(raw, read_across_frames=True)``; fsspec's ``.zst`` support
wraps the same reader) is memory-bounded but ends *silently* when its input runs out. A file cut
inside its last block, or in the 4-byte content checksum after it, reads as a shorter but "valid"
stream and no error is raised. Decompressing a second time with a stricter API would double the
cost, so instead the compressed bytes are also fed, as they are read, to :class:`ZstdFrameWalker`.
It follows only the frame *structure* (RFC 8878, section 3.1): frame headers and 3-byte block
headers are parsed; block contents, skippable frame payloads and checksums are skipped by
counting. The Python work is therefore proportional to the number of blocks (a block holds up to
128 KiB of decompressed data), never to the number of bytes, and only a partial header (at most
4 bytes) is ever buffered between calls.

It checks structure, not content: checksums are not verified and blocks are not decoded, so a
file corrupted *inside* a block still needs the decompressor to notice. What it does catch,
exactly, is a stream that stops anywhere other than at the end of a complete frame.
"""

from __future__ import annotations

__all__ = ["ZstdFrameWalker"]

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MAGIC = 0x184D2A50  # 0x184D2A50..0x184D2A5F: the low 4 bits are free
_BLOCK_SIZE_MAX = 128 * 1024  # Block_Maximum_Size is never above 128 KiB

# Frame_Content_Size field length by Frame_Content_Size_flag, without / with Single_Segment_flag.
_FCS_SIZE = ((0, 2, 4, 8), (1, 2, 4, 8))
_DICT_ID_SIZE = (0, 1, 2, 4)


class ZstdFrameWalker:
    """Walk the frame structure of a Zstandard byte stream fed in chunks of any size.

    >>> import zstandard
    >>> walker = ZstdFrameWalker()
    >>> packed = zstandard.ZstdCompressor(write_checksum=True).compress(b"hello")
    >>> walker.feed(packed[:-1]); walker.at_boundary()
    False
    >>> walker.feed(packed[-1:]); walker.at_boundary()
    True

    :meth:`feed` raises :class:`ValueError` on a structure that is not Zstandard (unknown magic
    number, reserved bit set, reserved block type, oversized block); the walker then stays
    failed and every later :meth:`feed` raises the same error.
    """

    __slots__ = ("_buffer", "_checksum_size", "_error", "_field", "_need", "_offset", "_skip")

    def __init__(self) -> None:
        self._field = "magic"  # the header field being collected; only "magic" can be a boundary
        self._need = 4  # its length in bytes
        self._buffer = bytearray()  # the part of it seen so far, when it straddles two feeds
        self._skip = 0  # bytes to pass over (contents, payloads, checksum) before that field
        self._checksum_size = 0  # 4 when the current frame ends with Content_Checksum
        self._offset = 0  # bytes fed so far
        self._error: str | None = None

    @property
    def offset(self) -> int:
        """Number of bytes fed so far."""
        return self._offset

    def at_boundary(self) -> bool:
        """True if the bytes fed so far end exactly after a complete frame (or none were fed)."""
        return self._field == "magic" and self._skip == 0 and not self._buffer and self._error is None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Advance over the next chunk of the compressed stream."""
        if self._error is not None:
            raise ValueError(self._error)
        with memoryview(data) as raw, raw.cast("B") as view:
            end = len(view)
            pos = 0
            while pos < end:
                if self._skip:
                    step = min(self._skip, end - pos)
                    self._skip -= step
                    pos += step
                    continue
                need = self._need
                if not self._buffer and end - pos >= need:  # the whole field is in this chunk
                    value = int.from_bytes(view[pos : pos + need], "little")
                    pos += need
                else:  # it straddles chunks: keep its first bytes until the rest arrives
                    step = min(need - len(self._buffer), end - pos)
                    self._buffer += view[pos : pos + step]
                    pos += step
                    if len(self._buffer) < need:
                        break
                    value = int.from_bytes(self._buffer, "little")
                    self._buffer.clear()
                try:
                    self._parse(value, self._offset + pos - need)
                except ValueError as error:
                    self._error = str(error)
                    raise
            self._offset += end

    def _parse(self, value: int, at: int) -> None:
        """Interpret the header field just collected (found at stream offset ``at``); set what follows."""
        name = self._field
        if name == "block header":
            block_type = (value >> 1) & 3
            block_size = value >> 3
            if block_type == 3:
                raise ValueError(f"zstd: reserved block type at offset {at}")
            if block_size > _BLOCK_SIZE_MAX:
                raise ValueError(f"zstd: block of {block_size} bytes at offset {at} (max {_BLOCK_SIZE_MAX})")
            self._skip = 1 if block_type == 1 else block_size  # an RLE block stores one byte
            if value & 1:  # Last_Block: then the optional checksum, then the next frame
                self._skip += self._checksum_size
                self._field, self._need = "magic", 4
        elif name == "magic":
            if value == _ZSTD_MAGIC:
                self._field, self._need = "frame header descriptor", 1
            elif value & ~0xF == _SKIPPABLE_MAGIC:
                self._field, self._need = "skippable frame size", 4
            else:
                raise ValueError(f"zstd: bad magic number 0x{value:08X} at offset {at}")
        elif name == "frame header descriptor":
            if value & 0x08:
                raise ValueError(f"zstd: reserved bit set in frame header at offset {at}")
            single_segment = (value >> 5) & 1
            self._checksum_size = 4 if value & 0x04 else 0
            # Window_Descriptor (absent in single-segment frames), Dictionary_ID, Frame_Content_Size.
            self._skip = (1 - single_segment) + _DICT_ID_SIZE[value & 3] + _FCS_SIZE[single_segment][value >> 6]
            self._field, self._need = "block header", 3
        else:  # skippable frame size
            self._skip = value
            self._field, self._need = "magic", 4
