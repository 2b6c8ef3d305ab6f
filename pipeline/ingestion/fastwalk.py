"""The fast walk of a document: orjson parses the steps, a batch of text at a time.

ijson's ``items()`` (:func:`.parts.read_batches`, the *exact walk*) is the speed limit of reading an
episode: orjson parses the same text into the same values 2.5-3x faster (100 MB, one process: 0.59 s
against 1.46 s for 2 agents of 17 integers a step, 0.43 s against ~1.3 s for 8 floats), but only whole
values, from text in memory. This walk finds the values itself and hands them over exactly as the
exact walk does: the header parts by name, in file order, and the steps in batches.

- The text around the steps (the root object, ``training``, ``action_mapping``, ``inference``'s
  other keys) is cut into tokens with one regular expression; each header value is parsed whole.
- The steps array is cut into batches of about :data:`~.parts.BATCH_STEPS` steps (as many as the last
  batch's steps took text, at most a read, :data:`~.source.READ_SIZE`: what the exact walk's batches
  come to), each ending where the text
  that separates two steps last appears: the end of one step, the separator, and the start of the next
  up to its first key (``},{"number":``, learnt from the first two steps, so that any spacing,
  indentation or key order a generator writes is its own). ``orjson.loads`` of ``[`` + text + ``]``
  then either succeeds, which proves the cut falls between two steps (parsing from a point between
  two elements, text that parses as whole elements leaves the parser between two elements, whatever
  the text after it), or fails, and the walk gives up.

It only walks what it can walk exactly as the exact walk would, and raises :class:`NotFast` at
anything else: a parse error, a structure the exact walk refuses or would name differently (an
unknown, repeated or missing key, an empty steps array), an integer token of 19 digits or more
outside int64 (which yajl refuses and orjson would accept, as an integer or a float), a step longer than
:data:`~.source.MAX_PART_BYTES`, and everything the reader's guards refuse. The caller
(:mod:`.run`) then starts over with the exact walk, which reports what is wrong with its usual message;
so the fast walk is only ever the reason an episode is *accepted* sooner, never how it is refused.
Local files are opened again for the exact walk; an input read once (a URL, a pipe) is kept in a file as
the fast walk reads it (:mod:`.keptcopy`).

The reader's guards on the raw text are the walk's own (:meth:`.source.HashingReader.leave_guards_to_parser`):
orjson refuses every lone surrogate, and reads -2**63 as itself (so :mod:`.int64min`'s rewrite, which
yajl needs, has nothing to do), and the nesting depth is checked on each text the walk parses, after
orjson took it (:func:`parse_checked`), as deep in the document as the text sits. A file of frames
is mostly their base64 text, which the walk does not parse (:mod:`.framesapart`): checking the
parsed text instead of the stream saved ~0.1 s of the reader's CPU per 100 MB of frames.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from .guards import LoneSurrogate, TooDeep, check_depth
from .parts import BATCH_STEPS, STEPS
from .source import MAX_PART_BYTES, READ_SIZE, PartTooLarge, Source

if TYPE_CHECKING:
    from .framesapart import FramesApart


class NotFast(Exception):
    """The fast walk cannot vouch for this file; the caller walks it again with the exact walk."""


class _NotJson(NotFast):
    """orjson refused a text: not JSON, or (for a batch) a cut that is not between two steps."""


# One token of JSON text after any whitespace: a string (group 1), a structural character (2), or a
# run of anything else (3: a number or a literal, checked by orjson when its value is parsed).
_TOKEN = re.compile(rb'[ \t\r\n]*+(?:("[^"\\]*+(?:\\.[^"\\]*+)*+")|([\[\]{}:,])|([^ \t\r\n\[\]{}:,"]++))')
_STRING, _MARK, _SCALAR = 1, 2, 3
# What the end of an object or an array is found by: strings (skipped whole), brackets, and a quote that
# opens a string the text read so far does not close.
# Each match starts with the run of anything else before it, taken whole (possessive: sre skips a
# character class in a tight loop, where trying the alternatives at every byte took ~30 ns a byte, and
# never gives it back), and at the end of the text read matches that run alone (no group).
_NESTING = re.compile(rb'[^"\[\]{}]*+(?:("[^"\\]*+(?:\\.[^"\\]*+)*+")|([\[{])|([\]}])|(")|\Z)')
_CLOSED_STRING, _OPENING, _CLOSING, _OPEN_STRING = 1, 2, 3, 4
# A header value or a first step longer than this is left to the exact walk (from the start of the file,
# where little is lost): its end is looked for again after each read, which a long string full of
# escaped quotes makes quadratic.
_LONGEST_WALKED = 4 * 1024 * 1024
_WHITESPACE = b" \t\r\n"
_ROOT_PARTS = frozenset({"training", "action_mapping"})
_INFERENCE_PARTS = frozenset({"parallel", "config"})
# Integer tokens of 19 digits or more, the only ones that can fall outside int64, found in C: every byte
# made a class (a digit 0; what a number token can follow, or its minus sign, 1; anything else 2), then
# a search for a 1 before 19 digits. A fraction's digits follow a point (class 2): float32 values
# written as doubles often have 19 of them, and are no concern. Each hit is then read on its own.
_CLASSES = bytes(0 if chr(b).isdigit() and b < 128 else 1 if b in b"[,: \t\r\n-" else 2 for b in range(256))
_NINETEEN_DIGITS = b"\x00" * 19
_INTEGER_START = b"\x01" + _NINETEEN_DIGITS
_DIGITS = re.compile(rb"[0-9]+")
_INT64 = range(-(2**63), 2**63)


# How many arrays and objects are around the text of a batch of steps, ``[`` + steps + ``]``: the
# root object and ``inference`` (the brackets stand for the steps array).
BATCH_AROUND = 2


def parse_checked(text: bytes | bytearray, around: int | None = None) -> Any:
    """``orjson.loads(text)``, for text that holds no integer outside int64 and, inside ``around``
    arrays and objects (None: a string, unchecked), nests no deeper than the exact walk allows;
    NotFast otherwise."""
    classes = text.translate(_CLASSES)
    # A hit is the byte the digits follow, or, for digits that start the text (a number may start there
    # too), the first of them.
    hit = 0 if classes.startswith(_NINETEEN_DIGITS) else classes.find(_INTEGER_START)
    while hit >= 0:
        first = hit if classes[hit] == 0 else hit + 1
        digits = _DIGITS.match(text, first)
        assert digits is not None
        if text[digits.end():digits.end() + 1] not in (b".", b"e", b"E"):  # not a float's integer part
            if digits.end() - first > 19:  # beyond int64 (or a leading zero, which JSON forbids)
                raise NotFast
            value = int(digits.group())
            if (-value if first and text[first - 1] == ord("-") else value) not in _INT64:
                raise NotFast
        hit = classes.find(_INTEGER_START, digits.end())
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _NotJson from None
    if around is not None and type(value) in (dict, list):
        try:
            check_depth(text, around)
        except (TooDeep, LoneSurrogate):
            raise NotFast from None
    return value


class _Text:
    """The bytes read so far and not yet walked past, with the position of the walk in them."""

    def __init__(self, source: Source) -> None:
        self._reader = source.reader
        self.data = bytearray()
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Append the next read; False at the end of the input."""
        if self.eof:
            return False
        reader = self._reader
        try:
            chunk = reader.read(READ_SIZE)
        except (TooDeep, LoneSurrogate, PartTooLarge):
            raise NotFast from None
        if reader.standins.rewritten:  # -2**63 or its neighbours: the exact walk turns them back
            raise NotFast
        if not chunk:
            self.eof = True
            return False
        self.data += chunk
        return True

    def drop(self) -> None:
        """Forget what the walk has passed (between two values, where nothing refers into it), once
        that is a read's worth: moving the rest down after every batch would copy it again and again."""
        if self.pos >= READ_SIZE:
            del self.data[: self.pos]
            self.pos = 0

    def token(self) -> tuple[int, int, int]:
        """The next token: its kind (``_STRING``, ``_MARK``, ``_SCALAR``), start and end; the walk moves past it."""
        while True:
            match = _TOKEN.match(self.data, self.pos)
            # A token that reaches the end of what was read may go on in the next read.
            if match is not None and (match.end() < len(self.data) or self.eof):
                break
            if match is None and self.data[self.pos:].lstrip(_WHITESPACE)[:1] == b'"':
                self.more_after_quote()  # a string not closed yet
            elif not self.more() and match is None:
                raise NotFast
        kind = match.lastindex or 0
        self.pos = match.end()
        return kind, match.start(kind), match.end()

    def mark(self) -> bytes:
        """The next token, which must be a structural character; that character."""
        kind, start, end = self.token()
        if kind != _MARK:
            raise NotFast
        return bytes(self.data[start:end])

    def key(self) -> str:
        """The next token, which must be an object's key, and the colon after it; the key."""
        kind, start, end = self.token()
        if kind != _STRING:
            raise NotFast
        key = parse_checked(self.data[start:end])
        if self.mark() != b":":
            raise NotFast
        return key

    def value_span(self) -> tuple[int, int]:
        """Where the next value starts and ends (an object or an array: up to its matching bracket)."""
        kind, start, end = self.token()
        if kind != _MARK:
            return start, end
        if self.data[start] not in b"[{":
            raise NotFast
        depth, at = 1, end
        while True:  # brackets and strings only: runs of numbers, commas and colons are skipped in C
            found: int | None = None
            for match in _NESTING.finditer(self.data, at):
                found = match.lastindex
                if found == _OPENING:
                    depth += 1
                elif found == _CLOSING:
                    depth -= 1
                    if not depth:
                        self.pos = match.end()
                        return start, match.end()
                elif found == _OPEN_STRING:  # a string that goes on in the next read: look again from it
                    at = match.start(_OPEN_STRING)
                    break
                elif found is None:  # \Z: the end of what was read
                    at = match.end()
                    break
            # (Out of the loop: the data cannot grow while the regex holds it.)
            if len(self.data) - start > _LONGEST_WALKED:
                raise NotFast
            if found == _OPEN_STRING:
                self.more_after_quote()
            elif not self.more():
                raise NotFast

    def more_after_quote(self) -> None:
        """Read until a quote comes in what is read (a long string's end, or an escaped quote in it), so
        that a string spanning many reads is scanned again once, not once a read."""
        seen = len(self.data)
        while True:
            if not self.more():
                raise NotFast
            if self.data.find(b'"', seen) >= 0:
                return
            seen = len(self.data)

    def value(self, around: int) -> Any:
        """The next value, parsed (it sits inside ``around`` arrays and objects)."""
        start, end = self.value_span()
        return parse_checked(self.data[start:end], around)

    def skip_whitespace(self) -> int:
        """Move past whitespace (reading on as needed); the next byte, or -1 at the end of the input."""
        while True:
            data = self.data
            while self.pos < len(data) and data[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(data):
                return data[self.pos]
            if not self.more():
                return -1


def fast_batches(source: Source, *, batch_bytes: int = READ_SIZE,
                 frames_apart: FramesApart | None = None) -> Iterator[tuple[str, Any]]:
    """:func:`.parts.read_batches` of ``source``, walked fast (see the module doc), or NotFast.

    ``frames_apart``: once it is enabled, batches come with the steps' frames apart, as their text (see
    :mod:`.framesapart`)."""
    reader = source.reader
    reader.leave_guards_to_parser()
    try:
        if reader.first_byte() != b"{":
            raise NotFast
    except (TooDeep, LoneSurrogate, PartTooLarge):
        raise NotFast from None
    text = _Text(source)
    inference = partial(_inference, text, reader, batch_bytes, frames_apart.parse if frames_apart else _steps_text)
    seen = yield from _object(text, reader, 1, "", _ROOT_PARTS, {"inference": inference})
    if "training" not in seen or "inference" not in seen or text.skip_whitespace() != -1:
        raise NotFast


def _inference(text: _Text, reader: Any, batch_bytes: int, parse: _StepsParser) -> Iterator[tuple[str, Any]]:
    """The parts of ``inference`` (its opening brace next), up to and with its closing brace."""
    steps = partial(_steps, text, reader, batch_bytes, parse)
    seen = yield from _object(text, reader, 2, "inference.", _INFERENCE_PARTS, {"steps": steps})
    if "steps" not in seen:
        raise NotFast


def _object(text: _Text, reader: Any, depth: int, prefix: str, parts: frozenset[str],
            inner: dict[str, Callable[[], Iterator[tuple[str, Any]]]]) -> Generator[tuple[str, Any], None, set[str]]:
    """The members of the object whose opening brace comes next (its depth in the document: ``depth``),
    up to and with its closing brace: each of ``parts`` yielded as ``prefix + key``, each of ``inner``
    walked by its function; the keys seen. Any other key, or a key twice, is the exact walk's to report."""
    if text.mark() != b"{":
        raise NotFast
    seen: set[str] = set()
    while True:
        key = text.key()
        if key in seen:
            raise NotFast
        seen.add(key)
        if key in parts:
            value = text.value(depth)
            reader.mark()
            yield prefix + key, value
        elif key in inner:
            yield from inner[key]()
        else:
            raise NotFast
        text.drop()
        ending = text.mark()
        if ending == b"}":
            return seen
        if ending != b",":
            raise NotFast


def _steps_text(body: bytes) -> list[Any]:
    """The steps whose text, without the array's brackets, is ``body``."""
    return parse_checked(b"".join((b"[", body, b"]")), BATCH_AROUND)  # one copy, where + made two


_StepsParser = Callable[[bytes], list[Any]]


def _text_between(data: bytearray, start: int, end: int) -> bytes:
    """``data[start:end]`` as bytes, copied once (a bytearray's slice is a bytearray: ``bytes()`` of it
    copied the text a second time)."""
    with memoryview(data) as view:
        return view[start:end].tobytes()


def _steps(text: _Text, reader: Any, batch_bytes: int, parse: _StepsParser) -> Iterator[tuple[str, Any]]:
    """The steps, in batches (the array's opening bracket next), up to and with its closing bracket; each
    batch's text parsed by ``parse``."""
    if text.mark() != b"[":
        raise NotFast
    # The first step, found whole, teaches the separator; then the batches are cut by it.
    if text.skip_whitespace() != ord("{"):
        raise NotFast  # an empty array, or a step that is not an object: the exact walk says which
    start, end = text.value_span()
    first = [parse_checked(text.data[start:end], BATCH_AROUND + 1)]
    following = text.skip_whitespace()
    if following == ord("]"):
        text.pos += 1
        reader.mark()
        yield STEPS, first
        return
    if following != ord(","):
        raise NotFast
    text.pos += 1
    if text.skip_whitespace() != ord("{"):
        raise NotFast
    second = text.pos
    text.mark()
    text.key()  # the second step's first key and its colon: the start every step is likely to share
    separator = bytes(text.data[end:second])
    pattern = b"}" + separator + bytes(text.data[second:text.pos])
    text.pos = second
    reader.mark()
    yield STEPS, first
    text.drop()
    size = min(batch_bytes, BATCH_STEPS * (end - start))
    while True:
        begin = text.pos
        steps, done = _batch(text, pattern, len(separator), size, parse)
        reader.mark()
        # The next batch: BATCH_STEPS steps of the size these had, at most batch_bytes of text.
        size = max(1, min(batch_bytes, BATCH_STEPS * (text.pos - begin) // len(steps)))
        yield STEPS, steps
        text.drop()
        if done:
            return


def _batch(text: _Text, pattern: bytes, separator: int, batch_bytes: int,
           parse: _StepsParser) -> tuple[list[Any], bool]:
    """The next batch of steps (``text.pos`` is at the start of one) and whether it ends the array.

    The batch ends at one of the last ``pattern`` within ``batch_bytes`` of text whose cut parses (or,
    for steps that start with another key than the second did, at the end of an object followed by
    the separator and an opening brace); if there is none, within twice as much, and so on; at the
    end of the input, at the array's closing bracket. ``pattern`` cuts that are there but do not parse
    mean text that is not JSON, most likely: the walk gives up.
    """
    window = batch_bytes
    generic = pattern[: 1 + separator] + b"{"
    while True:
        limit = text.pos + window + len(pattern)
        while len(text.data) < limit and text.more():
            pass
        steps = _cut(text, pattern, separator, limit, parse)
        if steps is _NO_CUT:
            raise NotFast
        if steps is None and text.eof:
            return _last_batch(text, parse), True
        if steps is None and generic != pattern:  # best effort: it also matches objects inside a step
            steps = _cut(text, generic, separator, limit, parse)
        if steps is not None and steps is not _NO_CUT:
            return steps, False
        if window >= MAX_PART_BYTES:
            raise NotFast
        window *= 2


# How many of a window's last separators are tried as a batch's end before the window is widened.
_CUT_TRIES = 4


_NO_CUT: list[Any] = []  # what _cut returns when cuts were there and none parsed


def _cut(text: _Text, needle: bytes, separator: int, limit: int, parse: _StepsParser) -> list[Any] | None:
    """The steps from ``text.pos`` to one of the last ``needle`` before ``limit`` (``}``, the separator,
    the next step's start) that parse, moving past them; None if there is no ``needle``, ``_NO_CUT`` if
    none of the last few parses."""
    high, found = limit, None
    for _ in range(_CUT_TRIES):
        at = text.data.rfind(needle, text.pos, high)
        if at < 0:
            return found
        try:
            steps = parse(_text_between(text.data, text.pos, at + 1))
        except _NotJson:  # inside a string, or inside a step: an earlier one
            high, found = at + len(needle) - 1, _NO_CUT
            continue
        text.pos = at + 1 + separator
        return steps
    return _NO_CUT


# The closing brackets tried, from the end of the input backwards, for the end of the steps array.
_LAST_TRIES = 8


def _last_batch(text: _Text, parse: _StepsParser) -> list[Any]:
    """The steps from ``text.pos`` to the end of the array, whose closing bracket is among the input's last."""
    data, high = text.data, len(text.data)
    for _ in range(_LAST_TRIES):
        close = data.rfind(b"]", text.pos, high)
        if close < 0:
            break
        high = close
        body = _text_between(data, text.pos, close).rstrip(_WHITESPACE)
        if body.endswith(b"}"):
            try:
                steps = parse(body)
            except _NotJson:
                continue
            text.pos = close + 1
            return steps
    raise NotFast
