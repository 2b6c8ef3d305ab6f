"""The nesting-depth guard that protects ijson (whose memory grows with the square of depth)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion.guards import MAX_DEPTH, DepthGuard, LoneSurrogate, TooDeep

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab[]{}"\\\\/ü\n'), max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(alphabet=st.sampled_from('k[]{}"\\\\'), max_size=4), children, max_size=4),
    max_leaves=30,
)


def reference_max_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((reference_max_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_max_depth(v) for v in value.values()), default=0)
    return 0


def guard_max_depth(text: bytes, chunk: int) -> int:
    """Feed ``text`` in chunks, lowering nothing: the guard raises only past MAX_DEPTH, so wrap the
    value in enough levels that its own depth decides whether the limit is crossed."""
    guard = DepthGuard()
    for i in range(0, len(text), chunk):
        guard.feed(text[i:i + chunk])
    return guard.depth


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=1, max_value=17), st.booleans())
def test_guard_tracks_exact_depth_across_any_chunking(value, chunk, escape_ascii):
    depth = reference_max_depth(value)
    text = json.dumps(value, ensure_ascii=escape_ascii).encode()
    # Padding the value to exactly the limit must pass; one level more must be refused.
    pad = MAX_DEPTH - depth
    fits = b"[" * pad + text + b"]" * pad
    assert guard_max_depth(fits, chunk) == 0
    over = b"[" + fits + b"]"
    guard = DepthGuard()
    try:
        for i in range(0, len(over), chunk):
            guard.feed(over[i:i + chunk])
    except TooDeep:
        return
    raise AssertionError("a document nested past MAX_DEPTH was not refused")


def test_brackets_and_escaped_quotes_inside_strings_do_not_count():
    text = json.dumps({"a": "[[[[{{{{ \\\" ]]]] \\\\", "b": ["]]]]"]}).encode()
    guard = DepthGuard()
    guard.feed(text)
    assert guard.depth == 0


def _feed_all(text: bytes, chunks: list[int]) -> DepthGuard:
    """Feed ``text`` cut into pieces of the given sizes (cycled), then the end of the stream."""
    guard, i, k = DepthGuard(), 0, 0
    while i < len(text):
        size = chunks[k % len(chunks)]
        guard.feed(text[i:i + size])
        i, k = i + size, k + 1
    guard.feed(b"")
    return guard


# Pieces of JSON string text: escapes of every kind, surrogate pairs, lone high surrogates (to be
# refused), and escaped backslashes followed by text that only looks like an escape.
PIECES = ["a", "é", "\\\\", '\\"', "\\n", "\\u00e9", "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\ud800", "\\udbff",
          "\\\\ud800", "\\\\\\ud800", "\\ud800\\ud800", "\\ud800\\u0041", "\\ud800\\\\udc00", "[", "]"]


def reference_has_lone_high_surrogate(text: str) -> bool:
    """Python's json keeps lone surrogates in its strings: any that is left cannot be UTF-8."""
    value = json.loads(text)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.lists(st.integers(1, 14), min_size=1, max_size=4),
       st.booleans())
def test_lone_high_surrogate_escapes_are_found_across_any_chunking(pieces, chunks, as_key):
    string = '"' + "".join(pieces) + '"'
    text = "{" + (string + ': 1' if as_key else '"k": [' + string + ', {"x": ' + string + "}]") + "}"
    try:
        _feed_all(text.encode(), chunks)
        found = False
    except LoneSurrogate:
        found = True
    assert found == reference_has_lone_high_surrogate(text), text


def test_nesting_past_the_limit_right_after_an_escape_at_the_end_is_refused():
    # The escape's bytes are carried to the next chunk; at the end of the stream they are still counted.
    text = b"[" * (MAX_DEPTH - 1) + b'"\\n", [[]]' + b"]" * (MAX_DEPTH - 1)
    guard = DepthGuard()
    try:
        guard.feed(text[: MAX_DEPTH + 8])
        guard.feed(text[MAX_DEPTH + 8:])
        guard.feed(b"")
    except TooDeep:
        return
    raise AssertionError("a document nested past MAX_DEPTH was not refused")
