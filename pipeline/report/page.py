"""One self-contained HTML file: markup, figure and frame data as JSON, plotly.js and the page script.

Everything the page needs is inside it: plotly.js (inlined once, whatever the number of figures),
the figures as JSON with typed arrays, the frames as ``data:`` URIs, and ``assets/report.js`` (the
frame player, the cursor on the time plots, sortable tables), so it opens from disk with no network.
JSON goes in ``<script type="application/json">`` elements with every ``<`` escaped, so no string in
the data (an agent called ``</script>``) can end the element early.
"""

from __future__ import annotations

import html
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

from .frames import Frames
from .plot import plotly_js


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).replace(b"<", b"\\u003c")


def _asset(name: str) -> str:
    return files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


class Page:
    """A report page built from top to bottom: HTML pieces, figures and frame players."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.figures: list[dict[str, Any]] = []
        self.players: list[dict[str, Any]] = []
        self.reduced = False

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, figure: dict[str, Any], *, key: str, episode: str | None = None, cursor: bool = False,
               notes: list[str] | tuple[str, ...] = (), kind: str = "") -> str:
        """Place a plot here; ``cursor`` plots follow the frame player of ``episode``. Returns its element id."""
        element = f"plot-{len(self.figures)}"
        self.figures.append({"id": element, "key": key, "episode": episode, "cursor": cursor, **figure})
        height = int(figure.get("layout", {}).get("height") or 450)  # reserved, so the page does not jump
        self.parts.append(f'<div class="plot {escape(kind)}" id="{element}" data-key="{escape(key)}" '
                          f'style="height:{height}px"></div>')
        for note in notes:
            self.reduced |= note.startswith("Reduced")
            self.parts.append(f'<p class="note">{escape(note)}</p>')
        return element

    def player(self, episode: str, frames: Frames) -> None:
        """The frame player of ``episode``: slider, play/pause, step number."""
        element = f"player-{len(self.players)}"
        self.players.append({"id": element, "episode": episode, "steps": frames.steps, "sources": frames.sources})
        last = len(frames.steps) - 1
        note = f'<p class="note">{escape(frames.note)}</p>' if frames.note else ""
        self.parts.append(
            f'<div class="player" id="{element}" data-episode="{escape(episode)}">'
            f'<img class="frame" alt="frame of step {frames.steps[0]}" src="{frames.sources[0]}">'
            '<div class="controls"><button type="button" class="play" aria-label="play">▶ Play</button>'
            f'<input type="range" class="slider" min="0" max="{last}" value="0" aria-label="frame">'
            '<select class="speed" aria-label="frames per second">'
            + "".join(f'<option value="{fps}"{" selected" if fps == 10 else ""}>{fps} fps</option>'
                      for fps in (2, 5, 10, 20, 30, 60))
            + '</select></div>'
            f'<div class="position"><span class="step">step {frames.steps[0]}</span> · '
            f'<span class="counter">frame 1 of {len(frames.steps):,}</span></div>{note}</div>')

    def render(self) -> bytes:
        """The whole file."""
        data = _json({"figures": self.figures})
        players = b"".join(
            b'<script type="application/json" class="frames-data" data-player="' + p["id"].encode() + b'">'
            + _json(p) + b"</script>\n" for p in self.players)
        head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{escape(self.title)}</title><style>{_asset('report.css')}</style></head>\n"
                f'<body><main>\n{"".join(self.parts)}\n</main>\n')
        return b"".join([
            head.encode(), b'<script type="application/json" id="report-figures">', data, b"</script>\n", players,
            b"<script>", plotly_js().encode(), b"</script>\n<script>", _asset("report.js").encode(),
            b"</script>\n</body></html>\n"])

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to ``path`` (beside it first, then renamed, so a reader never sees half a file)."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            partial.write_bytes(self.render())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
