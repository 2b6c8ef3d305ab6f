"""Guards on the raw text, run on every chunk before the parser sees it: nesting depth, lone surrogates.

The parser (ijson over yajl) keeps one path string per level of nesting, so a deeply nested file costs
memory with the square of its depth, and yajl stores an escaped high surrogate without its low half as
``?``; both have to be refused from the bytes, at C speed, before ijson builds anything.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate


class TooDeep(Exception):
    """Raised by the reader when arrays and objects nest deeper than ``MAX_DEPTH``."""


class LoneSurrogate(Exception):
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


class DepthGuard:
    """Tracks the exact nesting depth of a JSON byte stream, chunk by chunk, at C speed.

    Escaped characters are dropped, then everything but brackets and quotes; what remains of
    strings (quote pairs, or quotes around brackets) is removed, and the brackets left are summed.
    State carried between chunks: the depth, whether a string is open, the bytes from an escape the
    next chunk may complete (at most 11). On the way, an escaped high surrogate without an escaped
    low one after it raises :class:`LoneSurrogate` (yajl would store it as ``?``).

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
                    raise LoneSurrogate
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
                    raise TooDeep
        self.depth += net


def check_depth(text: bytes | bytearray, around: int) -> None:
    """Raise :class:`TooDeep` if the whole JSON text ``text``, inside ``around`` levels of arrays and
    objects, nests deeper than ``MAX_DEPTH`` (and :class:`LoneSurrogate` as :class:`DepthGuard` does).

    For a parser that checks the text it parses rather than the stream (the fast walk): text whose
    frames were cut out is a tenth of the file on a file of frames."""
    guard = DepthGuard()
    guard.depth = around
    guard.feed(text)
    guard.feed(b"")
