"""Open any input once, hash it while reading, and stream its header parts and steps.

The input is a local path, a ``file://`` or ``http(s)://`` URL (through fsspec), or an open
binary stream such as standard input; compression is inferred from the name (``.gz``,
``.bz2``, ``.xz``, ``.zst``). It is read exactly once, front to back, so it may be a pipe.

Parsing uses ijson's C backend and its fastest path, ``items()``. A plain ``items()`` call
follows a single prefix; we need the steps *and* the few header values (``training``,
``action_mapping``, ``inference.parallel``, ``inference.config``), in whatever order the file
has them, without a second parser over the same bytes (which halves throughput) or a Python loop
over every event (1.6-3x slower). ijson matches prefixes with ``==``, and Python lets a ``str``
subclass's ``__eq__`` answer first when compared with a plain ``str``; so :class:`_Prefixes`
matches several prefixes and remembers, in document order, which one each yielded value came
from. The match is only consulted between values, never inside one, so the cost is one Python
call per step. ``tests/ingestion/test_source.py`` pins this behaviour for the installed ijson.

Longer than our ~400-line guide: opening (paths, URLs, compression, the hash) and the document walk
(prefixes, guards, batches) share the reader's state and its error positions; the natural cut, into
``source`` and a ``document`` module, is the next step once the ingest-speed work on it has settled.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import IO, Any

import ijson

from ..errors import InvalidEpisode, SourceError, shorten
from .int64min import StandIns
from .zstdframes import ZstdFrameWalker

# ijson reads this many bytes at a time; larger reads amortise the per-call overhead.
READ_SIZE = 256 * 1024
# Largest input span of one part (a step, or a header value such as training). Parsed JSON takes
# several times its text in memory (up to ~25x for a run of empty objects, measured), so this is
# what bounds a hostile file's memory; real steps are a few KB to a few MB.
MAX_PART_BYTES = 16 * 1024 * 1024

STEP = "inference.steps.item"
# Progress is reported every this many steps (and once at the end).
PROGRESS_EVERY = 128
HEADER_PARTS = ("training", "action_mapping", "inference.parallel", "inference.config")
# Paths the parser walks through on its way to the parts above; anything else is an unknown key.
STEPS_ARRAY = "inference.steps"
_CONTAINERS = frozenset({"", "inference", STEPS_ARRAY})
# The parent of each path a dotted key could spell (see _Prefixes); "training", "action_mapping" and
# "inference" have no dot, so no other key has their paths.
_PARENTS = {"inference.parallel": "inference", "inference.config": "inference", STEPS_ARRAY: "inference",
            STEP: STEPS_ARRAY}
_HEADER_SET = frozenset(HEADER_PARTS)
_STEPS = frozenset((STEP,))
_NOTHING: frozenset[str] = frozenset()
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


def _c_backend() -> Any:
    try:
        return ijson.get_backend("yajl2_c")
    except ImportError as exc:  # pragma: no cover - depends on the installed wheel
        raise SourceError(
            "ijson's C backend (yajl2_c) is not available, and the pure-Python parser is far "
            "too slow for episode files; reinstall ijson from a binary wheel: "
            "pip install --force-reinstall --only-binary ijson ijson"
        ) from exc


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


class _PartTooLarge(Exception):
    """Raised by the reader when one part spans more than ``MAX_PART_BYTES``."""


class _TooDeep(Exception):
    """Raised by the reader when arrays and objects nest deeper than ``MAX_DEPTH``."""


class _LoneSurrogate(Exception):
    """Raised by the reader at an escaped high surrogate (``\\ud800``) with no escaped low one after it."""


# Deepest nesting of arrays and objects accepted. Real episodes nest under 20 levels; ijson keeps
# one path string per level, each as long as the path, so memory grows with the square of depth
# (measured: 1 GB at 20,000 levels from a 40 KB file). The check has to run before ijson sees bytes.
MAX_DEPTH = 256
_STRUCTURAL = bytes(b for b in range(256) if b not in b'[]{}"')
_QUOTED = re.compile(rb'"[^"]*"')
_NESTING = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OPEN, _CLOSE, _PAIR = b"\x01", b"\xff", b"\x01\xff"
_BACKSLASH = b"\\"
# yajl turns a lone "\ud800" into "?" and "\ud800\ud800" into U+10000 (a lone "\udc00" it refuses), so an
# escaped high surrogate must be followed by an escaped low one; checked on the raw text, as depth is.
_LONE_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_ESCAPE_PAIR = 12  # len(b"\\ud83d\\ude00")
# The smallest buffer readinto fills: room for a token of the int64min window held back and a read behind it.
_MIN_BUFFER = 64


class _DepthGuard:
    """Tracks the exact nesting depth of a JSON byte stream, chunk by chunk, at C speed.

    Escaped characters are dropped, then everything but brackets and quotes; what remains of
    strings (quote pairs, or quotes around brackets) is removed, and the brackets left are summed.
    State carried between chunks: the depth, whether a string is open, the bytes from an escape the
    next chunk may complete (at most 11). On the way, an escaped high surrogate without an escaped
    low one after it raises :class:`_LoneSurrogate` (yajl would store it as ``?``).

    The deepest point of a chunk is bounded without a pass in Python: removing every adjacent
    open-close pair again and again leaves the unmatched closes then the unmatched opens, and
    the deepest point is at most the depth before the chunk, plus those opens, plus the number of
    passes (the deepest nesting of the matched pairs). Only a chunk whose bound exceeds the
    limit is summed exactly. No numpy: the command's start-up does without it.

    ``in_string`` and ``carry`` are the state the reader's int64min rewrite reads (``carry`` comes
    before the next chunk, and ``in_string`` holds before ``carry``).
    """

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.carry: bytes | bytearray = b""

    def feed(self, chunk: bytes | bytearray) -> None:
        """The next bytes of the stream; ``b""`` at its end, which checks what was carried over."""
        final = not chunk
        if self.carry:
            chunk, self.carry = self.carry + chunk, b""
        if _BACKSLASH in chunk:
            chunk = chunk.replace(_BACKSLASH * 2, b"").replace(_BACKSLASH + b'"', b"")
            # Escapes are whole now; one that the next chunk may complete is carried over.
            cut = -1 if final else chunk.find(_BACKSLASH, max(0, len(chunk) - _ESCAPE_PAIR + 1))
            if b"\\ud" in chunk or b"\\uD" in chunk:  # two memmem calls skip the search on most text
                lone = _LONE_HIGH.search(chunk)
                if lone is not None and (cut < 0 or lone.start() < cut):
                    raise _LoneSurrogate
            if cut >= 0:
                chunk, self.carry = chunk[:cut], chunk[cut:]
        marks = chunk.translate(None, _STRUCTURAL)
        if self.in_string:
            end = marks.find(b'"')
            if end < 0:
                return
            marks, self.in_string = marks[end + 1 :], False
        marks = marks.replace(b'""', b"")
        if b'"' in marks:
            marks = _QUOTED.sub(b"", marks)
            start = marks.find(b'"')
            if start >= 0:
                marks, self.in_string = marks[:start], True
        if not marks:
            return
        marks = marks.translate(_NESTING)
        opens = marks.count(_OPEN)
        net = 2 * opens - len(marks)
        if self.depth + opens > MAX_DEPTH:
            left, passes = marks, 0
            while True:
                reduced = left.replace(_PAIR, b"")
                if len(reduced) == len(left):
                    break
                left, passes = reduced, passes + 1
            if self.depth + left.count(_OPEN) + passes > MAX_DEPTH:
                deepest = max(accumulate(array("b", marks), initial=self.depth))  # exactly, in C
                if deepest > MAX_DEPTH:
                    raise _TooDeep
        self.depth += net


class _BackgroundSha256:
    """sha256 of a byte stream, updated in order on a helper thread.

    hashlib releases the GIL while it hashes, so the hash runs on another core while the parser
    holds the GIL (in line it cost ~0.075 s per 100 MB, ~3% of a teams-profile ingest, measured).
    The bytes given are copied into blocks of ``BATCH_BYTES`` that are hashed whole, each hand-over
    costing the parser two GIL switches; at most ``MAX_PENDING`` blocks exist, reused once hashed,
    so memory stays bounded if the helper falls behind, and the copy lands in memory already
    touched (joining fresh 4 MiB buffers instead cost ~0.05 s and ~8,000 page faults per 100 MB).
    """

    BATCH_BYTES = 4 * 1024 * 1024
    MAX_PENDING = 4
    FIRST_BLOCK_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[None], bytearray]] = deque()
        self._blocks = 0  # made so far
        self._block: bytearray | None = None
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` (copied: the caller may reuse its buffer at once)."""
        view = memoryview(data)
        while view:
            block = self._block
            if block is None:
                block = self._block = self._take_block()
            elif self._filled == len(block):  # a first block, smaller than BATCH_BYTES: grown
                block = self._block = self._grown(block)
            count = min(len(block) - self._filled, len(view))
            block[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == self.BATCH_BYTES:
                self._hand_over()

    def _grown(self, block: bytearray) -> bytearray:
        # The first block grows from FIRST_BLOCK_BYTES: a small file neither zeroes and touches
        # 4 MiB (~1,000 page faults) nor starts the helper thread to hash a few KB.
        bigger = bytearray(min(max(1, self.BATCH_BYTES), 2 * len(block)))
        bigger[: len(block)] = block
        return bigger

    def _take_block(self) -> bytearray:
        if self._blocks == 0:
            self._blocks = 1
            return bytearray(min(max(1, self.BATCH_BYTES), self.FIRST_BLOCK_BYTES))
        if self._blocks < max(1, self.MAX_PENDING) or not self._pending:
            self._blocks += 1
            return bytearray(max(1, self.BATCH_BYTES))
        future, block = self._pending.popleft()  # the oldest: hashed first, in order
        future.result()
        return block

    def _hand_over(self) -> None:
        block, filled = self._block, self._filled
        self._block, self._filled = None, 0
        if block is None or not filled:
            return
        if self._pool is None:  # started on the first hand-over: after the two-process ingest forks
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        data = block if filled == len(block) else memoryview(block)[:filled]
        self._pending.append((self._pool.submit(self._hash.update, data), block))

    def hexdigest(self) -> str:
        """The digest of everything given so far (waits for the helper)."""
        if self._pool is None:
            # A small input, still all in the first block: hashing it here beats starting a thread
            # for it (the thread's start and join were ~3 ms of a 9 kB episode's ingest, measured).
            if self._block is not None:
                self._hash.update(memoryview(self._block)[: self._filled])
            self._block, self._filled = None, 0
        else:
            self._hand_over()
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Finish the queued updates and stop the helper thread (it would outlive the ingest)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()


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
        self._hash = _BackgroundSha256()
        self._pending = b""  # what first_byte read, hashed and guarded but not handed over yet
        self._pending_state: tuple[bool, bytes | bytearray] = (False, b"")  # the depth guard's state before it
        self._held = b""  # bytes that may begin a token of the window, handed over with the next read
        self._out = b""  # bytes ready for ijson that a small read() had no room for
        self.consumed = 0
        self._limit = MAX_PART_BYTES
        self._depth = _DepthGuard()
        self.standins = StandIns()

    def mark(self) -> None:
        self._limit = self.consumed + MAX_PART_BYTES

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes as ijson gets them (``READ_SIZE`` at most when ``size`` is negative)."""
        if size == 0:  # ijson probes with read(0) to tell bytes from text
            return b""
        want = READ_SIZE if size < 0 else size
        buffer = bytearray(max(want, _MIN_BUFFER))
        count = self.readinto(buffer)
        if count > want:
            self._out, count = bytes(buffer[want:count]) + self._out, want
        return bytes(buffer[:count])

    def readinto(self, buffer: bytearray) -> int:
        """:meth:`read` into ``buffer``, which ijson's parser hands over and reuses for every read.

        No bytes object is made per read: the stream fills the parser's own buffer, the guards
        look at it there, and the hash copies it into its blocks (see :class:`_BackgroundSha256`);
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
        if self._pending:  # handed over in pieces: the state before the next one
            guard = _DepthGuard()
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
        except (SourceError, _PartTooLarge):
            raise
        except Exception as exc:
            raise self._corrupt(exc) from exc
        count = count or 0
        if count:
            self.consumed += count
            data = buffer if count == len(buffer) else bytes(buffer[start : start + count])
            self._hash.update(data)
            self._depth.feed(data)
            if self.consumed > self._limit:
                raise _PartTooLarge
        else:
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
        raise SourceError("no such file", source=name) from exc
    except PermissionError as exc:
        raise SourceError("permission denied", source=name) from exc
    except Exception as exc:
        raise SourceError(f"could not open: {exc}", source=name) from exc


class _OpenedSource:
    """Context manager returned by :func:`open_source`; closes everything it opened."""

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], name: str | None) -> None:
        self._source = source
        self._name = name
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
            raw, size = src, None
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
        if _is_plain_local_path(name):
            return self._open_local(name)
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
        self._closers.append(raw.close)
        try:
            size = fs.size(path)
        except Exception:
            size = None
        return raw, size

    def _open_local(self, name: str) -> tuple[IO[bytes], int | None]:
        """What fsspec's local filesystem does for a plain path (same errors), without importing fsspec."""
        with _opening(name):
            if os.path.isdir(name):
                raise SourceError("is a directory, not an episode file", source=name)
            raw = open(name, "rb")  # noqa: SIM115 - closed by _close
        self._closers.append(raw.close)
        try:
            size: int | None = os.fstat(raw.fileno()).st_size
        except Exception:
            size = None
        return raw, size


