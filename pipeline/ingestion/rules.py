"""The episode format's rules that a schema cannot state, and the list of every rule id.

:class:`EpisodeChecker` applies, after :mod:`.schema`'s check of each part against the JSON Schema:
unique step numbers, agents and units; one reward kind per episode; reward-vector length against
``reward_mapping``; rectangular observations; decodable images. It also normalises each step in
place (image decoded to bytes, observation flattened with its shape) so that the table stage only
has to place values in columns. Its per-step and per-batch checks must agree exactly
(tests/ingestion/test_batches.py compares them). ``RULES`` names every rule id an error can carry.
"""

from __future__ import annotations

import binascii
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, chain, islice
from operator import itemgetter, lt
from typing import Any

import orjson
import pybase64

from ..errors import InvalidEpisode
from .images import ImageDamaged, check_image
from .schema import STEPS_PATH, whole_number
from .stepnumbers import StepNumbers

# Every rule id an InvalidEpisode can carry, with what it guards; one dialect, ``area.rule``. The README's
# error table lists the same ids (a test keeps them equal).
RULES: dict[str, str] = {
    "file.json": "the file is JSON (no NaN, comments, trailing commas, raw control characters)",
    "file.utf8": "the text is valid UTF-8",
    "file.truncated": "the file is complete",
    "file.trailing_data": "nothing follows the document",
    "file.compression": "a compressed file decompresses whole",
    "document.object": "the document is one JSON object",
    "document.required": "a required key is present",
    "document.unknown_key": "no key outside the format",
    "document.duplicate_key": "a top-level key appears once",
    "document.steps": "inference.steps is a non-empty array",
    "document.depth": "nesting is at most 256 levels",
    "document.part_size": "one step or header value is at most 16 MiB",
    "value.type": "a value has the type the format gives it",
    "value.length": "a name is 1 to 200 characters",
    "value.minimum": "a number is at least its minimum",
    "value.min_items": "an array has at least its minimum of elements",
    "value.key_pattern": "a mapping's key is an integer written as a string",
    "value.schema": "any other rule of the JSON Schema",
    "number.int64": "an integer fits in int64",
    "number.finite": "a number fits in float64",
    "step.number_unique": "step numbers are unique",
    "agent.unique": "an agent appears once per step",
    "unit.unique": "a unit appears once per agent step",
    "reward.exactly_one": "exactly one of reward and rewards",
    "reward.consistent": "one reward kind for the whole episode",
    "reward.length": "rewards has the length of reward_mapping (1 without it)",
    "observation.shape": "an observation is a 1-D or 2-D array of numbers",
    "observation.rectangular": "a 2-D observation's rows have one length",
    "image.base64": "an image is standard base64",
    "image.decodable": "an image is a whole, intact image file of at most 64 Mi pixels",
}

# orjson's limit when storing free-form JSON as text. The source already refuses files nested
# deeper than source.MAX_DEPTH (256) in all, so this only guards direct callers.
MAX_JSON_DEPTH = 254
# Largest image (in pixels) accepted in a frame; bigger is treated as a decompression bomb.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def json_text(value: Any, *, path: str, step: int | None = None) -> str | None:
    """Lossless JSON text of a free-form value (config, custom metrics): key order and numbers kept."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        if "ecursion" not in str(exc):
            raise
        raise InvalidEpisode(
            "document.depth", f"is nested more than {MAX_JSON_DEPTH} levels deep", path=path, step=step
        ) from None


def decode_image(text: str | bytes | memoryview, *, index: int, step: int) -> bytes:
    """Decode the frame of step ``index`` (its base64 text, as a string or bytes) and check it is a whole,
    undamaged image (see ``images``)."""
    try:
        data = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEpisode(
            "image.base64", "is not valid standard base64 (A-Z a-z 0-9 + / with = padding)",
            path=f"{STEPS_PATH}[{index}].image", step=step,
        ) from None
    try:
        check_image(data, max_pixels=MAX_IMAGE_PIXELS)
    except ImageDamaged as exc:
        raise InvalidEpisode("image.decodable", str(exc), path=f"{STEPS_PATH}[{index}].image", step=step) from None
    return data


def decode_images(texts: Sequence[str | bytes | memoryview]) -> list[bytes] | None:
    """Each of ``texts`` decoded and checked as :func:`decode_image` does, or None if one does not pass
    (:func:`decode_image` then says which, and why). One loop over a batch's frames, without a call
    and an error path per frame."""
    decode = pybase64.b64decode
    try:
        frames = [decode(text, validate=True) for text in texts]
        for frame in frames:
            check_image(frame, max_pixels=MAX_IMAGE_PIXELS)
    except ValueError:  # binascii.Error and ImageDamaged are ValueErrors
        return None
    return frames


def decode_frame_texts(lengths: list[int], texts: Sequence[str | bytes | memoryview], first: int,
                       steps: list[Any] | None = None) -> tuple[list[int], list[bytes]] | None:
    """The frames whose base64 texts are ``texts`` (of the steps from ``first`` on; ``lengths``: -1 for a
    step without one, any other number for a step with one; see :mod:`.framesapart`), decoded and
    checked: their lengths (-1: none) and the frames. None if one does not pass, unless the ``steps``
    are given: then the first such frame's error is raised, as :func:`decode_image` words it."""
    frames = decode_images(texts)
    if frames is None:
        if steps is None:
            return None
        at = 0
        for i, length in enumerate(lengths):  # again, one by one, for the first error
            if length >= 0:
                number = steps[i].get("number")
                decode_image(texts[at], index=first + i, step=number if type(number) is int else 0)
                at += 1
        raise AssertionError("decode_images refused a frame that decode_image accepts")  # pragma: no cover
    sizes = iter(map(len, frames))
    return [-1 if length < 0 else next(sizes) for length in lengths], frames


