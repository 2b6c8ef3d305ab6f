"""Integers at the edges of int64 in every number field, through ingest -> tables -> trajectory().

docs/format.md ("Numbers"): every integer in the file must fit in int64, and is then accepted anywhere.
Where the lake keeps it:

* in an integer column (``step``, ``iterations``) and in JSON text (``custom_metrics``, ``config``):
  exactly, every digit;
* in a float64 column (``action``, ``reward``, ``rewards``, ``health``, ``value_estimate``, observations,
  ...): as the nearest float64, which is the integer itself up to 2^53 (Python's ``float(n)``);
* in a summary (a row's ``total_reward``, ``episode_agents``, ``episodes.total_reward``): a row's total is
  the exact integer sum of its ``rewards`` rounded once; min and max compare the exact values; totals
  and means add the rows' float totals in file order.

Both process modes (one process, and parsing here with the tables built in a forked child) must write
the same tables, and an integer just outside int64 is refused with ``number.int64`` wherever it is.
-2^63 is one of the extremes: ijson's parser cannot read it, so it reaches ijson as a stand-in
(pipeline/ingestion/int64min.py, pinned in test_int64min.py) and is read back like every other int64.
"""

from __future__ import annotations

import json
import math
import tempfile
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import Lake, ingest, validate
from pipeline.lake.layout import list_episodes
from tests.ingestion.test_roundtrip import assert_lake_matches, expected_tables

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# -2**63 and the integers its stand-in is taken from (pipeline/ingestion/int64min.py) in one episode.
EXTREME = [INT64_MAX, -INT64_MAX, INT64_MIN, -9223372036854700000, 2**53 + 1, -(2**53 + 1), 2**53, 2**62 + 3,
           -(2**60) - 7, 0, -1, 1]
BEYOND = [2**63, INT64_MIN - 1, 10**30, -(10**19)]
TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")

