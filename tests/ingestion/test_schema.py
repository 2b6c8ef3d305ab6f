"""The JSON Schema: a valid 2020-12 schema, applied identically by the hot path and the reference.

The hot path validates with jsonschema-rs; python-jsonschema is the reference implementation.
Property tests feed both the same generated values (valid ones and mutated ones) and require the
same verdict; every error the hot path reports must read as a sentence, not as validator output.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema.exceptions import ValidationError

from pipeline import InvalidEpisode, ingest, validate
from pipeline.ingestion.schema import (
    EXACT_FLOAT_INTEGERS,
    check_part,
    check_step,
    load_schema,
    part_schema,
    schema_path,
)
from tests.helpers import episode, full_episode, mutate


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """``pattern`` with ECMA-262 semantics for a final ``$`` (end of input only).

    python-jsonschema hands patterns to ``re.search``, where ``$`` also matches before a final
    newline, so it accepts the action_mapping key ``"1\\n"``; JSON Schema specifies ECMA-262
    regular expressions, under which jsonschema-rs (correctly) rejects it. Only that one known
    difference is adjusted here; ``test_trailing_newline_key_is_rejected`` pins the behaviour.
    """
    if not validator.is_type(instance, "string"):
        return
    ecma = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if not re.search(ecma, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


ReferenceValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def reference(schema: dict[str, Any]) -> Any:
    return ReferenceValidator(schema)


REFERENCE = {part: reference(part_schema(part)) for part in ("step", "training", "action_mapping")}
HOT_PATH = {part: jsonschema_rs.validator_for(part_schema(part)) for part in ("step", "training", "action_mapping")}
DOCUMENT_REFERENCE = reference(load_schema())
DOCUMENT_HOT_PATH = jsonschema_rs.validator_for(load_schema())

# Rules of the messages written for people (pipeline/rules.py); "schema" is the raw fallback.
HUMAN_RULES = {"value.type", "document.required", "document.unknown_key", "value.length", "value.minimum", "number.int64", "value.min_items", "value.key_pattern",
               "reward.exactly_one", "observation.shape"}
# Fragments of python-jsonschema / jsonschema-rs messages that must never reach a user.
RAW_FRAGMENTS = ("is not valid under", "is not of type", "Additional properties", "is a required property",
                 "is too short", "is too long", "is less than", "does not match", "is not valid under any",
                 "valid under each of", "unexpected)", "jsonschema", "$defs", "#/")


# ---------------------------------------------------------------------------------------------
# The schema file itself
# ---------------------------------------------------------------------------------------------


def test_schema_file_is_a_valid_2020_12_schema():
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    for definition in schema["$defs"]:
        jsonschema.Draft202012Validator.check_schema(part_schema(definition))


def test_every_definition_is_used():
    text = json.dumps(load_schema())
    unused = [name for name in load_schema()["$defs"] if f'"#/$defs/{name}"' not in text]
    assert unused == []


# ---------------------------------------------------------------------------------------------
# Generators: values that are valid under the schema, and mutations of them
# ---------------------------------------------------------------------------------------------

ABSENT = object()
TEXT_CHARS = st.characters(blacklist_categories=("Cs",))
names = st.one_of(st.text(TEXT_CHARS, min_size=1, max_size=8), st.text(TEXT_CHARS, min_size=198, max_size=200))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), finite_floats)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(TEXT_CHARS, max_size=5),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(TEXT_CHARS, max_size=5), children, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(st.text(TEXT_CHARS, max_size=5), json_values, max_size=3)
# Ragged 2-D observations are schema-valid (rectangularity is checked after the schema).
observations = st.one_of(st.lists(numbers, max_size=3), st.lists(st.lists(numbers, max_size=3), min_size=1, max_size=3))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), st.none(), strategy)


def mostly(strategy: st.SearchStrategy[Any], empty: Any) -> st.SearchStrategy[Any]:
    """Usually a value from ``strategy``; otherwise left out, null, or ``empty``."""
    return st.integers(0, 4).flatmap(lambda i: strategy if i < 3 else st.sampled_from([ABSENT, None, empty]))


def put(obj: dict[str, Any], key: str, value: Any) -> None:
    if value is not ABSENT:
        obj[key] = value


def _rewards(draw: Any, row: dict[str, Any]) -> None:
    if draw(st.booleans()):
        row["reward"] = draw(numbers)
        put(row, "rewards", draw(st.sampled_from([ABSENT, None])))
    else:
        put(row, "reward", draw(st.sampled_from([ABSENT, None])))
        row["rewards"] = draw(st.lists(numbers, min_size=1, max_size=3))


def _metrics(draw: Any, row: dict[str, Any]) -> None:
    put(row, "action_distribution", draw(optional(st.lists(numbers, max_size=3))))
    for key in ("health", "value_estimate", "predicted_reward"):
        put(row, key, draw(optional(numbers)))
    put(row, "custom_metrics", draw(optional(json_objects)))


@st.composite
def unit_steps(draw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"unit": draw(names), "action": draw(numbers)}
    _rewards(draw, row)
    _metrics(draw, row)
    return row


@st.composite
def agent_steps(draw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"agent": draw(names), "action": draw(numbers), "observation_space": draw(observations)}
    _rewards(draw, row)
    _metrics(draw, row)
    put(row, "enemy_agent_health", draw(optional(st.lists(numbers, max_size=3))))
    put(row, "enemy_unit_health", draw(optional(st.lists(numbers, max_size=3))))
    put(row, "unit_steps", draw(mostly(st.lists(unit_steps(), min_size=1, max_size=2), [])))
    return row


@st.composite
def valid_steps(draw: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"number": draw(st.one_of(st.integers(0, 5), st.integers(0, 2**63 - 1)))}
    put(step, "image", draw(optional(st.text(max_size=8))))  # base64 and decoding are checked after the schema
    put(step, "agent_steps", draw(mostly(st.lists(agent_steps(), min_size=1, max_size=2), [])))
    return step


@st.composite
def valid_training(draw: Any) -> dict[str, Any]:
    training: dict[str, Any] = {"environment": draw(names), "algorithm": draw(names),
                                "iterations": draw(st.integers(1, 2**63 - 1))}
    put(training, "parallel", draw(optional(st.booleans())))
    put(training, "num_gpus", draw(optional(st.one_of(st.integers(0, 2**53), st.floats(0, 1e300)))))
    put(training, "config", draw(optional(json_objects)))
    put(training, "reward_mapping", draw(optional(st.lists(st.text(TEXT_CHARS, max_size=5), min_size=1, max_size=3))))
    return dict(draw(st.permutations(list(training.items()))))


label_keys = st.integers(-(2**40), 2**40).map(str)
labels = st.dictionaries(label_keys, st.text(TEXT_CHARS, max_size=5), max_size=3)


@st.composite
def valid_action_mappings(draw: Any) -> dict[str, Any] | None:
    mapping = draw(st.one_of(st.none(), labels))
    if mapping is not None:
        put(mapping, "unit_mapping", draw(optional(labels)))
    return mapping


# Replacement values: wrong types, empty strings, negative and integral-float numbers, nulls, ...
nasty_values = st.one_of(
    st.none(), st.booleans(), st.just(""), st.text(TEXT_CHARS, max_size=3), st.just("1"),
    st.integers(-3, 3), st.sampled_from([-1, 0, 1.0, -0.0, 2.5, 1e300, 2**63 - 1, -(2**63) + 1]), finite_floats,
    st.just([]), st.just({}), st.lists(st.integers(0, 3), max_size=2), st.just([[1.0], 2]), st.just([[1, 2], [3]]),
    st.just([["a"]]), st.just({"x": 1}), st.sampled_from(["x" * 200, "x" * 201, "é" * 201]),
)
# Keys that belong somewhere in the format (often not where they are added) and unknown ones.
known_keys = ["number", "image", "agent_steps", "agent", "unit", "action", "reward", "rewards",
              "observation_space", "action_distribution", "health", "value_estimate", "predicted_reward",
              "enemy_agent_health", "enemy_unit_health", "custom_metrics", "unit_steps", "environment",
              "algorithm", "parallel", "num_gpus", "iterations", "config", "reward_mapping", "unit_mapping"]
FORMAT_KEYS = frozenset(known_keys)
extra_keys = st.one_of(st.sampled_from(known_keys), st.text(TEXT_CHARS, max_size=6),
                       st.sampled_from(["01", "-0", "+1", " 1", "1 ", "1\n", "١", "1.0", "0x1", "-", "Unit_mapping"]))


def _places(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) below ``value``."""
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            _places(value[key], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i))
            _places(item, out)
    return out


