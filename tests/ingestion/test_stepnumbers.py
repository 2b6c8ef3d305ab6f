"""step.number_unique over step numbers kept as runs (pipeline/ingestion/stepnumbers.py): the same verdict and
message as a set of every number would give, in memory that stays flat when the numbers are evenly spaced."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import InvalidEpisode
from pipeline.ingestion.builder import EpisodeChecks
from pipeline.ingestion.stepnumbers import StepNumbers
from tests.helpers import agent_step

# Runs of evenly spaced numbers, then anything: repeats, numbers going back, gaps far apart.
_runs = st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(1, 5), st.integers(1, 12)), max_size=4).map(
    lambda runs: [start + k * spacing for start, spacing, length in runs for k in range(length)
                  if start + k * spacing < 2**63])
_numbers = st.one_of(
    st.lists(st.integers(0, 40), max_size=30),
    _runs,
    st.tuples(_runs, st.lists(st.integers(0, 2**63 - 1), max_size=4), _runs).map(lambda p: p[0] + p[1] + p[2]),
)


def _first_repeat(numbers: list[int]) -> tuple[int, int, int] | None:
    """(index, number, index of its first use) of the first step whose number was used before."""
    seen: dict[int, int] = {}
    for index, number in enumerate(numbers):
        if number in seen:
            return index, number, seen[number]
        seen[number] = index
    return None


def _checks() -> EpisodeChecks:
    checks = EpisodeChecks()
    checks.part("training", {"environment": "CartPole-v1", "algorithm": "PPO", "iterations": 1})
    return checks


@settings(max_examples=300, deadline=None)
@given(numbers=_numbers, batch=st.integers(0, 7), defer=st.booleans())
def test_a_repeated_step_number_is_reported_at_its_second_use_naming_the_first(
        numbers: list[int], batch: int, defer: bool) -> None:
    """Whether steps come one by one (batch 0) or in batches (the fast path while numbers increase)."""
    steps: list[Any] = [{"number": n, "agent_steps": [agent_step(reward=1.0)]} for n in numbers]
    checks = _checks()
    expected = _first_repeat(numbers)
    try:
        if batch == 0:
            for step in steps:
                checks.step(step)
        else:
            for i in range(0, len(steps), batch):
                checks.steps_batch(steps[i:i + batch], defer_schema=defer)
    except InvalidEpisode as error:
        assert expected is not None, numbers
        index, number, first = expected
        assert (error.rule, error.step, error.path) == (
            "step.number_unique", number, f"inference.steps[{index}].number")
        assert str(error).endswith(
            f"step number {number} is used twice (first by inference.steps[{first}]); step numbers must be unique")
    else:
        assert expected is None, numbers


@given(numbers=st.one_of(st.lists(st.integers(0, 60), unique=True), st.lists(st.integers(-2**63, 2**63 - 1), unique=True),
                         _runs.map(lambda n: list(set(n)))).map(sorted),
       batch=st.integers(1, 9), probes=st.lists(st.integers(0, 2**63 - 1), max_size=5))
def test_the_runs_find_every_recorded_number_at_its_index_and_nothing_else(
        numbers: list[int], batch: int, probes: list[int]) -> None:
    recorded = StepNumbers()
    for i in range(0, len(numbers), batch):
        recorded.extend(numbers[i:i + batch], i)
    where = {number: index for index, number in enumerate(numbers)}
    for number in [*numbers, *probes, *(n + d for n in numbers for d in (-4, -1, 1, 2, 4, 8))]:
        assert recorded.index(number) == where.get(number)
    assert recorded.last == (numbers[-1] if numbers else None)
    assert recorded.next_index == len(numbers)


def test_numbers_as_far_apart_as_int64_allows_are_recorded() -> None:
    """A negative number reaches the runs before its schema check in the two-process ingest (defer_schema)."""
    recorded = StepNumbers()
    recorded.extend([-2**63, 2**63 - 1], 0)
    assert (recorded.index(-2**63), recorded.index(2**63 - 1), recorded.index(0)) == (0, 1, None)


@pytest.mark.parametrize("spacing", [1, 4])
def test_evenly_spaced_numbers_take_one_run_however_many_steps(spacing: int) -> None:
    """What keeps the checker's memory flat: 1 GB of ~230-byte steps is 4.3 million numbers."""
    recorded = StepNumbers()
    for first in range(0, 1_000_000, 256):
        recorded.extend(list(range(first * spacing, (first + 256) * spacing, spacing)), first)
    assert recorded.runs == 1
    assert recorded.index(999_999 * spacing) == 999_999
    recorded.add(10**12, 1_000_192)  # a gap: one more run
    assert (recorded.runs, recorded.index(10**12), recorded.index(10**12 - spacing)) == (2, 1_000_192, None)
