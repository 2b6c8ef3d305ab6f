"""GIF, BMP and WebP: their containers walked, then a full decode with Pillow (rare as frames)."""

from __future__ import annotations

import struct

from .pillow import _pillow
from .verdicts import _cut, _damaged, _more, _padded, _too_large

# -- GIF, BMP, WebP: the container, then Pillow --------------------------------------------------


def _gif(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    size = len(data)
    if size < 13:
        raise _cut(f"GIF ends inside its header ({_more(13 - size)})")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    if not width or not height:
        raise _damaged(f"GIF header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    pos = 13 + _gif_colour_table(flags)
    images = 0
    while True:
        if pos >= size:
            raise _cut("GIF ends before its trailer (byte 0x3B)")
        block = data[pos]
        if block == 0x3B:
            break
        if block == 0x21:  # extension: a label, then data sub-blocks
            pos = _gif_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, data sub-blocks
            if pos + 10 > size:
                raise _cut("GIF ends inside an image descriptor")
            frame_width, frame_height, flags = struct.unpack_from("<HHB", data, pos + 5)
            if frame_width * frame_height > max_pixels:
                raise _too_large(max_pixels)
            pos += 10 + _gif_colour_table(flags)
            pos = _gif_sub_blocks(data, pos + 1)
            images += 1
        else:
            raise _damaged(f"GIF has an unknown block (0x{block:02X}) at byte {pos}")
    if not images:
        raise _damaged("GIF has no image")
    if pos + 1 != size:
        raise _padded(size - pos - 1, "the GIF's trailer")
    _pillow(data, max_pixels, "GIF")
    return "GIF", width, height


def _gif_colour_table(flags: int) -> int:
    """The size of the colour table a GIF screen or image descriptor with these flags is followed by."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _gif_sub_blocks(data: bytes, pos: int) -> int:
    """Where the data sub-blocks starting at ``pos`` end (after their empty terminator)."""
    size = len(data)
    while True:
        if pos >= size:
            raise _cut("GIF ends inside a block's data")
        length = data[pos]
        pos += 1 + length
        if not length:
            return pos


_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)  # the DIB header sizes Pillow reads


def _bmp(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    size = len(data)
    if size < 26:
        raise _cut(f"BMP ends inside its header ({_more(26 - size)})")
    file_size, offset, header = struct.unpack_from("<I4xII", data, 2)
    if header not in _BMP_HEADERS:
        raise _damaged(f"BMP has a header of unknown size ({header} bytes)")
    if size < 14 + header:
        raise _cut(f"BMP ends inside its header ({_more(14 + header - size)})")
    if header == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
        compression = image_size = 0
    else:
        width, height, _, bits, compression, image_size = struct.unpack_from("<iiHHII", data, 18)
    height = abs(height)
    if width <= 0 or not height:
        raise _damaged(f"BMP header declares a {width}x{height} image")
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    if file_size > size:
        raise _cut(f"BMP is {size} bytes where its header says {file_size} ({_more(file_size - size)})")
    if file_size < size:
        raise _padded(size - file_size, "the file size its BMP header gives")
    # Uncompressed rows are padded to 4 bytes; compressed data is as long as the header says.
    pixels = ((bits * width + 31) // 32) * 4 * height if compression in (0, 3, 6) else image_size
    if offset + pixels > size:
        raise _cut(f"BMP ends inside its pixel data ({_more(offset + pixels - size)})")
    _pillow(data, max_pixels, "BMP")
    return "BMP", width, height


def _webp(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    size = len(data)
    end = 8 + struct.unpack_from("<I", data, 4)[0]
    if end > size:
        raise _cut(f"WebP is {size} bytes where its RIFF header says {end} ({_more(end - size)})")
    if end < size:
        raise _padded(size - end, "the size its RIFF header gives")
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise _cut("WebP ends inside a chunk header")
        kind = data[pos : pos + 4]
        if pos == 12 and kind not in (b"VP8 ", b"VP8L", b"VP8X"):
            raise _damaged(f"WebP begins with a {kind!r} chunk instead of VP8, VP8L or VP8X")
        length = struct.unpack_from("<I", data, pos + 4)[0]
        chunk_end = pos + 8 + length + (length & 1)  # chunks are padded to an even length
        if chunk_end > end:
            raise _cut(f"WebP ends inside chunk {kind!r} ({_more(chunk_end - end)})")
        pos = chunk_end
    if pos == 12:
        raise _damaged("WebP has no image chunk")
    return _pillow(data, max_pixels, "WEBP")