def open_source(source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None) -> _OpenedSource:
    """Open ``source`` for one streaming read: ``with open_source("ep.json.gz") as src: ...``."""
    return _OpenedSource(source, name)


class _Prefixes(str):
    """A prefix that ijson's ``items()`` sees as equal to every path we want (see module doc).

    ijson joins keys with dots, so a key with a dot in it spells the path of another place: a root
    key ``"inference.steps"``, or a key ``"steps.item"`` inside ``inference``, has the path of the
    steps. What tells them apart is the path ijson compared just before a value starts: that of the
    map key's event, which is the path of the object holding the key. So a part (or the steps
    array) counts only right after its own parent, and a step only inside the array opened there;
    anything else is an unknown key. Steps stay on the fast path: one set lookup and an append.
    """

    wanted: frozenset[str]  # STEP while inside inference's steps array, else nothing
    matched: deque[str]  # the wanted paths, in the order items() yields their values
    containers_seen: dict[str, int]
    unknown: str | None  # the first path that is neither wanted nor a container of one
    unknown_parent: str | None  # the path of the object holding that unknown key
    _previous: str | None  # the last path compared outside the steps array
    _previous_but_one: str | None  # and the one before it
    _compared: int  # how many paths were compared outside the steps array

    def __new__(cls) -> _Prefixes:
        self = super().__new__(cls, STEP)
        self.wanted = _NOTHING
        self.matched = deque()
        self.containers_seen = {}
        self.unknown = None
        self.unknown_parent = None
        self._previous = None
        self._previous_but_one = None
        self._compared = 0
        return self

    def __eq__(self, path: object) -> bool:
        if path in self.wanted:
            self.matched.append(path)
            return True
        return self._compare(path)  # type: ignore[arg-type]

    def _compare(self, path: str) -> bool:
        """``==`` for every path but a step's inside the steps array: the header parts, containers and the rest."""
        before, previous, self._previous = self._previous_but_one, self._previous, path
        self._previous_but_one = previous
        self._compared += 1
        parent = _PARENTS.get(path)
        if parent is not None and previous != parent and not (path == STEPS_ARRAY == previous):
            self._unknown(path, previous)  # a dotted key spelling a part's path (the array's end follows its start)
        elif path == "" == previous and self._compared > 2:
            # The root's start, then its first key's event (or its end); a third "" in a row is the value of a
            # root key "", whose path is the root's own.
            self._unknown(path, previous)
        elif path in _HEADER_SET:
            self.matched.append(path)
            return True
        elif path in _CONTAINERS:
            self.containers_seen[path] = self.containers_seen.get(path, 0) + 1
            if path == STEPS_ARRAY:  # its start (right after "inference"'s key) or its end
                self.wanted = _STEPS if previous == "inference" else _NOTHING
        elif path == "inference.item" and previous == "inference" and before == "":
            self._unknown("inference", "")  # right after the value's start: inference is an array, not an object
        else:
            self._unknown(path, previous)
        return False

    def _unknown(self, path: str, previous: str | None) -> None:
        if self.unknown is None:
            self.unknown = path
            self.unknown_parent = previous

    def __ne__(self, path: object) -> bool:
        return not self.__eq__(path)

    __hash__ = str.__hash__


