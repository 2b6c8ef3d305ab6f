"""Mutation fuzzing: valid episodes, broken at random, must be rejected cleanly or round-trip exactly.

Each example takes a valid episode, applies one to three random mutations (delete a key, change a
type, insert a key, duplicate a step number, swap ``reward`` for ``rewards``, corrupt an image's
base64, reorder keys, make a number huge) and maybe truncates the serialised bytes. Ingested into a
lake that already holds an episode, the file is either

* rejected: :class:`InvalidEpisode` with a known rule, status ``invalid`` (never ``failed``), a
  message that starts with the file's path, the lake byte for byte unchanged, no staging leftovers;
* or accepted: every table of the new episode reads back exactly what the mutated source says.

Where a mutation's outcome is certain (an unknown key in a strict object, a duplicated step
number, a number beyond int64), the test also demands that outcome and, for a single mutation,
its rule. And for every generated step the reference ``jsonschema`` validator and the hot-path
``jsonschema-rs`` validator agree.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pipeline
from pipeline import InvalidEpisode, ingest
from pipeline.ingestion.schema import _validator, part_schema
from tests.helpers import PNG_B64, episode, full_episode, lake_snapshot, staging_leftovers, write_json
from tests.ingestion.test_bad_input import KNOWN_RULES
from tests.ingestion.test_roundtrip import _row_key, assert_same, expected_tables, scalar_episode, unflatten

TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")
# Columns of the episodes table that describe the file rather than the episode.
FILE_COLUMNS = ("source", "content_hash", "source_bytes", "ingested_at", "pipeline_version")

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def valid_sources() -> list[Callable[[], dict[str, Any]]]:
    return [full_episode, scalar_episode, lambda: episode(steps=3),
            lambda: episode(steps=2, reward_mapping=["a"], config={"lr": 0.1, "layers": [64, 64]})]


# ---------------------------------------------------------------------------------------------
# Where things are in a document
# ---------------------------------------------------------------------------------------------

Path_ = tuple[Any, ...]
FREE_FORM = ("config", "custom_metrics")  # anything goes below these keys
LABEL_MAPS = ("action_mapping", "unit_mapping")
# Required keys by the kind of object that holds them, and the rule their absence breaks.
REQUIRED = {
    "root": ({"training", "inference"}, "document.required"),
    "inference": ({"steps"}, "document.required"),
    "training": ({"environment", "algorithm", "iterations"}, "document.required"),
    "step": ({"number"}, "document.required"),
    "agent": ({"agent", "action", "observation_space"}, "document.required"),
    "unit": ({"unit", "action"}, "document.required"),
}
INTEGER_FIELDS = ("number", "iterations")
SUMMED_FIELDS = ("reward", "rewards", "value_estimate")  # summed in the summaries: kept to exact sums


def walk(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value below the root with its path (keys and list indexes)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key), value
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index), value
            yield from walk(value, (*path, index))


def get(doc: Any, path: Path_) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def kind(path: Path_) -> str | None:
    """What a dict at ``path`` is in the format, or None when it is free-form or not a format object."""
    if any(key in FREE_FORM for key in path if isinstance(key, str)):
        return "free"
    shapes = {(): "root", ("training",): "training", ("inference",): "inference", ("action_mapping",): "labels",
              ("action_mapping", "unit_mapping"): "labels"}
    if path in shapes:
        return shapes[path]
    names = tuple("#" if isinstance(key, int) else key for key in path)
    return {("inference", "steps", "#"): "step",
            ("inference", "steps", "#", "agent_steps", "#"): "agent",
            ("inference", "steps", "#", "agent_steps", "#", "unit_steps", "#"): "unit"}.get(names)


def steps_of(doc: Any) -> list[Any]:
    inference = doc.get("inference") if isinstance(doc, dict) else None
    steps = inference.get("steps") if isinstance(inference, dict) else None
    return steps if isinstance(steps, list) else []


# ---------------------------------------------------------------------------------------------
# Mutations: each changes the document in place and says what must follow
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a mutation implies: "invalid" (maybe with the rules it may break), "valid", or "unknown"."""

    verdict: str
    rules: frozenset[str] = frozenset()
    what: str = ""


@dataclass
class Case:
    doc: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    patches: dict[str, str] = field(default_factory=dict)  # text -> replacement in the serialised file
    truncate_at: int | None = None


