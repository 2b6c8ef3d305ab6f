"""Plotly figures as plain JSON: typed arrays, shared look, the bundled plotly.js.

Figures are built as plain dicts in plotly's JSON schema rather than through ``plotly.graph_objects``,
whose validation cost tens of milliseconds per figure (a two-team episode has dozens): the report only
needs plotly.js, which the ``plotly`` package bundles, and the schema it documents. Numeric arrays go
in as plotly.js typed arrays (``{"dtype": "f8", "bdata": <base64>}``, plotly.js >= 2.28), a third of
the size of JSON numbers and parsed without a number-by-number scan.
"""

from __future__ import annotations

import base64
import importlib.util
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtra

MIN_PLOTLY_JS = (2, 28)  # typed arrays (bdata) in figures
_TYPES = {"float64": "f8", "float32": "f4", "int32": "i4", "uint32": "u4", "int16": "i2", "uint16": "u2",
          "int8": "i1", "uint8": "u1"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def plotly_js_path() -> Path:
    """The ``plotly.min.js`` that the installed ``plotly`` package bundles (without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise MissingExtra("an HTML report", "report", "plotly")


@cache
def plotly_js() -> str:
    """plotly.js itself, to inline once per report; refuses a bundle older than typed-array support."""
    path = plotly_js_path()
    text = path.read_text(encoding="utf-8")
    match = re.search(r"plotly\.js v(\d+)\.(\d+)", text[:500])
    if match is None or (int(match[1]), int(match[2])) < MIN_PLOTLY_JS:
        raise MissingExtra("an HTML report", "report", "plotly>=5.20")
    return text


def typed(values: np.ndarray) -> dict[str, Any] | list[Any]:
    """A numeric array as a plotly.js typed array; anything else (strings) as a plain list."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        array = array.astype(np.int32 if low >= -(2**31) and high < 2**31 else np.float64)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind == "f":
        array = array.astype(np.float64)
    else:
        return list(array.tolist())
    code = _TYPES[str(array.dtype)]
    data = base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")
    encoded: dict[str, Any] = {"dtype": code, "bdata": data}
    if array.ndim > 1:
        encoded["shape"] = ", ".join(str(n) for n in array.shape)
    return encoded


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def cursor_shape() -> dict[str, Any]:
    """The vertical line the frame player moves along the step axis (layout.shapes[0])."""
    return {"type": "line", "xref": "x", "yref": "paper", "x0": 0, "x1": 0, "y0": 0, "y1": 1,
            "line": {"color": "#d62728", "width": 1.5}, "visible": False}


def bar_figure(title: str, x: list[Any], traces: Sequence[tuple[str, Sequence[float | None]]], *, x_title: str,
               y_title: str, stacked: bool = False, height: int = 320) -> dict[str, Any]:
    """A bar chart: one trace per (name, values) over the categories ``x``."""
    data = [{"type": "bar", "name": name, "x": x, "y": values, "meta": name, "marker": {"color": color(i)}}
            for i, (name, values) in enumerate(traces)]
    return {"data": data, "layout": {
        "title": {"text": title}, "height": height, "barmode": "relative" if stacked else "group",
        "margin": {"t": 50, "b": 50},
        "xaxis": {"title": {"text": x_title}, "type": "category", "automargin": True},
        "yaxis": {"title": {"text": y_title}, "automargin": True},
        "showlegend": len(traces) > 1,
    }}
