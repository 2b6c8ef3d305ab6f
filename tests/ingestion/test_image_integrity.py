"""Every frame is checked whole at ingest (issue 13): an image cut short, damaged or padded is refused
with rule ``image.decodable``, the JSON path and the step, and nothing that Pillow cannot fully decode
gets into the lake.

``pipeline/images.py`` does the work; its docstring says what each format's check covers and costs.
"""

from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from functools import cache
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from benchmarks.generate import frame_pool
from cli import cli
from pipeline import InvalidEpisode, ingest, validate
from pipeline.ingestion.images import NOT_AN_IMAGE, ImageDamaged, check_image
from pipeline.ingestion.rules import MAX_IMAGE_PIXELS
from pipeline.lake.layout import ENV_VAR
from tests.helpers import episode, lake_snapshot, write_json

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Real images of every supported format
# ---------------------------------------------------------------------------------------------


def picture(size: tuple[int, int] = (48, 32), mode: str = "RGB") -> Image.Image:
    """A small scene with edges and flat areas, so every encoder has real work to do."""
    image = Image.new("RGB", size, (20, 40, 60))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 10, h // 10, w * 6 // 10, h * 8 // 10), fill=(200, 100, 50))
    draw.rectangle((w * 4 // 10, h // 3, w * 9 // 10, h * 9 // 10), fill=(10, 220, 90))
    draw.line((0, h - 1, w - 1, 0), fill=(255, 255, 255), width=2)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def interlaced_png(image: Image.Image) -> bytes:
    """An RGB PNG with Adam7 interlacing (Pillow writes none), every row with filter type 0."""
    width, height = image.size
    pixels = image.convert("RGB").tobytes()
    scanlines = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        for y in range(y0, height, dy):
            row = b"".join(pixels[(y * width + x) * 3 : (y * width + x) * 3 + 3] for x in range(x0, width, dx))
            if row:
                scanlines += b"\x00" + row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(scanlines)))
            + png_chunk(b"IEND", b""))


@cache
def frame() -> bytes:
    """A real frame: the 600x400 lunar-lander PNG of the frames benchmark profile (2.7 kB)."""
    return base64.b64decode(frame_pool(0, 2)[1])


@cache
def samples() -> dict[str, bytes]:
    scene = picture()
    return {
        "png-rgb": encode(scene, "PNG"),
        "png-rgba": encode(picture(mode="RGBA"), "PNG"),
        "png-palette": encode(picture(mode="P"), "PNG"),
        "png-bilevel": encode(picture(mode="1"), "PNG"),
        "png-grey16": encode(picture(mode="I;16"), "PNG"),
        "png-interlaced": interlaced_png(scene),
        "png-frame": frame(),
        "jpeg": encode(scene, "JPEG"),
        "jpeg-grey": encode(picture(mode="L"), "JPEG"),
        "jpeg-444": encode(scene, "JPEG", subsampling=0),
        "jpeg-progressive": encode(scene, "JPEG", progressive=True),
        "jpeg-restart-markers": encode(scene, "JPEG", restart_marker_blocks=2),
        "jpeg-cmyk": encode(picture(mode="CMYK"), "JPEG"),
        "mpo": encode(scene, "MPO", save_all=True, append_images=[scene.rotate(180)]),
        "gif": encode(scene, "GIF"),
        "gif-animated": encode(scene, "GIF", save_all=True, append_images=[scene.rotate(180)], duration=40),
        "bmp": encode(scene, "BMP"),
        "bmp-palette": encode(picture(mode="P"), "BMP"),
        "webp": encode(scene, "WEBP"),
        "webp-lossless": encode(scene, "WEBP", lossless=True),
        "tiff": encode(scene, "TIFF"),
    }