def read_document(source: Source) -> Iterator[tuple[str, Any]]:
    """Yield ``(part, value)`` in file order: header parts by name, each step as ``(STEP, dict)``.

    Structural rules of the document itself (a JSON object at the root, no unknown or repeated
    top-level keys, a non-empty steps array, parseable JSON) are enforced here, as the stream
    goes; everything inside the parts is left to :mod:`pipeline.ingestion.rules`.
    """
    for part, value in read_batches(source):
        if part == STEPS:
            for step in value:
                yield STEP, step
        else:
            yield part, value


# read_batches hands steps over in lists of at most this many, spanning at most about this many
# bytes of the file: per-step work then runs a few times per batch instead of once per step, while
# a batch's parsed objects still fit in the CPU caches (1 MiB batches made the teams profiles ~15%
# slower than 64 KiB ones, measured; small steps gain up to 256 at a time: vector -20%).
BATCH_STEPS = 256
BATCH_BYTES = 64 * 1024
STEPS = "inference.steps[]"  # the part name of a batch of steps


def read_batches(source: Source, *, batch_steps: int = BATCH_STEPS,
                 batch_bytes: int = BATCH_BYTES) -> Iterator[tuple[str, Any]]:
    """:func:`read_document` with the steps in lists: ``(STEPS, [step, ...])``, header parts as there.

    The same values in the same order, and the same errors at the same points: steps parsed before
    an error are always yielded before it is raised.

    Over our ~60-line guide: one generator that owns the parser, the depth guard and the batch being
    filled, whose error handling must see all three.
    """
    reader = source.reader
    prefixes = _Prefixes()
    popleft = prefixes.matched.popleft
    seen_parts: set[str] = set()
    steps = 0
    batch: list[Any] = []
    batch_end = 0
    error: InvalidEpisode | None = None
    standins = reader.standins
    floor = 0  # stand-ins rewritten before the read the last value yielded ended in

    def restored(value: Any) -> Any:
        # A value yielded now began after the last one ended, so only a rewrite since the read that
        # one ended in can be in it (and only a file holding -2**63 has any).
        nonlocal floor
        if standins.rewritten > floor:
            value = standins.restore(value)
        floor = standins.rewritten_before_read
        return value

    try:
        first = reader.first_byte()
        if first != b"{":
            raise InvalidEpisode("document.object", _root_message(first, reader), source=source.name)
        items = _c_backend().items(reader, prefixes, use_float=True, buf_size=READ_SIZE)
        for value in items:
            part = popleft()
            reader.mark()
            if prefixes.unknown is not None:
                error = _unknown_key(prefixes.unknown, prefixes.unknown_parent)
                break
            if part == STEP:
                batch.append(value)
                steps += 1
                if len(batch) >= batch_steps or reader.consumed >= batch_end:
                    yield STEPS, restored(batch)
                    batch = []
                    batch_end = reader.consumed + batch_bytes
                continue
            if batch:
                yield STEPS, restored(batch)
                batch = []
            if part in seen_parts:
                key = part.rsplit(".", 1)[-1]
                raise InvalidEpisode("document.duplicate_key", f'the key "{key}" appears twice', path=part)
            seen_parts.add(part)
            yield part, restored(value)
    except ijson.JSONError as exc:
        error = _parse_error(exc, prefixes, steps, reader)
    except UnicodeDecodeError:  # bytes yajl let through (overlong forms, surrogates, "\\udfff")
        in_steps = prefixes.containers_seen.get("inference.steps", 0) == 1
        error = InvalidEpisode(
            "file.utf8", "a string is not valid UTF-8 (bad bytes or an unpaired surrogate escape)",
            path=f"inference.steps[{steps}]" if in_steps else None, offset=reader.consumed,
        )
    except _LoneSurrogate:
        in_steps = prefixes.containers_seen.get("inference.steps", 0) == 1
        error = InvalidEpisode(
            "file.utf8", 'a string holds an unpaired surrogate escape (a "\\ud800" to "\\udbff" not followed by '
            'one of "\\udc00" to "\\udfff")',
            path=f"inference.steps[{steps}]" if in_steps else None, offset=reader.consumed,
        )
    except _TooDeep:
        where = f"inference.steps[{steps}]" if prefixes.containers_seen.get("inference.steps", 0) == 1 else None
        error = InvalidEpisode(
            "document.depth", f"arrays and objects are nested more than {MAX_DEPTH} levels deep",
            path=where, offset=reader.consumed,
        )
    except _PartTooLarge:
        if prefixes.unknown is not None:
            error = _unknown_key(prefixes.unknown, prefixes.unknown_parent)
        else:
            where = f"inference.steps[{steps}]" if prefixes.containers_seen.get("inference.steps", 0) == 1 else None
            error = InvalidEpisode(
                "document.part_size",
                f"one value spans more than {MAX_PART_BYTES // 2**20} MiB of the file; a step (or a header "
                "value such as training.config) must be smaller",
                path=where, offset=reader.consumed,
            )
    if batch:
        yield STEPS, restored(batch)
    if error is not None:
        raise error
    if prefixes.unknown is not None:
        raise _unknown_key(prefixes.unknown, prefixes.unknown_parent)
    _check_structure(prefixes, seen_parts, steps)


