"""Read a ``.gz``, ``.bz2``, ``.xz`` (or ``.lzma``) file whole: one or more complete streams, and nothing after them.

Why not the standard library's readers (which fsspec hands out): ``BZ2File`` and ``LZMAFile`` stop
quietly at bytes after a stream that do not start another one, and ``GzipFile`` skips zero bytes
after its last member, so a file with anything appended read as a whole, valid one (found by a
hostile-input campaign). docs/format.md says otherwise (``file.compression``: a compressed file
decompresses whole). Here the same decompressors run in the same loop, except that
whatever follows a stream must be a whole stream of the same kind, and the input must end at the end
of one. An empty file holds no stream at all, so it is refused too (as ``BZ2File``, ``LZMAFile`` and the
``gzip``, ``bzip2`` and ``xz`` tools do; ``GzipFile`` alone read it as an empty text).
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Any, cast

__all__ = ["KINDS", "open_decompressed"]

# The compressed bytes are read this many at a time.
CHUNK = 256 * 1024

KINDS: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31),  # gzip members only, header and CRC-32/size trailer checked
    "bz2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
    "lzma": lzma.LZMADecompressor,  # fsspec's name for a .lzma file: .xz or the older .lzma format, told apart by it
}


class _Streams(io.RawIOBase):
    """The decompressed bytes of ``raw``: complete streams, one after another, to the end of the input."""

    def __init__(self, raw: IO[bytes], kind: str) -> None:
        self._raw = raw
        self._kind = kind
        self._new = KINDS[kind]
        self._decompressor = self._new()
        self._input = b""  # compressed bytes read but not yet given to the decompressor
        self._read_any = False
        self._error: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as far as the input goes; an error after some text comes at the next call.

        Full reads, as a buffered reader gives (short ones cost the parser ~6 MB more peak memory on a
        40 MB file, measured), yet the text before a damaged or missing part reaches the parser first,
        so that the refusal names how far the text got.
        """
        if self._error is not None:
            raise self._error
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            try:
                count = self._some(view[filled:])
            except Exception as exc:
                if not filled:
                    raise
                self._error = exc
                break
            if not count:
                break
            filled += count
        return filled

    def _some(self, buffer: Any) -> int:
        """Decompress into ``buffer`` what one call of the decompressor gives (0 at the end)."""
        size = len(buffer)
        while True:
            decompressor = self._decompressor
            if decompressor.eof:
                following = decompressor.unused_data or self._raw.read(CHUNK)
                if not following:
                    return 0  # the input ends where a stream ends
                self._decompressor = decompressor = self._new()
                self._input = following
                data = self._next_stream(following, size)
            else:
                if not self._input and getattr(decompressor, "needs_input", True):
                    self._input = self._raw.read(CHUNK)
                    if not self._input:
                        return self._at_end(decompressor, buffer)
                    self._read_any = True
                data = _decompressed(decompressor, self._input, size)
                # zlib hands back what it did not take; bz2 and lzma keep it themselves.
                self._input = getattr(decompressor, "unconsumed_tail", b"")
            if data:
                buffer[: len(data)] = data
                return len(data)

    def _next_stream(self, following: bytes, size: int) -> bytes:
        try:
            data = _decompressed(self._decompressor, following, size)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise ValueError(f"bytes after the end of the compressed data are not another {self._kind} "
                             f"stream ({exc})") from exc
        self._input = getattr(self._decompressor, "unconsumed_tail", b"")
        return data

    def _at_end(self, decompressor: Any, buffer: Any) -> int:
        """The input has ended: give what the decompressor still holds, or say where the stream was cut."""
        if not self._read_any:
            raise EOFError(f"the file is empty: it holds no {self._kind} stream")
        data = _decompressed(decompressor, b"", len(buffer))
        if data:
            buffer[: len(data)] = data
            return len(data)
        if decompressor.eof:
            return 0
        raise EOFError(f"the {self._kind} stream ends before its end marker (the file is cut short)")


# zlib's words for a damaged gzip member, in the words of the gzip format.
_ZLIB_WORDS = {"incorrect data check": "CRC check failed: the text does not match the member's checksum",
               "incorrect length check": "the length in the member's trailer is wrong",
               "incorrect header check": "not a gzip member (no gzip header)"}


def _decompressed(decompressor: Any, data: bytes, size: int) -> bytes:
    try:
        return decompressor.decompress(data, size)
    except zlib.error as exc:
        words = next((said for found, said in _ZLIB_WORDS.items() if found in str(exc)), str(exc))
        raise ValueError(words) from exc


def open_decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    """A readable binary stream of ``raw`` decompressed as ``kind`` (a key of :data:`KINDS`).

    Not wrapped in a buffered reader: each read fills the caller's buffer directly (see ``_Streams.readinto``).
    """
    return cast(IO[bytes], _Streams(raw, kind))
