"""Frames kept apart from the parse by the fast walk (pipeline/ingestion/framesapart.py).

What a user relies on: the steps and frames handed over are the ones the file holds, whatever its layout,
and a file whose frames cannot be cut safely is parsed whole, never misread.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingestion.fastwalk import NotFast
from pipeline.ingestion.framesapart import FramesApart, StepsApart
from pipeline.ingestion.rules import decode_images
from tests.helpers import PNG_B64


def _step(number: int, image: Any = PNG_B64, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"number": number}
    if image is not _ABSENT:
        step["image"] = image
    step["agent_steps"] = [{"agent": "a", "action": number % 4, "reward": 0.5, "observation_space": [0.25, -1.0]}]
    step.update(extra)
    return step


_ABSENT = object()
LAYOUTS = {
    "compact": lambda value: json.dumps(value, separators=(",", ":")),
    "spaced": json.dumps,
    "indented": lambda value: json.dumps(value, indent=2),
    "tabs-crlf": lambda value: json.dumps(value, indent="\t").replace("\n", "\r\n"),
}


def _body(steps: list[dict[str, Any]], layout: str = "compact") -> bytes:
    """The steps' text as it stands between the brackets of the steps array."""
    dump = LAYOUTS[layout]
    return (",\n" if layout != "compact" else ",").join(dump(step) for step in steps).encode()


def _parsed(body: bytes) -> list[Any]:
    """What the file holds: every step, an image of null written as no image."""
    return _without_null_images(orjson.loads(b"[" + body + b"]"))


def _without_null_images(steps: list[Any]) -> list[Any]:
    for step in steps:
        if isinstance(step, dict) and step.get("image", 0) is None:
            del step["image"]
    return steps


def _handed_over(result: list[Any]) -> list[Any]:
    """The steps :meth:`FramesApart.parse` returned, each frame's text put back as its image."""
    steps = [dict(step) for step in result]
    if type(result) is StepsApart:
        assert len(result.lengths) == len(steps)
        texts = iter(result.texts)
        for step, length in zip(steps, result.lengths, strict=True):
            assert "image" not in step
            if length >= 0:
                text = next(texts)
                assert len(text) == length
                step["image"] = bytes(text).decode("ascii")
        assert next(texts, None) is None
    return _without_null_images(steps)


def _enabled() -> FramesApart:
    apart = FramesApart()
    apart.enabled = True
    return apart


@pytest.mark.parametrize("layout", LAYOUTS)
def test_frames_come_apart_in_every_layout_and_the_steps_are_the_files(layout):
    steps = [_step(0), _step(1, image=None), _step(2, image=_ABSENT), _step(3, custom_metrics={"x": 1})]
    body = _body(steps, layout)
    apart = _enabled()
    result = apart.parse(body)
    assert type(result) is StepsApart
    assert result.lengths == [len(PNG_B64), -1, -1, len(PNG_B64)]
    assert _handed_over(result) == _parsed(body)
    assert apart.enabled


def test_without_frames_the_steps_are_parsed_as_usual():
    body = _body([_step(0, image=_ABSENT), _step(1, image=None)])
    apart = _enabled()
    result = apart.parse(body)
    assert type(result) is list and result == orjson.loads(b"[" + body + b"]")
    assert apart.enabled  # a later batch may have frames


def test_a_disabled_switch_parses_the_steps_whole():
    body = _body([_step(0), _step(1)])
    assert FramesApart().parse(body) == orjson.loads(b"[" + body + b"]")


