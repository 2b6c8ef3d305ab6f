"""Reading -2**63, which ijson's C parser refuses when it reads integers as C integers (``use_float=True``).

yajl reads an integer's digits into a ``long long`` before it applies the sign, so the one int64 whose
magnitude does not fit, -9223372036854775808, is reported as an "integer overflow" (ICRAR/ijson#153,
lloyd/yajl#251). ijson has no option around it but ``use_float=False``, which makes every float a
``Decimal`` (far too slow).

So :class:`~.source.HashingReader` hands ijson the file's bytes (after hashing them: the episode id is
the hash of the file as written) with each such integer, a whole number token outside strings, rewritten
in place into a *stand-in*: an integer of the same length that yajl accepts; :meth:`StandIns.restore`
turns stand-ins back into -2**63 in the parsed values, before anything looks at them.

Stand-ins come from the integers written with the same first 15 characters, ``-92233720368547`` and five
digits (-9223372036854775807 to -9223372036854700000, the *window*), so one search per read finds every
integer of the window and -2**63 itself. A stand-in is an integer of the window the file has not written
so far (as an integer, or those digits anywhere else: telling them apart costs time and gains nothing);
an integer of the window the file uses after it became a stand-in is rewritten into a stand-in of its
own. So every integer of the window that ijson returns is either a stand-in or the file's own, and
restoring is exact whatever else the file holds (floats such as ``-9223372036854775808.0`` stay floats:
they are not integer tokens). A file that writes -2**63 and (nearly) all 75,808 integers of the window
can run out of stand-ins, and then fails; no real file comes near.

A token may be cut between two reads: bytes at the end of a read that may begin one are held back and
handed over with the next read. Outside a string or not is read from the depth guard's state at the start
of the read (:class:`~.guards.DepthGuard` tracks it exactly), counting the quotes up to the token.
"""

from __future__ import annotations

from typing import Any

from ..errors import SourceError

PREFIX = b"-92233720368547"  # the 15 characters every integer of the window starts with
_LENGTH = 20  # len(b"-9223372036854775808")
_SMALLEST = 75808  # the last five digits of -2**63
_BASE = 9223372036854700000  # the window holds -(_BASE + k) for k in 0 .. _SMALLEST - 1
_FREE, _OWN, _STAND_IN = 0, 1, 2
# A number token starts after one of these, or at the start (-1); anything else: inside another token,
# or not JSON there.
_BEFORE = frozenset((*b"[,: \t\r\n", -1))
# A number token goes on with these: the integer is only part of it (a longer number, a float).
_GOES_ON = frozenset(b"0123456789.eE")
_BACKSLASH = b"\\"