def _objects(value: Any) -> list[dict[str, Any]]:
    found = [value] if isinstance(value, dict) else []
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for child in children:
        found.extend(_objects(child))
    return found


def _is_format_object(obj: dict[str, Any]) -> bool:
    return bool(obj) and all(key in FORMAT_KEYS for key in obj)


@st.composite
def mutated(draw: Any, valid: st.SearchStrategy[Any]) -> Any:
    """A valid value with one to three mutations somewhere inside it (the result is often invalid)."""
    value = copy.deepcopy(draw(valid))
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        op = draw(st.sampled_from(["replace", "delete", "add_key", "rewards", "root"]))
        places, objects = _places(value, []), _objects(value)
        if draw(st.integers(0, 3)):  # mostly aim at the format's own objects, not free-form JSON or number lists
            objects = [o for o in objects if _is_format_object(o)] or objects
            places = [(c, k) for c, k in places if any(c is o for o in objects)] or places
        if op == "replace" and places:
            container, key = draw(st.sampled_from(places))
            container[key] = copy.deepcopy(draw(nasty_values))  # constants are shared
        elif op == "delete" and places:
            container, key = draw(st.sampled_from(places))
            del container[key]
        elif op == "add_key" and objects:
            draw(st.sampled_from(objects))[draw(extra_keys)] = copy.deepcopy(draw(st.one_of(nasty_values, numbers)))
        elif op == "rewards":
            rows = [o for o in objects if "reward" in o or "rewards" in o]
            if rows:
                row = draw(st.sampled_from(rows))
                if draw(st.booleans()):  # both
                    row["reward"], row["rewards"] = draw(numbers), draw(st.lists(numbers, min_size=1, max_size=2))
                else:  # neither
                    row.pop("reward", None)
                    row.pop("rewards", None)
        elif op == "root" and draw(st.integers(0, 9)) == 0:
            value = copy.deepcopy(draw(nasty_values))
    return value


PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_human_error(error: InvalidEpisode, base: str) -> None:
    assert error.rule in HUMAN_RULES, f"raw validator error reached the user: {error.rule}: {error}"
    assert error.path is not None and error.path.startswith(base), error.path
    for fragment in RAW_FRAGMENTS:
        assert fragment not in error.message, f"raw validator text in {error.message!r}"


# ---------------------------------------------------------------------------------------------
# Differential properties
# ---------------------------------------------------------------------------------------------


@PROPERTY
@given(step=st.one_of(valid_steps(), mutated(valid_steps())))
def test_step_verdict_matches_reference(step):
    expected = REFERENCE["step"].is_valid(step)
    assert HOT_PATH["step"].is_valid(step) == expected
    if expected:
        check_step(step, 7)
    else:
        with pytest.raises(InvalidEpisode) as caught:
            check_step(step, 7)
        assert_human_error(caught.value, "inference.steps[7]")
        number = step.get("number") if isinstance(step, dict) else None
        if type(number) is int:
            assert caught.value.step == number


@PROPERTY
@given(training=st.one_of(valid_training(), mutated(valid_training())))
def test_training_verdict_matches_reference(training):
    expected = REFERENCE["training"].is_valid(training)
    assert HOT_PATH["training"].is_valid(training) == expected
    iterations = training.get("iterations") if isinstance(training, dict) else None
    if expected and type(iterations) is float and abs(iterations) >= EXACT_FLOAT_INTEGERS:
        # The schema's integer takes 2.0**53 (JSON Schema counts a float with no fraction as an integer);
        # the rule on top of it refuses a float that may have been rounded (FORMAT.md: int64 everywhere).
        with pytest.raises(InvalidEpisode) as caught:
            check_part("training", training)
        assert caught.value.rule == "value.type" and caught.value.path == "training.iterations"
    elif expected:
        check_part("training", training)
    else:
        with pytest.raises(InvalidEpisode) as caught:
            check_part("training", training)
        assert_human_error(caught.value, "training")


