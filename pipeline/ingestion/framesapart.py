"""The steps' frames kept apart from the parse: the fast walk hands their base64 text over as it is.

On a file of frames, most of the text is the frames' base64 (93 of 100 MB on the frames profile). Parsed,
each becomes a Python string that the reader of the two-process ingest marshals through the pipe and its
child unmarshals, before it decodes it: two full passes over the text in the reader (the int64 guard,
orjson) and two copies on each side, for text that no rule reads as JSON. With :class:`FramesApart`
enabled, the fast walk (:mod:`.fastwalk`) finds each step's ``"image": "…"`` string in a batch's text with
``bytes.find``, puts a stand-in in its place, parses the rest, and hands the frames' text over beside the
steps (:class:`StepsApart`), to be sent as one message and decoded by whichever process checks them.

Nothing is cut that would be parsed otherwise:

- A string is cut only between its quotes, and only without a backslash in it; the stand-in is a string
  too, so the text parses exactly when the original does, but for what the cut strings held, which strict
  base64 decoding (``images.base64``, where they are checked) refuses unless it is plain base64 text.
- ``"image"`` followed by a colon and a string can also be a key inside a step (a custom metric's), or end
  a longer key (``"a\\"image"``). The stand-in is a random text made for the walk (a file cannot hold
  it by chance, nor on purpose), so after the parse, stand-ins found as every cut step's ``image``, as
  many as were cut, prove that each cut string was one; else the batch is parsed again whole.
- A batch parsed again whole turns the cutting off for the rest of the file: a writer that escapes its
  frames' slashes (``\\/``) would otherwise have every batch parsed twice.

An ingest in one process (and a batch run's group commits) enables it from the start (``run._parts``):
:class:`~.builder.EpisodeBuilder` decodes the frames. The two-process ingest enables it once its child is
to check the steps (see :mod:`.parallel`). Any other walk gets the steps as the exact walk makes them.
"""

from __future__ import annotations

import os
from typing import Any

from .fastwalk import BATCH_AROUND, parse_checked

_KEY = b'"image"'
_WHITESPACE = b" \t\r\n"


class StepsApart(list[Any]):
    """A batch of steps without their frames, and the frames' base64 text: ``lengths`` (of each step's
    text; -1 for a step without a frame) and ``texts`` (the frames', in order, as views of the file's text)."""

    __slots__ = ("lengths", "texts")

    def __init__(self, steps: list[Any], lengths: list[int], texts: list[memoryview]) -> None:
        super().__init__(steps)
        self.lengths = lengths
        self.texts = texts


class FramesApart:
    """The fast walk's switch and parser for frames kept apart (see the module doc)."""

    def __init__(self, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self._stand_in = os.urandom(16).hex()
        self._stand_in_text = self._stand_in.encode()

    def parse(self, body: bytes | bytearray | memoryview) -> list[Any]:
        """The steps whose text (whole steps and what separates them) is ``body``; a :class:`StepsApart`
        if frames were cut from it. Raises what :func:`.fastwalk.parse_checked` raises."""
        if not self.enabled:
            return parse_checked(b"".join((b"[", body, b"]")), BATCH_AROUND)
        text = bytes(body)  # the same object if it is bytes already (the fast walk's): no copy
        spans = _image_strings(text)
        if not spans:
            if spans is None:  # a frame with a backslash in it: escaped slashes, most likely, in every one
                self.enabled = False
            return parse_checked(b"".join((b"[", text, b"]")), BATCH_AROUND)
        view = memoryview(text)
        pieces: list[bytes | memoryview] = [b"["]
        at = 0
        stand_in = self._stand_in_text
        for start, end in spans:
            pieces += (view[at:start], stand_in)
            at = end
        pieces += (view[at:], b"]")
        steps = parse_checked(b"".join(pieces), BATCH_AROUND)
        images = [step.get("image") if type(step) is dict else 0 for step in steps]
        cut = images.count(self._stand_in)
        if cut != len(spans) or cut + images.count(None) != len(images):
            self.enabled = False  # a cut string was not a step's frame, or a step's frame was not cut
            return parse_checked(b"".join((b"[", text, b"]")), BATCH_AROUND)
        for step in steps:
            step.pop("image", None)
        sizes = iter([end - start for start, end in spans])
        lengths = [-1 if image is None else next(sizes) for image in images]
        return StepsApart(steps, lengths, [view[start:end] for start, end in spans])


def _image_strings(text: bytes) -> list[tuple[int, int]] | None:
    """Where the strings after each ``"image":`` in ``text`` start and end (inside their quotes); None if
    one has a backslash in it; none after one that does not end in ``text`` (a cut inside a string, which
    does not parse)."""
    find = text.find
    spans = []
    backslash = find(b"\\")
    key = find(_KEY)
    while key >= 0:
        start = key + len(_KEY)
        if text[start : start + 2] == b':"':  # compact: the usual way
            start += 2
        else:
            start = _after_colon(text, start)
            if start < 0:  # "image" as a string value, or as a key whose value is no string
                key = find(_KEY, key + len(_KEY))
                continue
        end = find(b'"', start)
        if end < 0:
            return []
        if 0 <= backslash < end:
            if backslash >= start:
                return None
            backslash = find(b"\\", start)
            if 0 <= backslash < end:
                return None
        spans.append((start, end))
        key = find(_KEY, end + 1)
    return spans


def _after_colon(text: bytes, at: int) -> int:
    """Where a string starts after whitespace, a colon and whitespace from ``at`` (after its quote), or -1."""
    length = len(text)
    while at < length and text[at] in _WHITESPACE:
        at += 1
    if at >= length or text[at] != ord(":"):
        return -1
    at += 1
    while at < length and text[at] in _WHITESPACE:
        at += 1
    if at >= length or text[at] != ord('"'):
        return -1
    return at + 1