def flatten_observation(obs: list[Any], *, path: str, step: int) -> tuple[bytearray | list[Any], list[int]]:
    """Flatten a schema-valid observation row-major; return the values and the shape.

    Ragged rows are an error. When every value is an integer from 0 to 255 (pixels, the common
    case for image observations) the values come back as a ``bytearray``, one byte each: made in
    C at ~4 ns a value, where converting Python numbers to Arrow costs ~40 ns (measured). The
    table stage widens the bytes to float64 in bulk. Anything else comes back as a flat list.
    """
    if obs and type(obs[0]) is list:
        width = len(obs[0])
        for row, values in enumerate(obs):
            if len(values) != width:
                raise InvalidEpisode(
                    "observation.rectangular",
                    f"row {row} has {len(values)} values but row 0 has {width}; a 2-D observation must be rectangular",
                    path=f"{path}[{row}]", step=step,
                )
    return _flat(obs)


def _flat(obs: list[Any]) -> tuple[bytearray | list[Any], list[int]]:
    """:func:`flatten_observation` of an observation already known to be rectangular."""
    if not obs or type(obs[0]) is not list:
        if obs and type(obs[0]) is int:
            try:
                return bytearray(obs), [len(obs)]
            except (TypeError, ValueError):  # a float, a negative number or one above 255
                pass
        return obs, [len(obs)]
    width = len(obs[0])
    shape = [len(obs), width]
    if width and type(obs[0][0]) is int:  # floats fail at once; skip the attempt
        try:
            return bytearray().join(map(bytearray, obs)), shape
        except (TypeError, ValueError):
            pass
    return list(chain.from_iterable(obs)), shape


_FIRST = itemgetter(0)
# The plan argument of EpisodeChecker.check_steps when no plan was made beforehand (or none could be).
UNPLANNED: Any = object()


# The types of an observation's first value that leave it as it is (see EpisodeChecker.check_steps).
_NUMBER_KINDS = frozenset({int, float})
_FLOAT_KIND = frozenset({float})


def _agents_unique(lists: list[Any], rows: list[dict[str, Any]]) -> bool:
    """Whether no step of a batch names an agent twice (``lists``: each step's agent steps; ``rows``: all
    of them). The common batch, the same agents in the same order in every step, is two list
    comparisons; any other, a set per step."""
    width = len(lists[0])
    if list(map(len, lists)).count(width) == len(lists):
        names = [row["agent"] for row in rows]
        first = names[:width]
        if names == first * len(lists):
            return len(set(first)) == width
    return not any(len(agents) > 1 and len({row["agent"] for row in agents}) != len(agents) for agents in lists)


def _is_rectangular(obs: list[Any]) -> bool:
    """Whether a non-empty 2-D observation's rows all have the length of its first."""
    return len(set(map(len, obs))) == 1