@PROPERTY
@given(mapping=st.one_of(valid_action_mappings(), mutated(valid_action_mappings())))
def test_action_mapping_verdict_matches_reference(mapping):
    expected = REFERENCE["action_mapping"].is_valid(mapping)
    assert HOT_PATH["action_mapping"].is_valid(mapping) == expected
    if expected:
        check_part("action_mapping", mapping)
    else:
        with pytest.raises(InvalidEpisode) as caught:
            check_part("action_mapping", mapping)
        assert_human_error(caught.value, "action_mapping")


@pytest.mark.parametrize("key, valid", [("0", True), ("-1", True), ("12", True), ("unit_mapping", True),
                                        ("01", False), ("+1", False), (" 1", False), ("1.0", False),
                                        ("1\n", False), ("١", False), ("", False)])
def test_action_mapping_keys(key, valid):
    assert HOT_PATH["action_mapping"].is_valid({key: "label"} if key != "unit_mapping" else {key: {"0": "x"}}) is valid
    assert HOT_PATH["action_mapping"].is_valid({"unit_mapping": {key: "x"}}) is (valid and key != "unit_mapping")


def test_trailing_newline_key_is_rejected():
    """ECMA-262 ``$`` is the end of input: "1\\n" is not an integer key (python-jsonschema alone differs)."""
    assert not jsonschema_rs.validator_for(part_schema("action_mapping")).is_valid({"1\n": "fire"})
    assert jsonschema.Draft202012Validator(part_schema("action_mapping")).is_valid({"1\n": "fire"})  # the quirk
    with pytest.raises(InvalidEpisode) as caught:
        check_part("action_mapping", {"1\n": "fire"})
    assert caught.value.rule == "value.key_pattern"
    assert caught.value.path == "action_mapping"


NASTY = [None, True, False, "", "x", "1", "x" * 200, "x" * 201, "é" * 201, 0, 1, -1, 1.0, -0.0, 2.5, -2.5, 1e300,
         2**63 - 1, -(2**63) + 1, [], {}, [1], [1.0, "a"], [[1.0], 2], [[1, 2], [3]], [["a"]], [None], {"x": 1}]


def _scalar_step() -> dict[str, Any]:
    step = copy.deepcopy(full_episode()["inference"]["steps"][0])
    for row in [*step["agent_steps"], *step["agent_steps"][0]["unit_steps"]]:
        row["reward"] = row.pop("rewards")[0]
    return step


SEEDS = {
    "step": [full_episode()["inference"]["steps"][0], _scalar_step(), {"number": 3}],
    "training": [full_episode()["training"], {"environment": "e", "algorithm": "a", "iterations": 1}],
    "action_mapping": [full_episode()["action_mapping"], {"0": "noop"}],
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and indexes from the root) of every value below ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    out = []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def single_mutations(value: Any) -> list[Any]:
    """Every value that differs from ``value`` by one replacement, deletion or added key."""
    out = []
    # Inside free-form JSON anything goes, and one element of a list stands for the others.
    paths = [p for p in _paths(value) if not any(k in ("config", "custom_metrics") for k in p[:-1])
             and not any(type(k) is int and k > 0 for k in p)]
    for path in paths:
        for replacement in [*NASTY, "<delete>"]:
            copied = copy.deepcopy(value)
            parent = _at(copied, path[:-1])
            if replacement == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(replacement)
            out.append(copied)
    for path in [(), *paths]:
        obj = _at(value, path)
        if not isinstance(obj, dict) or (path and not _is_format_object(obj)):
            continue
        for key in [*known_keys, "zzz", "1", "-1", "01"]:
            for added in (1, "x", None, [1.0]):
                copied = copy.deepcopy(value)
                _at(copied, path)[key] = added
                out.append(copied)
    return out