EXAMPLES = settings(max_examples=int(__import__("os").environ.get("EXTREME_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

extreme = st.sampled_from(EXTREME)


@st.composite
def extreme_episodes(draw: Any) -> dict[str, Any]:
    """Valid episodes with extreme integers in every number field an agent or unit step has."""
    vectors = draw(st.booleans())
    training: dict[str, Any] = {"environment": "Extreme-v0", "algorithm": "X", "iterations": INT64_MAX,
                                "config": {"big": draw(extreme), "list": [INT64_MAX, -INT64_MAX]}}
    if vectors:
        training["reward_mapping"] = ["a", "b"]

    def scored(row: dict[str, Any]) -> dict[str, Any]:
        row["action"] = draw(extreme)
        if vectors:
            row["rewards"] = [draw(extreme), draw(extreme)]
        else:
            row["reward"] = draw(extreme)
        for name in ("health", "value_estimate", "predicted_reward"):
            if draw(st.booleans()):
                row[name] = draw(extreme)
        if draw(st.booleans()):
            row["action_distribution"] = draw(st.lists(extreme, max_size=3))
        if draw(st.booleans()):
            row["custom_metrics"] = {"m": {"x": [draw(extreme)], "y": [draw(extreme)]}}
        return row

    flat, width = draw(st.booleans()), draw(st.integers(0, 3))
    steps = []
    numbers = draw(st.lists(st.sampled_from([0, 1, 7, 2**53 + 1, INT64_MAX]), min_size=1, max_size=4, unique=True))
    for number in numbers:
        rows = []
        for agent in draw(st.sampled_from([["a"], ["a", "b"], ["b", "a"]])):
            row = scored({"agent": agent})
            # One shape for the whole episode: a trajectory needs one.
            row["observation_space"] = (draw(st.lists(extreme, min_size=width, max_size=width)) if flat else
                                        [draw(st.lists(extreme, min_size=width, max_size=width))])
            if draw(st.booleans()):
                row["enemy_agent_health"] = draw(st.lists(extreme, max_size=2))
            if draw(st.booleans()):
                row["unit_steps"] = [scored({"unit": "u"})]
            rows.append(row)
        steps.append({"number": number, "agent_steps": rows})
    return {"training": training, "inference": {"steps": steps}}


def _float(value: Any) -> float:
    return float(value)


def _row_total(row: dict[str, Any]) -> float:
    rewards = row.get("rewards")
    return float(row["reward"] if rewards is None else sum(rewards))  # the exact sum, rounded once


def _summaries(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """episode_agents' float columns as docs/format.md states them for integers beyond 2^53."""
    per_agent: dict[str, list[dict[str, Any]]] = {}
    for step in doc["inference"]["steps"]:
        for row in step["agent_steps"]:
            per_agent.setdefault(row["agent"], []).append(row)
    out = {}
    for agent, rows in per_agent.items():
        totals = [_row_total(r) for r in rows]
        exact = [r["reward"] if r.get("rewards") is None else sum(r["rewards"]) for r in rows]
        total = reduce(add, totals, 0.0)
        values = [r["value_estimate"] for r in rows if r.get("value_estimate") is not None]
        vectors = [r["rewards"] for r in rows if r.get("rewards") is not None]
        out[agent] = {
            "total_reward": total, "mean_reward": total / len(rows),
            "min_reward": float(min(exact)), "max_reward": float(max(exact)),
            "mean_value_estimate": reduce(add, values, 0.0) / len(values) if values else None,
            "reward_totals": [reduce(add, column, 0.0) for column in zip(*vectors, strict=True)] if vectors else None,
        }
    return out


def _check_lake(lake: Path, doc: dict[str, Any], path: Path) -> None:
    (location,) = list_episodes(lake)
    agents = {row["agent"]: row for row in pq.read_table(location.table("episode_agents")).to_pylist()}
    assert {a: {k: agents[a][k] for k in want} for a, want in _summaries(doc).items()} == _summaries(doc)
    # Every other column: exactly what the round-trip tests demand (float(n) in float columns, JSON text
    # parsed back to the same integers, step numbers exact). Summaries come from the check above.
    plain = json.loads(json.dumps(doc))
    for step in plain["inference"]["steps"]:
        for row in step["agent_steps"]:
            for r in (row, *row.get("unit_steps", ())):
                if r.get("rewards") is not None:  # keep expected_tables' fsum off the rounded parts
                    r["rewards"] = [float(v) for v in r["rewards"]]
    expected = expected_tables(plain)
    got = pq.read_table(location.table("agent_steps")).to_pylist()
    want = expected["agent_steps"]
    key = lambda r: (r["step"], r["agent"])  # noqa: E731
    for a, e in zip(sorted(got, key=key), sorted(want, key=key), strict=True):
        assert a["action"] == e["action"] and a["health"] == e["health"], (a, e)
        assert a["value_estimate"] == e["value_estimate"] and a["predicted_reward"] == e["predicted_reward"]
        assert a["rewards"] == e["rewards"] and a["reward"] == e["reward"]
        assert a["action_distribution"] == e["action_distribution"]
        assert a["enemy_agent_health"] == e["enemy_agent_health"]
        assert a["observation"] == [x for v in (e["observation"]) for x in (v if isinstance(v, list) else [v])]
        metrics = None if a["custom_metrics"] is None else json.loads(a["custom_metrics"])
        assert metrics == (None if e["custom_metrics"] is None else e["custom_metrics"].value)
    assert sorted(r["step"] for r in pq.read_table(location.table("steps")).to_pylist()) == \
        sorted(s["number"] for s in doc["inference"]["steps"])
    (episode,) = pq.read_table(location.table("episodes")).to_pylist()
    assert episode["iterations"] == INT64_MAX
    assert json.loads(episode["training_config"]) == doc["training"]["config"]


def _check_trajectories(lake: Path, doc: dict[str, Any]) -> None:
    (location,) = list_episodes(lake)
    for agent in ("a", "b"):
        rows = sorted(((step["number"], row) for step in doc["inference"]["steps"] for row in step["agent_steps"]
                       if row["agent"] == agent), key=lambda item: item[0])
        if not rows:
            continue
        trajectory = Lake(lake).trajectory(location.episode_id, agent)
        assert trajectory.steps.tolist() == [number for number, _ in rows]
        assert trajectory.actions.tolist() == [_float(row["action"]) for _, row in rows]
        assert trajectory.rewards.tolist() == [_row_total(row) for _, row in rows]


def _tables(lake: Path) -> dict[str, Any]:
    (location,) = list_episodes(lake)
    tables = {t: pq.read_table(location.table(t)) for t in TABLES}
    tables["episodes"] = tables["episodes"].drop(["ingested_at"])
    return tables


@EXAMPLES
@given(doc=extreme_episodes())
def test_extreme_integers_round_trip_in_both_process_modes(doc):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "e.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        single = ingest(path, lake=Path(folder) / "one", parallel=False)
        split = ingest(path, lake=Path(folder) / "two", parallel=True)
        assert single.status == split.status == "ingested", (single.error, split.error)
        _check_lake(Path(folder) / "one", doc, path)
        _check_trajectories(Path(folder) / "one", doc)
        one, two = _tables(Path(folder) / "one"), _tables(Path(folder) / "two")
        for table in TABLES:
            assert one[table].equals(two[table]), table


def test_integers_that_floats_hold_exactly_still_read_back_through_the_round_trip_checker(tmp_path):
    """Up to 2^53 the usual exact round trip holds, summaries included."""
    doc = {"training": {"environment": "E", "algorithm": "A", "iterations": 1},
           "inference": {"steps": [{"number": i, "agent_steps": [
               {"agent": "a", "action": v, "reward": v, "observation_space": [v, -v], "health": v}]}
               for i, v in enumerate([2**53, -(2**53), 2**52 + 1])]}}
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert ingest(path, lake=tmp_path / "lake").status == "ingested"
    assert_lake_matches(tmp_path / "lake", doc, path)


FIELDS = ["action", "reward", "health", "value_estimate", "predicted_reward", "observation_space.0",
          "action_distribution.0", "custom_metrics.m.y.0", "unit.action", "unit.reward", "number", "iterations",
          "config.x"]


def _place(field: str, value: Any) -> str:
    """A valid episode's JSON text with ``value`` (a Python number or JSON text) at ``field``."""
    row: dict[str, Any] = {"agent": "a", "action": 1, "reward": 1, "observation_space": [1, 2],
                           "action_distribution": [0.5], "custom_metrics": {"m": {"y": [1]}},
                           "unit_steps": [{"unit": "u", "action": 1, "reward": 1}]}
    doc: dict[str, Any] = {"training": {"environment": "E", "algorithm": "A", "iterations": 1, "config": {"x": 1}},
                           "inference": {"steps": [{"number": 3, "agent_steps": [row]}]}}
    marker = "@@VALUE@@"
    if field in ("number",):
        doc["inference"]["steps"][0]["number"] = marker
    elif field in ("iterations",):
        doc["training"]["iterations"] = marker
    elif field == "config.x":
        doc["training"]["config"]["x"] = marker
    elif field.startswith("unit."):
        row["unit_steps"][0][field[5:]] = marker
    else:
        target: Any = row
        *parents, last = field.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = marker
    return json.dumps(doc).replace(f'"{marker}"', value if isinstance(value, str) else repr(value))


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", BEYOND, ids=lambda v: str(v))
@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
def test_integer_beyond_int64_is_refused_anywhere(tmp_path, field, value, parallel):
    path = tmp_path / "e.json"
    path.write_text(_place(field, value), encoding="utf-8")
    result = validate(path, parallel=parallel)
    assert result.status == "invalid"
    assert result.error.rule == "number.int64", str(result.error)
    assert "64-bit integer" in str(result.error)
    if field not in ("iterations", "config.x"):
        assert result.error.path == "inference.steps[0]"


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
def test_edges_of_int64_are_accepted_anywhere(tmp_path, field, parallel):
    for value in (INT64_MAX, -INT64_MAX, INT64_MIN) if field not in ("number", "iterations") else (INT64_MAX,):
        path = tmp_path / "e.json"
        path.write_text(_place(field, value), encoding="utf-8")
        result = validate(path, parallel=parallel)
        assert result.status == "valid", (field, value, result.error)


@pytest.mark.parametrize("field", ["number", "iterations"])
@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
def test_smallest_int64_in_an_integer_field_is_below_its_minimum(tmp_path, field, parallel):
    path = tmp_path / "e.json"
    path.write_text(_place(field, INT64_MIN), encoding="utf-8")
    result = validate(path, parallel=parallel)
    assert result.status == "invalid" and result.error.rule == "value.minimum", result.error
    assert str(result.error).endswith(f"must be at least {0 if field == 'number' else 1}, found -9223372036854775808")


def test_smallest_int64_is_accepted(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(_place("reward", INT64_MIN), encoding="utf-8")
    assert validate(path).status == "valid"


def test_an_integer_below_int64_is_refused_with_the_range_accepted(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(_place("config.x", INT64_MIN - 1), encoding="utf-8")
    result = validate(path)
    assert result.status == "invalid" and result.error.rule == "number.int64"
    assert "accepted: -9223372036854775808 to 9223372036854775807" in str(result.error)


@pytest.mark.parametrize(("text", "field", "stored"), [
    ("1e400", "reward", "number.finite"), ("-1E400", "action", "number.finite"),
    ("1E-400", "reward", 0.0), ("1.0e+2", "number", 100), ("1.0e+2", "iterations", 100),
    ("1E2", "action", 100.0), ("-0.0", "reward", -0.0), ("-0", "action", 0.0), ("5e-324", "health", 5e-324),
    ("1e20", "number", "number.int64"), ("9.3e18", "iterations", "number.int64"),
])
def test_exponent_forms(tmp_path, text, field, stored):
    path = tmp_path / "e.json"
    path.write_text(_place(field, text), encoding="utf-8")
    result = ingest(path, lake=tmp_path / "lake")
    if isinstance(stored, str):
        assert result.status == "invalid" and result.error.rule == stored, result.error
        return
    assert result.status == "ingested", result.error
    (location,) = list_episodes(tmp_path / "lake")
    if field == "number":
        value = pq.read_table(location.table("steps")).column("step").to_pylist()[0]
    elif field == "iterations":
        value = pq.read_table(location.table("episodes")).column("iterations").to_pylist()[0]
    else:
        value = pq.read_table(location.table("agent_steps")).column(field).to_pylist()[0]
    assert value == stored and type(value) is type(stored) and math.copysign(1, value) == math.copysign(1, stored)


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
@pytest.mark.parametrize(("field", "text", "rule", "stored"), [
    # Regression: 9007199254740993.0 was read as the float 2^53 and stored as step 9007199254740992.
    ("number", "9007199254740993.0", "value.type", None),
    ("number", "9.007199254740993e15", "value.type", None),
    ("iterations", "9007199254740993.0", "value.type", None),
    ("number", "9223372036854775807.0", "number.int64", None),  # reads as 2^63
    ("iterations", "1e19", "number.int64", None),
    ("number", "9007199254740991.0", None, 2**53 - 1),  # below 2^53 every float integer is exact
    ("number", "1e15", None, 10**15),
    ("iterations", "4.5e3", None, 4500),
])
def test_integer_fields_written_as_floats(tmp_path, field, text, rule, stored, parallel):
    path = tmp_path / "e.json"
    path.write_text(_place(field, text), encoding="utf-8")
    result = ingest(path, lake=tmp_path / "lake", parallel=parallel)
    if rule is not None:
        assert result.status == "invalid" and result.error.rule == rule, result.error
        assert result.error.path == ("inference.steps[0].number" if field == "number" else "training.iterations")
        assert "fraction or exponent" in str(result.error)
        return
    assert result.status == "ingested", result.error
    (location,) = list_episodes(tmp_path / "lake")
    table, column = ("steps", "step") if field == "number" else ("episodes", "iterations")
    assert pq.read_table(location.table(table)).column(column).to_pylist() == [stored]