OTHER_TYPE_VALUES = [None, True, False, 0, -1, 7, 1.5, -0.25, "", "x", [], [1.0], [[1]], {}, {"a": 1}]
JSON_TYPE = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
OVERFLOW = 1.2345678901234567e300  # serialised then replaced by a literal beyond float64


def delete_key(draw: Any, case: Case) -> Outcome:
    keys = [(p, v) for p, v in walk(case.doc) if isinstance(p[-1], str)]
    if not keys:
        return Outcome("unknown")
    path = draw(st.sampled_from([p for p, _ in keys]))
    parent_path, key = path[:-1], path[-1]
    del get(case.doc, parent_path)[key]
    required, rule = REQUIRED.get(kind(parent_path) or "", (set(), ""))
    if key in required:
        return Outcome("invalid", frozenset({rule}), f"delete required {path}")
    return Outcome("unknown", what=f"delete {path}")


def change_type(draw: Any, case: Case) -> Outcome:
    path, value = draw(st.sampled_from(list(walk(case.doc))))
    others = [v for v in OTHER_TYPE_VALUES if JSON_TYPE[type(v)] != JSON_TYPE[type(value)]]
    new = draw(st.sampled_from(others))
    get(case.doc, path[:-1])[path[-1]] = copy.deepcopy(new)
    return Outcome("unknown", what=f"{path}: {value!r} -> {new!r}")


def insert_key(draw: Any, case: Case) -> Outcome:
    objects = [((), case.doc), *[(p, v) for p, v in walk(case.doc) if isinstance(v, dict)]]
    path, target = draw(st.sampled_from(objects))
    key = "zz_fuzz_" + draw(st.text("abc", min_size=1, max_size=3))
    if key in target:
        return Outcome("unknown")
    target[key] = copy.deepcopy(draw(st.sampled_from(OTHER_TYPE_VALUES)))
    where = kind(path)
    if where == "free":
        return Outcome("valid", what=f"insert {key} in free-form {path}")
    if where in ("root", "inference"):
        return Outcome("invalid", frozenset({"document.unknown_key"}), f"insert {key} at {path}")
    if where == "labels":  # a label value that is not a string breaks value.type too; either may be reported
        rules = {"value.key_pattern"} if isinstance(target[key], str) else {"value.key_pattern", "value.type"}
        return Outcome("invalid", frozenset(rules), f"insert {key} at {path}")
    if where is not None:
        return Outcome("invalid", frozenset({"document.unknown_key"}), f"insert {key} at {path}")
    return Outcome("unknown", what=f"insert {key} at {path}")


def duplicate_step_number(draw: Any, case: Case) -> Outcome:
    steps = steps_of(case.doc)
    if len(steps) < 2 or not all(isinstance(s, dict) and "number" in s for s in steps):
        return Outcome("unknown")
    i, j = draw(st.permutations(range(len(steps))))[:2]
    steps[j]["number"] = steps[i]["number"]
    numbers = [s["number"] for s in steps]
    if all(type(n) is int and n >= 0 for n in numbers):
        return Outcome("invalid", frozenset({"step.number_unique"}), f"steps {i} and {j} share a number")
    return Outcome("unknown")


def swap_reward(draw: Any, case: Case) -> Outcome:
    rows = [(p, v) for p, v in walk(case.doc) if kind(p) in ("agent", "unit") and isinstance(v, dict)]
    if not rows:
        return Outcome("unknown")
    path, row = draw(st.sampled_from(rows))
    if row.get("rewards") is not None:
        rewards = row.pop("rewards")
        row["reward"] = rewards[0] if isinstance(rewards, list) and rewards else 0.0
    else:
        reward = row.pop("reward", 0.0)
        row.pop("rewards", None)
        row["rewards"] = [reward]
    return Outcome("unknown", what=f"swap reward kind at {path}")