@pytest.mark.parametrize("part", ["step", "training", "action_mapping"])
def test_every_single_mutation_gets_the_reference_verdict(part):
    """Exhaustive companion of the properties: one change anywhere in a full value, every kind of change."""
    disagreements = []
    checked = 0
    for seed in SEEDS[part]:
        assert REFERENCE[part].is_valid(seed) and HOT_PATH[part].is_valid(seed)
        for value in single_mutations(seed):
            checked += 1
            expected = REFERENCE[part].is_valid(value)
            if HOT_PATH[part].is_valid(value) != expected:
                disagreements.append(value)
            elif not expected:
                with pytest.raises(InvalidEpisode) as caught:
                    check_step(value, 0) if part == "step" else check_part(part, value)
                assert_human_error(caught.value, "inference.steps[0]" if part == "step" else part)
    assert checked > 200
    assert disagreements == []


@st.composite
def valid_documents(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"training": draw(valid_training()),
                           "inference": {"steps": draw(st.lists(valid_steps(), min_size=1, max_size=2))}}
    put(doc["inference"], "parallel", draw(optional(st.booleans())))
    put(doc["inference"], "config", draw(optional(json_objects)))
    put(doc, "action_mapping", draw(st.one_of(st.just(ABSENT), valid_action_mappings())))
    return dict(draw(st.permutations(list(doc.items()))))


DOCUMENTS = [
    pytest.param(full_episode(), True, id="full"),
    pytest.param(episode(steps=2), True, id="minimal"),
    pytest.param(mutate(full_episode(), "inference.steps.0.agent_steps.1.reward", 1.0), False, id="both-rewards"),
    pytest.param(mutate(episode(), "inference.steps", []), False, id="no-steps"),
    pytest.param(mutate(episode(), "training", delete=True), False, id="no-training"),
    pytest.param(mutate(episode(), "extra", {}), False, id="unknown-top-level-key"),
    pytest.param(mutate(episode(), "inference.steps.0.number", -1), False, id="negative-step"),
    pytest.param(mutate(full_episode(), "action_mapping.unit_mapping.x", "y"), False, id="unit-mapping-key"),
    pytest.param(mutate(full_episode(), "training.reward_mapping", []), False, id="empty-reward-mapping"),
]


@pytest.mark.parametrize("document, valid", DOCUMENTS)
def test_whole_document_verdict_matches_reference(document, valid):
    assert DOCUMENT_REFERENCE.is_valid(document) is valid
    assert DOCUMENT_HOT_PATH.is_valid(document) is valid


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(document=st.one_of(valid_documents(), mutated(valid_documents())))
def test_generated_document_verdict_matches_reference(document):
    assert DOCUMENT_HOT_PATH.is_valid(document) == DOCUMENT_REFERENCE.is_valid(document)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

AGENT = "inference.steps[0].agent_steps[0]"


def _step(**agent_fields: Any) -> dict[str, Any]:
    row = {"agent": "p0", "action": 1, "reward": 0.5, "observation_space": [0.0, 1.0]}
    row.update(agent_fields)
    return {"number": 0, "agent_steps": [{k: v for k, v in row.items() if v is not ABSENT}]}