def _root_message(first: bytes, reader: HashingReader) -> str:
    if not first:
        return "the file is empty" if reader.consumed == 0 else "the file holds only whitespace"
    kind = {b"[": "an array", b'"': "a string", b"n": "null", b"t": "a boolean", b"f": "a boolean"}.get(
        first, "a number" if first in b"-0123456789" else "not JSON"
    )
    return f"the document must be a JSON object with \"training\" and \"inference\", found {kind}"


def _unknown_key(path: str, parent: str | None = None) -> InvalidEpisode:
    """The refusal of the unknown key whose value has ``path``, in the object at ``parent`` (a key may hold dots)."""
    if path == "inference":
        return InvalidEpisode("document.required", 'must be an object with a "steps" array', path="inference")
    if parent is None or not (parent == "" or path.startswith(parent + ".")):
        parent = path.rpartition(".")[0]
    key = path[len(parent) + 1:] if parent else path
    allowed = '"training", "inference", "action_mapping"' if not parent else '"parallel", "config", "steps"'
    key = shorten(key)
    return InvalidEpisode(
        "document.unknown_key", f'unknown key "{key}" (allowed here: {allowed})',
        path=f"{parent}.{key}" if parent else key,
    )


def _check_structure(prefixes: _Prefixes, seen_parts: set[str], steps: int) -> None:
    containers = prefixes.containers_seen
    # The parser walks past "" once at each end of the root object and once per root key, and past
    # "inference.steps" once at each end of a steps array: more than that means a repeated key.
    root_keys = containers.get("", 0) - 2
    if root_keys - ("training" in seen_parts) - ("action_mapping" in seen_parts) > 1:
        raise InvalidEpisode("document.duplicate_key", 'the key "inference" appears twice', path="inference")
    if containers.get("inference.steps", 0) > 2:
        raise InvalidEpisode("document.duplicate_key", 'the key "steps" appears twice', path="inference.steps")
    if "training" not in seen_parts:
        raise InvalidEpisode("document.required", '"training" is required', path="training")
    if "inference" not in containers:
        raise InvalidEpisode("document.required", '"inference" is required', path="inference")
    if "inference.steps" not in containers:
        raise InvalidEpisode(
            "document.required",
            'must be an object with a "steps" array',
            path="inference",
        )
    if steps == 0:
        raise InvalidEpisode(
            "document.steps", "must be an array with at least one step", path="inference.steps"
        )


