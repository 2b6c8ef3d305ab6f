"""The step numbers an episode has used so far, for ``step.number_unique``, in memory that does not grow
with the episode's length when its numbers are evenly spaced.

A number greater than every one before is new; only one that is not must be looked up. The numbers are
kept as runs of evenly spaced numbers at consecutive step indexes (first number, first index, spacing,
length), so a file numbered 0, 1, 2, ... (or 0, 4, 8, ..., a frame skip of 4) holds one run whatever
its length. An array of every number took 8 bytes a step: 35 MB of the writing process on the 1 GB
``vector`` file (4.3 million steps), 38% of its peak (measured, issue 15). Irregular gaps cost at most
one run for every two steps.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

# A spacing must fit the runs' int64 array; a larger one (numbers far apart) starts a new run.
_MAX_SPACING = 2**63 - 1


class StepNumbers:
    """Increasing step numbers with the index of the step that used each, as runs."""

    __slots__ = ("_firsts", "_lengths", "_next", "_spacing", "_spacings", "_starts", "last")

    def __init__(self) -> None:
        self._firsts = array("q")  # each run's first number (increasing from run to run)
        self._starts = array("q")  # the index of that number's step
        self._spacings = array("q")  # between the run's numbers (0 while the run has one number)
        self._lengths = array("q")
        self._spacing = 0  # the last run's, and the index after its last step: the common case reads only these
        self._next = 0
        self.last: int | None = None

    def add(self, number: int, index: int) -> None:
        """Record ``number``, used by the step at ``index``; it must be greater than :attr:`last`."""
        if index == self._next and self._lengths:
            spacing = number - self.last  # type: ignore[operator]
            if spacing == self._spacing:
                self._lengths[-1] += 1
            elif self._lengths[-1] == 1 and spacing <= _MAX_SPACING:  # its second number sets the spacing
                self._spacings[-1] = self._spacing = spacing
                self._lengths[-1] = 2
            else:
                self._new_run(number, index)
                return
            self.last, self._next = number, index + 1
            return
        self._new_run(number, index)

    def _new_run(self, number: int, index: int) -> None:
        self._firsts.append(number)
        self._starts.append(index)
        self._spacings.append(0)
        self._lengths.append(1)
        self._spacing = 0
        self.last, self._next = number, index + 1

    def extend(self, numbers: list[int], first: int) -> None:
        """:meth:`add` of ``numbers``, used by consecutive steps from index ``first``; each must be greater
        than the one before and the first greater than :attr:`last`. A batch that continues the last
        run costs no Python loop."""
        if not numbers:
            return
        spacing, n = self._spacing, len(numbers)
        start = numbers[0]
        if (spacing and first == self._next and start - self.last == spacing  # type: ignore[operator]
                and numbers[-1] - start == spacing * (n - 1)
                and (spacing == 1 or numbers == list(range(start, numbers[-1] + 1, spacing)))):
            self._lengths[-1] += n
            self.last, self._next = numbers[-1], first + n
            return
        for i, number in enumerate(numbers):
            self.add(number, first + i)

    def index(self, number: int) -> int | None:
        """The index of the step that used ``number``, or None if none did."""
        run = bisect_right(self._firsts, number) - 1
        if run < 0:
            return None
        offset, spacing = number - self._firsts[run], self._spacings[run]
        if spacing == 0:
            return self._starts[run] if offset == 0 else None
        k, rest = divmod(offset, spacing)
        if rest or k >= self._lengths[run]:
            return None
        return self._starts[run] + k

    @property
    def next_index(self) -> int:
        """The index after the last recorded step's (0 before any)."""
        return self._next

    @property
    def runs(self) -> int:
        """How many runs hold the numbers (what the memory grows with)."""
        return len(self._firsts)
