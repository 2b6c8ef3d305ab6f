"""PNG: every chunk's length, type and CRC-32 through IEND; ``deep`` inflates the image data too."""

from __future__ import annotations

import struct
import zlib

from .verdicts import ImageDamaged, _cut, _damaged, _more, _padded, _too_large

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
