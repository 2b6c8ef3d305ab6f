"""JPEG: every marker segment through EOI, checked for what libjpeg (Pillow's decoder) would refuse."""

from __future__ import annotations

import re
import struct
from operator import mul

from .pillow import _pillow
from .verdicts import _cut, _damaged, _more, _padded, _too_large

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

# Headers walked before: the bytes from SOI through the first scan header (SOS) of JPEGs the walk
# accepted as one scan of Huffman DCT then EOI, one picture, nothing left to Pillow; each with its
# width and height. An episode's frames come from one encoder at one quality, so they share their
# header, whose walk was ~25 of the ~30 us a 64x64 frame took (measured). The walk's state at the
# end of a header depends on its bytes alone: a frame that starts with a known header is walked from
# there, its scan data up to the marker that ends it, which must be its EOI, its last two bytes; the
# verdict is the walk's. Anything else is walked whole.
_KNOWN_HEADERS: dict[bytes, tuple[int, int]] = {}
_MAX_KNOWN = 16  # then the cache starts again (each frame is compared with at most this many)


def _jpeg(data: bytes, max_pixels: int, deep: bool) -> tuple[str, int, int]:
    if not deep and type(data) is bytes:
        for header, (width, height) in _KNOWN_HEADERS.items():
            if data.startswith(header):
                found = _JPEG_SCAN_END.search(data, len(header))
                if (found is not None and found.start() == len(data) - 2 and data[-1] == 0xD9
                        and width * height <= max_pixels):
                    return "JPEG", width, height
                break  # the walk says what is wrong
    end, width, height, undecoded, pictures, header_end, scan_end = _walk_jpeg(data, 0, max_pixels)
    size = len(data)
    # An MPO (stereo or multi-picture) file is JPEGs one after another, as many as the first says.
    for _ in range(pictures - 1):
        if end == size or not data.startswith(b"\xff\xd8\xff", end):
            raise _cut(f"MPO ends before the {pictures} JPEG pictures its first picture announces")
        end, _, _, more, _, _, _ = _walk_jpeg(data, end, max_pixels)
        undecoded = undecoded or more
    if end != size:
        raise _padded(size - end, "the JPEG's end marker, EOI")
    if undecoded or deep:
        _pillow(data, max_pixels, "JPEG")
    elif pictures == 1 and scan_end == size - 2 and type(data) is bytes:  # one scan, then EOI
        if len(_KNOWN_HEADERS) >= _MAX_KNOWN:
            _KNOWN_HEADERS.clear()
        _KNOWN_HEADERS[data[:header_end]] = (width, height)
    return "JPEG", width, height


def _walk_jpeg(data: bytes, start: int, max_pixels: int) -> tuple[int, int, int, bool, int, int, int]:
    """Walk one JPEG from its SOI at ``start`` through its EOI.

    Returns where it ends, width, height, whether it needs a decoder to vouch for it (a coding
    process this walk does not follow), how many pictures its MPO index announces (1 without), and
    where its first scan header (SOS) ends and the marker after that scan's data starts.

    Longer than our usual limit on purpose: it is one state machine over the marker stream (the
    frame header, the tables and the scans seen so far decide what the next segment may be), and
    the per-segment checks already live in their own functions; split further, that state would be
    threaded through every piece.
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
    header_end = scan_end = 0
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
            return pos, width, height, undecoded, pictures, header_end, scan_end
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
            if scans == 1:
                header_end, scan_end = pos, found.start()
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
