"""Episodes shaped like real recordings, larger than one batch: agents that join and leave, steps
without agents, units on some steps, steps out of order, Gymnasium-style recordings of 0 to N steps.

The parser hands steps over in batches (256 steps), the table stage converts 1024 rows at a time and
takes a bulk path for runs of increasing step numbers: an episode of a few thousand steps mixes every
path. It must read back exactly (the round-trip checker of ``test_roundtrip``), in one process and in
two, and ``trajectory()`` must give each agent its own steps in order.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import Lake, ingest
from pipeline.lake.layout import list_episodes
from tests.ingestion.test_roundtrip import assert_lake_matches

TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")
SHAPES = settings(max_examples=int(os.environ.get("SHAPES_EXAMPLES", "6")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def long_episodes(draw: Any) -> dict[str, Any]:
    """A few thousand steps built from runs: who acts in a run, whether it has units, its order."""
    agents = ["a", "b", "c"]
    steps: list[dict[str, Any]] = []
    number = 0
    for _ in range(draw(st.integers(3, 8))):
        length = draw(st.sampled_from([1, 7, 255, 256, 257, 600, 1100]))
        who = draw(st.lists(st.sampled_from(agents), unique=True, max_size=3))  # [] = steps without agents
        units = draw(st.sampled_from([0, 0, 1, 2]))
        empty = draw(st.sampled_from(["absent", "null", "list"]))
        run = []
        for i in range(length):
            step: dict[str, Any] = {"number": number}
            number += draw(st.sampled_from([1, 1, 1, 3])) if i % 97 == 0 else 1
            rows = []
            for agent in who:
                row: dict[str, Any] = {"agent": agent, "action": (i + len(agent)) % 5, "reward": (i % 9) / 4,
                                       "observation_space": [i % 256, 1.5, -(i % 7)]}
                if units and i % 3:
                    row["unit_steps"] = [{"unit": f"u{k}", "action": k, "reward": k / 2} for k in range(units)]
                rows.append(row)
            if rows:
                step["agent_steps"] = rows
            elif empty != "absent":
                step["agent_steps"] = None if empty == "null" else []
            run.append(step)
        if draw(st.booleans()):
            run.reverse()  # steps in any order: the per-step path
        steps += run
    return {"training": {"environment": "Shapes-v0", "algorithm": "X", "iterations": 1},
            "inference": {"steps": steps}}


def _tables(lake: Path) -> dict[str, Any]:
    (location,) = list_episodes(lake)
    tables = {t: pq.read_table(location.table(t)) for t in TABLES}
    tables["episodes"] = tables["episodes"].drop(["ingested_at"])
    return tables


def _check(folder: Path, doc: dict[str, Any]) -> None:
    path = folder / "e.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    one = ingest(path, lake=folder / "one", parallel=False)
    two = ingest(path, lake=folder / "two", parallel=True)
    assert one.status == two.status == "ingested", (one.error, two.error)
    assert_lake_matches(folder / "one", doc, path)
    a, b = _tables(folder / "one"), _tables(folder / "two")
    for table in TABLES:
        assert a[table].equals(b[table]), table
    lake = Lake(folder / "one")
    for agent in ("a", "b", "c"):
        rows = sorted((s["number"], r) for s in doc["inference"]["steps"] for r in s.get("agent_steps") or ()
                      if r["agent"] == agent)
        if rows:
            trajectory = lake.trajectory(one.episode_id, agent)
            assert trajectory.steps.tolist() == [n for n, _ in rows]
            assert trajectory.actions.tolist() == [float(r["action"]) for _, r in rows]


@SHAPES
@given(doc=long_episodes())
def test_long_episodes_with_agents_joining_and_leaving_read_back_exactly(doc):
    with tempfile.TemporaryDirectory() as folder:
        _check(Path(folder), doc)


def gymnasium_recording(steps: int, obs_shape: tuple[int, ...], action: str, integral_rewards: bool) -> dict[str, Any]:
    """What a Gymnasium/Minari recorder writes: one agent, a Box observation (at most 2-D in this format)."""
    size = 1
    for n in obs_shape:
        size *= n
    out = []
    for t in range(steps):
        flat = [(t * size + k) / 8 for k in range(size)]
        obs: Any = flat if len(obs_shape) < 2 else [flat[r * obs_shape[1]:(r + 1) * obs_shape[1]]
                                                    for r in range(obs_shape[0])]
        act: Any = {"discrete": t % 3, "box": t / 16 - 1.0, "none": -1}[action]
        out.append({"number": t, "agent_steps": [{"agent": "agent", "action": act,
                                                  "reward": 1 if integral_rewards else 1.0,
                                                  "observation_space": obs}]})
    return {"training": {"environment": "CartPole-v1", "algorithm": "minari", "iterations": 1},
            "inference": {"steps": out}}


@pytest.mark.parametrize("steps", [1, 2, 300])
@pytest.mark.parametrize("obs_shape", [(1,), (4,), (3, 4), (0,), (60,)], ids=str)  # (3, 4, 5) arrives flattened
@pytest.mark.parametrize("action", ["discrete", "box", "none"])
def test_gymnasium_recordings_read_back_exactly(tmp_path, steps, obs_shape, action):
    _check(tmp_path, gymnasium_recording(steps, obs_shape, action, integral_rewards=steps % 2 == 0))


def test_an_episode_of_no_steps_is_refused(tmp_path):
    path = tmp_path / "e.json"
    doc = gymnasium_recording(0, (4,), "discrete", True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = ingest(path, lake=tmp_path / "lake")
    assert result.status == "invalid" and result.error.rule == "document.steps"
    assert str(result.error).endswith("inference.steps: must be an array with at least one step")


def test_integral_and_float_rewards_are_the_same_numbers(tmp_path):
    """A recorder that writes 1 and one that writes 1.0 store the same episode rows (different files)."""
    ints = gymnasium_recording(3, (2,), "discrete", True)
    floats = gymnasium_recording(3, (2,), "discrete", False)
    for name, doc in (("ints", ints), ("floats", floats)):
        (tmp_path / name).mkdir()
        _check(tmp_path / name, doc)
    a, b = _tables(tmp_path / "ints" / "one"), _tables(tmp_path / "floats" / "one")
    for table in ("agent_steps", "episode_agents", "steps"):
        assert a[table].equals(b[table]), table
