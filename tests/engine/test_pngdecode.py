"""The fast PNG path decodes exactly what Pillow's Image.open + convert("RGB") decodes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.engine.pngdecode import raw_frame
from pipeline.engine.trajectory import _RAW, decode_frame


def _png(array: np.ndarray, mode: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _images() -> list[bytes]:
    rng = np.random.default_rng(0)
    found = []
    for i in range(12):
        gray = (rng.random((21, 17)) * 255).astype(np.uint8)
        gray[: i + 1] = gray[0, 0]  # flat rows and noisy rows: every PNG row filter gets used
        rgb = np.stack([gray, gray // 2, 255 - gray], axis=-1)
        found += [_png(gray, "L"), _png(rgb, "RGB"), _png(np.concatenate([rgb, gray[..., None]], -1), "RGBA"),
                  _png(gray, "L", compress_level=1), _png(np.asarray(Image.fromarray(rgb).convert("P")), "P"),
                  _png(gray, "L", transparency=3)]
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG")
    return [*found, buffer.getvalue()]


@pytest.mark.parametrize("data", _images())
def test_raw_frame_is_pillows(data: bytes) -> None:
    expected = decode_frame(data, _RAW)
    frame = raw_frame(data)
    assert frame.dtype == np.uint8 and frame.shape == expected.shape and np.array_equal(frame, expected)
    gray = raw_frame(data, gray_ok=True)
    assert np.array_equal(gray, expected if gray.ndim == 3 else expected[:, :, 0])
    if gray.ndim == 2:
        assert np.array_equal(expected[:, :, 0], expected[:, :, 2])


def _outcome(decode: object, data: bytes) -> object:
    try:
        return decode(data).tolist()  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("cut", [1, 12, 20, 30])
def test_a_cut_png_gives_what_pillow_gives(cut: int) -> None:
    data = _png((np.arange(64, dtype=np.uint8) * 7).reshape(8, 8), "L")[:-cut]
    assert _outcome(raw_frame, data) == _outcome(lambda d: decode_frame(d, _RAW), data)


def test_image_data_cut_short_inside_a_well_formed_file_is_pillows_outcome() -> None:
    import struct
    import zlib

    data = _png((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64), "L")
    length = struct.unpack(">I", data[33:37])[0]
    idat = data[41:41 + length][: length // 2]  # half the zlib stream, in a chunk with a correct CRC
    chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    cut = data[:33] + chunk + data[41 + length + 4:]
    assert _outcome(raw_frame, cut) == _outcome(lambda d: decode_frame(d, _RAW), cut)