FORMATS = {"png": "PNG", "jpeg": "JPEG", "mpo": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP", "tiff": "TIFF"}
NAMES = ["png-rgb", "png-rgba", "png-palette", "png-bilevel", "png-grey16", "png-interlaced", "png-frame", "jpeg",
         "jpeg-grey", "jpeg-444", "jpeg-progressive", "jpeg-restart-markers", "jpeg-cmyk", "mpo", "gif",
         "gif-animated", "bmp", "bmp-palette", "webp", "webp-lossless", "tiff"]
# Formats whose structure says where the image ends: a cut or padding is named as such.
WALKED = [name for name in NAMES if not name.startswith("tiff")]


def check(data: bytes, *, deep: bool = False) -> tuple[str, int, int]:
    return check_image(data, max_pixels=MAX_IMAGE_PIXELS, deep=deep)


def refusal(data: bytes, *, deep: bool = False) -> str:
    """The message ``data`` is refused with (the test fails if it is accepted)."""
    with pytest.raises(ImageDamaged) as info:
        check(data, deep=deep)
    return str(info.value)


def pillow_loads(data: bytes) -> bool:
    """Whether Pillow fully decodes ``data``, as a reader of the lake will (truncated images not tolerated)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except Exception:
        return False
    return True


def test_the_samples_are_what_they_say():
    assert set(samples()) == set(NAMES)
    for name, data in samples().items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == ("MPO" if name == "mpo" else FORMATS[name.split("-")[0]]), name
            image.load()
    with Image.open(io.BytesIO(samples()["png-interlaced"])) as image:
        assert image.info.get("interlace") == 1
        assert image.convert("RGB").tobytes() == picture().tobytes()


# ---------------------------------------------------------------------------------------------
# Whole images pass; cut, flipped and padded ones do not
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_whole_image_is_accepted(name):
    data = samples()[name]
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
    fmt = FORMATS[name.split("-")[0]]
    assert check(data) == (fmt, *size)
    assert check(data, deep=True) == (fmt, *size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1])
def test_an_image_cut_short_is_refused(name, keep):
    data = samples()[name]
    cut = data[:-1] if keep == -1 else data[: max(16, int(len(data) * keep))]
    message = refusal(cut)
    assert message.startswith("image is cut short: "), message


def test_the_cut_frame_of_the_issue_says_where_it_stops():
    """The issue's frame: a real PNG cut to its first half still has a whole header."""
    data = frame()
    half = data[: len(data) // 2]
    assert Image.open(io.BytesIO(half)).size == (600, 400)  # what let it through before
    missing = len(data) - 12 - len(half)  # the IDAT chunk ends where IEND (12 bytes) begins
    assert refusal(half) == f"image is cut short: PNG ends inside chunk IDAT (expected {missing} more bytes)"


@pytest.mark.parametrize(("cut", "message"), [
    (0, NOT_AN_IMAGE),
    (8, "image is cut short: PNG ends inside its header chunk IHDR (expected 25 more bytes)"),
    (20, "image is cut short: PNG ends inside chunk IHDR (expected 13 more bytes)"),
    (33, "image is cut short: PNG ends before its image data (IDAT) and its IEND chunk"),
    (37, "image is cut short: PNG ends inside a chunk header (expected 4 more bytes)"),
    (-12, "image is cut short: PNG ends after 1 IDAT chunks, without its IEND chunk"),
    (-5, "image is cut short: PNG ends inside a chunk header (expected 1 more byte)"),
    (-3, "image is cut short: PNG ends inside chunk IEND (expected 3 more bytes)"),
])
def test_a_cut_png_says_where_it_stops(cut, message):
    assert refusal(frame()[:cut]) == message


@pytest.mark.parametrize(("cut", "message"), [
    (-2, "image is cut short: JPEG ends inside the data of scan 1, without its end marker (EOI)"),
    (-1, "image is cut short: JPEG ends inside the data of scan 1, without its end marker (EOI)"),
    (25, "image is cut short: JPEG ends inside segment DQT (expected 64 more bytes)"),
])
def test_a_cut_jpeg_says_where_it_stops(cut, message):
    data = samples()["jpeg"]
    assert data[20:22] == b"\xff\xdb"  # Pillow's first segment after JFIF: a 69-byte DQT
    assert refusal(data[:cut]) == message


@pytest.mark.parametrize("name", WALKED)
@pytest.mark.parametrize("padding", [b"\x00", b"\x00" * 1000, b"\n", "itself"])
def test_an_image_with_bytes_after_its_end_is_refused(name, padding):
    data = samples()[name]
    extra = data if padding == "itself" else padding
    message = refusal(data + extra)
    assert message.startswith(f"image has {len(extra)} stray bytes after its end ("), message


def test_bytes_after_a_tiff_cannot_be_told_from_its_own():
    """TIFF has no end marker (its parts are found by offsets): padding is the one thing not refused."""
    data = samples()["tiff"]
    assert check(data + b"\x00" * 64)[0] == "TIFF"


def test_every_bit_flip_of_a_png_is_refused():
    """The CRCs cover every byte after the signature, and a flip in the signature makes no PNG at all."""
    for name in ("png-rgb", "png-frame"):
        data = samples()[name]
        for i in range(len(data)):
            for bit in range(8):
                flipped = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
                with pytest.raises(ImageDamaged):
                    check(flipped)


def test_a_flipped_png_says_which_chunk():
    data = bytearray(frame())
    data[1000] ^= 4
    assert refusal(bytes(data)) == "image is damaged: PNG chunk IDAT at byte 33 fails its CRC check"


def _segments(jpeg: bytes) -> list[tuple[int, int]]:
    """(marker position, segment end) of each marker segment before the first scan's data."""
    pos, found = 2, []
    while jpeg[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        found.append((pos, end))
        pos = end
    return found


@pytest.mark.parametrize("name", ["jpeg", "jpeg-progressive", "jpeg-grey"])
def test_a_bit_flip_in_a_jpeg_segment_length_or_its_end_marker_is_refused(name):
    data = samples()[name]
    places = [at for pos, _ in _segments(data) for at in (pos + 2, pos + 3)] + [len(data) - 2, len(data) - 1]
    for at in places:
        for bit in range(8):
            flipped = data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]
            with pytest.raises(ImageDamaged):
                check(flipped)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("png")])