BAD_BASE64 = [
    (lambda b: b[:10] + " " + b[10:], "image.base64"),
    (lambda b: b[:20] + "\n" + b[20:], "image.base64"),
    (lambda b: b.replace("+", "-").replace("/", "_") if ("+" in b or "/" in b) else "-_" + b[2:], "image.base64"),
    (lambda b: b[:5] + "!" + b[6:], "image.base64"),
    (lambda b: b[:5] + "é" + b[6:], "image.base64"),
    (lambda b: b + "====", "image.base64"),
    (lambda b: "aGVsbG8sIHdvcmxk", "image.decodable"),  # "hello, world"
    (lambda b: b[: len(b) // 8 * 4], "image.decodable"),  # valid base64 of the first bytes only: no full header
]


def corrupt_base64(draw: Any, case: Case) -> Outcome:
    steps = steps_of(case.doc)
    if not steps:
        return Outcome("unknown")
    index = draw(st.integers(0, len(steps) - 1))
    if not isinstance(steps[index], dict):
        return Outcome("unknown")
    image = steps[index].get("image")
    text = image if isinstance(image, str) else PNG_B64
    damage, rule = draw(st.sampled_from(BAD_BASE64))
    steps[index]["image"] = damage(text)
    if damage(text) == text:
        return Outcome("unknown")
    return Outcome("invalid", frozenset({rule} | ({"image.decodable"} if rule == "image.base64" else set())),
                   f"image of step {index}")


def reorder_keys(draw: Any, case: Case) -> Outcome:
    objects = [((), case.doc), *[(p, v) for p, v in walk(case.doc) if isinstance(v, dict)]]
    path, target = draw(st.sampled_from(objects))
    order = draw(st.permutations(list(target)))
    items = [(k, target[k]) for k in order]
    target.clear()
    target.update(items)
    return Outcome("valid", what=f"reorder {path}")


def huge_number(draw: Any, case: Case) -> Outcome:
    leaves = [(p, v) for p, v in walk(case.doc) if type(v) in (int, float)]
    if not leaves:
        return Outcome("unknown")
    path, _ = draw(st.sampled_from(leaves))
    field_name = next((k for k in reversed(path) if isinstance(k, str)), "")
    choices: list[tuple[Any, Outcome]] = [
        (2**63, Outcome("invalid", frozenset({"number.int64"}))),
        (-(2**63) - 1, Outcome("invalid", frozenset({"number.int64"}))),
        (10**30, Outcome("invalid", frozenset({"number.int64"}))),
        (OVERFLOW, Outcome("invalid", frozenset({"number.finite"}))),
        (-OVERFLOW, Outcome("invalid", frozenset({"number.finite"}))),
    ]
    if field_name in INTEGER_FIELDS:
        # An integral float is an integer to JSON Schema, so these pass the schema and must still be refused.
        choices += [(1e19, Outcome("invalid", frozenset({"number.int64"}))),
                    (-1e300, Outcome("invalid", frozenset({"number.int64", "value.minimum"})))]
    if field_name not in SUMMED_FIELDS:
        choices.append((2**63 - 1, Outcome("unknown")))
        if field_name not in INTEGER_FIELDS:
            choices += [(1e300, Outcome("unknown")), (5e-324, Outcome("unknown"))]
    value, outcome = draw(st.sampled_from(choices))
    get(case.doc, path[:-1])[path[-1]] = value
    if abs(value) == OVERFLOW:
        case.patches[repr(OVERFLOW)] = "1e400"
    outcome.what = f"{path} = {value!r}"
    return outcome


# Keys whose deletion can break a rule although they are optional.
DELETE_MAY_BREAK = ("reward", "rewards", "reward_mapping")


def delete_optional_key(draw: Any, case: Case) -> Outcome:
    """Delete a key the format does not require (or any key inside config or custom metrics)."""
    keys = []
    for path, _ in walk(case.doc):
        parent, key = path[:-1], path[-1]
        if not isinstance(key, str) or (key in DELETE_MAY_BREAK and kind(parent) != "free"):
            continue
        if key not in REQUIRED.get(kind(parent) or "", (set(), ""))[0]:
            keys.append(path)
    if not keys:
        return Outcome("valid")
    path = draw(st.sampled_from(keys))
    del get(case.doc, path[:-1])[path[-1]]
    return Outcome("valid", what=f"delete optional {path}")


def insert_free_form_key(draw: Any, case: Case) -> Outcome:
    """Insert a key into config or custom metrics, where anything goes."""
    objects = [(p, v) for p, v in walk(case.doc) if isinstance(v, dict) and kind(p) == "free"]
    if not objects:
        return Outcome("valid")
    path, target = draw(st.sampled_from(objects))
    target[draw(st.text(max_size=4))] = copy.deepcopy(draw(st.sampled_from(OTHER_TYPE_VALUES)))
    return Outcome("valid", what=f"insert into {path}")


BENIGN = {"reorder_keys": reorder_keys, "delete_optional_key": delete_optional_key,
          "insert_free_form_key": insert_free_form_key}

MUTATIONS = {
    "delete_key": delete_key, "change_type": change_type, "insert_key": insert_key,
    "duplicate_step_number": duplicate_step_number, "swap_reward": swap_reward,
    "corrupt_base64": corrupt_base64, "reorder_keys": reorder_keys, "huge_number": huge_number,
}


@st.composite
def mutated_cases(draw: Any) -> Case:
    case = Case(doc=draw(st.sampled_from(valid_sources()))())
    # One case in three keeps the episode valid, so that the round-trip half of the property is exercised.
    pool = BENIGN if draw(st.integers(0, 2)) == 0 else {**MUTATIONS, **BENIGN}
    for name in draw(st.lists(st.sampled_from(sorted(pool)), min_size=1, max_size=3)):
        case.outcomes.append(pool[name](draw, case))
    if pool is not BENIGN and draw(st.integers(0, 5)) == 0:
        case.truncate_at = draw(st.integers(1, 10**9))
    return case


def serialise(case: Case, ascii_only: bool) -> bytes:
    text = json.dumps(case.doc, ensure_ascii=ascii_only)
    for old, new in case.patches.items():
        text = text.replace(old, new)
    data = text.encode()
    if case.truncate_at is not None:
        data = data[: 1 + case.truncate_at % (len(data) - 1)]
    return data


def expectation(case: Case) -> tuple[str, frozenset[str]]:
    """The verdict the mutations imply, and the allowed rules when exactly one rule is certain."""
    if case.truncate_at is not None:
        return "invalid", frozenset()
    verdicts = [o.verdict for o in case.outcomes]
    # Only the last mutation's "invalid" is certain: an earlier one may be undone by a later deletion.
    if verdicts[-1] == "invalid":
        last = case.outcomes[-1]
        return "invalid", last.rules if len(case.outcomes) == 1 else frozenset()
    if all(v == "valid" for v in verdicts):
        return "valid", frozenset()
    return "unknown", frozenset()


# ---------------------------------------------------------------------------------------------
# Reading one episode back
# ---------------------------------------------------------------------------------------------


def assert_episode_reads_back(folder: Path, doc: dict[str, Any], data: bytes) -> None:
    """The five tables in ``folder`` say exactly what ``doc`` (the bytes ``data``) says."""
    expected = expected_tables(doc)
    for table in TABLES:
        rows = pl.read_parquet(folder / f"{table}.parquet").to_dicts()
        for row in rows:
            row.pop("environment", None)
            row.pop("episode_id", None)
            if table == "episodes":
                assert row["content_hash"] == hashlib.sha256(data).hexdigest()
                assert row["pipeline_version"] == pipeline.__version__
                for column in FILE_COLUMNS:
                    row.pop(column)
            if table == "agent_steps":
                row["observation"] = unflatten(row["observation"], row["observation_shape"])
        got = sorted(rows, key=lambda r: _row_key(table, r))
        want = sorted(expected[table], key=lambda r: _row_key(table, r))
        assert [_row_key(table, r) for r in got] == [_row_key(table, r) for r in want], table
        for i, (a, e) in enumerate(zip(got, want, strict=True)):
            assert set(a) == set(e), f"{table}: columns {sorted(set(a) ^ set(e))}"
            for column in e:
                assert_same(a[column], e[column], f"{table}[{i}].{column}")


# ---------------------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    seed = write_json(folder / "seed.json", episode(steps=2, environment="Seed-v0"))
    assert ingest(seed, lake=folder / "lake").status == "ingested"
    return folder / "lake"


@FUZZ
@given(case=mutated_cases(), ascii_only=st.booleans())
def test_mutated_episode_is_rejected_cleanly_or_round_trips(seeded, case, ascii_only):
    verdict, rules = expectation(case)
    data = serialise(case, ascii_only)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.json"
        path.write_bytes(data)
        lake = Path(folder) / "lake"
        shutil.copytree(seeded, lake)
        before = lake_snapshot(lake)
        result = ingest(path, lake=lake)
        notes = [o.what for o in case.outcomes]
        event(f"{result.status}: {result.error.rule if isinstance(result.error, InvalidEpisode) else '-'}")
        if result.status == "invalid":
            error = result.error
            assert isinstance(error, InvalidEpisode)
            assert str(error).startswith(f"{path}: "), str(error)
            assert error.rule in KNOWN_RULES, (error.rule, str(error))
            assert verdict != "valid", (str(error), notes)
            assert not rules or error.rule in rules, (str(error), notes)
            assert lake_snapshot(lake) == before, "a rejected file changed the lake"
            assert staging_leftovers(lake) == []
        else:
            assert result.status == "ingested", (result.status, str(result.error), notes)
            assert verdict != "invalid", ("accepted", notes)
            assert staging_leftovers(lake) == []
            environment = pipeline.lake.layout.environment_folder(case.doc["training"]["environment"])
            folder_ = lake / environment / f"episode_id={result.episode_id}"
            assert_episode_reads_back(folder_, case.doc, data)


REFERENCE = jsonschema.Draft202012Validator(part_schema("step"))


@FUZZ
@given(case=mutated_cases())
def test_reference_and_hot_path_validators_agree_on_every_mutated_step(case):
    for step in steps_of(case.doc):
        step = json.loads(json.dumps(step))
        valid = REFERENCE.is_valid(step)
        event("valid step" if valid else "invalid step")
        assert _validator("step").is_valid(step) == valid, step


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-5, 5).map(float))
number_lists = st.lists(numbers, max_size=3)
names = st.text(max_size=3) | st.sampled_from(["a" * 200, "b" * 201])
# A plausible (mostly valid) value for each field of a step, an agent step or a unit step.
PLAUSIBLE = {
    "number": st.integers(-1, 2**63 - 1) | st.just(1.0),
    "image": st.none() | st.just(PNG_B64),
    "agent": names, "unit": names,
    "action": numbers, "reward": st.none() | numbers, "rewards": st.none() | st.lists(numbers, max_size=3),
    "observation_space": number_lists | st.lists(st.lists(numbers, min_size=2, max_size=2), max_size=2)
    | st.lists(number_lists, max_size=2),
    "action_distribution": st.none() | number_lists, "enemy_agent_health": st.none() | number_lists,
    "enemy_unit_health": st.none() | number_lists,
    "health": st.none() | numbers, "value_estimate": st.none() | numbers, "predicted_reward": st.none() | numbers,
    "custom_metrics": st.none() | st.dictionaries(st.text(max_size=3), json_values, max_size=2),
}
STEP_KEYS = ("number", "image", "agent_steps")
AGENT_KEYS = ("agent", "action", "reward", "rewards", "observation_space", "action_distribution", "health",
              "value_estimate", "predicted_reward", "enemy_agent_health", "enemy_unit_health", "custom_metrics",
              "unit_steps")
UNIT_KEYS = ("unit", "action", "reward", "rewards", "action_distribution", "health", "value_estimate",
             "predicted_reward", "custom_metrics")


@st.composite
def objects(draw: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """An object of the format: each key absent, plausible, or any JSON value; now and then an unknown key."""
    row: dict[str, Any] = {}
    for key in keys:
        choice = draw(st.sampled_from(["absent", "plausible", "plausible", "plausible", "any"]))
        if choice == "absent":
            continue
        if choice == "any":
            row[key] = draw(json_values)
        elif key == "agent_steps":
            row[key] = draw(st.none() | st.lists(objects(AGENT_KEYS), max_size=2))
        elif key == "unit_steps":
            row[key] = draw(st.none() | st.lists(objects(UNIT_KEYS), max_size=2))
        else:
            row[key] = draw(PLAUSIBLE[key])
    if draw(st.integers(0, 9)) == 0:
        row["zz"] = draw(json_values)
    return row


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(step=objects(STEP_KEYS))
def test_reference_and_hot_path_validators_agree_on_arbitrary_steps(step):
    valid = REFERENCE.is_valid(step)
    event("valid step" if valid else "invalid step")
    assert _validator("step").is_valid(step) == valid, step