@pytest.mark.parametrize("step, rule, path, message", [
    (_step(rewards=[1.0]), "reward.exactly_one", AGENT,
     'exactly one of "reward" or "rewards" is required, found both'),
    (_step(reward=ABSENT), "reward.exactly_one", AGENT,
     'exactly one of "reward" or "rewards" is required, found neither'),
    (_step(agent=ABSENT), "document.required", AGENT, '"agent" is required'),
    (_step(observation_space=ABSENT), "document.required", AGENT, '"observation_space" is required'),
    (_step(rewardz=1), "document.unknown_key", AGENT, 'unknown key "rewardz"'),
    (_step(reward="1"), "value.type", f"{AGENT}.reward", "must be a number, found a string"),
    (_step(action=True), "value.type", f"{AGENT}.action", "must be a number, found a boolean"),
    (_step(health=[1]), "value.type", f"{AGENT}.health", "must be a number, found an array"),
    (_step(agent=""), "value.length", f"{AGENT}.agent", "must be 1 to 200 characters long, found 0"),
    (_step(agent="x" * 201), "value.length", f"{AGENT}.agent", "must be 1 to 200 characters long, found 201"),
    (_step(reward=ABSENT, rewards=[]), "value.min_items", f"{AGENT}.rewards", "must have at least 1 element"),
    (_step(observation_space=[[1.0], 2.0]), "observation.shape", f"{AGENT}.observation_space",
     "must be a 1-D array of numbers or a 2-D array of arrays of numbers"),
    (_step(unit_steps=[{"action": 0, "reward": 1}]), "document.required", f"{AGENT}.unit_steps[0]", '"unit" is required'),
    ({"number": -1}, "value.minimum", "inference.steps[0].number", "must be at least 0, found -1"),
    ({"number": 0, "agent_steps": {}}, "value.type", "inference.steps[0].agent_steps", "must be an array, found an object"),
])
def test_step_errors_are_written_for_people(step, rule, path, message):
    with pytest.raises(InvalidEpisode) as caught:
        check_step(step, 0)
    error = caught.value
    assert (error.rule, error.path, error.message) == (rule, path, message)
    assert error.step == step["number"]
    assert str(error) == f"{path} (step number {error.step}): {message}"


def test_step_number_of_wrong_type_is_not_reported_as_the_step():
    with pytest.raises(InvalidEpisode) as caught:
        check_step({"number": "3"}, 5)
    error = caught.value
    assert (error.rule, error.path, error.step) == ("value.type", "inference.steps[5].number", None)
    assert str(error) == "inference.steps[5].number: must be an integer, found a string"


@pytest.mark.parametrize("part, value, rule, path, message", [
    ("training", {"environment": "e", "algorithm": "a", "iterations": 0}, "value.minimum", "training.iterations",
     "must be at least 1, found 0"),
    ("training", {"environment": "e", "iterations": 1}, "document.required", "training", '"algorithm" is required'),
    ("action_mapping", {"fire": "1"}, "value.key_pattern", "action_mapping",
     'key "fire" must be an integer written as a string (like "0" or "-1")'),
    ("action_mapping", {"0": 1}, "value.type", "action_mapping.0", "must be a string, found an integer"),
])
def test_header_errors_are_written_for_people(part, value, rule, path, message):
    with pytest.raises(InvalidEpisode) as caught:
        check_part(part, value)
    assert (caught.value.rule, caught.value.path, caught.value.message) == (rule, path, message)


def test_both_rewards_error_through_ingest(reject, tmp_path):
    document = mutate(episode(steps=3), "inference.steps.2.agent_steps.0.rewards", [1.0])
    error = reject(document)
    assert (error.rule, error.path, error.step) == ("reward.exactly_one", "inference.steps[2].agent_steps[0]", 2)
    assert str(error) == (f"{tmp_path / 'episode.json'}: inference.steps[2].agent_steps[0] (step number 2): "
                          'exactly one of "reward" or "rewards" is required, found both')


# ---------------------------------------------------------------------------------------------
# What the schema accepts, the pipeline must handle
# ---------------------------------------------------------------------------------------------


def _integral_float(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("old, new", [
    ('"iterations": 10', '"iterations": 10.0'),
    ('"number": 1', '"number": 1.0'),
    ('"iterations": 10', '"iterations": 1e20'),
], ids=["iterations-10.0", "step-number-1.0", "iterations-1e20"])
def test_integers_written_as_floats_are_ingested_or_rejected_never_crash(tmp_path, old, new):
    """JSON Schema counts 1.0 as an integer, so these pass the schema; the pipeline must then cope."""
    path = tmp_path / "episode.json"
    path.write_text(_integral_float(json.dumps(episode(steps=2)), old, new), encoding="utf-8")
    checked = validate(path)
    result = ingest(path, lake=tmp_path / "lake")
    assert result.status in ("ingested", "invalid"), result.error
    assert (checked.status == "valid") == (result.status == "ingested"), (checked, result)
    if result.status == "invalid":
        assert result.error.rule != "schema"

