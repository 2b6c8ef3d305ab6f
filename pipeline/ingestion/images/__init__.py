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
  An episode's frames share their header (tables from one encoder at one quality): a header walked
  once is known, and a frame starting with it is walked from its scan data on (~4 us at 84x84,
  against ~34 us walked whole; see ``jpeg._KNOWN_HEADERS``).
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

from .containers import _bmp, _gif, _webp
from .jpeg import _jpeg
from .pillow import _pillow
from .png import PNG_SIGNATURE, _png
from .verdicts import NOT_AN_IMAGE, ImageDamaged

__all__ = ["NOT_AN_IMAGE", "ImageDamaged", "check_image"]


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
