"""Anything else Pillow recognises: opened and fully decoded (never EPS, which runs Ghostscript)."""

from __future__ import annotations

import io
import warnings
from functools import cache

from .verdicts import NOT_AN_IMAGE, ImageDamaged, _cut, _damaged, _too_large

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
