"""Walk a document as it is read: its header parts and its steps, in file order, in batches.

Parsing uses ijson's C backend and its fastest path, ``items()``. A plain ``items()`` call
follows a single prefix; we need the steps *and* the few header values (``training``,
``action_mapping``, ``inference.parallel``, ``inference.config``), in whatever order the file
has them, without a second parser over the same bytes (which halves throughput) or a Python loop
over every event (1.6-3x slower). ijson matches prefixes with ``==``, and Python lets a ``str``
subclass's ``__eq__`` answer first when compared with a plain ``str``; so :class:`_Prefixes`
matches several prefixes and remembers, in document order, which one each yielded value came
from. The match is only consulted between values, never inside one, so the cost is one Python
call per step. ``tests/ingestion/test_source.py`` pins this behaviour for the installed ijson.
Errors of the parser and of the reader's guards become :class:`~pipeline.errors.InvalidEpisode`
with the rule, the path and the byte where they were found.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InvalidEpisode, SourceError, shorten
from .guards import MAX_DEPTH, LoneSurrogate, TooDeep
from .source import MAX_PART_BYTES, READ_SIZE, HashingReader, PartTooLarge, Source

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


def _c_backend() -> Any:
    import ijson

    try:
        return ijson.get_backend("yajl2_c")
    except ImportError as exc:  # pragma: no cover - depends on the installed wheel
        raise SourceError(
            "ijson's C backend (yajl2_c) is not available, and the pure-Python parser is far "
            "too slow for episode files; reinstall ijson from a binary wheel: "
            "pip install --force-reinstall --only-binary ijson ijson"
        ) from exc


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
# Close to the end of the file the tables hand their pending rows to the writer early: once this much
# of the input is left, and again at the second figure. What is written after the last step, while
# the command waits, is then the rows of the last 2 MiB, not up to a whole batch (a random shape of
# 40 MB: 1M values, 35-70 ms of zstd after the parse; BENCHMARKS.md, session 8).
FLUSH_AHEAD_BYTES = (8 * 1024 * 1024, 2 * 1024 * 1024)


def flush_ahead_due(source: Source) -> Callable[[], bool]:
    """A check to call after each batch of steps: True once each time the input left first falls to
    one of :data:`FLUSH_AHEAD_BYTES` (never for an input of unknown size, such as a pipe)."""
    size = source.size
    marks = list(FLUSH_AHEAD_BYTES) if size else []

    def due() -> bool:
        if not marks or size is None:
            return False
        left = size - source.bytes_read
        if left > marks[0]:
            return False
        while marks and left <= marks[0]:
            marks.pop(0)
        return True

    return due


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

    import ijson  # here: the fast walk (fastwalk.py) reads a valid file without it (~7 ms of start-up)

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
    except LoneSurrogate:
        in_steps = prefixes.containers_seen.get("inference.steps", 0) == 1
        error = InvalidEpisode(
            "file.utf8", 'a string holds an unpaired surrogate escape (a "\\ud800" to "\\udbff" not followed by '
            'one of "\\udc00" to "\\udfff")',
            path=f"inference.steps[{steps}]" if in_steps else None, offset=reader.consumed,
        )
    except TooDeep:
        where = f"inference.steps[{steps}]" if prefixes.containers_seen.get("inference.steps", 0) == 1 else None
        error = InvalidEpisode(
            "document.depth", f"arrays and objects are nested more than {MAX_DEPTH} levels deep",
            path=where, offset=reader.consumed,
        )
    except PartTooLarge:
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
