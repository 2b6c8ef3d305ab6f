"""Reading one agent's rows of agent_steps.parquet: the same rows, values and order as a plain filter
and sort, whatever the row groups, agents, step order and null lists (property tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.engine.agentrows
from pipeline import DatasetError
from pipeline.engine.agentrows import AgentStepsFile

SCHEMA = pa.schema([
    pa.field("step", pa.int64(), nullable=False),
    pa.field("agent", pa.string(), nullable=False),
    pa.field("action", pa.float64(), nullable=False),
    pa.field("rewards", pa.list_(pa.float64())),
    pa.field("observation", pa.large_list(pa.float64()), nullable=False),
])

AGENTS = ["a", "b", "red team", "ü"]


@st.composite
def agent_steps(draw: st.DrawFn) -> list[dict]:
    """Rows of a few agents, steps unique per agent and in any order, lists of any length or null."""
    agents = draw(st.lists(st.sampled_from(AGENTS), min_size=1, max_size=3, unique=True))
    rows = []
    for agent in agents:
        steps = draw(st.lists(st.integers(0, 10_000), min_size=0, max_size=30, unique=True))
        for step in steps:
            rows.append({
                "step": step, "agent": agent,
                "action": draw(st.floats(allow_nan=False, width=32)),
                "rewards": draw(st.none() | st.lists(st.floats(-9, 9, width=32), max_size=3)),
                "observation": draw(st.lists(st.floats(-9, 9, width=32), max_size=5)),
            })
    return draw(st.permutations(rows))


def _write(path: Path, rows: list[dict], row_group_size: int, dictionary: bool) -> str:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, path, row_group_size=row_group_size, use_dictionary=["agent"] if dictionary else False)
    return str(path)


def _expected(rows: list[dict], agent: str) -> list[dict]:
    return sorted((row for row in rows if row["agent"] == agent), key=lambda row: row["step"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=agent_steps(), row_group_size=st.integers(1, 40), dictionary=st.booleans(), cores=st.sampled_from([1, 2]))
def test_rows_equal_a_plain_filter_and_sort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict],
                                            row_group_size: int, dictionary: bool, cores: int) -> None:
    monkeypatch.setattr(pipeline.engine.agentrows, "usable_cores", lambda: cores)
    file = AgentStepsFile(_write(tmp_path / "agent_steps.parquet", rows, row_group_size, dictionary))
    for agent in {*AGENTS, *(row["agent"] for row in rows)}:
        expected = _expected(rows, agent)
        got = file.rows(agent, ["action", "rewards", "observation"])
        assert len(got) == len(expected)
        assert got.steps.tolist() == [row["step"] for row in expected]
        assert got.numbers("action").tolist() == [row["action"] for row in expected]
        assert got.valid("rewards").tolist() == [row["rewards"] is not None for row in expected]
        for column in ("rewards", "observation"):
            lengths, values = got.lists(column)
            assert lengths.tolist() == [len(row[column] or []) for row in expected]
            assert values.tolist() == [value for row in expected for value in row[column] or []]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=agent_steps(), row_group_size=st.integers(1, 40))
def test_only_agent_is_named_exactly_when_there_is_one(tmp_path: Path, rows: list[dict], row_group_size: int) -> None:
    file = AgentStepsFile(_write(tmp_path / "agent_steps.parquet", rows, row_group_size, True))
    agents = {row["agent"] for row in rows}
    assert file.only_agent() == (agents.pop() if len(agents) == 1 else None)


def test_arrays_are_the_callers_to_change(tmp_path: Path) -> None:
    """Users normalise observations in place: no array may be a read-only view of Arrow memory."""
    rows = [{"step": n, "agent": "a", "action": 1.0, "rewards": [1.0, 2.0], "observation": [n, n]} for n in range(50)]
    file = AgentStepsFile(_write(tmp_path / "agent_steps.parquet", rows, 7, True))
    got = file.rows("a", ["action", "rewards", "observation"])
    arrays = [got.steps, got.numbers("action"), *got.lists("rewards"), *got.lists("observation")]
    assert all(array.flags.writeable for array in arrays)
    got.lists("observation")[1][:] = 0  # a fresh array each call: the file's rows are untouched
    assert got.lists("observation")[1].tolist() == [float(n) for n in range(50) for _ in range(2)]


def test_null_values_inside_a_list_are_an_error(tmp_path: Path) -> None:
    rows = [{"step": 0, "agent": "a", "action": 1.0, "rewards": None, "observation": [1.0, None]}]
    file = AgentStepsFile(_write(tmp_path / "agent_steps.parquet", rows, 10, True))
    with pytest.raises(DatasetError, match="'observation' has null values inside its lists"):
        file.rows("a", ["observation"]).lists("observation")


def test_values_keep_their_type(tmp_path: Path) -> None:
    schema = pa.schema([("step", pa.int64()), ("agent", pa.string()), ("shape", pa.list_(pa.int32()))])
    table = pa.table({"step": [0, 1], "agent": ["a", "a"], "shape": [[2, 3], [2, 3]]}, schema=schema)
    pq.write_table(table, tmp_path / "agent_steps.parquet")
    lengths, values = AgentStepsFile(str(tmp_path / "agent_steps.parquet")).rows("a", ["shape"]).lists("shape")
    assert values.dtype == np.int32 and values.tolist() == [2, 3, 2, 3] and lengths.tolist() == [2, 2]
