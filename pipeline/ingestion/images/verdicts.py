"""The verdicts of the image checks: one exception type, and the wording of each kind of problem."""

from __future__ import annotations

NOT_AN_IMAGE = "is not an image any decoder recognises (PNG, JPEG, GIF, BMP, WebP, ...)"


class ImageDamaged(ValueError):
    """The bytes are not a whole, undamaged image; the message says what is wrong."""



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
