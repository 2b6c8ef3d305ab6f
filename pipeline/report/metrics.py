"""The ``custom_metrics`` plots an episode defines, drawn as the file describes them.

Each agent or unit step may carry ``{"<plot title>": {"x": [...], "y": [...], "x_label": "...", ...}}``.
One figure per plot title and subject gathers the plot's points from every step that gives it, in step
order, with the axis labels the file gives (``<axis>_label``; the axis name otherwise):

- ``x`` and ``y`` (the first two axes, in the order x, y, z, then as they come): y against x;
- a single axis: its values against the step number when every step gives one value, else against
  their position in the step's array;
- a third axis colours the points (a colour bar titled with its label); further axes are named in a note.

When every step gives one point per axis the points are joined into one line; when steps give whole
arrays, each step's points form their own segment and are coloured by step. Values that are not numbers
(strings) make a category axis; nested arrays or objects cannot be drawn and are named in a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .plot import cursor_shape, typed
from .reduce import reduce_series

_PREFERRED = ("x", "y", "z")


@dataclass
class MetricPlot:
    title: str
    figure: dict[str, Any]
    notes: list[str]
    points: int
    on_steps: bool   # the x axis is the step number (the frame player's cursor applies)


def metric_plots(metrics: list[tuple[int, Any]], *, max_points: int, cursor: bool) -> list[MetricPlot]:
    """One plot per title found in a subject's ``(step, custom_metrics)`` rows, in order of appearance."""
    by_title: dict[str, list[tuple[int, Any]]] = {}
    for step, value in metrics:
        if isinstance(value, dict):
            for title, spec in value.items():
                by_title.setdefault(str(title), []).append((step, spec))
    return [_plot(title, entries, max_points, cursor) for title, entries in by_title.items()]


def _axis_values(value: Any) -> list[Any] | None:
    """An axis as a list of scalars (a single number counts as one), or None when it cannot be drawn."""
    values = value if isinstance(value, list) else [value]
    if all(v is None or isinstance(v, int | float | str) for v in values):
        return values
    return None


def _plot(title: str, entries: list[tuple[int, Any]], max_points: int, cursor: bool) -> MetricPlot:
    notes: list[str] = []
    axes: list[str] = []
    labels: dict[str, str] = {}
    for _, spec in entries:
        if not isinstance(spec, dict):
            continue
        for key, value in spec.items():
            if key.endswith("_label"):
                labels[key[: -len("_label")]] = str(value)
            elif key not in axes:
                axes.append(key)
    axes.sort(key=lambda a: (_PREFERRED.index(a) if a in _PREFERRED else len(_PREFERRED)))
    steps, columns, skipped = _gather(entries, axes)
    drawable = [a for a in axes if columns[a] is not None]
    for axis in axes:
        if columns[axis] is None:
            notes.append(f"Axis {axis!r} holds nested arrays or objects and is not drawn.")
    if len(drawable) > 3:
        notes.append(f"Axes not drawn: {', '.join(drawable[3:])}.")
    if skipped:
        notes.append(f"{skipped} step(s) that lack one of the axes or give arrays of unequal length are left out.")
    if not drawable or not steps:
        return MetricPlot(title, _figure(title, [], {}, cursor=False), notes or ["Nothing to draw."], 0, False)
    return _draw(title, steps, [columns[a] for a in drawable[:3]], drawable[:3], labels, notes, max_points,
                 cursor)


def _gather(entries: list[tuple[int, Any]], axes: list[str]) -> tuple[list[int], dict[str, Any], int]:
    """Per step, the arrays of every drawable axis (of equal lengths); steps that do not fit are skipped."""
    columns: dict[str, list[list[Any]] | None] = {axis: [] for axis in axes}
    steps: list[int] = []
    skipped = 0
    for step, spec in entries:
        if not isinstance(spec, dict):
            skipped += 1
            continue
        for axis in axes:
            if columns[axis] is not None and axis in spec and _axis_values(spec[axis]) is None:
                columns[axis] = None  # nested arrays or objects: the axis cannot be drawn at all
        values = {a: _axis_values(spec[a]) if a in spec else None for a in axes if columns[a] is not None}
        arrays = [v for v in values.values() if v is not None]
        if not values or len(arrays) < len(values) or len({len(v) for v in arrays}) != 1:
            skipped += 1
            continue
        steps.append(step)
        for axis, array in values.items():
            column = columns[axis]
            if column is not None and array is not None:
                column.append(array)
    return steps, columns, skipped


