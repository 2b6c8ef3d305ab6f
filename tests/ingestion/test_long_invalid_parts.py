"""A schema error inside a long list or object: found without building every error the validator knows.

jsonschema-rs builds all of a value's errors at once, each with the instance in its message: one step of
100,000 empty unit steps took 26 s and 2.5 GB, and a 16 MiB step of them (5.6 million) was killed for
memory after 6 minutes at 23 GB. Lists and objects are now cut down to the first element that breaks
the schema before the errors are built (``cutdown.cut_down``); the error, its rule and its path (indexes
as in the file) are those of that element.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import InvalidEpisode, ingest, validate
from pipeline.ingestion.schema import check_part, check_step

OK_AGENT = {"agent": "a", "action": 0, "reward": 0, "observation_space": []}
OK_UNIT = {"unit": "u", "action": 1, "reward": 2}

# (where the long list is, a valid element, an invalid one, rule, the path of element i)
LISTS = [
    ("units", OK_UNIT, {"unit": "u", "action": "x", "reward": 1}, "value.type",
     "inference.steps[3].agent_steps[0].unit_steps[{i}].action"),
    ("units", OK_UNIT, {}, "document.required", "inference.steps[3].agent_steps[0].unit_steps[{i}]"),
    ("agents", OK_AGENT, {**OK_AGENT, "rewards": [1]}, "reward.exactly_one", "inference.steps[3].agent_steps[{i}]"),
    ("agents", OK_AGENT, {**OK_AGENT, "extra": 1}, "document.unknown_key", "inference.steps[3].agent_steps[{i}]"),
    ("distribution", 0.5, "x", "value.type", "inference.steps[3].agent_steps[0].action_distribution[{i}]"),
    ("enemies", 1, None, "value.type", "inference.steps[3].agent_steps[0].enemy_unit_health[{i}]"),
    ("observation", 0.5, "x", "observation.shape", "inference.steps[3].agent_steps[0].observation_space"),
    ("observation", 0.5, [1.0], "observation.shape", "inference.steps[3].agent_steps[0].observation_space"),
    ("rows", [0, 1], [0, True], "observation.shape", "inference.steps[3].agent_steps[0].observation_space"),
]


def _step(where: str, items: list[Any]) -> dict[str, Any]:
    agent: dict[str, Any] = dict(OK_AGENT)
    if where == "agents":
        return {"number": 0, "agent_steps": items}
    key = {"units": "unit_steps", "distribution": "action_distribution", "enemies": "enemy_unit_health",
           "observation": "observation_space", "rows": "observation_space"}[where]
    agent[key] = items
    return {"number": 0, "agent_steps": [agent]}


def _error(step: dict[str, Any]) -> InvalidEpisode:
    with pytest.raises(InvalidEpisode) as info:
        check_step(step, 3)
    return info.value


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(LISTS), data=st.data())
def test_the_error_of_one_bad_element_is_found_at_its_index(case, data):
    where, good, bad, rule, path = case
    n = data.draw(st.integers(2, 300))  # one element alone: [[1.0]] is a valid 2-D observation
    i = data.draw(st.integers(0, n - 1))
    items = [json.loads(json.dumps(good)) for _ in range(n)]
    items[i] = json.loads(json.dumps(bad))
    error = _error(_step(where, items))
    assert (error.rule, error.path) == (rule, path.format(i=i)), str(error)


@pytest.mark.parametrize("n", [100_000])
def test_many_empty_unit_steps_are_refused_at_once_with_bounded_memory(tmp_path, n):
    """In a child process with 1 GiB of address space, where the code before the cut aborted (a Rust panic)."""
    path = tmp_path / "e.json"
    units = ",".join(["{}"] * n)
    path.write_text('{"training": {"environment": "E", "algorithm": "A", "iterations": 1}, "inference": {"steps": '
                    '[{"number": 0, "agent_steps": [{"agent": "a", "action": 0, "reward": 0, "observation_space": [],'
                    f' "unit_steps": [{units}]}}]}}]}}}}', encoding="utf-8")
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
              "from pipeline import validate; r = validate(sys.argv[1], parallel=False); "
              "print(r.error.rule, r.error.path)")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["document.required", "inference.steps[0].agent_steps[0].unit_steps[0]"]
    for parallel in (False, True):
        result = ingest(path, lake=tmp_path / "lake", parallel=parallel)
        assert (result.status, result.error.rule) == ("invalid", "document.required")


def test_a_long_label_map_with_one_bad_key_names_that_key():
    labels = {str(k): f"a{k}" for k in range(5000)}
    labels["fire"] = "x"
    labels.update({str(k): "b" for k in range(5000, 9000)})
    with pytest.raises(InvalidEpisode) as info:
        check_part("action_mapping", labels)
    assert info.value.rule == "value.key_pattern" and 'key "fire"' in str(info.value)


def test_a_long_reward_mapping_with_one_bad_name(tmp_path):
    names: list[Any] = [f"r{k}" for k in range(3000)]
    names[2345] = 7
    training = {"environment": "E", "algorithm": "A", "iterations": 1, "reward_mapping": names}
    with pytest.raises(InvalidEpisode) as info:
        check_part("training", training)
    assert (info.value.rule, info.value.path) == ("value.type", "training.reward_mapping[2345]")


FULL_AGENT = {"agent": "a", "action": 1, "rewards": [1, 0], "observation_space": [[0.5], [1]],
              "action_distribution": [0.25, 0.75], "health": 90, "value_estimate": 1.25, "predicted_reward": 0.5,
              "enemy_agent_health": [100], "enemy_unit_health": [10], "custom_metrics": {"m": {"y": [1]}},
              "unit_steps": []}
# A bad value for some of the agent step's keys, and the rule it breaks.
BAD_VALUES = [("rewards", [], "value.min_items"), ("health", "x", "value.type"), ("action", None, "value.type"),
              ("action_distribution", ["x"], "value.type"), ("value_estimate", [], "value.type")]


@settings(max_examples=60, deadline=None)
@given(bad=st.sampled_from(BAD_VALUES), keys=st.permutations(sorted(FULL_AGENT)), extra=st.integers(0, 20))
def test_an_object_with_many_keys_is_never_cut_into_a_missing_key(bad, keys, extra):
    """Found by the text fuzzer: an agent step of 12 keys with ``"rewards": []`` was reported as
    ``"action" is required``, because the cut kept a prefix of its keys. Whatever the keys' order, and
    with unknown keys after them, the error is the bad value's (or the unknown key's), never a key the
    object has reported missing."""
    name, value, rule = bad
    agent = {key: FULL_AGENT[key] for key in keys}
    agent[name] = value
    agent.update({f"extra_{i}": i for i in range(extra)})
    error = _error({"number": 0, "agent_steps": [agent]})
    assert error.rule != "document.required", str(error)
    assert error.rule in (rule, "document.unknown_key") if extra else error.rule == rule, str(error)


def test_free_form_objects_are_not_cut(tmp_path):
    """Nothing inside config or custom metrics can break the schema: the error outside them is found."""
    metrics = {"m": {"y": list(range(5000))}}
    step = {"number": 0, "agent_steps": [{**OK_AGENT, "custom_metrics": metrics, "health": "full"}]}
    error = _error(step)
    assert (error.rule, error.path) == ("value.type", "inference.steps[3].agent_steps[0].health")


def test_a_refused_file_reads_the_same_through_validate(tmp_path):
    path = tmp_path / "e.json"
    units = [OK_UNIT] * 500 + [{"unit": "u", "action": 1}] + [OK_UNIT] * 20
    doc = {"training": {"environment": "E", "algorithm": "A", "iterations": 1},
           "inference": {"steps": [{"number": 0, "agent_steps": [{**OK_AGENT, "unit_steps": units}]}]}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    one, two = validate(path, parallel=False), validate(path, parallel=True)
    assert str(one.error) == str(two.error)
    assert (one.error.rule, one.error.path) == ("reward.exactly_one", "inference.steps[0].agent_steps[0].unit_steps[500]")
    assert Path(path).exists()


LONG_KEY = "k" * 1_000_000


@pytest.mark.parametrize(("where", "path"), [
    ("agent", "inference.steps[0].agent_steps[0]"), ("training", "training"),
    ("root", "k" * 80 + "... (1000000 characters)"), ("inference", "inference." + "k" * 80 + "... (1000000 characters)"),
    ("labels", "action_mapping"),
])
@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
def test_a_megabyte_key_is_quoted_cut_short(tmp_path, where, path, parallel):
    """Regression: an unknown (or badly formed) key was quoted whole, a message of 1 to 2 MB."""
    doc = {"training": {"environment": "E", "algorithm": "A", "iterations": 1},
           "inference": {"steps": [{"number": 0, "agent_steps": [dict(OK_AGENT)]}]}}
    target = {"agent": doc["inference"]["steps"][0]["agent_steps"][0], "training": doc["training"], "root": doc,
              "inference": doc["inference"]}.get(where)
    if target is None:
        doc["action_mapping"] = {LONG_KEY: "x"}
    else:
        target[LONG_KEY] = 1
    file = tmp_path / "e.json"
    file.write_text(json.dumps(doc), encoding="utf-8")
    result = validate(file, parallel=parallel)
    assert result.error.rule == ("value.key_pattern" if where == "labels" else "document.unknown_key")
    assert result.error.path == path
    assert len(str(result.error)) < 400 and "... (1000000 characters)" in str(result.error)
