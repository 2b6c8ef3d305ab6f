"""The episode JSON Schema, compiled, and its errors told in words a person can act on.

``schemas/episode.schema.json`` is the single statement of the format. On the hot path each part of
the document (a header value, a step, a batch of steps) is checked against its ``$defs`` entry with
``jsonschema-rs`` (compiled, hundreds of times faster than the pure-Python ``jsonschema``, which stays
the reference in the tests); a part that fails is cut down to its first error
(:func:`.cutdown.cut_down`) and the deepest error explained with the rule id it breaks.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from ..errors import InvalidEpisode, shorten
from .cutdown import cut_down

SCHEMA_FILE = "episode.schema.json"
STEPS_PATH = "inference.steps"



def schema_path() -> Path:
    """Where the schema file is: inside the installed package, or at the repository's top level."""
    # A path from __file__, not importlib.resources (~3 ms of every run's start-up): the package is
    # always installed as files (a wheel, or editable from a checkout), never zipped.
    package = Path(__file__).resolve().parents[1]
    installed = package / "schemas" / SCHEMA_FILE
    if installed.is_file():
        return installed
    return package.parent / "schemas" / SCHEMA_FILE


@cache
def load_schema() -> dict[str, Any]:
    """The episode JSON Schema (2020-12) as a dict."""
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


def part_schema(definition: str) -> dict[str, Any]:
    """A schema document that validates one ``$defs`` entry of the episode schema."""
    schema = load_schema()
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}


# Which ``$defs`` entry checks each part of the document that the source yields.
PART_DEFINITIONS = {
    "training": "training",
    "action_mapping": "action_mapping",
    "inference.parallel": "inference_parallel",
    "inference.config": "inference_config",
    "step": "step",
}


@cache
def _validator(definition: str) -> Any:
    return jsonschema_rs.validator_for(part_schema(definition))


# The parser reads a number written with a fraction or exponent (1.0, 1e3) as a float, and a float holds
# every integer exactly only up to 2^53: beyond, 9007199254740993.0 reads as 9007199254740992.0.
EXACT_FLOAT_INTEGERS = 2**53


def whole_number(value: int | float, path: str, step: int | None = None) -> int:
    """An integer field's schema-valid value as an int: ``1.0`` is 1; a float that may be rounded is refused."""
    if type(value) is int:
        return value
    if abs(value) >= EXACT_FLOAT_INTEGERS:
        raise InvalidEpisode(
            "value.type", f"must be an integer; from 2^53 on, write it without a fraction or exponent "
            f"(it cannot be read exactly as written), found {value!r}", path=path, step=step)
    return int(value)


def check_part(part: str, value: Any, *, path: str | None = None, step: int | None = None) -> None:
    """Check one part (a header value or a step) against the schema; raise :class:`InvalidEpisode`."""
    validator = _validator(PART_DEFINITIONS[part])
    if validator.is_valid(value):
        if part == "training":
            value["iterations"] = whole_number(value["iterations"], f"{path or part}.iterations")
        return
    shifts = cut_down(value, lambda: not validator.is_valid(value), keep=_schema_keys())
    errors = list(validator.iter_errors(value))
    # The deepest error is the most specific: a wrong type inside a reward beats the oneOf above it.
    error = max(errors, key=lambda e: len(e.instance_path))
    raise _explain(error, path or part, step, value, shifts)


@cache
def _schema_keys() -> frozenset[str]:
    """Every property name the schema declares, at any depth (what :func:`.cutdown.cut_down` keeps)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                names.update(properties)
            names.update(key for key in node.get("required", ()) if isinstance(key, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schema())
    return frozenset(names)


def check_step(step: Any, index: int) -> None:
    """Check one step against the schema (the hot path: one compiled ``is_valid`` call)."""
    if _validator("step").is_valid(step):
        return
    number = step.get("number") if type(step) is dict else None
    check_part("step", step, path=f"{STEPS_PATH}[{index}]", step=number if type(number) is int else None)


@cache
def _steps_validator() -> Any:
    """A validator of a list of steps: one call for a whole batch of the parser's steps."""
    schema = load_schema()
    return jsonschema_rs.validator_for({"$schema": schema["$schema"], "$defs": schema["$defs"],
                                        "type": "array", "items": {"$ref": "#/$defs/step"}})