class StandIns:
    """Rewrites the window's integers in the bytes ijson reads, and turns them back in what it returns."""

    def __init__(self) -> None:
        self._slots = bytearray(_SMALLEST)  # per k: _FREE, _OWN (the file used it as itself), _STAND_IN
        self._stand_in: dict[int, int] = {}  # k of an integer the file holds -> k of its stand-in
        self._free = 0  # no free slot below this; stand-ins are taken from the far end of the window
        self.originals: dict[int, int] = {}  # a stand-in -> the integer of the file it stands for
        self.rewritten = 0  # tokens rewritten so far
        self.rewritten_before_read = 0  # ... before the latest read
        self._last = -1  # the last byte handed to ijson (-1: none yet)
        self._held_starts_token = False  # whether the bytes held back begin where a token may start

    def scan(self, buffer: bytearray, end: int, start: int, in_string: bool, carry: bytes | bytearray,
             final: bool) -> int:
        """Rewrite the window's integers in ``buffer[:end]``; return how many bytes at its end to hold back.

        ``buffer[:start]`` are the bytes held back by the last call; ``buffer[start:end]`` the next bytes of
        the stream, before which the stream is inside a string iff ``in_string``, with the depth guard's
        ``carry`` (the start of an escape) before them. ``final``: nothing follows (the end of the stream).
        """
        self.rewritten_before_read = self.rewritten
        hold = 0 if final else _tail(buffer, end)
        limit = end - hold
        at = _find(buffer, end)
        if (at < 0 or at >= limit) and not hold:  # all but every read: nothing to look at
            if limit:
                self._last = buffer[limit - 1]
            return 0
        # Quotes are counted from the start of the read to each place asked, going forward only.
        counted_to, quotes, first = start, 0, True

        def starts_token(p: int) -> bool:
            nonlocal counted_to, quotes, first
            if p < start:  # the held-back bytes: decided when they were held back
                return self._held_starts_token
            before = buffer[p - 1] if p else self._last
            if before not in _BEFORE:
                return False
            text = bytes(buffer[counted_to:p])
            if first:
                text, first = bytes(carry) + text, False
            if _BACKSLASH in text:
                text = text.replace(_BACKSLASH * 2, b"").replace(_BACKSLASH + b'"', b"")
            # Escapes never span p (the byte before it is not a backslash), so counting can go on from here.
            quotes += text.count(b'"')
            counted_to = p
            if text[-2:-1] == _BACKSLASH:  # the byte before is escaped: inside a string, or not JSON
                return False
            return (quotes & 1) == in_string

        slots = self._slots
        while 0 <= at < limit:
            after = at + _LENGTH  # the end of the stream ends a number too
            if (after < end and buffer[after] not in _GOES_ON) or (final and after == end):
                digits = bytes(buffer[at + len(PREFIX) : after])
                k = int(digits) if digits.isdigit() else _SMALLEST + 1
                if k < _SMALLEST and slots[k] == _FREE:
                    # The file's own integer, kept from becoming a stand-in without asking whether it is
                    # one or text in a string (which would only narrow the choice): 3x cheaper, measured.
                    slots[k] = _OWN
                elif (k == _SMALLEST or (k < _SMALLEST and slots[k] == _STAND_IN)) and starts_token(at):
                    self._rewrite(buffer, at, k)
            at = buffer.find(PREFIX, at + 1, end)
        if hold:
            self._held_starts_token = starts_token(limit)
        if limit:
            self._last = buffer[limit - 1]
        return hold

    def _rewrite(self, buffer: bytearray, at: int, k: int) -> None:
        stand_in = self._stand_in.get(k)
        if stand_in is None:
            stand_in = self._stand_in[k] = self._take_free(k)
        buffer[at + len(PREFIX) : at + _LENGTH] = b"%05d" % stand_in
        self.rewritten += 1

    def _take_free(self, k: int) -> int:
        slots = self._slots
        free = slots.find(_FREE, self._free)
        if free < 0:
            raise SourceError(
                "cannot read -9223372036854775808 in this file: it also holds (nearly) every integer from "
                "-9223372036854775807 to -9223372036854700000, which leaves the parser's workaround "
                "no stand-in (docs/format.md, Numbers)"
            )
        slots[free] = _STAND_IN
        self._free = free + 1
        self.originals[-(_BASE + free)] = -(_BASE + k)
        return free

    def restore(self, value: Any) -> Any:
        """``value`` with every stand-in turned back into its integer (lists and dicts are changed in place)."""
        originals = self.originals
        if type(value) is int:
            return originals.get(value, value)
        if type(value) is not dict and type(value) is not list:
            return value
        stack = [value]
        while stack:
            node = stack.pop()
            for key, item in node.items() if type(node) is dict else enumerate(node):
                kind = type(item)
                if kind is int:
                    if item in originals:
                        node[key] = originals[item]
                elif kind is dict or kind is list:
                    stack.append(item)
        return value


# The search runs on every read, so its speed is the whole cost of this module on files without -2**63:
# bytearray.find took 45 ms per 100 MB of the vector and teams profiles (~1% of an ingest's CPU), glibc's
# memmem, which skips ahead on pairs of bytes, 15 ms (BENCHMARKS.md). ctypes costs ~2.4 ms to import, which
# the faster search pays back after ~8 MB: so memmem is looked up once a process has searched
# _MEMMEM_AFTER bytes, and serves reads of at least _MEMMEM_BYTES.
_MEMMEM_AFTER = 16 * 2**20
_MEMMEM_BYTES = 64 * 1024
_memmem: Any = None  # None: not looked up yet; False: not available (bytearray.find then)
_searched = 0  # bytes searched with bytearray.find before memmem was looked up


def _find(buffer: bytearray, end: int) -> int:
    """Where ``PREFIX`` first occurs in ``buffer[:end]`` (-1: nowhere)."""
    global _memmem, _searched
    if _memmem is None:
        _searched += end
        if _searched >= _MEMMEM_AFTER:
            _memmem = _load_memmem()
    if _memmem is None or _memmem is False or end < _MEMMEM_BYTES:
        return buffer.find(PREFIX, 0, end)
    import ctypes

    start = ctypes.c_char.from_buffer(buffer)  # the buffer's address, held while memmem reads it
    base = ctypes.addressof(start)
    found = _memmem(base, end, PREFIX, len(PREFIX))
    return -1 if found is None else found - base


def _load_memmem() -> Any:
    try:
        import ctypes

        memmem = ctypes.CDLL(None).memmem
    except (ImportError, OSError, AttributeError):  # no C library to ask (Windows): bytearray.find
        return False
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return memmem


def _tail(buffer: bytearray, end: int) -> int:
    """How many bytes at the end of ``buffer[:end]`` may begin a token of the window (0 if none)."""
    dash = buffer.rfind(b"-", max(0, end - _LENGTH), end)
    if dash < 0:
        return 0
    tail = bytes(buffer[dash:end])
    head, digits = tail[: len(PREFIX)], tail[len(PREFIX) :]
    if PREFIX.startswith(head) and (not digits or digits.isdigit()):
        return end - dash
    return 0
