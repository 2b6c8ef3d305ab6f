"""Cut a value that breaks the schema down to its first error, so the validator can describe it cheaply.

jsonschema-rs builds all of a value's errors at once, each with the instance in its message: one step
of 100,000 empty unit steps took 43 s and 1.4 GB, and a 16 MiB step of them was killed for memory at
23 GB (measured). :func:`cut_down` leaves, in each long list or object, the first element and the first
element that breaks the schema, and says where that one was, for the error's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Lists and objects longer than this are cut down.
_CUT_ABOVE = 8
_FREE_FORM = frozenset({"config", "custom_metrics"})  # any JSON object: no error can be inside


def cut_down(node: Any, invalid: Callable[[], bool], shifts: dict[int, int] | None = None,
             keep: frozenset[str] = frozenset()) -> dict[int, int]:
    """Cut every long list and object below ``node`` in place, keeping the schema's first error there.

    ``invalid()`` tells whether the whole value is still invalid. A list becomes its first element and
    the first element whose prefix breaks the schema (binary search); ``shifts`` maps each cut list
    (by id) to that element's index in the file, for the error's path. The value is refused anyway.
    An object keeps every key in ``keep`` (the schema's property names: a required key is one of
    them, so a cut never makes one missing) and is cut among its other keys the way a list is.
    """
    shifts = {} if shifts is None else shifts
    if isinstance(node, dict):
        others = [item for item in node.items() if item[0] not in keep]
        if len(others) > _CUT_ABOVE:
            items = list(node.items())

            def kept(chosen: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
                names = {key for key, _ in chosen}
                return [item for item in items if item[0] in keep or item[0] in names]

            def invalid_with(n: int) -> bool:
                node.clear()
                node.update(kept(others[:n]))
                return invalid()

            k = _first_invalid_prefix(len(others), invalid_with)
            node.clear()
            node.update(kept([others[0], others[k - 1]]))
        for key, value in node.items():
            if key not in _FREE_FORM:
                cut_down(value, invalid, shifts, keep)
    elif isinstance(node, list):
        if len(node) > _CUT_ABOVE:
            full = node[:]

            def invalid_prefix(n: int) -> bool:
                node[:] = full[:n]
                return invalid()

            k = _first_invalid_prefix(len(full), invalid_prefix)
            node[:] = [full[0], full[k - 1]] if k > 1 else [full[0]]
            if k > 2:
                shifts[id(node)] = k - 1
        for value in node:
            cut_down(value, invalid, shifts, keep)
    return shifts


def _first_invalid_prefix(length: int, invalid_with: Callable[[int], bool]) -> int:
    """The smallest n >= 1 such that ``invalid_with(n)`` (true at ``length``), by binary search."""
    low, high = 1, length
    while low < high:
        middle = (low + high) // 2
        if invalid_with(middle):
            high = middle
        else:
            low = middle + 1
    return high
