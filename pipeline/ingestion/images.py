"""Is a frame a whole, undamaged image? Checks on an image file's bytes, walking its structure.

Frames are stored as the image files they came as and decoded only when a reader asks for
pixels, long after the ingest; a frame cut short or damaged would only fail there (``OSError:
image file is truncated``). So the ingest refuses such a frame, saying what is wrong. Decoding
every frame would do it, but a 600x400 PNG of the frames benchmark takes ~430 us to inflate
and ~890 us to decode with Pillow, where the whole ingest of its step takes ~25 us (measured).
What is checked instead, per format:

- **PNG** (nearly every frame): the signature, then every chunk through IEND: its length, its
  type and its CRC-32, which covers every byte of the file after the signature; IHDR first and
  sane; PLTE where the colour type needs it; one unbroken run of IDAT chunks; IEND empty and last.
  Any change to the bytes Pillow reads fails a CRC (or the walk), at ~1.4 us a frame. What a CRC
  cannot catch is a zlib stream that was already wrong when its CRC was computed (an encoder
  bug, not damage): ``deep=True`` inflates the image data too, checking the stream is complete,
  its length is what IHDR implies and every row has a valid filter byte (~430 us at 600x400).
- **JPEG**: no checksums, so the walk checks what libjpeg (Pillow's decoder) would refuse: every
  marker segment through EOI with its exact length, the frame header (8-bit samples, 1, 3 or 4
  components, sampling factors), quantisation and Huffman tables (complete, valid codes), every
  scan header against the frame and the tables, and the entropy-coded data scanned for the
  marker that ends it. Damage inside entropy-coded data is not an error to libjpeg (it decodes
  what it can), so it is not to us. Coding processes other than 8-bit Huffman DCT (arithmetic,
  lossless, hierarchical) are walked and then decoded with Pillow; ``deep=True`` decodes all.
- **GIF, BMP, WebP**: the container (GIF blocks through the trailer; BMP file size and pixel
  array bounds; WebP's RIFF size and chunks), then a full decode with Pillow: these are rare as
  frames and have no checksums to lean on (~0.03 to 2 ms a frame).
- **Anything else Pillow recognises** (TIFF, ICO, PPM, ...; not EPS, which Pillow decodes by
  running Ghostscript): a full decode with Pillow. Such formats have no end marker, so bytes
  appended to them cannot be told from their own.

Pillow's decodes stop at 16 Mi pixels (``_MAX_DECODED_PIXELS``), to keep an ingest's memory
bounded: a larger image of those formats is checked by its walk, or its header, alone.

In every format the declared width x height is checked against ``max_pixels`` before anything
is decoded, and nothing may follow the image's end. The functions here are pure: bytes in, a
verdict out, :class:`ImageDamaged` (a ``ValueError``) with a message for a person otherwise.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from functools import cache
from operator import mul

__all__ = ["NOT_AN_IMAGE", "ImageDamaged", "check_image"]

NOT_AN_IMAGE = "is not an image any decoder recognises (PNG, JPEG, GIF, BMP, WebP, ...)"


class ImageDamaged(ValueError):
    """The bytes are not a whole, undamaged image; the message says what is wrong."""


def check_image(data: bytes, *, max_pixels: int, deep: bool = False) -> tuple[str, int, int]:
    """Check ``data`` is one whole, undamaged image file; return its format, width and height.

    Raises :class:`ImageDamaged` when it is not an image, is cut short, is damaged, has bytes
    after its end, or declares more than ``max_pixels`` pixels. ``deep=True`` also decodes the
    compressed image data of PNG and JPEG (see the module's docstring for what that adds and costs).
    """
    if data.startswith(PNG_SIGNATURE):
        return _png(data, max_pixels, deep)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data, max_pixels, deep)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _gif(data, max_pixels)
    if data.startswith(b"BM"):
        return _bmp(data, max_pixels)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data, max_pixels)
    return _pillow(data, max_pixels, None)


def _cut(what: str) -> ImageDamaged:
    return ImageDamaged(f"image is cut short: {what}")


def _damaged(what: str) -> ImageDamaged:
    return ImageDamaged(f"image is damaged: {what}")


def _padded(extra: int, end: str) -> ImageDamaged:
    return ImageDamaged(f"image has {extra} stray bytes after its end ({end})")


def _too_large(max_pixels: int) -> ImageDamaged:
    # The message the pixel bound has always had (tests and users match on it).
    return ImageDamaged(f"image is too large to accept (more than {max_pixels} pixels)")


def _more(missing: int) -> str:
    return f"expected {missing} more byte{'s' if missing != 1 else ''}"


# -- PNG ------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sIIBBBBBI")  # length, type, width, height, depth, colour, compression, filter, interlace, crc
_CHUNK_HEAD = struct.Struct(">I4s")
_U32 = struct.Struct(">I")
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the whole IEND chunk: length 0, type, CRC
# Valid (colour type: bit depths) pairs, and samples per pixel of each colour type.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_MAX_CHUNK = 2**31 - 1
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# Inflated bytes held at once by a deep check, whatever the image's size.
_INFLATE_PIECE = 1 << 20


def _png(data: bytes, max_pixels: int, deep: bool) -> tuple[str, int, int]:
    # The hot path of every ingest with frames: the usual case is tested in as few steps as it
    # can be, and only a frame that fails is looked at again (_png_problem) to say why.
    size = len(data)
    if size < 33:
        raise _png_problem(data, 8)
    length, kind, width, height, depth, colour, compression, filter_, interlace, crc = _IHDR.unpack_from(data, 8)
    if (length != 13 or kind != b"IHDR" or zlib.crc32(data[12:29]) != crc or not width or not height
            or depth not in _PNG_DEPTHS.get(colour, ()) or compression or filter_ or interlace > 1):
        raise _png_problem(data, 8)
    if width * height > max_pixels:
        raise _too_large(max_pixels)
    # Most frames are IHDR, one IDAT, IEND (Pillow writes one IDAT up to 64 kB): 0.5 us faster
    # taken whole than through the loop below, which any other layout (or a failure) goes through.
    if (data[37:41] == b"IDAT" and _U32.unpack_from(data, 33)[0] == size - 57 and data.endswith(_IEND)
            and colour != 3 and zlib.crc32(data[37 : size - 16]) == _U32.unpack_from(data, size - 16)[0]):
        if deep:
            _inflate_png(memoryview(data), [(41, size - 16)], width, height, depth * _PNG_CHANNELS[colour], interlace)
        return "PNG", width, height
    crc32, head, u32 = zlib.crc32, _CHUNK_HEAD.unpack_from, _U32.unpack_from
    idat: list[tuple[int, int]] = []  # (start, end) of each IDAT chunk's data
    idat_ended = has_palette = False
    pos = 33
    while not data.startswith(_IEND, pos):  # a well-formed IEND chunk: its CRC is known
        if pos + 12 > size:
            raise _png_problem(data, pos, idat=len(idat))
        length, kind = head(data, pos)
        end = pos + 12 + length
        if end > size or not kind.isalpha() or crc32(data[pos + 4 : end - 4]) != u32(data, end - 4)[0]:
            raise _png_problem(data, pos)
        if kind == b"IDAT":
            if idat_ended:
                raise _damaged("PNG image data (IDAT chunks) is split by other chunks")
            if colour == 3 and not has_palette:
                raise _damaged("PNG of colour type 3 (palette) has no PLTE chunk before its image data")
            idat.append((pos + 8, end - 4))
        elif kind == b"IEND":  # with a length: a well-formed one ends the loop
            raise _damaged("PNG chunk IEND is not empty")
        else:
            idat_ended = bool(idat)
            if kind == b"PLTE":
                if has_palette or idat or colour in (0, 4) or not length or length % 3 or length > 768:
                    raise _damaged("PNG palette (PLTE) is misplaced, repeated or of a wrong length")
                has_palette = True
            elif not kind[0] & 0x20:  # critical (upper case): a decoder may not skip it
                raise _damaged("PNG has a second IHDR chunk" if kind == b"IHDR" else
                               f"PNG has an unknown critical chunk {kind.decode()}, which no decoder can skip")
        pos = end
    if not idat:
        raise _damaged("PNG has no image data (no IDAT chunk)")
    if pos + 12 != size:
        raise _padded(size - pos - 12, "the PNG's IEND chunk")
    if deep:
        _inflate_png(memoryview(data), idat, width, height, depth * _PNG_CHANNELS[colour], interlace)
    return "PNG", width, height


def _png_problem(data: bytes, pos: int, *, idat: int = 0) -> ImageDamaged:
    """What is wrong with the chunk at ``pos`` (the header chunk when ``pos`` is 8), which _png found wrong."""
    size = len(data)
    if pos + 8 > size:
        if pos == 8:
            return _cut(f"PNG ends inside its header chunk IHDR ({_more(33 - size)})")
        if pos < size:
            return _cut(f"PNG ends inside a chunk header ({_more(pos + 8 - size)})")
        return _cut(f"PNG ends after {idat} IDAT chunks, without its IEND chunk" if idat else
                    "PNG ends before its image data (IDAT) and its IEND chunk")
    length, kind = _CHUNK_HEAD.unpack_from(data, pos)
    if pos == 8 and (length, kind) != (13, b"IHDR"):
        return _damaged("PNG does not begin with its header chunk (IHDR, 13 bytes)")
    if not kind.isalpha():
        return _damaged(f"no PNG chunk at byte {pos} (its type, {kind!r}, is not four letters)")
    name = kind.decode()
    if length > _MAX_CHUNK:
        return _damaged(f"PNG chunk {name} at byte {pos} declares an impossible length ({length} bytes)")
    end = pos + 12 + length
    if end > size:
        return _cut(f"PNG ends inside chunk {name} ({_more(end - size)})")
    if zlib.crc32(data[pos + 4 : end - 4]) != _U32.unpack_from(data, end - 4)[0]:
        return _damaged(f"PNG chunk {name} at byte {pos} fails its CRC check")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if not width or not height:
        return _damaged(f"PNG header declares a {width}x{height} image")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        return _damaged(f"PNG header declares colour type {colour} with bit depth {depth}, which PNG does not allow")
    return _damaged("PNG header declares an unknown compression, filter or interlace method")


def _png_rows(width: int, height: int, bits: int, interlace: int) -> list[tuple[int, int, int]]:
    """(start, end, row length) in the inflated data of each pass's rows; a row's first byte is its filter."""
    passes = ((0, 0, 1, 1),) if not interlace else _ADAM7
    rows, start = [], 0
    for x0, y0, dx, dy in passes:
        pass_width, pass_height = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if pass_width and pass_height:  # an empty pass has no rows at all, not even filter bytes
            row = 1 + (pass_width * bits + 7) // 8
            rows.append((start, start + row * pass_height, row))
            start += row * pass_height
    return rows


def _inflate_png(view: memoryview, idat: list[tuple[int, int]], width: int, height: int, bits: int,
                 interlace: int) -> None:
    """Inflate the IDAT data in bounded pieces: the stream must end, at the size IHDR implies, with valid filters."""
    rows = _png_rows(width, height, bits, interlace)
    expected = rows[-1][1]
    inflater = zlib.decompressobj()
    done = 0
    try:
        for start, end in idat:
            pending: memoryview | bytes = view[start:end]
            while pending:
                if inflater.eof:
                    raise _damaged("PNG image data (IDAT) goes on after the end of its compressed stream")
                piece = inflater.decompress(pending, _INFLATE_PIECE)
                pending = inflater.unconsumed_tail
                done = _check_filters(piece, done, rows, expected)
        done = _check_filters(inflater.flush(), done, rows, expected)
    except zlib.error as exc:
        raise _damaged(f"PNG image data (IDAT) is not a valid zlib stream ({exc})") from None
    if not inflater.eof:
        raise _cut(f"PNG image data (IDAT) stops before the end of its compressed stream ({done} of {expected} bytes)")
    if inflater.unused_data:
        raise _damaged("PNG image data (IDAT) goes on after the end of its compressed stream")
    if done != expected:
        raise _damaged(f"PNG image data inflates to {done} bytes where its header implies {expected}")


def _check_filters(piece: bytes, done: int, rows: list[tuple[int, int, int]], expected: int) -> int:
    """Check the filter byte of every row that starts in ``piece`` (inflated bytes from ``done`` on)."""
    stop = done + len(piece)
    if stop > expected:
        raise _damaged(f"PNG image data inflates to more than the {expected} bytes its header implies")
    for start, end, row in rows:
        if end <= done or start >= stop:
            continue
        first = start if done <= start else start + -(-(done - start) // row) * row
        if first < min(end, stop) and max(piece[first - done : min(end, stop) - done : row]) > 4:
            raise _damaged("PNG image data has a row with an unknown filter type")
    return stop


# -- JPEG -----------------------------------------------------------------------------------------

# Marker segments (with a length) that may appear; anything else is not a JPEG libjpeg reads.
_JPEG_SEGMENTS = {
    **{0xC0 + n: f"SOF{n}" for n in (0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15)},
    0xC4: "DHT", 0xCC: "DAC", 0xDA: "SOS", 0xDB: "DQT", 0xDC: "DNL", 0xDD: "DRI", 0xFE: "COM",
    **{0xE0 + n: f"APP{n}" for n in range(16)},
}
# Huffman-coded DCT, sequential or progressive: what libjpeg decodes for Pillow and this walk vouches
# for. The other coding processes (arithmetic, lossless, hierarchical) are handed to Pillow.
_SOF_WALKED = (0xC0, 0xC1, 0xC2)
# The end of entropy-coded data: 0xFF then a marker code (not a stuffed 0x00, a restart RSTn or fill 0xFF).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Weight of each code length 1..16 in a Huffman table's Kraft sum, in units of 2^-16.
_KRAFT = tuple(1 << (16 - n) for n in range(1, 17))
_JPEG_MAX_DIMENSION = 65500  # libjpeg's JPEG_MAX_DIMENSION
_MAX_BLOCKS_IN_MCU = 10  # libjpeg's D_MAX_BLOCKS_IN_MCU


def _jpeg(data: bytes, max_pixels: int, deep: bool) -> tuple[str, int, int]:
    end, width, height, undecoded, pictures = _walk_jpeg(data, 0, max_pixels)
    size = len(data)
    # An MPO (stereo or multi-picture) file is JPEGs one after another, as many as the first says.
    for _ in range(pictures - 1):
        if end == size or not data.startswith(b"\xff\xd8\xff", end):
            raise _cut(f"MPO ends before the {pictures} JPEG pictures its first picture announces")
        end, _, _, more, _ = _walk_jpeg(data, end, max_pixels)
        undecoded = undecoded or more
    if end != size:
        raise _padded(size - end, "the JPEG's end marker, EOI")
    if undecoded or deep:
        _pillow(data, max_pixels, "JPEG")
    return "JPEG", width, height


def _walk_jpeg(data: bytes, start: int, max_pixels: int) -> tuple[int, int, int, bool, int]:
    """Walk one JPEG from its SOI at ``start`` through its EOI.

    Returns where it ends, width, height, whether it needs a decoder to vouch for it (a coding
    process this walk does not follow) and how many pictures its MPO index announces (1 without).
    """
    size = len(data)
    pos = start + 2
    sof = width = height = scans = 0
    components: list[tuple[int, int, int, int]] = []  # (id, h, v, quantisation table) in frame order
    max_h = max_v = 1
    quant: set[int] = set()
    latched: set[int] = set()  # components whose quantisation table libjpeg has taken (at their first scan)
    dc_max: dict[int, int] = {}  # DC table id: its largest symbol
    ac_tables: set[int] = set()
    multi_scan = undecoded = False
    pictures = 1
    while True:
        if pos >= size:
            raise _cut("JPEG ends before its end marker (EOI)")
        if data[pos] != 0xFF:
            raise _damaged(f"JPEG has stray data at byte {pos - start}, where a marker should be")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= size:
            raise _cut("JPEG ends before its end marker (EOI)")
        code = data[pos + 1]
        pos += 2
        if code == 0xD9:  # EOI
            if not scans:
                raise _damaged("JPEG has no image data (no scan) before its end marker")
            return pos, width, height, undecoded, pictures
        name = _JPEG_SEGMENTS.get(code)
        if name is None:
            raise _damaged(f"JPEG has an unexpected marker 0xFF{code:02X} at byte {pos - 2 - start}")
        if pos + 2 > size:
            raise _cut(f"JPEG ends inside segment {name}")
        end = pos + ((data[pos] << 8) | data[pos + 1])
        if end < pos + 2:
            raise _damaged(f"JPEG segment {name} at byte {pos - 2 - start} declares an impossible length")
        if end > size:
            raise _cut(f"JPEG ends inside segment {name} ({_more(end - size)})")
        body = data[pos + 2 : end]
        pos = end
        if code == 0xDA:  # SOS, then the scan's entropy-coded data up to the next marker
            if not sof:
                raise _damaged("JPEG has a scan (SOS) before its frame header (SOF)")
            if sof in _SOF_WALKED:
                multi_scan = _check_scan(body, sof, scans, multi_scan, components, quant, latched, dc_max, ac_tables)
            scans += 1
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise _cut(f"JPEG ends inside the data of scan {scans}, without its end marker (EOI)")
            pos = found.start()
        elif name.startswith("SOF"):
            if sof:
                raise _damaged("JPEG has a second frame header (SOF)")
            sof = code
            if len(body) < 6 or len(body) != 6 + 3 * body[5] or not body[5]:
                raise _damaged(f"JPEG frame header ({name}) is malformed")
            precision, height, width, count = struct.unpack_from(">BHHB", body)
            if not width or not height:
                raise _damaged(f"JPEG frame header declares a {width}x{height} image")
            if width * height > max_pixels:
                raise _too_large(max_pixels)
            if width > _JPEG_MAX_DIMENSION or height > _JPEG_MAX_DIMENSION:
                raise _damaged(f"JPEG is {width}x{height}, more than JPEG decoders read ({_JPEG_MAX_DIMENSION} a side)")
            if sof not in _SOF_WALKED:
                undecoded = True
                continue
            if precision != 8:
                raise _damaged(f"JPEG has {precision}-bit samples, which Pillow does not decode (8-bit only)")
            if count not in (1, 3, 4):
                raise _damaged(f"JPEG has {count} colour components, which Pillow does not decode (1, 3 or 4)")
            for i in range(6, len(body), 3):
                h, v = body[i + 1] >> 4, body[i + 1] & 15
                if not (1 <= h <= 4 and 1 <= v <= 4) or body[i + 2] > 3:
                    raise _damaged("JPEG frame header has a component with invalid sampling factors or table")
                components.append((body[i], h, v, body[i + 2]))
            max_h, max_v = max(c[1] for c in components), max(c[2] for c in components)
            if any(max_h % h or max_v % v for _, h, v, _ in components):
                raise _damaged("JPEG frame header has sampling factors libjpeg cannot upsample")
        elif code == 0xC4:
            _read_huffman_tables(body, dc_max, ac_tables)
        elif code == 0xDB:
            _read_quantisation_tables(body, quant)
        elif code == 0xDD:
            if len(body) != 2:
                raise _damaged("JPEG restart interval segment (DRI) is malformed")
        elif code == 0xCC:  # arithmetic coding conditioning: only arithmetic-coded files use it
            undecoded = True
        # Pillow reads these application segments as it opens a JPEG and fails when they are short.
        elif code == 0xE0 and body.startswith(b"JFIF") and len(body) < 7:
            raise _damaged("JPEG JFIF segment (APP0) is cut short")
        elif code == 0xEE and body.startswith(b"Adobe") and len(body) < 7:
            raise _damaged("JPEG Adobe segment (APP14) is cut short")
        elif code == 0xE2:
            if body.startswith(b"ICC_PROFILE\0") and len(body) < 14:
                raise _damaged("JPEG ICC profile segment (APP2) is cut short")
            if body.startswith(b"MPF\0"):
                pictures = _mpo_pictures(body)


def _mpo_pictures(body: bytes) -> int:
    """The number of pictures an MPO index (APP2 "MPF", a TIFF-like IFD) announces; 1 if it cannot say.

    Pillow reads a malformed index as a plain JPEG, so this does too: what follows is then padding.
    """
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(body[4:8])
    if order is None or len(body) < 14:
        return 1
    ifd = 4 + struct.unpack_from(order + "I", body, 8)[0]
    if ifd + 2 > len(body):
        return 1
    for at in range(ifd + 2, min(ifd + 2 + 12 * struct.unpack_from(order + "H", body, ifd)[0], len(body) - 11), 12):
        tag, kind, count, value = struct.unpack_from(order + "HHII", body, at)
        if tag == 0xB001 and kind == 4 and count == 1:  # NumberOfImages, one LONG
            return max(1, min(value, 64))
    return 1


def _read_huffman_tables(body: bytes, dc_max: dict[int, int], ac_tables: set[int]) -> None:
    """Read a DHT segment as libjpeg does, refusing what it refuses (and codes it would refuse to build)."""
    size, i = len(body), 0
    while size - i > 16:
        index, bits = body[i], body[i + 1 : i + 17]
        count = sum(bits)
        i += 17
        if count > 256 or count > size - i or index & 0x0F > 3 or index >> 4 > 1:
            raise _damaged("JPEG Huffman table (DHT) is malformed")
        # A Huffman code must leave at least one code of its longest length unused (no all-ones code).
        if count and sum(map(mul, bits, _KRAFT)) >= 1 << 16:
            raise _damaged("JPEG Huffman table (DHT) does not define a valid code")
        if index >> 4:
            ac_tables.add(index & 0x0F)
        else:
            dc_max[index] = max(body[i : i + count], default=0)
        i += count
    if i != size:
        raise _damaged("JPEG Huffman table segment (DHT) has a wrong length")


def _read_quantisation_tables(body: bytes, quant: set[int]) -> None:
    size, i = len(body), 0
    while i < size:
        precision, table = body[i] >> 4, body[i] & 0x0F
        i += 1 + 64 * (precision + 1)
        if precision > 1 or table > 3 or i > size:
            raise _damaged("JPEG quantisation table (DQT) is malformed")
        quant.add(table)


def _check_scan(body: bytes, sof: int, scans: int, multi_scan: bool, components: list[tuple[int, int, int, int]],
                quant: set[int], latched: set[int], dc_max: dict[int, int], ac_tables: set[int]) -> bool:
    """Check a scan header (SOS) of a Huffman DCT JPEG as libjpeg does; return whether more scans may follow."""
    count = body[0] if body else 0
    if not 1 <= count <= 4 or len(body) != 4 + 2 * count:
        raise _damaged("JPEG scan header (SOS) is malformed")
    if scans and not multi_scan:
        raise _damaged("JPEG has another scan after a scan of the whole image")
    first, last, approximation = body[-3], body[-2], body[-1]
    high, low = approximation >> 4, approximation & 0x0F
    progressive = sof == 0xC2
    if progressive:
        dc_band = first == 0
        bad = last != 0 if dc_band else (first > last or last > 63 or count != 1)
        if bad or (high and low != high - 1) or low > 13:
            raise _damaged("JPEG progressive scan has invalid parameters")
    chosen: list[int] = []
    for i in range(1, 1 + 2 * count, 2):
        wanted = body[i]
        # libjpeg matches a scan's component among the frame's first four, not taken by this scan yet.
        index = next((k for k, c in enumerate(components[:4]) if c[0] == wanted and k not in chosen), None)
        if index is None:
            raise _damaged(f"JPEG scan names component {wanted}, which the frame does not have (or names it twice)")
        chosen.append(index)
        dc, ac = body[i + 1] >> 4, body[i + 1] & 0x0F
        # Sequential scans read both tables; a progressive one the DC table in a first DC scan, the
        # AC table in an AC scan. Sequential decoding falls back to the standard tables 0 and 1
        # (Motion JPEG frames leave them out); progressive decoding has no such fallback.
        if not progressive or (first == 0 and high == 0):
            if dc not in dc_max and (progressive or dc > 1):
                raise _damaged(f"JPEG scan uses Huffman table DC {dc}, which is not defined")
            if dc_max.get(dc, 0) > 15:
                raise _damaged(f"JPEG Huffman table DC {dc} has symbols a DC table cannot have")
        if (not progressive or first != 0) and ac not in ac_tables and (progressive or ac > 1):
            raise _damaged(f"JPEG scan uses Huffman table AC {ac}, which is not defined")
        if index not in latched:
            if components[index][3] not in quant:
                raise _damaged(f"JPEG component {wanted} uses quantisation table {components[index][3]}, "
                               "which is not defined")
            latched.add(index)
    if count > 1 and sum(components[k][1] * components[k][2] for k in chosen) > _MAX_BLOCKS_IN_MCU:
        raise _damaged("JPEG scan has more blocks in an MCU than decoders allow")
    if not scans:
        return progressive or count < len(components)
    return multi_scan


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


# -- everything else: Pillow ---------------------------------------------------------------------

# Pillow decodes EPS by running Ghostscript: a frame in an episode file must not start a program.
_NOT_OPENED = frozenset({"EPS"})
# Pillow holds a whole image while it decodes one. Above this many pixels (a 4096x4096 frame: 64 MiB
# at 4 bytes a pixel) the decode is skipped, so that an ingest's memory stays bounded: such an image
# is checked by its walk (GIF, BMP, WebP) or by Pillow's reading of its header only (others).
_MAX_DECODED_PIXELS = 16 * 1024 * 1024


@cache
def _pillow_formats() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(f for f in Image.ID if f not in _NOT_OPENED)


def _pillow(data: bytes, max_pixels: int, expected: str | None) -> tuple[str, int, int]:
    """Open and fully decode ``data`` with Pillow; ``expected`` is the format already recognised, if any."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's remarks on odd but readable files
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_pillow_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(max_pixels) from None
        except MemoryError:
            raise
        except Exception as exc:  # whatever a plugin raises, the verdict is the same
            if expected is None:
                raise ImageDamaged(NOT_AN_IMAGE) from None
            raise _damaged(f"{expected} header does not read ({_pillow_reason(exc)})") from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_large(max_pixels)
            if width * height > _MAX_DECODED_PIXELS:
                return image.format or "unknown", width, height
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _too_large(max_pixels) from None
            except MemoryError:
                raise
            except Exception as exc:
                what = f"{expected or image.format} data"
                if "truncated" in str(exc):  # Pillow's word for data that stops before the image does
                    raise _cut(f"{what} stops before the image does ({_pillow_reason(exc)})") from None
                raise _damaged(f"{what} does not decode ({_pillow_reason(exc)})") from None
            return image.format or "unknown", width, height


def _pillow_reason(exc: Exception) -> str:
    return f"Pillow: {exc}" if str(exc) else f"Pillow: {type(exc).__name__}"
