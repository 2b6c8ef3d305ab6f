"""Open any input once, hash it while reading, and hand its bytes to the parser.

The input is a local path, a ``file://`` or ``http(s)://`` URL (through fsspec), or an open
binary stream such as standard input; compression is inferred from the name (``.gz``,
``.bz2``, ``.xz``, ``.zst``). It is read exactly once, front to back, so it may be a pipe.
:class:`HashingReader` is what the parser reads: it hashes the bytes as written
(:mod:`.hashing`), runs the raw-text guards over them (:mod:`.guards`), bounds the span of one part,
and rewrites -2**63 for the parser (:mod:`.int64min`). The document walk over it, parts and
batches of steps, is :mod:`.parts`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..errors import InvalidEpisode, SourceError
from .guards import DepthGuard
from .hashing import BackgroundSha256
from .int64min import StandIns
from .zstdframes import ZstdFrameWalker

# ijson reads this many bytes at a time; larger reads amortise the per-call overhead.
READ_SIZE = 256 * 1024
# Largest input span of one part (a step, or a header value such as training). Parsed JSON takes
# several times its text in memory (up to ~25x for a run of empty objects, measured), so this is
# what bounds a hostile file's memory; real steps are a few KB to a few MB.
MAX_PART_BYTES = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"


def _infer_compression(name: str) -> str | None:
    """fsspec's ``infer_compression`` (by the name's extension), without importing fsspec for ``.json``."""
    extension = os.path.splitext(name)[-1].strip(".").lower()
    if extension in ("json", ""):  # never a compression's extension in fsspec's registry
        return None
    import fsspec.utils

    return fsspec.utils.infer_compression(name)


def _is_plain_local_path(name: str) -> bool:
    """A local path that fsspec would open as it is (no URL, no chaining, no ``~`` to expand)."""
    return "://" not in name and "::" not in name and not name.startswith("~")


class _RawCounter(io.RawIOBase):
    """Counts the bytes taken from the underlying (possibly compressed) file, for progress.

    Errors here are the transport's (a dropped connection, an I/O error), not the file's. For a
    zstd file it also walks the frame structure: zstandard's reader ends silently at a cut frame,
    so the end of the input must fall on a frame boundary.
    """

    def __init__(self, raw: IO[bytes], name: str, walker: ZstdFrameWalker | None = None) -> None:
        self._raw = raw
        self._name = name
        self._walker = walker
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._walker is not None or not hasattr(self._raw, "readinto"):
            data = self.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        # Straight into the caller's buffer: no bytes object made and copied per read.
        try:
            count = self._raw.readinto(buffer)
        except Exception as exc:
            raise SourceError(f"could not read the input: {exc}", source=self._name) from exc
        count = count or 0
        self.count += count
        return count

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except Exception as exc:
            raise SourceError(f"could not read the input: {exc}", source=self._name) from exc
        self.count += len(data)
        if self._walker is not None:
            self._walker.feed(data)
            if not data and size != 0 and not self._walker.at_boundary():
                raise EOFError("the zstd stream ends in the middle of a frame")
        return data


class PartTooLarge(Exception):
    """Raised by the reader when one part spans more than ``MAX_PART_BYTES``."""


# The smallest buffer readinto fills: room for a token of the int64min window held back and a read behind it.
_MIN_BUFFER = 64


class HashingReader:
    """The decompressed byte stream handed to ijson: hashed, counted, with a leading BOM dropped.

    ``mark()`` notes where the current part began; reading more than ``MAX_PART_BYTES`` past the
    mark stops the parse before the part can fill memory. The hash and the guards see the bytes as
    written; ijson gets them with -2**63 rewritten into a stand-in, and ``standins.restore`` turns
    those back in what it parsed (see :mod:`.int64min`).
    """

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name
        self._hash = BackgroundSha256()
        self._pending = b""  # what first_byte read, hashed and guarded but not handed over yet
        self._pending_state: tuple[bool, bytes | bytearray] = (False, b"")  # the depth guard's state before it
        self._held = b""  # bytes that may begin a token of the window, handed over with the next read
        self._out = b""  # bytes ready for ijson that a small read() had no room for
        self.consumed = 0
        self._limit = MAX_PART_BYTES
        self._depth = DepthGuard()
        self.standins = StandIns()
        self._guarded = True

    def leave_guards_to_parser(self) -> None:
        """Stop the raw-text guards and the -2**63 rewrite, before the first read: for a parser that
        refuses lone surrogates, reads -2**63 as itself, and checks the depth of what it parses
        (the fast walk, :mod:`.fastwalk`). The hash and the bound on a part's span stay."""
        self._guarded = False

    def mark(self) -> None:
        self._limit = self.consumed + MAX_PART_BYTES

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes as ijson gets them (``READ_SIZE`` at most when ``size`` is negative)."""
        if size == 0:  # ijson probes with read(0) to tell bytes from text
            return b""
        want = READ_SIZE if size < 0 else size
        if not self._guarded and not self._out:
            return self._read_unguarded(want)
        buffer = bytearray(max(want, _MIN_BUFFER))
        count = self.readinto(buffer)
        if count > want:
            self._out, count = bytes(buffer[want:count]) + self._out, want
        return bytes(buffer[:count])

    def _read_unguarded(self, size: int) -> bytes:
        """:meth:`read` for the fast walk (no guards, nothing held back): the stream's own bytes object,
        without the zeroed buffer and the two copies out of it that ijson's reads need."""
        if self._pending:  # what first_byte read: hashed already
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        data = self._read(size)
        if self.consumed > self._limit:
            raise PartTooLarge
        return data

    def readinto(self, buffer: bytearray) -> int:
        """:meth:`read` into ``buffer``, which ijson's parser hands over and reuses for every read.

        No bytes object is made per read: the stream fills the parser's own buffer, the guards
        look at it there, and the hash copies it into its blocks (see :class:`BackgroundSha256`);
        then the window's integers are rewritten in it (:meth:`StandIns.scan`), and the bytes at
        its end that may begin one are held back for the next read. ``buffer`` holds more than
        ``_MIN_BUFFER`` bytes (ijson's holds ``READ_SIZE``).
        """
        if self._out:
            count = min(len(buffer), len(self._out))
            buffer[:count], self._out = self._out[:count], self._out[count:]
            return count
        start = len(self._held)
        if start:
            buffer[:start] = self._held
        while True:
            if self._pending:
                in_string, carry = self._pending_state
                count = self._take_pending(buffer, start)
            else:
                in_string, carry = self._depth.in_string, self._depth.carry
                count = self._fill(buffer, start)
            end = start + count
            if not self._guarded:
                hold = 0
                break
            hold = self.standins.scan(buffer, end, start, in_string, carry, final=not count)
            if hold < end or not count:
                break
            start = end  # every byte may begin a token: read on behind them
        self._held = bytes(buffer[end - hold : end]) if hold else b""
        return end - hold

    def _take_pending(self, buffer: bytearray, start: int) -> int:
        count = min(len(buffer) - start, len(self._pending))
        piece, self._pending = self._pending[:count], self._pending[count:]
        buffer[start : start + count] = piece
        if self._pending and self._guarded:  # handed over in pieces: the state before the next one
            guard = DepthGuard()
            guard.in_string, guard.carry = self._pending_state
            guard.feed(piece)
            self._pending_state = (guard.in_string, guard.carry)
        return count

    def _fill(self, buffer: bytearray, start: int) -> int:
        """Read the next bytes of the stream into ``buffer[start:]``; hash and guard them."""
        stream = self._stream
        into = memoryview(buffer)[start:] if start else buffer
        try:
            count = stream.readinto(into) if hasattr(stream, "readinto") else self._copy_into(into)
        except (SourceError, PartTooLarge):
            raise
        except Exception as exc:
            raise self._corrupt(exc) from exc
        count = count or 0
        if count:
            self.consumed += count
            data = buffer if count == len(buffer) else bytes(buffer[start : start + count])
            self._hash.update(data)
            if self._guarded:
                self._depth.feed(data)
            if self.consumed > self._limit:
                raise PartTooLarge
        elif self._guarded:
            self._depth.feed(b"")
        return count

    def _copy_into(self, buffer: bytearray | memoryview) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _corrupt(self, exc: Exception) -> InvalidEpisode:
        # Anything the decompressor raises means the compressed file itself is broken.
        return InvalidEpisode(
            "file.compression",
            f"the compressed file is corrupt or truncated ({exc or type(exc).__name__})",
            offset=self.consumed,
            source=self._name,
        )

    def _read(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except SourceError:
            raise
        except Exception as exc:
            raise self._corrupt(exc) from exc
        self.consumed += len(data)
        self._hash.update(data)
        if self._guarded:
            self._depth.feed(data)
        return data

    def first_byte(self) -> bytes:
        """The first byte of the document proper (after a BOM and whitespace), b"" if empty."""
        head = self._read(READ_SIZE)
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        while True:
            stripped = head.lstrip(_WHITESPACE)
            if stripped:
                # Only whitespace and a BOM went before it: no string is open, no escape begun.
                self._pending, self._pending_state = stripped, (False, b"")
                return stripped[:1]
            more = self._read(READ_SIZE)
            if not more:
                return b""
            head = more

    def hexdigest(self) -> str:
        """sha256 of the decompressed bytes read so far (all of them, once the parse is done)."""
        return self._hash.hexdigest()

    def close(self) -> None:
        self._hash.close()


@dataclass
class Source:
    """One opened input: its display name, the decompressed stream, and progress counters."""

    name: str
    reader: HashingReader
    size: int | None
    _raw_counter: _RawCounter | None

    @property
    def bytes_read(self) -> int:
        """Bytes taken from the input as stored (compressed bytes for a compressed file)."""
        return self._raw_counter.count if self._raw_counter else self.reader.consumed


@contextlib.contextmanager
def _opening(name: str) -> Iterator[None]:
    """Turn what opening ``name`` raised into a SourceError a person can act on (fsspec or local alike)."""
    try:
        yield
    except SourceError:
        raise
    except FileNotFoundError as exc:
        cause = exc.__cause__
        # fsspec's HTTP file system reports a server it cannot reach (refused, no such host) as a missing
        # file, with the connection's error as the cause; a 404's cause is a response, not an OSError.
        if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
            raise SourceError(f"could not connect: {cause}", source=name) from exc
        raise SourceError("no such file", source=name) from exc
    except PermissionError as exc:
        raise SourceError("permission denied", source=name) from exc
    except Exception as exc:
        raise SourceError(f"could not open: {exc}", source=name) from exc


class _OpenedSource:
    """Context manager returned by :func:`open_source`; closes everything it opened."""

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], name: str | None, size: int | None) -> None:
        self._source = source
        self._name = name
        self._size = size
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> Source:
        try:
            return self._open()
        except BaseException:
            self._close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self._close()

    def _close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()

    def _open(self) -> Source:
        src = self._source
        if hasattr(src, "read"):
            name = self._name or getattr(src, "name", None) or "<stream>"
            if not isinstance(name, str):
                name = "<stream>"
            compression = _infer_compression(name) if self._name else None
            raw, size = src, self._size
        else:
            name = self._name or os.fspath(src)
            raw, size = self._open_path(name)
            compression = _infer_compression(name)
        counter = _RawCounter(raw, name, ZstdFrameWalker() if compression == "zstd" else None)  # type: ignore[arg-type]
        stream: IO[bytes] = io.BufferedReader(counter, buffer_size=READ_SIZE)
        if compression == "zstd":
            # fsspec's zstd reader stops after the first frame; a file may hold several.
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
            self._closers.append(stream.close)
        elif compression in ("gzip", "bz2", "xz", "lzma"):
            # Not fsspec's (the standard library's) readers: they end quietly at bytes after a stream.
            from .decompress import open_decompressed

            stream = open_decompressed(stream, compression)
            self._closers.append(stream.close)
        elif compression == "zip":
            # fsspec's zip reader seeks to the archive's end, which a stream read once cannot do: every .zip
            # raised zipfile's own error, a traceback on the command line (found by the hostile-input campaign).
            raise SourceError("a .zip archive cannot be read as a stream; unzip it, or compress the episode "
                              "file with gzip, bzip2, xz or zstd (.gz, .bz2, .xz, .zst)", source=name)
        elif compression:
            import fsspec.compression

            with _opening(name):
                stream = fsspec.compression.compr[compression](stream, mode="rb")
            self._closers.append(stream.close)
        reader = HashingReader(stream, name)
        self._closers.append(reader.close)
        return Source(name=name, reader=reader, size=size, _raw_counter=counter)

    def _open_path(self, name: str) -> tuple[IO[bytes], int | None]:
        raw, size = open_input(name)
        self._closers.append(raw.close)
        return raw, size


