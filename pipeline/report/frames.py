"""The frames of the player: which steps, read from the ``steps`` table, and embedded as data URIs.

By default an episode with more than ``DEFAULT_FRAMES`` images shows that many, evenly spaced over the
steps that have one, so that a 100,000-step episode gives a report of a few MB. Images are embedded as
the bytes the file gave (browsers show PNG, JPEG, GIF, WebP and BMP themselves) unless a size is asked
for, in which case they are resized with Pillow and embedded as PNG.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from PIL import Image

from ..errors import DatasetError

if TYPE_CHECKING:
    from ..engine.lake import Lake

DEFAULT_FRAMES = 200
_MIME = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


@dataclass
class Frames:
    """The frames a player shows, in step order."""

    steps: list[int]
    sources: list[str]     # data: URIs
    total: int             # steps with an image in the episode

    @property
    def note(self) -> str | None:
        if len(self.steps) == self.total:
            return None
        return (f"Showing {len(self.steps):,} of {self.total:,} frames, evenly spaced "
                f"(frames='all', or --frames all, shows every one).")


def frame_count(frames: int | str | None) -> int | None:
    """``frames`` as a number of frames to show (None: all): an int, ``"N"``, ``"all"`` or ``"none"``."""
    if frames is None:
        return DEFAULT_FRAMES
    if isinstance(frames, str):
        text = frames.strip().lower()
        if text == "all":
            return None
        if text == "none":
            return 0
        if not text.isdigit():
            raise DatasetError(f"frames must be a number, 'all' or 'none', not {frames!r}")
        frames = int(text)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
        raise DatasetError(f"frames must be a number >= 0, 'all' or 'none', not {frames!r}")
    return frames


def load_frames(lake: Lake, episode: dict[str, Any], count: int | None,
                resize: tuple[int, int] | None = None) -> Frames | None:
    """The frames of an episode (its ``episodes`` row) to show, or None when it has none or none are asked for."""
    if count == 0 or not episode["images"]:
        return None
    episode_id = episode["episode_id"]
    table = lake.steps(episodes=episode_id).filter(pl.col("episode_id") == episode_id)
    if episode["images"] == episode["length"]:  # every step has one: no need to read the images to know
        with_image = table.select("step").collect()["step"].to_numpy()
    else:
        with_image = table.filter(pl.col("image").is_not_null()).select("step").collect()["step"].to_numpy()
    with_image = np.sort(with_image)
    chosen = with_image
    if count is not None and len(with_image) > count:
        chosen = with_image[np.unique(np.linspace(0, len(with_image) - 1, count).round().astype(np.int64))]
    wanted = chosen.tolist()
    images = dict(table.filter(pl.col("step").is_in(wanted)).select("step", "image").collect().iter_rows())
    sources = [data_uri(images[step], resize) for step in wanted]
    return Frames(steps=wanted, sources=sources, total=len(with_image))


def data_uri(data: bytes, resize: tuple[int, int] | None = None) -> str:
    """An image file as a ``data:`` URI: as given when a browser shows it and no size is asked for, else PNG."""
    mime = next((m for magic, m in _MIME if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None or resize is not None:
        data, mime = _as_png(data, resize), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _as_png(data: bytes, resize: tuple[int, int] | None) -> bytes:
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("RGBA" if "A" in source.getbands() else "RGB")
        if resize is not None:
            height, width = resize
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