_PARSE_RULES = (
    ("premature EOF", "file.truncated", "the file ends before the JSON document is complete (truncated?)"),
    ("trailing garbage", "file.trailing_data", "unexpected data after the end of the JSON document"),
    # -2**63 itself reaches yajl as a stand-in (int64min.py), so this is an integer outside int64.
    ("integer overflow", "number.int64", "an integer does not fit in a signed 64-bit integer "
     "(accepted: -9223372036854775808 to 9223372036854775807)"),
    ("floating point) overflow", "number.finite", "a number is beyond the range of a 64-bit float"),
    ("invalid bytes in UTF8", "file.utf8", "the file is not valid UTF-8"),
)


def _parse_error(exc: Exception, prefixes: _Prefixes, steps: int, reader: HashingReader) -> InvalidEpisode:
    text = str(exc)
    if isinstance(exc.args[0] if exc.args else None, bytes):
        text = exc.args[0].decode("utf-8", "replace")
    detail = text.strip().splitlines()[0] if text.strip() else "malformed JSON"
    rule, message = "file.json", f"not valid JSON ({detail})"
    for needle, known_rule, known_message in _PARSE_RULES:
        if needle in text:
            rule, message = known_rule, known_message
            break
    in_steps = prefixes.containers_seen.get("inference.steps", 0) == 1
    path = f"inference.steps[{steps}]" if in_steps and rule != "file.trailing_data" else None
    return InvalidEpisode(rule, message, path=path, offset=reader.consumed)