# Texts whose "image" strings cannot all be cut as frames: each is parsed whole, and the cutting stops.
DOUBTFUL = {
    "escaped slashes": _body([_step(0, image="/w=="), _step(1, image="QUJD/w==")]).replace(b"/", b"\\/"),
    "a metric named image": _body([_step(0), _step(1, custom_metrics={"image": "not a frame"})]),
    "an agent's metric named image": _body([_step(0, agent_steps=[
        {"agent": "a", "action": 0, "reward": 1.0, "custom_metrics": {"image": PNG_B64}}])]),
    "a key that ends in image": _body([_step(0, **{'x"image': "abc"})]),
    "an image twice in a step": _body([_step(0)]).replace(b'"number":0', b'"number":0,"image":"QUJD"'),
    "an image of null after a frame": _body([_step(0)]).replace(b'"agent_steps"', b'"image":null,"agent_steps"'),
    "an image that is a number": _body([_step(0), _step(1, image=12)]),
    "an image that is an object": _body([_step(0), _step(1, image={"image": "QUJD"})]),
    "an image with a quote in it": _body([_step(0), _step(1, image='QU"JD')]),
}


@pytest.mark.parametrize("body", DOUBTFUL.values(), ids=DOUBTFUL.keys())
def test_doubtful_frames_are_parsed_whole_and_the_cutting_stops(body):
    apart = _enabled()
    result = apart.parse(body)
    assert type(result) is list
    assert result == orjson.loads(b"[" + body + b"]")
    assert not apart.enabled
    again = apart.parse(_body([_step(5)]))  # the rest of the file: parsed whole
    assert type(again) is list and again[0]["image"] == PNG_B64


def test_a_stand_in_is_not_a_text_a_file_can_hold():
    """The stand-in is made anew for each walk: a file holding one walk's cannot fool the next."""
    assert FramesApart()._stand_in != FramesApart()._stand_in


def test_a_cut_inside_a_step_fails_to_parse_as_before():
    body = _body([_step(0), _step(1)])
    cut = body[: body.index(b'"image"', 10) + 20]  # ends inside the second step's frame
    with pytest.raises(NotFast):
        _enabled().parse(cut)
    with pytest.raises(NotFast):
        FramesApart().parse(cut)


def _images() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(_ABSENT), st.none(), st.just(PNG_B64), st.just("QUJD"),
        st.text(max_size=12),  # quotes, backslashes, control characters, non-ASCII: escaped by json.dumps
        st.integers(-(2**62), 2**62), st.lists(st.integers(-(2**62), 2**62), max_size=2),
    )


_METRICS = st.one_of(st.none(), st.dictionaries(st.sampled_from(["image", "x", 'a"image', "image "]),
                                                st.one_of(st.text(max_size=6), st.integers(-(2**62), 2**62)), max_size=2))


@st.composite
def _steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    steps = []
    for number in range(draw(st.integers(1, 6))):
        metrics = draw(_METRICS)
        step = _step(number, image=draw(_images()), **({} if metrics is None else {"custom_metrics": metrics}))
        if draw(st.booleans()):  # another key order
            keys = list(step)
            random.Random(draw(st.integers(0, 99))).shuffle(keys)
            step = {key: step[key] for key in keys}
        steps.append(step)
    return steps


@given(_steps(), st.sampled_from(sorted(LAYOUTS)))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_what_is_handed_over_is_what_the_file_holds(steps, layout):
    body = _body(steps, layout)
    assert _handed_over(_enabled().parse(body)) == _parsed(body)


@given(_steps(), st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_damaged_text_is_refused_or_its_frames_fail_their_check(steps, data):
    """A text that is not JSON any more either fails to parse or holds a frame that strict base64 refuses
    (the check every frame gets); one that is still JSON is handed over as the file holds it."""
    body = bytearray(_body(steps))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.sampled_from(b'"\\:,{}[] \x01\xff0aA/='))
    body = bytes(body)
    try:
        expected: list[Any] | None = _parsed(body)
    except orjson.JSONDecodeError:
        expected = None
    try:
        result = _enabled().parse(body)
    except NotFast:
        assert expected is None or _integer_outside_int64(body)
        return
    if expected is not None:
        assert _handed_over(result) == expected
    else:
        assert type(result) is StepsApart and decode_images(result.texts) is None


def _integer_outside_int64(body: bytes) -> bool:
    """Whether the int64 guard, which reads digits without knowing strings, had a reason to doubt ``body``."""
    import re

    return any(len(digits) >= 19 for digits in re.findall(rb"[0-9]+", body))