def steps_are_valid(steps: list[Any]) -> bool:
    """Whether every step of ``steps`` is schema-valid (errors are found with :func:`check_step`)."""
    return bool(_steps_validator().is_valid(steps))


_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object", type(None): "null"}
_ARTICLES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "a boolean",
             "array": "an array", "object": "an object", "null": "null"}


def _join_path(base: str, parts: Any, root: Any, shifts: dict[int, int] | None = None) -> str:
    """``base`` plus an instance path; walks ``root`` so keys like "0" stay keys, not indexes.

    ``shifts``: lists cut by :func:`.cutdown.cut_down`, whose second element stands for the element at this index.
    """
    out, node = base, root
    for part in parts:
        if isinstance(node, list):
            index = shifts.get(id(node), 1) if shifts and int(part) == 1 else int(part)
            out += f"[{index}]"
            node = node[int(part)]
        else:
            key = str(part)
            out += f".{key}" if out else key
            node = node.get(key) if isinstance(node, dict) else None
    return out


def _explain(error: Any, base: str, step: int | None, root: Any,
             shifts: dict[int, int] | None = None) -> InvalidEpisode:
    """Turn a jsonschema-rs error into a message a person can act on."""
    kind = error.kind
    name = type(kind).__name__
    path = _join_path(base, error.instance_path, root, shifts)
    value = error.instance
    found = _JSON_TYPES.get(type(value), type(value).__name__)
    if name == "Type":
        wanted = " or ".join(_ARTICLES[t] for t in kind.types if t != "null")
        return InvalidEpisode("value.type", f"must be {wanted}, found {found}", path=path, step=step)
    if name == "Required":
        return InvalidEpisode("document.required", f'"{kind.property}" is required', path=path, step=step)
    if name == "AdditionalProperties":
        keys = ", ".join(f'"{shorten(k)}"' for k in kind.unexpected)
        return InvalidEpisode("document.unknown_key", f"unknown key {keys}", path=path, step=step)
    if name in ("MinLength", "MaxLength"):
        return InvalidEpisode(
            "value.length", f"must be 1 to 200 characters long, found {len(value)}", path=path, step=step
        )
    if name == "Minimum":
        return InvalidEpisode("value.minimum", f"must be at least {kind.limit}, found {value}", path=path, step=step)
    if name == "Maximum":
        # A float here was written with a fraction or exponent, and may have been rounded up to 2^63.
        how = "; written with a fraction or exponent it reads as that float" if type(value) is float else ""
        return InvalidEpisode(
            "number.int64", f"must fit in a signed 64-bit integer (at most {kind.limit}), found {value}{how}",
            path=path, step=step,
        )
    if name == "MinItems":
        return InvalidEpisode(
            "value.min_items", f"must have at least {kind.limit} element{'s' if kind.limit != 1 else ''}",
            path=path, step=step,
        )
    if name == "PropertyNames":
        key = shorten(kind.error.instance)
        return InvalidEpisode(
            "value.key_pattern",
            f'key "{key}" must be an integer written as a string (like "0" or "-1")',
            path=path, step=step,
        )
    if name in ("OneOfMultipleValid", "OneOfNotValid"):
        both = name == "OneOfMultipleValid"
        return InvalidEpisode(
            "reward.exactly_one",
            f'exactly one of "reward" or "rewards" is required, found {"both" if both else "neither"}',
            path=path, step=step,
        )
    if name == "AnyOf" and path.endswith("observation_space"):
        return InvalidEpisode(
            "observation.shape",
            "must be a 1-D array of numbers or a 2-D array of arrays of numbers",
            path=path, step=step,
        )
    return InvalidEpisode("value.schema", error.message, path=path, step=step)  # pragma: no cover
