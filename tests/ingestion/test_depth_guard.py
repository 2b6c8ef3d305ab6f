"""The nesting-depth guard that protects ijson (whose memory grows with the square of depth)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion.source import MAX_DEPTH, _DepthGuard, _TooDeep

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
    guard = _DepthGuard()
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
    guard = _DepthGuard()
    try:
        for i in range(0, len(over), chunk):
            guard.feed(over[i:i + chunk])
    except _TooDeep:
        return
    raise AssertionError("a document nested past MAX_DEPTH was not refused")


def test_brackets_and_escaped_quotes_inside_strings_do_not_count():
    text = json.dumps({"a": "[[[[{{{{ \\\" ]]]] \\\\", "b": ["]]]]"]}).encode()
    guard = _DepthGuard()
    guard.feed(text)
    assert guard.depth == 0