class EpisodeChecker:
    """Checks, across a whole episode, the rules a schema cannot state; one instance per file.

    ``integer_rows``: 1-D observations of integers are kept as they are, like those of floats (the
    table stage packs a batch of them at once; see :meth:`check_steps`). False where the checked
    rows cross a pipe (the two-process ingest's reader): there each becomes bytes (:func:`_flat`).
    """

    def __init__(self, *, integer_rows: bool = True) -> None:
        self._raw_kinds = _NUMBER_KINDS if integer_rows else _FLOAT_KIND
        self._numbers = StepNumbers()
        self._numbers_sorted = True  # False once a number came that was not greater than every one before
        self._out_of_order: dict[int, int] = {}  # such numbers, each with its step's index
        self._reward_kind: tuple[str, str, int] | None = None  # kind, first path, first step
        self._reward_kind_name: str | None = None  # the kind alone, for the per-row fast path
        self._reward_lengths: dict[int, tuple[str, int]] = {}  # length -> first path, step
        self._expected_length: int | None = None

    def set_reward_mapping(self, mapping: list[str] | None) -> None:
        """Called once ``training`` is known; checks reward vectors seen before it too."""
        self._expected_length = len(mapping) if mapping else 1
        for length, (path, step) in self._reward_lengths.items():
            self._check_length(length, path, step)

    def check_step(self, step: dict[str, Any], index: int) -> None:
        """Check one schema-valid step and normalise it in place.

        Afterwards ``image`` holds the decoded bytes, ``observation`` the flattened observation
        (with ``observation_shape``; ``observation_space`` is dropped) and ``custom_metrics`` JSON text.
        """
        base = f"{STEPS_PATH}[{index}]"
        number = step["number"]
        if type(number) is not int:  # 1.0 or 1e0: an integer to JSON Schema, so one to us too
            number = step["number"] = whole_number(number, f"{base}.number")
        self._check_number(number, index)
        image = step.get("image")
        if image is not None:
            step["image"] = decode_image(image, index=index, step=number)
        agent_steps = step.get("agent_steps")
        if not agent_steps:
            return
        if len(agent_steps) > 1:
            _check_unique(agent_steps, "agent", f"{base}.agent_steps", number)
        for j, agent_step in enumerate(agent_steps):
            rewards = agent_step.get("rewards")
            kind = "reward" if rewards is None else "rewards"
            if kind != self._reward_kind_name or (rewards is not None and len(rewards) != self._expected_length):
                self._check_rewards(agent_step, f"{base}.agent_steps[{j}]", number, consistent=True)
            # The table stage reads the flat "observation"; the nested original is dropped to save memory.
            agent_step["observation"], agent_step["observation_shape"] = flatten_observation(
                agent_step.pop("observation_space"), path=f"{base}.agent_steps[{j}].observation_space", step=number
            )
            metrics = agent_step.get("custom_metrics")
            if metrics is not None:
                agent_step["custom_metrics"] = json_text(
                    metrics, path=f"{base}.agent_steps[{j}].custom_metrics", step=number
                )
            units = agent_step.get("unit_steps")
            if units:
                if len(units) > 1:
                    _check_unique(units, "unit", f"{base}.agent_steps[{j}].unit_steps", number)
                expected = self._expected_length
                for k, unit_step in enumerate(units):
                    rewards = unit_step.get("rewards")
                    if rewards is not None and len(rewards) != expected:
                        self._check_rewards(unit_step, f"{base}.agent_steps[{j}].unit_steps[{k}]", number,
                                            consistent=False)
                    metrics = unit_step.get("custom_metrics")
                    if metrics is not None:
                        unit_step["custom_metrics"] = json_text(
                            metrics, path=f"{base}.agent_steps[{j}].unit_steps[{k}].custom_metrics", step=number
                        )

    def check_steps(self, steps: list[dict[str, Any]], first: int, plan: Any = UNPLANNED) -> bool:
        """:meth:`check_step` for consecutive schema-valid steps (``first`` is the index of the first).

        Returns whether their observations were left as they are: True when every agent step's
        observation is a non-empty 1-D array of numbers (it is its own flattening, so
        ``observation_space`` is kept, and the table stage reads it; of floats only, without
        ``integer_rows``); False when each agent step was normalised as :meth:`check_step` does.
        A batch in the common shape (increasing integer step numbers, the episode's reward kind and
        length, rectangular observations, unique names) is checked with a few passes over the
        whole batch; anything else goes step by step through
        :meth:`check_step`, which raises the exact error. The fast path decides before it changes
        anything, and what it can still raise (images, metrics) it raises in file order.
        ``plan``: what :meth:`plan_of` returned for these steps, if it was asked before.
        """
        plan = self._fast_plan(steps) if plan is UNPLANNED else plan
        if plan is None:
            for i, step in enumerate(steps):
                self.check_step(step, first + i)
            return False
        numbers, rows, observations, raw, units = plan
        images = [step.get("image") for step in steps].count(None) != len(steps)
        agent_metrics = [row.get("custom_metrics") for row in rows]
        on_agents = agent_metrics.count(None) != len(rows)
        on_units = [unit.get("custom_metrics") for unit in units].count(None) != len(units)
        if images or on_units:
            self._normalise_in_order(steps, first, images, on_agents or on_units)
        elif on_agents:
            _agent_metrics_as_text(steps, first, rows, agent_metrics)
        if not raw:
            for row, obs in zip(rows, observations, strict=True):
                del row["observation_space"]
                row["observation"], row["observation_shape"] = _flat(obs)
        self._numbers.extend(numbers, first)
        return raw

    def plan_of(self, steps: list[Any]) -> Any:
        """The fast path's plan for ``steps`` before their schema check (for :meth:`check_steps`, and
        :meth:`check_steps_as_they_are`), or ``UNPLANNED`` if the rules here cannot read them."""
        try:
            return self._fast_plan(steps)
        except (TypeError, KeyError, AttributeError, IndexError):  # not schema-valid: checked as usual
            return UNPLANNED

    def check_steps_as_they_are(self, steps: list[Any], plan: Any = UNPLANNED) -> bool:
        """:meth:`check_steps` for a batch that needs no change, and before its schema check.

        True, with the step numbers recorded, when the batch is in the common shape with 1-D
        float observations, no image and no custom metrics: then no rule but the schema's is broken
        in it, and nothing in it is to be normalised. False, with nothing recorded, for any other
        batch (including one the rules here cannot read because it breaks the schema): the caller
        then checks it as usual. ``plan``: :meth:`plan_of` the steps, if it was asked before.
        """
        if plan is UNPLANNED:
            plan = self.plan_of(steps)
        if plan is None or plan is UNPLANNED:
            return False
        try:
            numbers, rows, _, raw, units = plan
            if (not raw or [step.get("image") for step in steps].count(None) != len(steps)
                    or [row.get("custom_metrics") for row in rows].count(None) != len(rows)
                    or [unit.get("custom_metrics") for unit in units].count(None) != len(units)):
                return False
        except (TypeError, KeyError, AttributeError, IndexError):  # not schema-valid: checked as usual
            return False
        self._numbers.extend(numbers, self._numbers.next_index)  # sorted: every step so far recorded
        return True

    def _fast_plan(self, steps: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]], list[Any], bool,
                                                                list[dict[str, Any]]] | None:
        """What :meth:`check_steps` needs if the batch can take the fast path (None if not); changes nothing."""
        kind, expected = self._reward_kind_name, self._expected_length
        if kind is None or expected is None or not self._numbers_sorted:
            return None
        numbers = [step["number"] for step in steps]
        if set(map(type, numbers)) != {int}:
            return None
        last = self._numbers.last
        if (last is not None and numbers[0] <= last) or not all(map(lt, numbers, islice(numbers, 1, None))):
            return None
        lists = [step.get("agent_steps") or () for step in steps]
        rows = list(chain.from_iterable(lists))
        if max(map(len, lists), default=0) > 1 and not _agents_unique(lists, rows):
            return None
        rewards = [row.get("rewards") for row in rows]
        absent = rewards.count(None)
        if kind == "reward":
            if absent != len(rewards):
                return None
        elif absent or any(len(r) != expected for r in rewards):
            return None
        observations = [row["observation_space"] for row in rows]
        if not all(observations):  # an empty observation: step by step
            return None
        kinds = set(map(type, map(_FIRST, observations)))
        raw = bool(kinds) and kinds <= self._raw_kinds
        if list in kinds and not all(_is_rectangular(obs) for obs in observations if type(obs[0]) is list):
            return None
        units: list[dict[str, Any]] = []
        unit_lists = [row.get("unit_steps") for row in rows]
        if unit_lists.count(None) != len(unit_lists):
            for unit_steps in unit_lists:
                if unit_steps:
                    if len(unit_steps) > 1 and len({unit["unit"] for unit in unit_steps}) != len(unit_steps):
                        return None
                    units += unit_steps
            unit_rewards = [unit.get("rewards") for unit in units]
            if unit_rewards.count(None) != len(unit_rewards) and set(
                    map(len, [r for r in unit_rewards if r is not None])) != {expected}:
                return None
        return numbers, rows, observations, raw, units

    def _normalise_in_order(self, steps: list[dict[str, Any]], first: int, images: bool, metrics: bool) -> None:
        """Decode images and store metrics as JSON text, step by step: what fails, fails in file order."""
        if not metrics:  # frames alone: the loop of every step of a frames file
            for index, step in enumerate(steps, first):
                image = step.get("image")
                if image is not None:
                    step["image"] = decode_image(image, index=index, step=step["number"])
            return
        for i, step in enumerate(steps):
            base = f"{STEPS_PATH}[{first + i}]"
            number = step["number"]
            image = step.get("image")
            if image is not None:
                step["image"] = decode_image(image, index=first + i, step=number)
            for j, agent_step in enumerate(step.get("agent_steps") or ()):
                value = agent_step.get("custom_metrics")
                if value is not None:
                    agent_step["custom_metrics"] = json_text(
                        value, path=f"{base}.agent_steps[{j}].custom_metrics", step=number)
                for k, unit_step in enumerate(agent_step.get("unit_steps") or ()):
                    value = unit_step.get("custom_metrics")
                    if value is not None:
                        unit_step["custom_metrics"] = json_text(
                            value, path=f"{base}.agent_steps[{j}].unit_steps[{k}].custom_metrics", step=number)

    def _check_number(self, number: int, index: int) -> None:
        numbers = self._numbers
        if numbers.last is None or number > numbers.last:
            numbers.add(number, index)
            return
        # Out of order: from now on every step goes through here (see _fast_plan). Numbers stored here
        # are smaller than numbers.last was then, so a number greater than it needs no lookup.
        self._numbers_sorted = False
        first = numbers.index(number)
        if first is None:
            first = self._out_of_order.get(number)
        if first is not None:
            raise InvalidEpisode(
                "step.number_unique",
                f"step number {number} is used twice (first by {STEPS_PATH}[{first}]); step numbers must be unique",
                path=f"{STEPS_PATH}[{index}].number", step=number,
            )
        self._out_of_order[number] = index

    def _check_rewards(self, row: dict[str, Any], path: str, step: int, *, consistent: bool) -> None:
        rewards = row.get("rewards")
        kind = "reward" if rewards is None else "rewards"
        if consistent:
            if self._reward_kind is None:
                self._reward_kind = (kind, path, step)
                self._reward_kind_name = kind
            elif self._reward_kind[0] != kind:
                first_kind, first_path, _ = self._reward_kind
                raise InvalidEpisode(
                    "reward.consistent",
                    f'uses "{kind}" but {first_path} uses "{first_kind}"; every agent step of an episode '
                    f'must use the same one of "reward" or "rewards"',
                    path=path, step=step,
                )
        if rewards is not None:
            length = len(rewards)
            if self._expected_length is not None:
                self._check_length(length, f"{path}.rewards", step)
            elif length not in self._reward_lengths:
                self._reward_lengths[length] = (f"{path}.rewards", step)

    def _check_length(self, length: int, path: str, step: int) -> None:
        expected = self._expected_length
        if length == expected:
            return
        if expected == 1:
            why = 'without "training.reward_mapping", "rewards" must have exactly 1 element'
        else:
            why = (f'"training.reward_mapping" names {expected} reward components, '
                   f'so "rewards" must have {expected} elements')
        raise InvalidEpisode("reward.length", f"{why}, found {length}", path=path, step=step)


def _agent_metrics_as_text(steps: list[dict[str, Any]], first: int, rows: list[dict[str, Any]],
                           metrics: list[Any]) -> None:
    """Store the agent steps' ``custom_metrics`` (``metrics``, one per row, None for none) as JSON text,
    in file order, visiting only the rows that hold some: for batches without images and without
    metrics on unit steps (those go step by step, :meth:`EpisodeChecker._normalise_in_order`).

    Metrics on a few agent steps made every batch a Python loop over each step, agent and unit, with a
    path built per step (random shapes with metrics on 5% of agent steps: ~6% of the checking process).
    """
    ends = list(accumulate(len(step.get("agent_steps") or ()) for step in steps))
    for r in [r for r, value in enumerate(metrics) if value is not None]:  # a comprehension: the rows are many
        i = bisect_right(ends, r)
        j = r - (ends[i - 1] if i else 0)
        rows[r]["custom_metrics"] = json_text(
            metrics[r], path=f"{STEPS_PATH}[{first + i}].agent_steps[{j}].custom_metrics", step=steps[i]["number"])


def _check_unique(rows: list[dict[str, Any]], key: str, path: str, step: int) -> None:
    if len({row[key] for row in rows}) == len(rows):
        return
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        name = row[key]
        if name in seen:
            raise InvalidEpisode(
                f"{key}.unique",
                f'{key} "{name}" appears twice in this step (also at [{seen[name]}]); {key}s must be unique',
                path=f"{path}[{i}].{key}", step=step,
            )
        seen[name] = i
