"""Round trips: a valid episode goes into the lake and comes back out exactly as it went in.

Every table is read back through polars' hive partitioning (the way users read the lake) and
compared, column by column, with what the source JSON says: numbers exactly (``==``, integers as
floats), observations un-flattened to the source's nested lists, images byte for byte, JSON-valued
fields parsed back to the same JSON, and the summary figures recomputed from the source.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pipeline
from pipeline import ingest
from tests.helpers import PNG_B64, episode, full_episode

TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")
HIVE = {"environment": pl.String, "episode_id": pl.String}
JSON_COLUMNS = ("training_config", "inference_config", "action_mapping", "custom_metrics")
# Columns that legitimately differ between two files holding the same episode.
PER_FILE_COLUMNS = ("episode_id", "content_hash", "source", "ingested_at", "source_bytes")


# ---------------------------------------------------------------------------------------------
# Reading the lake and the source
# ---------------------------------------------------------------------------------------------


def read_lake(lake: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table of the lake as rows, read the way the README tells users to read it."""
    return {
        table: pl.read_parquet(
            str(lake / "*" / "*" / f"{table}.parquet"), hive_partitioning=True, hive_schema=HIVE
        ).to_dicts()
        for table in TABLES
    }


class Json:
    """Expected value of a JSON-text column: the stored text must parse back to ``value``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Json({self.value!r})"


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that also tells 1 from 1.0 and true from 1, and keeps object key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same(actual: Any, expected: Any, where: str) -> None:
    """``actual`` (read from the lake) equals ``expected`` (from the source) exactly, types included."""
    if isinstance(expected, Json):
        assert isinstance(actual, str), f"{where}: expected JSON text, found {actual!r}"
        parsed = json.loads(actual)
        assert parsed == expected.value, f"{where}: {actual} != {expected.value!r}"
        assert same_json(parsed, expected.value), f"{where}: {actual} is not the same JSON as {expected.value!r}"
    elif isinstance(expected, float):
        assert type(actual) is float, f"{where}: expected the float {expected!r}, found {actual!r}"
        assert actual == expected or (math.isnan(actual) and math.isnan(expected)), (
            f"{where}: {actual!r} != {expected!r}"
        )
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, found {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} elements, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def as_floats(value: Any) -> Any:
    """Source numbers (possibly nested in lists) as the float64 values the lake must hold."""
    if value is None:
        return None
    if isinstance(value, list):
        return [as_floats(v) for v in value]
    return float(value)


def unflatten(flat: list[float], shape: list[int]) -> list[Any]:
    if len(shape) == 1:
        assert len(flat) == shape[0]
        return flat
    rows, cols = shape
    assert len(flat) == rows * cols
    return [flat[r * cols : (r + 1) * cols] for r in range(rows)]


def observation_shape(obs: list[Any]) -> list[int]:
    return [len(obs), len(obs[0])] if obs and isinstance(obs[0], list) else [len(obs)]


def json_or_none(value: Any) -> Json | None:
    return None if value is None else Json(value)


def step_total(row: dict[str, Any]) -> float:
    rewards = row.get("rewards")
    return float(row["reward"]) if rewards is None else float(sum(rewards))


def _scored(number: int, row: dict[str, Any]) -> dict[str, Any]:
    rewards = row.get("rewards")
    return {
        "step": number,
        "action": float(row["action"]),
        "reward": float(row["reward"]) if rewards is None else None,
        "rewards": as_floats(rewards),
        "total_reward": step_total(row),
        "action_distribution": as_floats(row.get("action_distribution")),
        "health": as_floats(row.get("health")),
        "value_estimate": as_floats(row.get("value_estimate")),
        "predicted_reward": as_floats(row.get("predicted_reward")),
        "custom_metrics": json_or_none(row.get("custom_metrics")),
    }


def expected_tables(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What the lake must hold for ``doc``, computed straight from the source JSON.

    Partition columns and per-file facts (source, hash, size, time) are checked separately.
    """
    training, inference = doc["training"], doc["inference"]
    steps: list[dict[str, Any]] = []
    agent_steps: list[dict[str, Any]] = []
    unit_steps: list[dict[str, Any]] = []
    per_agent: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, step in enumerate(inference["steps"]):
        number, image = step["number"], step.get("image")
        steps.append({"step": number, "index": index, "image": None if image is None else base64.b64decode(image)})
        for row in step.get("agent_steps") or []:
            agent = row["agent"]
            per_agent.setdefault(agent, []).append((number, row))
            obs = row["observation_space"]
            agent_steps.append({
                **_scored(number, row),
                "agent": agent,
                "observation": as_floats(obs),
                "observation_shape": observation_shape(obs),
                "enemy_agent_health": as_floats(row.get("enemy_agent_health")),
                "enemy_unit_health": as_floats(row.get("enemy_unit_health")),
            })
            for unit in row.get("unit_steps") or []:
                unit_steps.append({**_scored(number, unit), "agent": agent, "unit": unit["unit"]})

    agents = []
    for agent, rows in per_agent.items():
        totals = [step_total(row) for _, row in rows]
        vectors = [row["rewards"] for _, row in rows if row.get("rewards") is not None]
        healths = [(number, row["health"]) for number, row in rows if row.get("health") is not None]
        values = [row["value_estimate"] for _, row in rows if row.get("value_estimate") is not None]
        units = [unit for _, row in rows for unit in row.get("unit_steps") or []]
        agents.append({
            "agent": agent,
            "length": len(rows),
            "first_step": min(number for number, _ in rows),
            "last_step": max(number for number, _ in rows),
            "total_reward": math.fsum(totals),
            "reward_totals": [math.fsum(column) for column in zip(*vectors, strict=True)] if vectors else None,
            "mean_reward": math.fsum(totals) / len(rows),
            "min_reward": min(totals),
            "max_reward": max(totals),
            "last_health": float(max(healths)[1]) if healths else None,  # health at the latest step number
            "mean_value_estimate": math.fsum(values) / len(values) if values else None,
            "unit_steps": len(units),
            "units": len({unit["unit"] for unit in units}),
        })

    def default(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    numbers = [step["number"] for step in inference["steps"]]
    episodes = [{
        "algorithm": training["algorithm"],
        "training_parallel": default(training.get("parallel"), False),
        "num_gpus": float(default(training.get("num_gpus"), 0.0)),
        "iterations": training["iterations"],
        "training_config": Json(default(training.get("config"), {})),
        "reward_mapping": training.get("reward_mapping"),
        "inference_parallel": default(inference.get("parallel"), False),
        "inference_config": Json(default(inference.get("config"), {})),
        "action_mapping": json_or_none(doc.get("action_mapping")),
        "length": len(numbers),
        "agent_steps": len(agent_steps),
        "unit_steps": len(unit_steps),
        "agents": len(per_agent),
        "images": sum(step.get("image") is not None for step in inference["steps"]),
        "first_step": min(numbers),
        "last_step": max(numbers),
        "total_reward": math.fsum(row["total_reward"] for row in agent_steps),
    }]
    return {"episodes": episodes, "episode_agents": agents, "steps": steps,
            "agent_steps": agent_steps, "unit_steps": unit_steps}


def _row_key(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return {"episodes": (), "episode_agents": (row.get("agent"),), "steps": (row.get("step"),),
            "agent_steps": (row.get("step"), row.get("agent")),
            "unit_steps": (row.get("step"), row.get("agent"), row.get("unit"))}[table]


def assert_lake_matches(lake: Path, doc: dict[str, Any], path: Path) -> None:
    """The lake holds exactly one episode, ingested from ``path``, and it equals ``doc`` exactly."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    environment = doc["training"]["environment"]
    actual = read_lake(lake)
    expected = expected_tables(doc)
    for table in TABLES:
        rows = actual[table]
        for row in rows:
            # Partition columns, in every table, come back from the folder names unchanged.
            assert row.pop("environment") == environment, table
            assert row.pop("episode_id") == digest[:32], table
        if table == "episodes":
            assert len(rows) == 1
            row = rows[0]
            assert row.pop("source") == str(path)
            assert row.pop("content_hash") == digest
            assert row.pop("source_bytes") == len(raw)
            assert row.pop("ingested_at") is not None
            assert row.pop("pipeline_version") == pipeline.__version__
        if table == "agent_steps":
            for row in rows:
                row["observation"] = unflatten(row["observation"], row["observation_shape"])
        want = sorted(expected[table], key=lambda r: _row_key(table, r))
        got = sorted(rows, key=lambda r: _row_key(table, r))
        assert [_row_key(table, r) for r in got] == [_row_key(table, r) for r in want], f"{table}: rows differ"
        for i, (a, e) in enumerate(zip(got, want, strict=True)):
            assert set(a) == set(e), f"{table}: columns {sorted(set(a) ^ set(e))} unaccounted for"
            for column in e:
                assert_same(a[column], e[column], f"{table}[{i}].{column}")


def write_episode(path: Path, doc: dict[str, Any], *, reverse: bool = False, ascii_only: bool = True) -> Path:
    path.write_text(json.dumps(reversed_keys(doc) if reverse else doc, ensure_ascii=ascii_only), encoding="utf-8")
    return path


def reversed_keys(value: Any) -> Any:
    """The same JSON value with the keys of every object, at every depth, in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def ingest_and_check(folder: Path, doc: dict[str, Any], **write: Any) -> Path:
    """Write ``doc``, ingest it into ``folder/lake``, and assert the lake equals the source; return the lake."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_episode(folder / "episode.json", doc, **write)
    lake = folder / "lake"
    result = ingest(path, lake=lake)
    assert result.status == "ingested", result.error
    assert result.environment == doc["training"]["environment"]
    expected = expected_tables(doc)
    assert (result.steps, result.agent_steps, result.unit_steps) == (
        len(expected["steps"]), len(expected["agent_steps"]), len(expected["unit_steps"])
    )
    assert_lake_matches(lake, reversed_keys(doc) if write.get("reverse") else doc, path)
    return lake


def comparable_tables(lake: Path) -> dict[str, list[dict[str, Any]]]:
    """The lake's tables without per-file columns, JSON text parsed, rows in key order."""
    out = {}
    for table, rows in read_lake(lake).items():
        for row in rows:
            for column in PER_FILE_COLUMNS:
                row.pop(column, None)
            for column in JSON_COLUMNS:
                if row.get(column) is not None:
                    row[column] = json.loads(row[column])
        out[table] = sorted(rows, key=lambda r: _row_key(table, r))
    return out


# ---------------------------------------------------------------------------------------------
# Hand-written episodes
# ---------------------------------------------------------------------------------------------


def scalar_episode() -> dict[str, Any]:
    """Scalar rewards, 1-D observations, several agents, optional fields absent or null, no mapping."""
    return {
        "training": {"environment": "LunarLander-v3", "algorithm": "DQN", "iterations": 9007199254740993,
                     "config": None, "parallel": None, "num_gpus": 2},
        "inference": {
            "config": {"eps": 1e-300, "big": 9007199254740993, "neg": -0.0, "list": [1, 1.0, "1", True, None]},
            "steps": [
                {"number": 10, "agent_steps": [
                    {"agent": "lander", "action": 3, "reward": -0.1, "observation_space": [0.5, -1e308, 5e-324, 2**53],
                     "health": 1.0, "value_estimate": -2.5, "action_distribution": [], "enemy_agent_health": None},
                    {"agent": "ü-東京", "action": -1.5, "reward": 7, "observation_space": [], "health": None,
                     "custom_metrics": {}, "predicted_reward": -(2**53)},
                ]},
                {"number": 2, "image": PNG_B64, "agent_steps": [
                    {"agent": "lander", "action": 0, "reward": 100, "observation_space": [[1.25]], "health": 0.25,
                     "unit_steps": [{"unit": "leg", "action": 1, "reward": 0.5, "rewards": None}]},
                ]},
                {"number": 0, "agent_steps": []},
                {"number": 5},
            ],
        },
    }


def pixel_episode() -> dict[str, Any]:
    """Observations of every kind in one batch: pixels (0..255 integers, stored via a byte fast path)
    next to floats, negative and out-of-byte-range integers, 1-D and 2-D, so each kind's run of rows
    must land at the right offsets."""
    observations = [
        [[0, 255, 17], [1, 0, 128]],  # pixels, 2-D
        [0, 1, 2, 255],  # pixels, 1-D
        [[0, 255], [256, 3]],  # one value above a byte: the general path
        [[0.0, 1.0], [2.5, 3.0]],  # floats equal to small integers stay floats -> same numbers
        [[7, 8], [-1, 9]],  # a negative integer
        [],  # empty
        [[9, 9, 9]],  # pixels again after the general path
        [2**53 + 1, 0, 1],  # an integer beyond 2^53: rounded, as FORMAT.md allows
        [[200, 100]],  # pixels
    ]
    doc = episode(steps=len(observations))
    for step, obs in zip(doc["inference"]["steps"], observations, strict=True):
        step["agent_steps"][0]["observation_space"] = obs
    return doc


@pytest.mark.parametrize("make", [full_episode, scalar_episode, pixel_episode, lambda: episode(steps=5)],
                         ids=["full", "scalar", "pixels", "minimal"])
def test_hand_written_episode_reads_back_exactly(tmp_path, make):
    ingest_and_check(tmp_path, make())


def test_full_episode_figures_spelled_out(tmp_path):
    """A few figures written down by hand, so the comparison helper itself cannot hide a mistake."""
    lake = ingest_and_check(tmp_path, full_episode())
    tables = read_lake(lake)
    (ep,) = tables["episodes"]
    assert (ep["length"], ep["agent_steps"], ep["unit_steps"], ep["agents"], ep["images"]) == (3, 3, 2, 2, 1)
    assert ep["total_reward"] == 1.5 + -1 + 3.25
    assert ep["reward_mapping"] == ["damage", "kills"]
    assert json.loads(ep["action_mapping"])["unit_mapping"] == {"0": "hold", "1": "move"}
    agents = {row["agent"]: row for row in tables["episode_agents"]}
    red = agents["team_red"]
    assert (red["length"], red["total_reward"], red["reward_totals"]) == (2, 4.75, [3.75, 1.0])
    assert (red["last_health"], red["mean_value_estimate"], red["unit_steps"], red["units"]) == (80.0, 1.0, 2, 2)
    assert agents["team_blue"]["last_health"] is None
    (first,) = [row for row in tables["agent_steps"] if row["agent"] == "team_red" and row["step"] == 0]
    assert first["observation"] == [0.1, 0.2, 0.3, 1.0, 2.0, 3.0] and first["observation_shape"] == [2, 3]
    assert first["reward"] is None and first["rewards"] == [1.5, 0.0] and first["total_reward"] == 1.5
    images = {row["step"]: row["image"] for row in tables["steps"]}
    assert images == {0: base64.b64decode(PNG_B64), 1: None, 2: None}


def test_scalar_episode_keeps_reward_and_leaves_rewards_null(tmp_path):
    lake = ingest_and_check(tmp_path, scalar_episode())
    rows = read_lake(lake)["agent_steps"]
    assert {(r["step"], r["agent"]): (r["reward"], r["rewards"]) for r in rows} == {
        (10, "lander"): (-0.1, None), (10, "ü-東京"): (7.0, None), (2, "lander"): (100.0, None),
    }
    (unit,) = read_lake(lake)["unit_steps"]
    assert (unit["reward"], unit["rewards"], unit["total_reward"]) == (0.5, None, 0.5)


# ---------------------------------------------------------------------------------------------
# Generated episodes
# ---------------------------------------------------------------------------------------------


def _image_b64(fmt: str, size: tuple[int, int], mode: str, color: Any) -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


IMAGES = [
    _image_b64("PNG", (2, 2), "RGB", (0, 128, 255)),
    _image_b64("PNG", (1, 1), "L", 7),
    _image_b64("GIF", (3, 2), "P", 1),
    _image_b64("BMP", (2, 3), "RGB", (255, 255, 0)),
]

ABSENT = object()  # a key left out of the object altogether (as opposed to given as null)

TEXT_CHARS = st.characters(blacklist_categories=("Cs",))  # any code point except lone surrogates
names = st.text(TEXT_CHARS, min_size=1, max_size=12)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Any finite number: floats over the whole range, integers that float64 holds exactly.
numbers = st.one_of(st.integers(-(2**53), 2**53), finite_floats)
# Numbers the pipeline sums (rewards, value estimates): every sum of a few of them is exact in float64,
# so the summary figures have one right answer whatever the order of addition.
summable = st.one_of(st.integers(-(2**20), 2**20), st.integers(-(2**36), 2**36).map(lambda k: k / 2**16))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.just(-(2**63)) | finite_floats
    | st.text(TEXT_CHARS, max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(TEXT_CHARS, max_size=8), children, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(TEXT_CHARS, max_size=8), json_values, max_size=4)
def _observations(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(values, max_size=4),
        st.tuples(st.integers(1, 3), st.integers(0, 3)).flatmap(
            lambda rc: st.lists(st.lists(values, min_size=rc[1], max_size=rc[1]), min_size=rc[0], max_size=rc[0])
        ),
    )


# Pixel-like integers (mostly 0..255, which take a byte fast path, sometimes just outside) mixed
# with any numbers, so one batch holds rows of both kinds.
observations = st.one_of(_observations(numbers), _observations(st.integers(-1, 256)))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An optional field: left out, given as null, or given a value."""
    return st.one_of(st.just(ABSENT), st.none(), strategy)


def put(obj: dict[str, Any], key: str, value: Any) -> None:
    if value is not ABSENT:
        obj[key] = value


def draw_rewards(draw: Any, row: dict[str, Any], kind: str, length: int) -> None:
    if kind == "reward":
        row["reward"] = draw(summable)
        if draw(st.booleans()):
            row["rewards"] = None  # null counts as absent
    else:
        if draw(st.booleans()):
            row["reward"] = None
        row["rewards"] = draw(st.lists(summable, min_size=length, max_size=length))


def draw_metrics(draw: Any, row: dict[str, Any]) -> None:
    put(row, "action_distribution", draw(optional(st.lists(numbers, max_size=3))))
    put(row, "health", draw(optional(numbers)))
    put(row, "value_estimate", draw(optional(summable)))
    put(row, "predicted_reward", draw(optional(numbers)))


@st.composite
def agent_steps(draw: Any, agent: str, kind: str, length: int) -> dict[str, Any]:
    row: dict[str, Any] = {"agent": agent, "action": draw(numbers)}
    draw_rewards(draw, row, kind, length)
    row["observation_space"] = draw(observations)
    draw_metrics(draw, row)
    put(row, "enemy_agent_health", draw(optional(st.lists(numbers, max_size=3))))
    put(row, "enemy_unit_health", draw(optional(st.lists(numbers, max_size=3))))
    put(row, "custom_metrics", draw(optional(json_objects)))
    unit_names = draw(st.one_of(st.just(ABSENT), st.none(), st.just([]),
                                st.lists(names, unique=True, min_size=1, max_size=2)))
    if unit_names is None or unit_names is ABSENT:
        put(row, "unit_steps", unit_names)
    else:
        units = []
        for unit in unit_names:
            u: dict[str, Any] = {"unit": unit, "action": draw(numbers)}
            # Only agent steps must agree on the reward kind; a unit step may use either.
            draw_rewards(draw, u, draw(st.sampled_from([kind, "reward", "rewards"])), length)
            draw_metrics(draw, u)
            put(u, "custom_metrics", draw(optional(json_objects)))
            units.append(u)
        row["unit_steps"] = units
    return row


@st.composite
def valid_episodes(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["reward", "rewards"]))
    mapping = draw(optional(st.lists(st.text(TEXT_CHARS, max_size=8), min_size=1, max_size=3)))
    length = len(mapping) if isinstance(mapping, list) else 1
    # Sizes are drawn first and uniformly: plain st.lists() shrinks towards (and favours) short lists.
    n_agents, n_steps = draw(st.sampled_from([2, 3, 1, 0])), draw(st.integers(1, 6))
    pool = draw(st.lists(names, unique=True, min_size=n_agents, max_size=n_agents))
    numbers_ = draw(st.lists(st.one_of(st.integers(0, 50), st.integers(0, 2**63 - 1)),
                             min_size=n_steps, max_size=n_steps, unique=True))
    steps = []
    for number in numbers_:
        step: dict[str, Any] = {"number": number}
        put(step, "image", draw(optional(st.sampled_from(IMAGES))))
        who = draw(st.permutations(pool))[: draw(st.sampled_from(range(len(pool), -1, -1)))]
        if who:
            step["agent_steps"] = [draw(agent_steps(agent, kind, length)) for agent in who]
        else:
            put(step, "agent_steps", draw(st.sampled_from([ABSENT, None, []])))
        steps.append(step)

    training: dict[str, Any] = {"environment": draw(names), "algorithm": draw(names)}
    put(training, "parallel", draw(optional(st.booleans())))
    put(training, "num_gpus", draw(optional(st.one_of(st.integers(0, 2**53), st.floats(0, 1e300)))))
    training["iterations"] = draw(st.integers(1, 2**63 - 1))
    put(training, "config", draw(optional(json_objects)))
    put(training, "reward_mapping", mapping)
    inference: dict[str, Any] = {}
    put(inference, "parallel", draw(optional(st.booleans())))
    put(inference, "config", draw(optional(json_objects)))
    inference["steps"] = steps

    doc: dict[str, Any] = {}
    labels = st.dictionaries(st.integers(-5, 2**40).map(str), st.text(TEXT_CHARS, max_size=8), max_size=3)
    action_mapping = draw(optional(labels))
    if isinstance(action_mapping, dict):
        put(action_mapping, "unit_mapping", draw(optional(labels)))
    put(doc, "action_mapping", action_mapping)
    doc["training"] = training
    doc["inference"] = inference
    return doc


PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(doc=valid_episodes(), ascii_only=st.booleans())
def test_generated_episode_reads_back_exactly(doc, ascii_only):
    with tempfile.TemporaryDirectory() as folder:
        ingest_and_check(Path(folder), doc, ascii_only=ascii_only)


# ---------------------------------------------------------------------------------------------
# Key order
# ---------------------------------------------------------------------------------------------


def assert_key_order_does_not_matter(folder: Path, doc: dict[str, Any]) -> None:
    in_order = ingest_and_check(folder / "in_order", doc)
    reversed_ = ingest_and_check(folder / "reversed", doc, reverse=True)
    written = json.loads((folder / "reversed" / "episode.json").read_text(encoding="utf-8"))
    assert list(written) == list(reversed(list(doc)))  # "inference" before "training"
    assert list(written["inference"]) == list(reversed(list(doc["inference"])))  # "steps" first
    assert comparable_tables(in_order) == comparable_tables(reversed_)


def test_reversed_key_order_gives_the_same_tables(tmp_path):
    doc = full_episode()
    assert_key_order_does_not_matter(tmp_path, doc)
    text = (tmp_path / "reversed" / "episode.json").read_text(encoding="utf-8")
    assert text.index('"steps"') < text.index('"config"') < text.index('"parallel"')
    assert text.index('"unit_mapping"') > text.rindex('"training"')  # action_mapping comes last


@PROPERTY
@given(doc=valid_episodes())
def test_generated_reversed_key_order_gives_the_same_tables(doc):
    with tempfile.TemporaryDirectory() as folder:
        assert_key_order_does_not_matter(Path(folder), doc)


# ---------------------------------------------------------------------------------------------
# Environment names
# ---------------------------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@pytest.mark.parametrize("environment", [
    "ALE/Space Invaders ü 東京",
    "../../etc",
    "..",
    "a%2Fb=c",
    "123",
    "x" * 200,  # the longest name the format allows
])
def test_environment_name_reads_back_unchanged_and_stays_inside_the_lake(tmp_path, environment):
    doc = copy.deepcopy(full_episode())
    doc["training"]["environment"] = environment
    lake = ingest_and_check(tmp_path / "work", doc)
    outside = sorted(p for p in tmp_path.rglob("*") if not _inside(p, tmp_path / "work"))
    assert outside == []
    (folder,) = [p for p in lake.iterdir() if p.name not in ("_staging", "_locks")]
    assert folder.name.startswith("environment=") and "/" not in folder.name[len("environment="):]
    committed = [p for p in lake.rglob("*.parquet") if "_staging" not in p.parts]
    assert len(committed) == len(TABLES)
    assert all(_inside(p, lake) and p.parent.parent == folder for p in committed)
    for table in TABLES:
        frame = pl.read_parquet(str(lake / "*" / "*" / f"{table}.parquet"), hive_partitioning=True, hive_schema=HIVE)
        assert set(frame["environment"].to_list()) <= {environment}
    assert pl.read_parquet(str(lake / "*" / "*" / "episodes.parquet"), hive_partitioning=True,
                           hive_schema=HIVE)["environment"].to_list() == [environment]


@pytest.mark.parametrize("environment", ["ü" * 50, "東" * 80, "a" * 200, "x=y%z" * 20],
                         ids=["umlaut-50", "cjk-80", "ascii-200", "escaped-100"])
def test_long_environment_names_whose_folder_fits_ingest(tmp_path, environment):
    """Non-ASCII stays raw UTF-8 in the folder name, so long names fit the 255-byte limit."""
    path = write_episode(tmp_path / "episode.json", episode(steps=1, environment=environment))
    result = ingest(path, lake=tmp_path / "lake")
    assert result.status == "ingested", result.error
    frame = pl.read_parquet(str(tmp_path / "lake" / "*" / "*" / "episodes.parquet"),
                            hive_partitioning=True, hive_schema=HIVE)
    assert frame["environment"].to_list() == [environment]


@pytest.mark.parametrize("environment", ["東" * 200, "a/" * 100], ids=["cjk-200", "slashes-200"])
def test_environment_names_too_long_for_a_folder_are_refused_clearly(tmp_path, environment):
    """A folder name holds at most 255 bytes: such a valid file cannot be stored, and says why."""
    path = write_episode(tmp_path / "episode.json", episode(steps=1, environment=environment))
    result = ingest(path, lake=tmp_path / "lake")
    assert result.status == "failed"
    assert "environment name is too long for a folder of the lake" in str(result.error)
    assert staging_leftovers_of(tmp_path / "lake") == []


# ---------------------------------------------------------------------------------------------
# Integer range
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    -(2**63),
    -(2**63) + 1,
    2**63 - 1,
], ids=["int64-min", "int64-min-plus-1", "int64-max"])
def test_int64_extremes_in_config_are_kept_exactly(tmp_path, value):
    doc = episode(steps=1)
    doc["inference"]["config"] = {"seed": value}
    ingest_and_check(tmp_path, doc)


def staging_leftovers_of(lake):
    staging = lake / "_staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []
