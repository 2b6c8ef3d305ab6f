"""Write the hostile-input corpus: ``bad/`` (each file rejected) and ``odd/`` (each file accepted).

Every file in ``bad/`` is named ``<rule>--<what>.<ext>``: ``<rule>`` is the rule the pipeline must
reject it with (``InvalidEpisode.rule``). Files in ``odd/`` look hostile but are valid episodes;
``tests/test_bad_input.py`` says what each must read back as.

The output is deterministic (no clocks, no randomness, no compressor whose bytes depend on a
library version: PNG and gzip are written by hand with stored deflate blocks) so the committed
files can be checked against a fresh run. Inputs whose point is their size (hundreds of MB) are
not here: the tests generate those at run time.

    python tests/data/make_bad_corpus.py          # rewrite tests/data/bad and tests/data/odd
"""

from __future__ import annotations

import base64
import bz2
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def agent(name: str = "p0", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"agent": name, "action": 1, "reward": 0.5, "observation_space": [0.0, 1.0, 2.0]}
    row.update(fields)
    return row


def episode(steps: int = 3, **training: Any) -> dict[str, Any]:
    """A small valid episode: ``steps`` steps of one agent with scalar rewards."""
    return {
        "training": {"environment": "CartPole-v1", "algorithm": "PPO", "iterations": 10, **training},
        "inference": {"steps": [{"number": i, "agent_steps": [agent(reward=float(i))]} for i in range(steps)]},
    }


def dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def raw(document: Any, **texts: str | bytes) -> bytes:
    """``document`` serialised, with each string value ``"@NAME@"`` replaced by raw JSON text (or bytes)."""
    data = dumps(document)
    for name, text in texts.items():
        marker = f'"@{name}@"'.encode()
        assert data.count(marker) == 1, name
        data = data.replace(marker, text.encode() if isinstance(text, str) else text)
    return data


def first_agent(document: dict[str, Any]) -> dict[str, Any]:
    return document["inference"]["steps"][0]["agent_steps"][0]


def with_agent(**fields: Any) -> dict[str, Any]:
    doc = episode()
    first_agent(doc).update(fields)
    return doc


def without_agent_keys(*keys: str, **fields: Any) -> dict[str, Any]:
    doc = with_agent(**fields)
    for key in keys:
        del first_agent(doc)[key]
    return doc


def with_image(text: str) -> dict[str, Any]:
    doc = episode()
    doc["inference"]["steps"][0]["image"] = text
    return doc


def deep(levels: int, kind: str = "array") -> str:
    """JSON text nested ``levels`` deep: ``[[[...]]]`` or ``{"a":{"a":...1}}``."""
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stored_zlib(data: bytes) -> bytes:
    """A zlib stream of stored (uncompressed) deflate blocks: the same bytes with any zlib build."""
    return b"\x78\x01" + _stored_deflate(data) + struct.pack(">I", zlib.adler32(data))


def _stored_deflate(data: bytes) -> bytes:
    blocks, limit = [], 0xFFFF
    for start in range(0, max(len(data), 1), limit):
        block = data[start : start + limit]
        final = start + limit >= len(data)
        blocks.append(bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block)
    return b"".join(blocks)


def png(width: int, height: int, *, pixels: bool = True) -> bytes:
    """An RGB PNG written chunk by chunk; ``pixels=False`` leaves out the image data (header only).

    A huge ``width``/``height`` with a few bytes of data is a decompression bomb: tiny on disk,
    gigabytes once decoded.
    """
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if pixels:
        # A filter byte then RGB pixels per row; a bomb gets a few bytes: its header promises far more.
        small = width * height <= 4096
        scanlines = (b"\x00" + b"\x10\x20\x30" * width) * height if small else b"\x00" * 32
        out += _chunk(b"IDAT", _stored_zlib(scanlines))
    return out + _chunk(b"IEND", b"")


def _zeros_zlib(count: int) -> bytes:
    """A zlib stream of ``count`` zero bytes, written by hand: one fixed-Huffman block holding a
    literal 0 then copies of 258 bytes at distance 1 (13 bits each), so 8 MiB take 53 kB."""
    bits: list[int] = []

    def put(value: int, width: int, *, code: bool = False) -> None:
        # Header fields go least significant bit first, Huffman codes most significant bit first.
        bits.extend((value >> i) & 1 for i in (range(width - 1, -1, -1) if code else range(width)))

    put(1, 1)  # the final block
    put(1, 2)  # fixed Huffman codes
    put(0b00110000, 8, code=True)  # literal 0
    copies, literals = divmod(count - 1, 258)
    for _ in range(copies):
        put(0b11000101, 8, code=True)  # length 258
        put(0, 5, code=True)  # distance 1
    for _ in range(literals):
        put(0b00110000, 8, code=True)
    put(0, 7, code=True)  # end of block
    bits.extend([0] * (-len(bits) % 8))
    packed = bytes(sum(bit << i for i, bit in enumerate(bits[n : n + 8])) for n in range(0, len(bits), 8))
    return b"\x78\x01" + packed + struct.pack(">I", zlib.adler32(b"\x00" * count))


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A complete 1-bit greyscale PNG, all black: the largest image that stays small on disk."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    scanlines = height * (1 + (width + 7) // 8)  # each row: filter type 0, then the pixels, all 0
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", _zeros_zlib(scanlines))
            + _chunk(b"IEND", b""))


def tiny_jpeg() -> bytes:
    """A complete baseline JPEG written by hand: 8x8 grey, one block whose every coefficient is 0.

    Quantisation table 0 all ones; DC and AC Huffman tables of one 1-bit code each (symbol 0: DC
    difference 0, and end of block); the scan is those two codes, padded with 1 bits: 0x3F.
    """
    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    one_code = bytes([1] + [0] * 15) + b"\x00"
    return (b"\xff\xd8"
            + segment(0xDB, b"\x00" + b"\x01" * 64)
            + segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            + b"\x3f\xff\xd9")


def png_with_bad_header_crc(width: int, height: int) -> bytes:
    data = bytearray(png(width, height))
    data[29] ^= 0xFF  # the first byte of the IHDR chunk's CRC
    return bytes(data)


def gif(width: int, height: int) -> bytes:
    """A one-frame GIF declaring ``width`` x ``height``, with LZW data for 6 black pixels (all of 3x2)."""
    size = struct.pack("<HH", width, height)
    return (b"GIF89a" + size + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"  # screen, 2-colour table
            + b"\x2c\x00\x00\x00\x00" + size + b"\x00"  # image descriptor
            + b"\x02\x04\x04\x00\x00\x05\x00" + b"\x3b")  # LZW: clear, six 0s, end; then the trailer


def bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width`` x ``height``, followed by one pixel."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 4, 0, 0, 14 + len(info)) + info + b"\x00" * 4


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG = png(2, 2)
PNG_B64 = b64(PNG)
FRAME = png(32, 32)  # 3.2 kB: a frame whose half still holds a whole header
JPEG = tiny_jpeg()


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


def gzip_stored(data: bytes) -> bytes:
    """A gzip member (mtime 0, stored blocks): byte-identical on every machine."""
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"
    return header + _stored_deflate(data) + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


def bad_files() -> dict[str, bytes]:
    """Files the pipeline must reject, by name; the name's part before ``--`` is the rule."""
    text = dumps(episode())
    gz = gzip_stored(text)
    bz = bz2.compress(text, 9)
    files: dict[str, bytes] = {
        # --- the whole document ---------------------------------------------------------------
        "document.object--empty.json": b"",
        "document.object--whitespace-only.json": b" \n\t\r\n ",
        "document.object--bom-only.json": b"\xef\xbb\xbf",
        "document.object--null.json": b"null",
        "document.object--empty-array.json": b"[]",
        "document.object--episode-inside-an-array.json": b"[" + text + b"]",
        "document.object--number.json": b"42",
        "document.object--string.json": b'"episode"',
        "document.object--boolean.json": b"true",
        "document.object--utf16-encoded.json": b"\xff\xfe" + text.decode().encode("utf-16-le"),
        "document.object--line-comment-before-document.json": b"// exported by hand\n" + text,
        "document.object--empty-inside-gzip.json.gz": gzip_stored(b""),
        "document.required--no-training.json": dumps({"inference": episode()["inference"]}),
        "document.required--no-inference.json": dumps({"training": episode()["training"]}),
        "document.required--inference-without-steps.json": dumps({**episode(), "inference": {"parallel": True}}),
        "document.steps--empty-steps.json": dumps({**episode(), "inference": {"steps": []}}),
        "document.steps--steps-is-null.json": dumps({**episode(), "inference": {"steps": None}}),
        "document.unknown_key--top-level.json": dumps({**episode(), "metadata": {"by": "me"}}),
        "document.unknown_key--inside-inference.json": dumps(
            {**episode(), "inference": {**episode()["inference"], "seed": 1}}),
        "document.duplicate_key--training-twice.json": text[:-1] + b', "training": '
        + dumps(episode()["training"]) + b"}",
        "document.duplicate_key--inference-twice.json": text[:-1] + b', "inference": '
        + dumps({"steps": [{"number": 9}]}) + b"}",
        "document.duplicate_key--steps-twice.json": text.replace(
            b'"inference": {', b'"inference": {"steps": [{"number": 7}], '),
        "document.duplicate_key--action-mapping-twice.json": text[:-1]
        + b', "action_mapping": {"0": "a"}, "action_mapping": {"1": "b"}}',
        "document.duplicate_key--inference-config-twice.json": text.replace(
            b'"inference": {', b'"inference": {"config": {"a": 1}, "config": {"b": 2}, '),
        # --- bytes that are not (only) JSON ---------------------------------------------------
        "file.trailing_data--garbage-after-document.json": text + b"\n}garbage",
        "file.trailing_data--second-document.json": text + b"\n" + text + b"\n",
        "file.trailing_data--nul-byte-after-document.json": text + b"\x00",
        "file.trailing_data--second-gzip-member-holds-a-second-document.json.gz": gz + gz,
        "file.truncated--cut-inside-a-step.json": text[: text.index(b'{"number": 2') + 15],
        "file.truncated--cut-inside-training.json": text[: text.index(b'"algorithm"') + 5],
        "file.truncated--closing-brace-missing.json": text[:-1],
        "file.json--nan-literal.json": raw(with_agent(reward="@V@"), V="NaN"),
        "file.json--infinity-literal.json": raw(with_agent(reward="@V@"), V="Infinity"),
        "file.json--negative-infinity-in-config.json": raw(episode(config={"lr": "@V@"}), V="-Infinity"),
        "file.json--trailing-comma.json": text.replace(b'"algorithm": "PPO"', b'"algorithm": "PPO",}', 1),
        "file.json--single-quoted-strings.json": text.replace(b'"algorithm": "PPO"', b"'algorithm': 'PPO'", 1),
        "file.json--hex-number.json": raw(with_agent(action="@V@"), V="0x10"),
        "file.json--raw-newline-inside-a-string.json": raw(episode(algorithm="@V@"), V='"P\nPO"'),
        "file.json--raw-nul-inside-a-string.json": raw(episode(algorithm="@V@"), V=b'"P\x00PO"'),
        "file.json--bad-escape.json": raw(episode(algorithm="@V@"), V='"P\\xPO"'),
        # --- encoding -----------------------------------------------------------------------
        "file.utf8--invalid-byte.json": raw(with_agent(agent="@V@"), V=b'"p\xff\xfe"'),
        "file.utf8--cut-multibyte-sequence.json": raw(with_agent(agent="@V@"), V=b'"\xe6\x97"'),
        "file.utf8--latin1-text.json": raw(episode(algorithm="@V@"), V="\"Q-l\xe9arning\"".encode("latin-1")),
        "file.utf8--overlong-encoding.json": raw(episode(algorithm="@V@"), V=b'"\xc0\xaf"'),
        "file.utf8--utf8-encoded-surrogate.json": raw(episode(algorithm="@V@"), V=b'"\xed\xa0\x80"'),
        "file.utf8--escaped-lone-low-surrogate.json": raw(episode(algorithm="@V@"), V='"\\udfff"'),
        "file.utf8--escaped-lone-high-surrogate.json": raw(episode(algorithm="@V@"), V='"x\\ud800y"'),
        "file.utf8--escaped-two-high-surrogates.json": raw(with_agent(agent="@V@"), V='"\\ud800\\ud800"'),
        # --- compression --------------------------------------------------------------------
        "file.compression--truncated.json.gz": gz[: len(gz) // 2],
        "file.compression--trailer-missing.json.gz": gz[:-8],
        "file.compression--bad-crc.json.gz": gz[:-8] + struct.pack("<I", zlib.crc32(text) ^ 1) + gz[-4:],
        "file.compression--not-gzip-at-all.json.gz": text,
        "file.compression--garbage-after-gzip-member.json.gz": gz + b"not gzip",
        "file.compression--truncated.json.bz2": bz[: len(bz) // 2],
        # --- numbers ------------------------------------------------------------------------
        "number.int64--action-2-pow-63.json": raw(with_agent(action="@V@"), V=str(2**63)),
        "number.int64--below-int64-min.json": raw(with_agent(action="@V@"), V=str(-(2**63) - 1)),
        "number.int64--10000-digit-integer-in-config.json": raw(episode(config={"seed": "@V@"}), V="9" * 10_000),
        "number.int64--step-number-1e20.json": dumps(episode(steps=1)).replace(b'"number": 0', b'"number": 1e20'),
        "number.int64--iterations-1e19.json": raw(episode(iterations="@V@"), V="1e19"),
        "number.finite--float-overflow.json": raw(with_agent(reward="@V@"), V="1e400"),
        "number.finite--negative-overflow-in-config.json": raw(episode(config={"lr": "@V@"}), V="-1e309"),
        "number.finite--huge-exponent.json": raw(with_agent(health="@V@"), V="1e999999999999"),
        # --- nesting ------------------------------------------------------------------------
        "document.depth--config-10000-levels.json": raw(episode(config="@V@"), V=deep(10_000, "object")),
        "document.depth--custom-metrics-10000-levels.json": raw(
            with_agent(custom_metrics="@V@"), V=deep(10_000, "object")),
        "document.depth--custom-metrics-axis-10000-levels.json": raw(
            with_agent(custom_metrics={"Loss": {"x": "@V@"}}), V=deep(10_000)),
        "document.depth--inference-config-10000-levels.json": raw(
            {**episode(), "inference": {"config": "@V@", "steps": episode()["inference"]["steps"]}},
            V=deep(10_000, "object")),
        "document.depth--observation-10000-levels.json": raw(with_agent(observation_space="@V@"), V=deep(10_000)),
        "document.depth--action-mapping-value-10000-levels.json": raw({**episode(), "action_mapping": {"0": "@V@"}},
                                                                      V=deep(10_000)),
        "document.depth--step-is-10000-levels-of-arrays.json": text.replace(
            b'"steps": [', b'"steps": [' + deep(10_000).encode() + b", ", 1),
        "document.depth--unclosed-100000-arrays.json": b'{"training": {"config": ' + b"[" * 100_000,
        # --- images -------------------------------------------------------------------------
        "image.decodable--png-bomb-100000x100000.json": dumps(with_image(b64(png(100_000, 100_000)))),
        "image.decodable--png-bomb-2147483647x1.json": dumps(with_image(b64(png(2**31 - 1, 1)))),
        "image.decodable--png-bomb-8193x8193.json": dumps(with_image(b64(png(8193, 8193)))),
        "image.decodable--png-bomb-with-bad-header-crc.json": dumps(
            with_image(b64(png_with_bad_header_crc(100_000, 100_000)))),
        "image.decodable--png-zero-width.json": dumps(with_image(b64(png(0, 4)))),
        "image.decodable--gif-bomb-65535x65535.json": dumps(with_image(b64(gif(65_535, 65_535)))),
        "image.decodable--bmp-bomb-100000x100000.json": dumps(with_image(b64(bmp(100_000, 100_000)))),
        "image.decodable--not-an-image.json": dumps(with_image(b64(b"hello, world"))),
        "image.decodable--empty-string.json": dumps(with_image("")),
        "image.decodable--png-signature-only.json": dumps(with_image(b64(PNG[:8]))),
        "image.decodable--png-header-only-no-image-data.json": dumps(with_image(b64(png(4, 4, pixels=False)))),
        "image.decodable--png-cut-in-half.json": dumps(with_image(b64(FRAME[: len(FRAME) // 2]))),
        "image.decodable--png-one-bit-flipped-in-image-data.json": dumps(with_image(b64(flipped(FRAME, 1000)))),
        "image.decodable--png-padded-after-iend.json": dumps(with_image(b64(FRAME + b"\x00" * 16))),
        "image.decodable--jpeg-without-end-marker.json": dumps(with_image(b64(JPEG[:-2]))),
        "image.decodable--jpeg-padded-after-end-marker.json": dumps(with_image(b64(JPEG + b"\x00" * 16))),
        "image.decodable--gif-without-trailer.json": dumps(with_image(b64(gif(3, 2)[:-1]))),
        "image.decodable--bmp-cut-inside-pixels.json": dumps(with_image(b64(bmp(1, 1)[:-3]))),
        "image.base64--space-inside.json": dumps(with_image(PNG_B64[:12] + " " + PNG_B64[12:])),
        "image.base64--mime-line-breaks.json": dumps(
            with_image("\r\n".join(PNG_B64[i : i + 20] for i in range(0, len(PNG_B64), 20)))),
        "image.base64--trailing-newline.json": dumps(with_image(PNG_B64 + "\n")),
        "image.base64--url-safe-alphabet.json": dumps(
            with_image(base64.urlsafe_b64encode(PNG + b"\xfb\xef\xff").decode())),
        "image.base64--data-uri.json": dumps(with_image("data:image/png;base64," + PNG_B64)),
        "image.base64--non-ascii-character.json": dumps(with_image(PNG_B64[:8] + "é" + PNG_B64[9:])),
        "image.base64--missing-padding.json": dumps(with_image(b64(PNG + b"x").rstrip("="))),
        "image.base64--too-much-padding.json": dumps(with_image(b64(PNG + b"x") + "==")),
        # --- a broad sample of the format rules --------------------------------------------
        "value.type--reward-is-a-string.json": dumps(with_agent(reward="0.5")),
        "value.type--action-is-a-boolean.json": dumps(with_agent(action=True)),
        "value.type--step-number-is-fractional.json": dumps({**episode(), "inference": {"steps": [{"number": 0.5}]}}),
        # Read as the float 2^53, it would be stored as step 9007199254740992 (docs/format.md, Numbers).
        "value.type--step-number-beyond-2-pow-53-written-as-a-float.json": raw(
            {**episode(), "inference": {"steps": [{"number": "@V@"}]}}, V="9007199254740993.0"),
        "value.type--training-is-an-array.json": dumps({**episode(), "training": []}),
        "value.type--image-is-a-number.json": dumps(with_image(7)),  # type: ignore[arg-type]
        "document.required--agent-missing.json": dumps(without_agent_keys("agent")),
        "document.required--observation-missing.json": dumps(without_agent_keys("observation_space")),
        "document.unknown_key--agent-step.json": dumps(with_agent(speed=3)),
        "document.unknown_key--unit-step-with-observation.json": dumps(with_agent(unit_steps=[
            {"unit": "u", "action": 0, "reward": 1, "observation_space": [1]}])),
        "value.length--environment-201-characters.json": dumps(episode(environment="E" * 201)),
        "value.length--agent-name-150000-characters.json": dumps(with_agent(agent="a" * 150_000)),
        "value.length--algorithm-empty.json": dumps(episode(algorithm="")),
        "value.minimum--negative-step-number.json": dumps({**episode(), "inference": {"steps": [{"number": -1}]}}),
        "value.minimum--iterations-zero.json": dumps(episode(iterations=0)),
        "value.min_items--empty-rewards.json": dumps(without_agent_keys("reward", rewards=[])),
        "value.min_items--empty-reward-mapping.json": dumps(episode(reward_mapping=[])),
        "value.key_pattern--action-mapping-key-is-a-name.json": dumps({**episode(), "action_mapping": {"fire": "1"}}),
        "reward.exactly_one--both.json": dumps(with_agent(rewards=[0.5])),
        "reward.exactly_one--neither.json": dumps(without_agent_keys("reward")),
        "reward.length--vector-without-mapping.json": dumps(without_agent_keys("reward", rewards=[1, 2])),
        "reward.length--vector-shorter-than-mapping.json": dumps(
            {**episode(reward_mapping=["a", "b", "c"]), "inference": {"steps": [
                {"number": 0, "agent_steps": [agent(reward=None, rewards=[1, 2])]}]}}),
        "reward.consistent--reward-then-rewards.json": dumps(
            {**episode(), "inference": {"steps": [
                {"number": 0, "agent_steps": [agent()]},
                {"number": 1, "agent_steps": [agent(reward=None, rewards=[1])]}]}}),
        "observation.shape--strings.json": dumps(with_agent(observation_space=["a", "b"])),
        "observation.shape--3-d.json": dumps(with_agent(observation_space=[[[1.0]]])),
        "observation.shape--20000-numbers-then-a-string.json": dumps(
            with_agent(observation_space=[0.5] * 20_000 + ["x"])),
        "observation.rectangular--ragged-rows.json": dumps(with_agent(observation_space=[[1, 2], [3]])),
        "step.number_unique--same-number-twice.json": dumps(
            {**episode(), "inference": {"steps": [{"number": 4}, {"number": 5}, {"number": 4}]}}),
        "agent.unique--same-agent-twice.json": dumps(
            {**episode(), "inference": {"steps": [{"number": 0, "agent_steps": [agent("p0"), agent("p0")]}]}}),
        "unit.unique--same-unit-twice.json": dumps(with_agent(unit_steps=[
            {"unit": "u", "action": 0, "reward": 1}, {"unit": "u", "action": 1, "reward": 0}])),
    }
    return files


def odd_files() -> dict[str, bytes]:
    """Files that look hostile but are valid episodes: each must be ingested (see test_bad_input.py)."""
    text = dumps(episode())
    half = len(text) // 2
    nested_duplicates = (
        text.replace(b'"algorithm": "PPO"', b'"algorithm": "PPO", "algorithm": "A2C"', 1)
        .replace(b'"iterations": 10', b'"iterations": 10, "config": {"lr": 1, "lr": 2}', 1)
        .replace(b'"action": 1,', b'"action": 1, "action": 3,', 1)
    )
    files: dict[str, bytes] = {
        "bom.json": b"\xef\xbb\xbf" + text,
        "whitespace-around-the-document.json": b"\r\n\t  " + text + b"\n\n  \t\r\n",
        "bom-inside-gzip.json.gz": gzip_stored(b"\xef\xbb\xbf" + text),
        "gzip-two-members-one-document.json.gz": gzip_stored(text[:half]) + gzip_stored(text[half:]),
        "nested-duplicate-keys-last-wins.json": nested_duplicates,
        "environment-dotdot-slash.json": dumps(episode(environment="../../x")),
        "environment-absolute-path.json": dumps(episode(environment="/etc/passwd")),
        "environment-with-nul.json": dumps(episode(environment="a\x00b")),
        "environment-dotdot.json": dumps(episode(environment="..")),
        "environment-staging-folder-name.json": dumps(episode(environment="../_staging")),
        "environment-backslashes.json": dumps(episode(environment="..\\..\\x")),
        "environment-emoji-as-surrogate-pair.json": json.dumps(episode(environment="\U0001f600 env")).encode(),
        "escaped-nul-in-strings.json": dumps(with_agent(agent="p\x00q")),
        "gif-small.json": dumps(with_image(b64(gif(3, 2)))),
        "bmp-small.json": dumps(with_image(b64(bmp(1, 1)))),
        "jpeg-small.json": dumps(with_image(b64(JPEG))),
        # No checksum covers a JPEG's entropy-coded data: libjpeg decodes a flipped bit there (to other pixels).
        "jpeg-bit-flipped-in-entropy-coded-data.json": dumps(with_image(b64(flipped(JPEG, len(JPEG) - 3)))),
        "png-8192x8192-at-the-pixel-cap.json": dumps(with_image(b64(blank_bilevel_png(8192, 8192)))),
        "float-underflow-becomes-zero.json": raw(with_agent(reward="@V@"), V="1e-400"),
        "extreme-finite-numbers.json": raw(
            with_agent(action="@A@", health="@H@", value_estimate="@V@"),
            A=str(2**63 - 1), H="1.7976931348623157e308", V="5e-324"),
        "10000-digit-mantissa.json": raw(with_agent(reward="@V@"), V="0.5" + "0" * 9_998 + "1"),
        "integral-float-iterations.json": raw(episode(iterations="@V@"), V="10.0"),
        "integral-float-step-number.json": text.replace(b'"number": 1,', b'"number": 1.0,', 1),
        "long-string-in-config.json": dumps(episode(config={"notes": "n" * 150_000})),
        "config-254-levels-deep.json": raw(episode(config="@V@"), V=deep(254, "object")),
        "inference-before-training.json": dumps(
            {"inference": episode()["inference"], "training": episode()["training"]}),
    }
    return files


def corpus() -> dict[str, bytes]:
    """Every file of the corpus by its path under ``tests/data``."""
    return {**{f"bad/{k}": v for k, v in bad_files().items()}, **{f"odd/{k}": v for k, v in odd_files().items()}}


def main(root: Path = HERE) -> None:
    for folder in ("bad", "odd"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for old in (root / folder).iterdir():
            old.unlink()
    for name, data in corpus().items():
        assert len(data) < 200_000, name
        (root / name).write_bytes(data)
    print(f"wrote {len(bad_files())} files to {root / 'bad'} and {len(odd_files())} to {root / 'odd'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