def open_input(name: str) -> tuple[IO[bytes], int | None]:
    """The input ``name`` (a path or a URL) as stored, opened for reading, and its size if known;
    SourceError with a message a person can act on if it cannot be opened. The caller closes it."""
    if _is_plain_local_path(name):
        return _open_local(name)
    with _opening(name):
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(name)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        options = {}
        if "http" in protocols or "https" in protocols:
            # A plain stream: one GET, read front to back. fsspec's default random-access
            # file would fetch 5 MiB ranges, which servers without Range support refuse.
            options["block_size"] = 0
        elif fs.isdir(path):
            raise SourceError("is a directory, not an episode file", source=name)
        raw = fs.open(path, "rb", **options)
    try:
        size = fs.size(path)
    except Exception:
        size = None
    return raw, size


def _open_local(name: str) -> tuple[IO[bytes], int | None]:
    """What fsspec's local filesystem does for a plain path (same errors), without importing fsspec."""
    with _opening(name):
        if os.path.isdir(name):
            raise SourceError("is a directory, not an episode file", source=name)
        raw = open(name, "rb")  # noqa: SIM115 - closed by the caller
    try:
        size: int | None = os.fstat(raw.fileno()).st_size
    except Exception:
        size = None
    return raw, size


def open_source(source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None,
                size: int | None = None) -> _OpenedSource:
    """Open ``source`` for one streaming read: ``with open_source("ep.json.gz") as src: ...``.

    ``size``: of a stream, as stored, if known (a path's is looked up)."""
    return _OpenedSource(source, name, size)