def _thin(steps: list[int], columns: list[list[list[Any]]], max_points: int,
          notes: list[str]) -> tuple[list[int], list[list[list[Any]]]]:
    """Evenly spaced steps whose arrays hold about ``max_points`` points, when all of them hold more."""
    total = sum(len(chunk) for chunk in columns[0])
    if total <= max_points or all(len(chunk) == 1 for chunk in columns[0]):
        return steps, columns
    keep = max(1, len(steps) * max_points // total)
    chosen = np.unique(np.linspace(0, len(steps) - 1, keep).round().astype(np.int64)).tolist()
    notes.append(f"Reduced for drawing: the arrays of {len(chosen):,} of {len(steps):,} steps, evenly spaced.")
    return [steps[i] for i in chosen], [[column[i] for i in chosen] for column in columns]


def _array(chunks: list[list[Any]]) -> np.ndarray:
    flat = [v for chunk in chunks for v in chunk]
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in flat):
        return np.array([np.nan if v is None else v for v in flat], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in flat], dtype=object)


def _draw(title: str, steps: list[int], columns: list[list[list[Any]]], names: list[str],
          labels: dict[str, str], notes: list[str], max_points: int, cursor: bool) -> MetricPlot:
    steps, columns = _thin(steps, columns, max_points, notes)
    lengths = np.array([len(chunk) for chunk in columns[0]])
    step_of_point = np.repeat(np.asarray(steps, dtype=np.int64), lengths)
    single = bool((lengths == 1).all())
    if len(names) == 1:
        y = _array(columns[0])
        x = step_of_point if single else np.concatenate([np.arange(n) for n in lengths])
        titles = ["step" if single else "index", labels.get(names[0], names[0])]
        z = None
    else:
        x, y = _array(columns[0]), _array(columns[1])
        titles = [labels.get(names[0], names[0]), labels.get(names[1], names[1])]
        z = _array(columns[2]) if len(names) > 2 else None
    on_steps = len(names) == 1 and single
    trace: dict[str, Any] = {"type": "scatter", "name": title, "meta": title, "mode": "lines+markers",
                             "marker": {"size": 5}}
    if single and y.dtype.kind == "f" and x.dtype.kind != "O" and z is None:
        x, (y,), reduction = reduce_series(x, y, max_points=max_points)
        if reduction is not None:
            notes.append(reduction.note())
        points = len(x)
    else:
        points = len(x)
        if not single:
            x, y, z, step_of_point = _segments(x, y, z, step_of_point, lengths)
        colour = z if z is not None else (step_of_point if not single and len(steps) > 1 else None)
        if colour is not None and colour.dtype.kind == "f":
            bar = labels.get(names[2], names[2]) if z is not None else "step"
            trace["marker"].update({"color": typed(colour), "colorscale": "Viridis", "showscale": True,
                                    "colorbar": {"title": {"text": bar}, "thickness": 10}})
            trace["line"] = {"color": "#999", "width": 1}
    trace.update({"x": typed(x), "y": typed(y)})
    figure = _figure(title, [trace], {"x": titles[0], "y": titles[1]}, cursor=cursor and on_steps)
    return MetricPlot(title, figure, notes, points, on_steps)


def _segments(x: np.ndarray, y: np.ndarray, z: np.ndarray | None, steps: np.ndarray,
              lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Each step's points followed by a gap (NaN, or an empty category), so lines do not join steps."""
    ends = np.cumsum(lengths)

    def split(values: np.ndarray) -> np.ndarray:
        if values.dtype.kind != "O":
            values = values.astype(np.float64)
        gap = np.array([np.nan if values.dtype.kind == "f" else None], dtype=values.dtype)
        return np.concatenate([part for chunk in np.split(values, ends[:-1]) for part in (chunk, gap)])

    return split(x), split(y), None if z is None else split(z), split(steps.astype(np.float64))


def _figure(title: str, data: list[dict[str, Any]], titles: dict[str, str], *, cursor: bool) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title}, "height": 320, "showlegend": False, "margin": {"t": 50, "b": 50},
        "xaxis": {"title": {"text": titles.get("x", "")}, "automargin": True},
        "yaxis": {"title": {"text": titles.get("y", "")}, "automargin": True},
    }
    if cursor:
        layout["shapes"] = [cursor_shape()]
    return {"data": data, "layout": layout}
