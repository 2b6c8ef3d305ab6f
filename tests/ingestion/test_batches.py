"""Steps checked and tabulated in batches (issue 15) behave exactly as one step at a time.

The parser hands over steps in lists (``pipeline.ingestion.parts.read_batches``); the rules, the schema and
the tables then work on a whole batch when it has the common shape, and step by step otherwise,
and the two-process ingest leaves the checks to its writer. None of that may change a result: the
same first error (rule, path, step, message) and the same tables. The reference here is the
step-at-a-time path that the batch paths fall back to (``EpisodeChecks.step``,
``EpisodeTabulator.step``), fed by ``read_document``; files come from the benchmark generator's
shapes with one to three mutations at random steps, most of them past the first batches.
"""

from __future__ import annotations

import copy
import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.generate import write_episode
from pipeline import PipelineError, ingest
from pipeline.ingestion.builder import EpisodeChecks
from pipeline.ingestion.parts import STEP, read_document
from pipeline.ingestion.source import open_source
from pipeline.ingestion.tabulate import EpisodeTables

SHAPES = {"vector": 1200, "teams_metrics": 70, "teams_nounits": 140, "pixels": 20, "frames64": 90,
          "random0": 150, "random1": 90, "random3": 150, "random4": 100, "random8": 700}


def _base(shape: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    if shape.startswith("random"):
        write_episode(buffer, "random", steps=SHAPES[shape], seed=int(shape[6:]))
    else:
        write_episode(buffer, shape, steps=SHAPES[shape], seed=0)
    return json.loads(buffer.getvalue())


def _agent(step: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    agents = step.get("agent_steps")
    if not isinstance(agents, list) or not agents:
        return None
    agent = rng.choice(agents)
    return agent if isinstance(agent, dict) else None


def _set(key: str, value: Any):
    def mutate(step: dict[str, Any], rng: random.Random) -> None:
        agent = _agent(step, rng)
        if agent is not None:
            agent[key] = copy.deepcopy(value)
    return mutate


def _swap_reward_kind(step: dict[str, Any], rng: random.Random) -> None:
    agent = _agent(step, rng)
    if agent is None:
        return
    if agent.pop("rewards", None) is not None:
        agent["reward"] = 1.0
    else:
        agent.pop("reward", None)
        agent["rewards"] = [1.0]


def _duplicate_agent(step: dict[str, Any], rng: random.Random) -> None:
    if isinstance(step.get("agent_steps"), list) and step["agent_steps"]:
        step["agent_steps"].append(copy.deepcopy(step["agent_steps"][0]))


def _duplicate_unit(step: dict[str, Any], rng: random.Random) -> None:
    agent = _agent(step, rng)
    if agent and agent.get("unit_steps"):
        agent["unit_steps"].append(copy.deepcopy(agent["unit_steps"][0]))


def _rename_agent(step: dict[str, Any], rng: random.Random) -> None:
    """An agent step takes the name of another in its step (a repeat), or a new one."""
    agents = step.get("agent_steps")
    if isinstance(agents, list) and agents and all(isinstance(a, dict) for a in agents):
        rng.choice(agents)["agent"] = rng.choice([a.get("agent") for a in agents] + ["newcomer"])


def _reverse_agents(step: dict[str, Any], rng: random.Random) -> None:
    """The step lists its agents in another order (valid; no longer the same order in every step)."""
    if isinstance(step.get("agent_steps"), list):
        step["agent_steps"].reverse()


def _step_key(key: str, value: Any):
    def mutate(step: dict[str, Any], rng: random.Random) -> None:
        step[key] = value
    return mutate


MUTATIONS = {
    "repeated number": lambda step, rng: step.__setitem__("number", max(step["number"] - 1, 0)),
    "float number": lambda step, rng: step.__setitem__("number", float(step["number"])),
    "string number": _step_key("number", "7"),
    "unknown step key": _step_key("bogus", 1),
    "bad base64": _step_key("image", "not base64!"),
    "not an image": _step_key("image", "aGVsbG8gd29ybGQ="),
    "null agent steps": _step_key("agent_steps", None),
    "agent steps a string": _step_key("agent_steps", "abc"),
    "ragged observation": _set("observation_space", [[1.0, 2.0], [3.0]]),
    "empty observation": _set("observation_space", []),
    "integer observation": _set("observation_space", [1, 2, 300]),
    "negative integer observation": _set("observation_space", [4, -2, 3]),
    "float after integers": _set("observation_space", [4, 2, 3.5]),
    "byte observation": _set("observation_space", [4, 2, 255, 0]),
    "string in observation": _set("observation_space", [0.5, "x"]),
    "2-D observation": _set("observation_space", [[0.5, 1.5], [2.5, 3]]),
    "pixel observation": _set("observation_space", [[0, 255], [7, 8]]),
    "string action": _set("action", "left"),
    "metrics": _set("custom_metrics", {"m": [1, 2.5, {"x": None}]}),
    "metrics not an object": _set("custom_metrics", 5),
    "unknown agent key": _set("bogus", 1),
    "long rewards": _set("rewards", [1.0] * 5),
    "health": _set("health", 7.5),
    "integer reward": _set("reward", 3),
    "swapped reward kind": _swap_reward_kind,
    "repeated agent": _duplicate_agent,
    "renamed agent": _rename_agent,
    "agents in another order": _reverse_agents,
    "repeated unit": _duplicate_unit,
}


def _cases() -> list[tuple[str, int]]:
    return [(shape, seed) for shape in SHAPES for seed in range(6)]


def _mutated(shape: str, seed: int) -> tuple[dict[str, Any], str]:
    rng = random.Random(f"{shape}-{seed}")
    document = _base(shape)
    steps = document["inference"]["steps"]
    if seed == 0:
        return document, "valid"
    names = [rng.choice(sorted(MUTATIONS)) for _ in range(rng.choice((1, 1, 2, 3)))]
    # Past the first step (a batch of its own): in batches that take the fast paths, or in later ones.
    where = sorted(rng.randrange(1, len(steps)) if rng.random() < 0.5 else rng.randrange(len(steps) // 2, len(steps))
                   for _ in names)
    for name, k in zip(names, where, strict=True):
        MUTATIONS[name](steps[k], rng)
    return document, ", ".join(f"{n} at {k}" for n, k in zip(names, where, strict=True))


def _reference(path: Path) -> tuple[tuple[Any, ...] | None, dict[str, pa.Table]]:
    """Step by step: the first error (rule, path, step, message), else the three step tables."""
    pieces: dict[str, list[pa.Table]] = {}

    def sink(table: str, batch: pa.RecordBatch | pa.Table) -> None:
        pieces.setdefault(table, []).append(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch)
                                            else batch)

    checks, tables = EpisodeChecks(), EpisodeTables(sink)
    try:
        with open_source(path) as source:
            for part, value in read_document(source):
                if part == STEP:
                    index = checks.steps
                    checks.step(value)
                    tables.add_step(value, index)
                else:
                    checks.part(part, value)
        tables.flush()
    except PipelineError as error:
        return (error.rule, error.path, error.step, error.message), {}
    return None, {name: pa.concat_tables(parts) for name, parts in pieces.items()}


def _lake_tables(lake: Path) -> dict[str, pa.Table]:
    import pyarrow.parquet as pq

    from pipeline.lake.layout import list_episodes

    (location,) = list_episodes(lake)
    return {t: pq.read_table(location.table(t)) for t in ("steps", "agent_steps", "unit_steps")}


@pytest.mark.parametrize(("shape", "seed"), _cases(), ids=[f"{s}-{n}" for s, n in _cases()])
def test_batches_give_the_results_of_one_step_at_a_time(tmp_path: Path, shape: str, seed: int) -> None:
    document, what = _mutated(shape, seed)
    path = tmp_path / "e.json"
    path.write_text(json.dumps(document))
    error, reference = _reference(path)
    for parallel in (False, True):
        result = ingest(path, lake=tmp_path / f"lake-{parallel}", parallel=parallel)
        if error is None:
            assert result.status == "ingested", (what, parallel, result.error)
            written = _lake_tables(tmp_path / f"lake-{parallel}")
            for table, expected in reference.items():
                assert written[table].equals(expected.cast(written[table].schema)), (what, parallel, table)
        else:
            assert result.status == "invalid", (what, parallel, result.status, result.error)
            found = result.error
            assert (found.rule, found.path, found.step, found.message) == error, (what, parallel)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"y": [1.0]}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.mark.parametrize("where", [(1, 0), (17, 3), (39, 4)])
def test_metrics_too_deep_for_text_are_reported_where_they_are_in_a_batch(where: tuple[int, int]) -> None:
    """Metrics on a few agent steps are turned into text without a walk over every step (rules.py);
    a value that cannot be (nested past MAX_JSON_DEPTH, which only a direct caller can send) still names
    its own step and agent step, as one step at a time does."""
    document = _base("random3")  # five agents, metrics on some agent steps
    header = {key: document[key] for key in ("training", "action_mapping")}
    steps = document["inference"]["steps"][:40]
    step, agent = where
    steps[step]["agent_steps"][agent]["custom_metrics"] = _deep(300)
    errors = []
    for batch in (True, False):
        checks = EpisodeChecks()
        for name, value in header.items():
            checks.part(name, value)
        with pytest.raises(PipelineError) as raised:
            if batch:  # the first step alone sets the episode's reward kind, as the parser's first batch does
                checks.steps_batch(copy.deepcopy(steps[:1]))
                checks.steps_batch(copy.deepcopy(steps[1:]))
            else:
                for value in copy.deepcopy(steps):
                    checks.step(value)
        errors.append((raised.value.rule, raised.value.path, raised.value.step))
    assert errors[0] == errors[1] == (
        "document.depth", f"inference.steps[{step}].agent_steps[{agent}].custom_metrics", steps[step]["number"])


agent_name = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def _periodic_steps(draw: st.DrawFn) -> list[list[str]]:
    """One period of names repeated over the batch, the first step that period, and as many steps as
    repetitions, cut anywhere after it (so the batch can look like the same agents in every step)."""
    period = draw(st.lists(agent_name, min_size=1, max_size=4))
    repeats = draw(st.integers(1, 6))
    names = period * repeats
    room = range(len(period) + 1, len(names))
    cuts = sorted(draw(st.sets(st.sampled_from(room), min_size=min(repeats - 2, len(room)),
                               max_size=min(repeats - 2, len(room))))) if repeats > 2 and room else []
    cuts = [len(period), *cuts] if repeats > 1 else []
    return [names[i:j] for i, j in zip([0, *cuts], [*cuts, len(names)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(st.lists(agent_name, min_size=1, max_size=4), min_size=1, max_size=12), _periodic_steps()))
def test_a_batch_has_a_repeated_agent_exactly_when_one_of_its_steps_has(names: list[list[str]]) -> None:
    """The batch check of unique agent names (one comparison when every step lists the same agents in
    the same order) agrees with a check of each step."""
    from pipeline.ingestion.rules import _agents_unique

    lists = [[{"agent": name} for name in step] for step in names]
    rows = [row for step in lists for row in step]
    assert _agents_unique(lists, rows) == all(len(set(step)) == len(step) for step in names)
