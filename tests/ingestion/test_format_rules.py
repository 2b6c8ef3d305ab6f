"""One test per rule of docs/format.md: a file breaking it is rejected with the rule, the JSON path and a
message a person can act on, and the lake is byte-for-byte unchanged (see the ``reject`` fixture)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pipeline import ingest
from tests.helpers import PNG_B64, agent_step, episode, full_episode, mutate, write_json

S0 = "inference.steps.0"
A0 = f"{S0}.agent_steps.0"
U0 = f"{A0}.unit_steps.0"


def _with_unit(**fields: Any) -> dict[str, Any]:
    doc = episode(steps=1)
    doc["inference"]["steps"][0]["agent_steps"][0]["unit_steps"] = [{"unit": "u1", "action": 0, "reward": 1, **fields}]
    return doc


def _two_agents(second: dict[str, Any]) -> dict[str, Any]:
    doc = episode(steps=1)
    doc["inference"]["steps"][0]["agent_steps"].append(second)
    return doc


# (id, document, rule, path in the message, words in the message)
CASES: list[tuple[str, Any, str, str | None, str]] = [
    # Document
    ("root-missing-training", {"inference": episode()["inference"]}, "document.required", "training", '"training" is required'),
    ("root-missing-inference", {"training": episode()["training"]}, "document.required", "inference", '"inference" is required'),
    ("root-unknown-key", {**episode(), "extra": 1}, "document.unknown_key", "extra", 'unknown key "extra"'),
    ("action-mapping-not-object", {**episode(), "action_mapping": ["noop"]}, "value.type", "action_mapping", "must be an object, found an array"),
    ("action-mapping-key-not-integer", {**episode(), "action_mapping": {"fire": "x"}}, "value.key_pattern", "action_mapping", 'key "fire" must be an integer written as a string'),
    ("action-mapping-value-not-string", {**episode(), "action_mapping": {"0": 1}}, "value.type", "action_mapping.0", "must be a string, found an integer"),
    ("unit-mapping-key-not-integer", {**episode(), "action_mapping": {"unit_mapping": {"a": "x"}}}, "value.key_pattern", "action_mapping.unit_mapping", 'key "a" must be an integer'),
    ("unit-mapping-value-not-string", {**episode(), "action_mapping": {"unit_mapping": {"0": None}}}, "value.type", "action_mapping.unit_mapping.0", "must be a string, found null"),
    ("environment-empty", mutate(episode(), "training.environment", ""), "value.length", "training.environment", "must be 1 to 200 characters long, found 0"),
    ("environment-too-long", mutate(episode(), "training.environment", "x" * 201), "value.length", "training.environment", "found 201"),
    ("environment-not-string", mutate(episode(), "training.environment", 5), "value.type", "training.environment", "must be a string, found an integer"),
    ("environment-missing", mutate(episode(), "training.environment", delete=True), "document.required", "training", '"environment" is required'),
    ("algorithm-empty", mutate(episode(), "training.algorithm", ""), "value.length", "training.algorithm", "must be 1 to 200 characters"),
    ("algorithm-missing", mutate(episode(), "training.algorithm", delete=True), "document.required", "training", '"algorithm" is required'),
    ("training-parallel-not-boolean", mutate(episode(), "training.parallel", "yes"), "value.type", "training.parallel", "must be a boolean, found a string"),
    ("num-gpus-negative", mutate(episode(), "training.num_gpus", -1), "value.minimum", "training.num_gpus", "must be at least 0, found -1"),
    ("num-gpus-not-number", mutate(episode(), "training.num_gpus", "1"), "value.type", "training.num_gpus", "must be a number, found a string"),
    ("iterations-zero", mutate(episode(), "training.iterations", 0), "value.minimum", "training.iterations", "must be at least 1, found 0"),
    ("iterations-not-integer", mutate(episode(), "training.iterations", 1.5), "value.type", "training.iterations", "must be an integer, found a number"),
    ("iterations-missing", mutate(episode(), "training.iterations", delete=True), "document.required", "training", '"iterations" is required'),
    ("training-config-not-object", mutate(episode(), "training.config", [1]), "value.type", "training.config", "must be an object, found an array"),
    ("training-unknown-key", mutate(episode(), "training.seed", 1), "document.unknown_key", "training", 'unknown key "seed"'),
    ("reward-mapping-empty", mutate(episode(), "training.reward_mapping", []), "value.min_items", "training.reward_mapping", "must have at least 1 element"),
    ("reward-mapping-not-strings", mutate(episode(), "training.reward_mapping", [1]), "value.type", "training.reward_mapping[0]", "must be a string"),
    ("inference-parallel-not-boolean", mutate(episode(), "inference.parallel", 1), "value.type", "inference.parallel", "must be a boolean, found an integer"),
    ("inference-config-not-object", mutate(episode(), "inference.config", "x"), "value.type", "inference.config", "must be an object, found a string"),
    ("inference-unknown-key", mutate(episode(), "inference.seed", 3), "document.unknown_key", "inference.seed", 'unknown key "seed"'),
    ("inference-not-object", {**episode(), "inference": 5}, "document.required", "inference", 'must be an object with a "steps" array'),
    ("steps-missing", mutate(episode(), "inference.steps", delete=True), "document.required", "inference", '"steps"'),
    ("steps-empty", mutate(episode(), "inference.steps", []), "document.steps", "inference.steps", "at least one step"),
    # Step
    ("step-number-missing", mutate(episode(), f"{S0}.number", delete=True), "document.required", "inference.steps[0]", '"number" is required'),
    ("step-number-negative", mutate(episode(), f"{S0}.number", -1), "value.minimum", "inference.steps[0].number", "must be at least 0, found -1"),
    ("step-number-not-integer", mutate(episode(), f"{S0}.number", 1.5), "value.type", "inference.steps[0].number", "must be an integer, found a number"),
    ("step-number-unique", mutate(episode(), "inference.steps.2.number", 0), "step.number_unique", "inference.steps[2].number", "step number 0 is used twice (first by inference.steps[0])"),
    ("step-not-object", mutate(episode(), S0, [1]), "value.type", "inference.steps[0]", "must be an object, found an array"),
    ("step-unknown-key", mutate(episode(), f"{S0}.reward", 1), "document.unknown_key", "inference.steps[0]", 'unknown key "reward"'),
    ("image-not-base64", mutate(episode(), f"{S0}.image", "not base64!"), "image.base64", "inference.steps[0].image", "is not valid standard base64"),
    ("image-not-an-image", mutate(episode(), f"{S0}.image", base64.b64encode(b"hello, world").decode()), "image.decodable", "inference.steps[0].image", "is not an image any decoder recognises"),
    ("image-not-string", mutate(episode(), f"{S0}.image", 5), "value.type", "inference.steps[0].image", "must be a string"),
    ("agent-steps-not-array", mutate(episode(), f"{S0}.agent_steps", {"agent": "x"}), "value.type", "inference.steps[0].agent_steps", "must be an array, found an object"),
    # Agent step
    ("agent-missing", mutate(episode(), f"{A0}.agent", delete=True), "document.required", "inference.steps[0].agent_steps[0]", '"agent" is required'),
    ("agent-empty", mutate(episode(), f"{A0}.agent", ""), "value.length", "inference.steps[0].agent_steps[0].agent", "must be 1 to 200 characters"),
    ("agent-too-long", mutate(episode(), f"{A0}.agent", "a" * 201), "value.length", "inference.steps[0].agent_steps[0].agent", "found 201"),
    ("agent-unique", _two_agents(agent_step("p0")), "agent.unique", "inference.steps[0].agent_steps[1].agent", 'agent "p0" appears twice in this step'),
    ("action-missing", mutate(episode(), f"{A0}.action", delete=True), "document.required", "inference.steps[0].agent_steps[0]", '"action" is required'),
    ("action-not-number", mutate(episode(), f"{A0}.action", "1"), "value.type", "inference.steps[0].agent_steps[0].action", "must be a number, found a string"),
    ("reward-and-rewards", mutate(episode(), f"{A0}.rewards", [1.0]), "reward.exactly_one", "inference.steps[0].agent_steps[0]", 'exactly one of "reward" or "rewards" is required, found both'),
    ("reward-neither", mutate(episode(), f"{A0}.reward", delete=True), "reward.exactly_one", "inference.steps[0].agent_steps[0]", "found neither"),
    ("reward-not-number", mutate(episode(), f"{A0}.reward", "1"), "value.type", "inference.steps[0].agent_steps[0].reward", "must be a number, found a string"),
    ("rewards-empty", mutate(mutate(episode(steps=1), f"{A0}.reward", delete=True), f"{A0}.rewards", []), "value.min_items", "inference.steps[0].agent_steps[0].rewards", "at least 1 element"),
    ("rewards-not-numbers", mutate(mutate(episode(steps=1), f"{A0}.reward", delete=True), f"{A0}.rewards", ["1"]), "value.type", "inference.steps[0].agent_steps[0].rewards[0]", "must be a number"),
    ("rewards-length-without-mapping", mutate(mutate(episode(steps=1), f"{A0}.reward", delete=True), f"{A0}.rewards", [1, 2]), "reward.length", "inference.steps[0].agent_steps[0].rewards", 'without "training.reward_mapping", "rewards" must have exactly 1 element, found 2'),
    ("rewards-length-with-mapping", mutate(mutate(episode(steps=1, reward_mapping=["a", "b"]), f"{A0}.reward", delete=True), f"{A0}.rewards", [1]), "reward.length", "inference.steps[0].agent_steps[0].rewards", "names 2 reward components, so \"rewards\" must have 2 elements, found 1"),
    ("reward-consistency", mutate(mutate(episode(steps=2), "inference.steps.1.agent_steps.0.reward", delete=True), "inference.steps.1.agent_steps.0.rewards", [1]), "reward.consistent", "inference.steps[1].agent_steps[0]", 'uses "rewards" but inference.steps[0].agent_steps[0] uses "reward"'),
    ("observation-missing", mutate(episode(), f"{A0}.observation_space", delete=True), "document.required", "inference.steps[0].agent_steps[0]", '"observation_space" is required'),
    ("observation-not-numbers", mutate(episode(), f"{A0}.observation_space", ["a"]), "observation.shape", "inference.steps[0].agent_steps[0].observation_space", "must be a 1-D array of numbers or a 2-D array"),
    # Booleans are not numbers, even where 0/1 pixels are expected (they would pass as bytes).
    ("observation-boolean", mutate(episode(), f"{A0}.observation_space", [[0, 1], [True, 0]]), "observation.shape", "inference.steps[0].agent_steps[0].observation_space", "must be a 1-D array of numbers or a 2-D array"),
    ("observation-3d", mutate(episode(), f"{A0}.observation_space", [[[1]]]), "observation.shape", "inference.steps[0].agent_steps[0].observation_space", "2-D array of arrays of numbers"),
    ("observation-ragged", mutate(episode(), f"{A0}.observation_space", [[1, 2], [3]]), "observation.rectangular", "inference.steps[0].agent_steps[0].observation_space[1]", "row 1 has 1 values but row 0 has 2"),
    ("action-distribution-not-numbers", mutate(episode(), f"{A0}.action_distribution", [True]), "value.type", "inference.steps[0].agent_steps[0].action_distribution[0]", "must be a number, found a boolean"),
    ("health-not-number", mutate(episode(), f"{A0}.health", "full"), "value.type", "inference.steps[0].agent_steps[0].health", "must be a number"),
    ("value-estimate-not-number", mutate(episode(), f"{A0}.value_estimate", [1]), "value.type", "inference.steps[0].agent_steps[0].value_estimate", "must be a number"),
    ("predicted-reward-not-number", mutate(episode(), f"{A0}.predicted_reward", {}), "value.type", "inference.steps[0].agent_steps[0].predicted_reward", "must be a number"),
    ("enemy-agent-health-not-numbers", mutate(episode(), f"{A0}.enemy_agent_health", 5), "value.type", "inference.steps[0].agent_steps[0].enemy_agent_health", "must be an array"),
    ("enemy-unit-health-not-numbers", mutate(episode(), f"{A0}.enemy_unit_health", ["x"]), "value.type", "inference.steps[0].agent_steps[0].enemy_unit_health[0]", "must be a number"),
    ("custom-metrics-not-object", mutate(episode(), f"{A0}.custom_metrics", [1, 2]), "value.type", "inference.steps[0].agent_steps[0].custom_metrics", "must be an object"),
    ("unit-steps-not-array", mutate(episode(), f"{A0}.unit_steps", {}), "value.type", "inference.steps[0].agent_steps[0].unit_steps", "must be an array"),
    ("agent-step-unknown-key", mutate(episode(), f"{A0}.speed", 1), "document.unknown_key", "inference.steps[0].agent_steps[0]", 'unknown key "speed"'),
    # Unit step
    ("unit-missing", mutate(_with_unit(), f"{U0}.unit", delete=True), "document.required", "inference.steps[0].agent_steps[0].unit_steps[0]", '"unit" is required'),
    ("unit-empty", mutate(_with_unit(), f"{U0}.unit", ""), "value.length", "inference.steps[0].agent_steps[0].unit_steps[0].unit", "must be 1 to 200 characters"),
    ("unit-unique", mutate(_with_unit(), f"{A0}.unit_steps.1", {"unit": "u1", "action": 1, "reward": 0}), "unit.unique", "inference.steps[0].agent_steps[0].unit_steps[1].unit", 'unit "u1" appears twice'),
    ("unit-action-missing", mutate(_with_unit(), f"{U0}.action", delete=True), "document.required", "inference.steps[0].agent_steps[0].unit_steps[0]", '"action" is required'),
    ("unit-reward-and-rewards", _with_unit(rewards=[1]), "reward.exactly_one", "inference.steps[0].agent_steps[0].unit_steps[0]", "found both"),
    ("unit-reward-neither", mutate(_with_unit(), f"{U0}.reward", delete=True), "reward.exactly_one", "inference.steps[0].agent_steps[0].unit_steps[0]", "found neither"),
    ("unit-rewards-length", mutate(mutate(_with_unit(), f"{U0}.reward", delete=True), f"{U0}.rewards", [1, 2, 3]), "reward.length", "inference.steps[0].agent_steps[0].unit_steps[0].rewards", "must have exactly 1 element, found 3"),
    ("unit-has-observation", _with_unit(observation_space=[1]), "document.unknown_key", "inference.steps[0].agent_steps[0].unit_steps[0]", 'unknown key "observation_space"'),
    ("unit-has-unit-steps", _with_unit(unit_steps=[]), "document.unknown_key", "inference.steps[0].agent_steps[0].unit_steps[0]", 'unknown key "unit_steps"'),
    ("unit-has-enemy-health", _with_unit(enemy_agent_health=[1]), "document.unknown_key", "inference.steps[0].agent_steps[0].unit_steps[0]", 'unknown key "enemy_agent_health"'),
    ("unit-health-not-number", _with_unit(health=True), "value.type", "inference.steps[0].agent_steps[0].unit_steps[0].health", "must be a number, found a boolean"),
    # Everywhere
    ("boolean-not-a-number", mutate(episode(), f"{A0}.reward", True), "value.type", "inference.steps[0].agent_steps[0].reward", "must be a number, found a boolean"),
]


# Cases where the step has no usable "number", so the message cannot name one.
NO_STEP_NUMBER = {"step-number-missing", "step-number-not-integer", "step-not-object"}


@pytest.mark.parametrize(("case", "document", "rule", "path", "words"), CASES, ids=[c[0] for c in CASES])
def test_rule_rejects_file(reject, case, document, rule, path, words):
    error = reject(document)
    assert error.rule == rule, str(error)
    assert error.path == path, str(error)
    assert words in error.message, str(error)
    if path and path.startswith("inference.steps[") and case not in NO_STEP_NUMBER:
        assert error.step is not None and f"(step number {error.step})" in str(error)


# Files whose bytes break a rule, with the rule and words in the message.
RAW_CASES = [
    ("nan", json.dumps(episode()).replace('"reward": 0.0', '"reward": NaN'), "file.json", "not valid JSON"),
    ("infinity", json.dumps(episode()).replace('"reward": 0.0', '"reward": Infinity'), "file.json", "not valid JSON"),
    ("float-overflow", json.dumps(episode()).replace('"reward": 0.0', '"reward": 1e400'), "number.finite", "beyond the range of a 64-bit float"),
    ("integer-beyond-int64", json.dumps(episode()).replace('"action": 1', '"action": 9223372036854775808', 1), "number.int64", "does not fit in a signed 64-bit integer"),
    ("truncated", json.dumps(episode())[:-40], "file.truncated", "ends before the JSON document is complete"),
    ("malformed", json.dumps(episode()).replace('"number": 1,', '"number": 1,,'), "file.json", "not valid JSON"),
    ("trailing-garbage", json.dumps(episode()) + " {}", "file.trailing_data", "unexpected data after the end of the JSON document"),
    ("empty-file", "", "document.object", "the file is empty"),
    ("only-null", "null", "document.object", "found null"),
    ("only-array", "[]", "document.object", "found an array"),
    ("only-number", "42", "document.object", "found a number"),
    ("only-string", '"episode"', "document.object", "found a string"),
]


@pytest.mark.parametrize(("text", "rule", "words"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_malformed_file_rejected(reject, text, rule, words):
    error = reject(text)
    assert error.rule == rule, str(error)
    assert words in error.message, str(error)


def test_truncated_file_names_the_step_where_parsing_stopped(reject):
    text = json.dumps(episode(steps=5))
    cut = text.index('{"number": 3')
    error = reject(text[: cut + 20])
    assert error.path == "inference.steps[3]"
    assert error.offset is not None and "byte" in str(error)


def test_invalid_utf8_rejected(reject):
    raw = json.dumps(mutate(episode(), f"{A0}.agent", "PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"\xff\xfe")
    error = reject(raw)
    assert error.rule == "file.utf8"
    assert "not valid UTF-8" in error.message


def test_null_means_absent(tmp_path, lake):
    """Every optional field may be null; the file ingests as if the field were absent."""
    doc = episode(steps=1)
    doc["action_mapping"] = None
    doc["training"].update(parallel=None, num_gpus=None, config=None, reward_mapping=None)
    doc["inference"].update(parallel=None, config=None)
    doc["inference"]["steps"][0]["image"] = None
    doc["inference"]["steps"][0]["agent_steps"][0].update(
        rewards=None, action_distribution=None, health=None, value_estimate=None, predicted_reward=None,
        enemy_agent_health=None, enemy_unit_health=None, custom_metrics=None, unit_steps=None,
    )
    doc["inference"]["steps"].append({"number": 1, "agent_steps": None, "image": None})
    result = ingest(write_json(tmp_path / "nulls.json", doc), lake=lake)
    assert result.status == "ingested", result.error


def test_unknown_keys_allowed_inside_config_and_custom_metrics(tmp_path, lake):
    doc = episode(steps=1, config={"anything": {"goes": [1, {"here": None}]}})
    doc["inference"]["config"] = {"free": "form"}
    doc["inference"]["steps"][0]["agent_steps"][0]["custom_metrics"] = {"Plot": {"x": [1], "weird_key": "ok"}}
    assert ingest(write_json(tmp_path / "free.json", doc), lake=lake).status == "ingested"


def test_keys_in_any_order_and_bom_accepted(tmp_path, lake):
    doc = full_episode()
    reordered = {"inference": doc["inference"], "action_mapping": doc["action_mapping"], "training": doc["training"]}
    path = tmp_path / "reordered.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(reordered).encode())
    result = ingest(path, lake=lake)
    assert result.status == "ingested", result.error
    assert (result.steps, result.agent_steps, result.unit_steps) == (3, 3, 2)


def test_reward_length_checked_when_mapping_comes_after_steps(reject):
    doc = mutate(mutate(episode(steps=1), f"{A0}.reward", delete=True), f"{A0}.rewards", [1.0, 2.0, 3.0])
    doc["training"]["reward_mapping"] = ["a", "b"]
    reordered = {"inference": doc["inference"], "training": doc["training"]}
    error = reject(reordered)
    assert error.rule == "reward.length"
    assert error.path == "inference.steps[0].agent_steps[0].rewards"


def test_duplicate_top_level_key_rejected(reject):
    text = json.dumps(episode())
    training = json.dumps(episode()["training"])
    error = reject(text[:-1] + f', "training": {training}}}')
    assert error.rule == "document.duplicate_key"
    assert '"training" appears twice' in error.message


def test_image_formats_accepted(tmp_path, lake):
    from io import BytesIO

    from PIL import Image

    images = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        buf = BytesIO()
        Image.new("RGB", (5, 5), (1, 2, 3)).save(buf, format=fmt)
        images.append(base64.b64encode(buf.getvalue()).decode())
    doc = episode(steps=len(images))
    for step, image in zip(doc["inference"]["steps"], images, strict=True):
        step["image"] = image
    result = ingest(write_json(tmp_path / "formats.json", doc), lake=lake)
    assert result.status == "ingested", result.error


def test_every_case_id_is_unique():
    ids = [c[0] for c in CASES] + [c[0] for c in RAW_CASES]
    assert len(ids) == len(set(ids))
    assert PNG_B64  # the shared PNG decodes (used by the round-trip tests)


def _png_with_header(width: int, height: int, *, break_crc: bool = False) -> str:
    import struct
    import zlib

    from tests.helpers import PNG

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = zlib.crc32(ihdr) ^ (1 if break_crc else 0)
    data = PNG[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", crc) + PNG[33:]
    return base64.b64encode(data).decode()


def test_png_with_a_corrupt_header_is_not_an_image(reject):
    error = reject(mutate(episode(), f"{S0}.image", _png_with_header(4, 3, break_crc=True)))
    assert (error.rule, error.path) == ("image.decodable", "inference.steps[0].image")


def test_png_declaring_a_gigantic_size_is_refused_as_a_bomb(reject):
    error = reject(mutate(episode(), f"{S0}.image", _png_with_header(100_000, 100_000)))
    assert error.rule == "image.decodable"
    assert "too large to accept" in error.message


def test_png_cut_short_is_not_an_image(reject):
    """A valid header is not enough: half a PNG is no image (found by the mutation fuzzer)."""
    from tests.helpers import PNG

    error = reject(mutate(episode(), f"{S0}.image", base64.b64encode(PNG[: len(PNG) // 2]).decode()))
    assert (error.rule, error.path) == ("image.decodable", "inference.steps[0].image")