def test_no_bit_flip_pillow_cannot_decode_is_accepted(name):
    """Every single-bit flip of the image: whenever Pillow cannot fully decode the result, it is refused.

    Formats without checksums cannot refuse every flip: one inside a JPEG's entropy-coded data, a
    BMP's pixels or a quantisation table is a valid image of other pixels, and Pillow decodes it too.
    """
    data = samples()[name]
    refused = 0
    # Every bit of up to ~400 bytes spread over a JPEG (the walk is what is tested); the other formats
    # are decoded by Pillow after their walk, so fewer will do.
    step = max(1, len(data) // (400 if name.startswith(("jpeg", "mpo")) else 120))
    for i in range(0, len(data), step):
        for bit in range(8):
            flipped = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
            try:
                check(flipped)
            except ImageDamaged:
                refused += 1
                continue
            assert pillow_loads(flipped), (name, i, bit)
    assert refused


def test_a_gif_bmp_or_webp_whose_sizes_are_flipped_is_refused():
    gif, bmp, webp = samples()["gif"], samples()["bmp"], samples()["webp"]
    flips = [
        (gif, len(gif) - 1, "image is damaged: GIF has an unknown block (0x3A)"),
        (bmp, 2, "image is cut short: BMP is 4662 bytes where its header says 4663 (expected 1 more byte)"),
        (bmp, 5, "image is cut short: BMP is"),
        (bmp, 18, "image is cut short: BMP ends inside its pixel data"),  # width 48 -> 49
        (webp, 4, "image is cut short: WebP is"),
        (webp, 16, "image is cut short: WebP ends inside chunk b'VP8 '"),
    ]
    for data, at, start in flips:
        flipped = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        assert refusal(flipped).startswith(start), (at, refusal(flipped))


# ---------------------------------------------------------------------------------------------
# Mutations of real bytes: whatever Pillow cannot fully decode is refused
# ---------------------------------------------------------------------------------------------

PROPERTY_SAMPLES = ["png-rgb", "png-palette", "png-bilevel", "png-grey16", "png-interlaced", "jpeg", "jpeg-grey",
                    "jpeg-444", "jpeg-progressive", "jpeg-restart-markers", "jpeg-cmyk"]


@st.composite
def mutated(draw: st.DrawFn, names: list[str]) -> bytes:
    data = bytearray(samples()[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate", "append"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0xD9, 0xDA, 0xC4, 0xDB, 0x01, 0x80, 0x7F]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            data[at:at] = data[draw(st.integers(0, len(data) - 1)) :][: draw(st.integers(1, 64))]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


@PROPERTY
@given(mutated(PROPERTY_SAMPLES))
def test_mutated_png_or_jpeg_is_refused_whenever_pillow_cannot_decode_it(data):
    try:
        check(data)
    except ImageDamaged:
        event("refused")
        return
    event("accepted (Pillow decodes it too)")
    assert pillow_loads(data)


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos < len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        chunks.append((kind, png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _rebuilt(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks with every length and CRC right: damage no chunk-level check can see."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


@st.composite
def recrc_mutated(draw: st.DrawFn) -> bytes:
    chunks = _chunks(samples()[draw(st.sampled_from([n for n in PROPERTY_SAMPLES if n.startswith("png")]))])
    kinds = [kind for kind, _ in chunks]
    index = kinds.index(b"IDAT") if draw(st.booleans()) else draw(st.integers(0, len(chunks) - 1))
    kind, data = chunks[index]
    body = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and body:
            body[min(at, len(body) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        else:
            del body[at:]
    chunks[index] = (kind, bytes(body))
    return _rebuilt(chunks)


@PROPERTY
@given(recrc_mutated())
def test_png_damaged_under_valid_crcs_is_refused_by_the_deep_check_whenever_pillow_cannot_decode_it(data):
    """A chunk changed and its CRC computed again (an encoder's bug rather than damage in transit):
    the ingest's check cannot see it inside IDAT; ``deep=True`` inflates the image data and does."""
    try:
        check(data, deep=True)
    except ImageDamaged:
        event("refused by the deep check")
        return
    assert pillow_loads(data)


@st.composite
def written_by_pillow(draw: st.DrawFn) -> bytes:
    size = (draw(st.integers(1, 70)), draw(st.integers(1, 50)))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]))
    modes = {"PNG": ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"], "JPEG": ["RGB", "L", "CMYK"],
             "GIF": ["RGB", "P", "L"], "BMP": ["RGB", "RGBA", "L", "P", "1"], "WEBP": ["RGB", "RGBA"]}[fmt]
    image = picture(size, draw(st.sampled_from(modes)))
    options: dict[str, Any] = {}
    if fmt == "PNG":
        options = {"compress_level": draw(st.integers(0, 9)), "optimize": draw(st.booleans())}
    elif fmt == "JPEG":
        options = {"quality": draw(st.integers(1, 100)), "progressive": draw(st.booleans()),
                   "optimize": draw(st.booleans()), "restart_marker_blocks": draw(st.sampled_from([0, 1, 3]))}
        if image.mode == "RGB":
            options["subsampling"] = draw(st.sampled_from([0, 1, 2]))
        if draw(st.booleans()):
            options["icc_profile"] = draw(st.binary(min_size=1, max_size=200))
    elif fmt == "WEBP":
        options = {"lossless": draw(st.booleans()), "quality": draw(st.integers(1, 100))}
    return encode(image, fmt, **options)


@settings(max_examples=150, deadline=None)
@given(written_by_pillow())
def test_every_image_pillow_writes_is_accepted(data):
    assert pillow_loads(data)
    check(data)
    check(data, deep=True)


# ---------------------------------------------------------------------------------------------
# What the deep check adds, and what each check says
# ---------------------------------------------------------------------------------------------


def _with_idat(png: bytes, image_data: bytes) -> bytes:
    return _rebuilt([(kind, image_data if kind == b"IDAT" else data) for kind, data in _chunks(png)])


def test_a_crc_valid_png_with_a_cut_zlib_stream_passes_the_ingest_check_not_the_deep_one():
    """The one thing the ingest check leaves to a reader: a stream already wrong when its CRC was made.

    Inflating every frame would cost ~430 us each on the frames profile (600x400) against ~25 us for
    the whole ingest of a step, so only ``deep=True`` does it.
    """
    png = frame()
    (stream,) = [data for kind, data in _chunks(png) if kind == b"IDAT"]
    broken = _with_idat(png, stream[: len(stream) // 2])
    assert not pillow_loads(broken)
    assert check(broken) == ("PNG", 600, 400)
    assert refusal(broken, deep=True).startswith(
        "image is cut short: PNG image data (IDAT) stops before the end of its compressed stream (")


def _scanlines(png: bytes) -> bytes:
    return zlib.decompress(b"".join(data for kind, data in _chunks(png) if kind == b"IDAT"))


@pytest.mark.parametrize("change", ["one byte short", "one byte too many", "unknown filter"])
def test_the_deep_check_reads_the_image_data_against_the_header(change):
    png = samples()["png-rgb"]  # 48x32 RGB, 8 bits: 32 rows of a filter byte and 144 bytes of pixels
    raw = _scanlines(png)
    assert len(raw) == 32 * 145
    changed, message = {
        "one byte short": (raw[:-1], "image is damaged: PNG image data inflates to 4639 bytes where its header "
                                     "implies 4640"),
        "one byte too many": (raw + b"\x00", "image is damaged: PNG image data inflates to more than the 4640 bytes "
                                            "its header implies"),
        "unknown filter": (raw[:145] + b"\x05" + raw[146:], "image is damaged: PNG image data has a row with an "
                                                            "unknown filter type"),
    }[change]
    broken = _with_idat(png, zlib.compress(changed))
    assert pillow_loads(broken) == (change == "one byte too many")  # Pillow stops reading once the image is full
    assert check(broken) == ("PNG", 48, 32)
    assert refusal(broken, deep=True) == message


def test_the_deep_check_refuses_data_after_the_end_of_the_stream():
    png = samples()["png-rgb"]
    (stream,) = [data for kind, data in _chunks(png) if kind == b"IDAT"]
    assert refusal(_with_idat(png, stream + b"\x00\x00"), deep=True) == (
        "image is damaged: PNG image data (IDAT) goes on after the end of its compressed stream")


def test_the_deep_check_of_an_interlaced_png_reads_every_pass():
    png = samples()["png-interlaced"]
    raw = bytearray(_scanlines(png))
    assert check(png, deep=True) == ("PNG", 48, 32)
    raw[-1 - 48 * 3] = 9  # the filter byte of the last row of the last pass
    assert refusal(_with_idat(png, zlib.compress(bytes(raw))), deep=True) == (
        "image is damaged: PNG image data has a row with an unknown filter type")


def test_a_png_chunk_out_of_place_is_refused():
    chunks = _chunks(samples()["png-palette"])
    kinds = [kind for kind, _ in chunks]
    plte, idat = kinds.index(b"PLTE"), kinds.index(b"IDAT")
    without_palette = [c for c in chunks if c[0] != b"PLTE"]
    assert refusal(_rebuilt(without_palette)) == (
        "image is damaged: PNG of colour type 3 (palette) has no PLTE chunk before its image data")
    stream = chunks[idat][1]
    split = [*chunks[:idat], (b"IDAT", stream[:10]), (b"tEXt", b"a\x00b"), (b"IDAT", stream[10:]), *chunks[idat + 1 :]]
    assert refusal(_rebuilt(split)) == "image is damaged: PNG image data (IDAT chunks) is split by other chunks"
    critical = [*chunks[:plte], (b"ABCD", b""), *chunks[plte:]]
    assert refusal(_rebuilt(critical)) == (
        "image is damaged: PNG has an unknown critical chunk ABCD, which no decoder can skip")
    ancillary = [*chunks[:plte], (b"abCD", b"x"), *chunks[plte:]]
    assert check(_rebuilt(ancillary))[0] == "PNG"


@pytest.mark.parametrize(("header", "message"), [
    ((0, 4, 8, 2), "image is damaged: PNG header declares a 0x4 image"),
    ((4, 4, 3, 2), "image is damaged: PNG header declares colour type 2 with bit depth 3, which PNG does not allow"),
    ((9000, 9000, 8, 2), "image is too large to accept (more than 67108864 pixels)"),
])
def test_a_png_header_is_checked_before_anything_else(header, message):
    ihdr = struct.pack(">IIBBBBB", *header, 0, 0, 0)
    assert refusal(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)) == message


@pytest.mark.parametrize(("fmt", "data"), [
    ("JPEG", b"\xff\xd8\xff\xc0\x00\x0b\x08\x27\x10\x27\x10\x01\x01\x11\x00"),  # SOF0: 10000x10000
    ("GIF", b"GIF89a\xff\xff\xff\xff\x00\x00\x00"),
    ("BMP", b"BM" + struct.pack("<IHHIIiiHH", 0, 0, 0, 54, 40, 100_000, 100_000, 1, 24) + b"\x00" * 24),
])
def test_the_pixel_bound_comes_before_any_decoding(fmt, data):
    assert refusal(data) == "image is too large to accept (more than 67108864 pixels)"


def test_a_jpeg_libjpeg_would_refuse_is_refused():
    data = samples()["jpeg"]
    sof = data.index(b"\xff\xc0")
    assert refusal(data[: sof + 4] + b"\x0c" + data[sof + 5 :]) == (  # precision 12
        "image is damaged: JPEG has 12-bit samples, which Pillow does not decode (8-bit only)")
    dqt = data.index(b"\xff\xdb")
    assert refusal(data[: dqt + 4] + b"\x05" + data[dqt + 5 :]) == "image is damaged: JPEG quantisation table (DQT) is malformed"
    dht = data.index(b"\xff\xc4")
    assert data[dht + 4 : dht + 8] == b"\x00\x00\x01\x05"  # table DC 0, the standard code lengths
    full = data[: dht + 5] + b"\x02\x00\x04" + data[dht + 8 :]  # as many codes, two of them 1 bit long: too many
    assert refusal(full) == "image is damaged: JPEG Huffman table (DHT) does not define a valid code"
    assert refusal(data[:2] + b"\xff\xd8" + data[2:]) == "image is damaged: JPEG has an unexpected marker 0xFFD8 at byte 2"


def test_an_eps_file_is_not_opened():
    """Pillow decodes EPS by running Ghostscript: a frame must not start a program."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"
    assert refusal(eps) == NOT_AN_IMAGE


def test_a_huge_image_pillow_would_decode_is_checked_by_its_walk_only():
    """Pillow holds a whole image while it decodes: above 16 Mi pixels a GIF, WebP, TIFF, ... is not
    decoded at ingest, so that memory stays bounded (the walk still finds a GIF cut short)."""
    screen = struct.pack("<HH", 5000, 5000)
    gif = (b"GIF89a" + screen + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff" + b"\x2c\x00\x00\x00\x00" + screen
           + b"\x00" + b"\x02\x04\x04\x00\x00\x05\x00" + b"\x3b")  # LZW data for 6 of its 25 million pixels
    assert not pillow_loads(gif)
    assert check(gif) == ("GIF", 5000, 5000)
    assert refusal(gif[:-1]) == "image is cut short: GIF ends before its trailer (byte 0x3B)"


def test_what_is_no_image_is_refused_as_before():
    for data in (b"", b"hello, world", b"\x89PN", b"GIF8", b"\x00" * 100):
        assert refusal(data) == NOT_AN_IMAGE


# ---------------------------------------------------------------------------------------------
# End to end: the issue's episode
# ---------------------------------------------------------------------------------------------


def _episode_with(image: bytes, step: int = 0) -> dict[str, Any]:
    doc = episode(steps=3)
    for s in doc["inference"]["steps"]:
        s["image"] = base64.b64encode(frame()).decode()
    doc["inference"]["steps"][step]["image"] = base64.b64encode(image).decode()
    return doc


def test_an_episode_whose_first_frame_is_cut_in_half_is_refused(tmp_path):
    half = frame()[: len(frame()) // 2]
    missing = len(frame()) - 12 - len(half)
    path = write_json(tmp_path / "cartpole.json", _episode_with(half))
    expected = f"image is cut short: PNG ends inside chunk IDAT (expected {missing} more bytes)"

    result = validate(path)
    assert result.status == "invalid"
    assert result.to_dict()["error"] == {
        "message": f"{path}: inference.steps[0].image (step number 0): {expected}",
        "path": "inference.steps[0].image", "step": 0, "rule": "image.decodable",
    }

    lake = tmp_path / "lake"
    with pytest.raises(InvalidEpisode) as info:
        ingest(path, lake=lake, raise_errors=True)
    assert (info.value.rule, info.value.path, info.value.step, info.value.message) == (
        "image.decodable", "inference.steps[0].image", 0, expected)
    assert not list(lake.glob("environment=*"))

    cli_result = CliRunner().invoke(cli, ["validate", str(path)], env={ENV_VAR: None})
    assert cli_result.exit_code == 1
    assert f"invalid: {path}: inference.steps[0].image (step number 0): {expected}" in cli_result.output
    assert "Traceback" not in cli_result.output


def test_a_cut_jpeg_frame_at_a_later_step_is_refused_with_its_step(tmp_path):
    jpeg = samples()["jpeg"]
    path = write_json(tmp_path / "kaz.json", _episode_with(jpeg[: len(jpeg) // 2], step=2))
    result = validate(path)
    assert result.status == "invalid"
    error = result.to_dict()["error"]
    assert (error["rule"], error["path"], error["step"]) == ("image.decodable", "inference.steps[2].image", 2)
    assert "image is cut short: JPEG ends inside the data of scan 1, without its end marker (EOI)" in error["message"]


def test_an_episode_of_whole_frames_is_ingested_and_every_frame_decodes(tmp_path):
    doc = _episode_with(frame())
    for step, name in zip(doc["inference"]["steps"], ["jpeg-progressive", "gif", "webp"], strict=True):
        step["image"] = base64.b64encode(samples()[name]).decode()
    lake = tmp_path / "lake"
    assert ingest(write_json(tmp_path / "ok.json", doc), lake=lake).status == "ingested"
    assert lake_snapshot(lake)


_JPEGS = ["jpeg", "jpeg-grey", "jpeg-444", "jpeg-progressive", "jpeg-restart-markers", "jpeg-cmyk", "mpo"]


def _verdict(data: bytes, max_pixels: int = 64 * 1024 * 1024) -> tuple[Any, ...]:
    try:
        return ("ok", *check_image(data, max_pixels=max_pixels))
    except ImageDamaged as exc:
        return ("refused", str(exc))


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(_JPEGS), mutation=st.sampled_from(["flip", "cut", "append", "insert", "replace tail"]),
       where=st.floats(0, 1), byte=st.integers(0, 255), count=st.integers(1, 40), small_limit=st.booleans())
def test_a_jpeg_whose_header_was_walked_before_gets_the_walks_verdict(
        name: str, mutation: str, where: float, byte: int, count: int, small_limit: bool) -> None:
    """Frames that share a header known from an earlier frame are walked from their scan data on (the
    JPEG header cache): for any damage, anywhere, the verdict is the one the walk from SOI gives."""
    from pipeline.ingestion.images import jpeg

    data = samples()[name]
    at = int(where * len(data))
    if mutation == "flip":
        damaged = data[:at] + bytes([data[at % len(data)] ^ (byte or 1)]) + data[at + 1:]
    elif mutation == "cut":
        damaged = data[: max(3, len(data) - count)]
    elif mutation == "append":
        damaged = data + bytes([byte]) * count
    elif mutation == "insert":
        damaged = data[:at] + bytes([byte]) * count + data[at:]
    else:  # another scan's data and end, as a later frame of the same encoder would have
        damaged = data[: len(data) - 2 - count] + bytes([byte]) * count + b"\xff\xd9"
    limit = 100 if small_limit else 64 * 1024 * 1024  # 100 pixels: less than any sample holds
    jpeg._KNOWN_HEADERS.clear()
    walked = _verdict(damaged, limit)  # no header known: the whole walk
    _verdict(data)  # an undamaged frame of the same encoder: its header becomes known, if it can be
    assert _verdict(damaged, limit) == walked
    if name in ("jpeg", "jpeg-grey", "jpeg-444", "jpeg-restart-markers", "jpeg-cmyk"):
        assert jpeg._KNOWN_HEADERS  # one scan then EOI: remembered (a progressive or MPO file is not)
