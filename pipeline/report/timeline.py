"""One agent's or unit's time plots as one figure of stacked rows sharing the step axis.

Rows, each present only when the data has it: reward per step, cumulative reward, reward components
(stacked, named from ``reward_mapping``), actions, action distribution (heat map), value estimate and
predicted reward against the realised discounted return, health (own, enemy agents, enemy units).
Sharing one x axis means zooming one row zooms all, and the frame player's cursor is one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .labels import Labels
from .plot import color, cursor_shape, typed
from .reduce import Reduction, bucket_means, reduce_series
from .series import Subject, discounted_return

ROW_PX = 150
HEAT_PX = 170
GAP_PX = 42
TOP_PX, BOTTOM_PX = 30, 45
HEAT_COLUMNS = 500      # heat-map columns at most, about one per pixel (steps are averaged in buckets beyond)
MAX_MARKERS = 1000      # discrete actions of longer series are drawn as a heat map: SVG markers cost ~0.1 ms each
MAX_DISCRETE = 64       # more distinct actions than this are drawn as a continuous series


@dataclass
class _Row:
    title: str
    axis_title: str
    height: int
    traces: list[dict[str, Any]] = field(default_factory=list)
    axis: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    """The figure and what the page says under it."""

    figure: dict[str, Any]
    notes: list[str]
    rows: list[str]


class _Builder:
    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.rows: list[_Row] = []
        self.reductions: dict[str, Reduction] = {}

    def row(self, title: str, axis_title: str, height: int = ROW_PX) -> _Row:
        self.rows.append(_Row(title, axis_title, height))
        return self.rows[-1]

    def note(self, kind: str, reduction: Reduction | None) -> None:
        """Remember the largest reduction of each kind, for the note under the figure."""
        if reduction is not None and (kind not in self.reductions or reduction.steps > self.reductions[kind].steps):
            self.reductions[kind] = reduction

    def line(self, row: _Row, x: np.ndarray, y: np.ndarray, name: str, key: str, **style: Any) -> None:
        """A line of ``y`` over ``x`` (NaN steps dropped), reduced when long."""
        present = ~np.isnan(y)
        if not present.any():
            return
        xs, (ys,), reduction = reduce_series(x[present], y[present], max_points=self.max_points)
        self.note("series", reduction)
        row.traces.append({"type": "scatter", "mode": "lines" if len(xs) > 1 else "markers", "name": name,
                           "meta": key, "x": typed(xs), "y": typed(ys), **style})


def build_timeline(subject: Subject, labels: Labels, reward_names: list[str], gamma: float,
                   *, max_points: int, cursor: bool) -> Timeline:
    """The stacked time plots of one subject."""
    b = _Builder(max_points)
    x = subject.steps
    rewards = b.row("Reward per step", "reward")
    b.line(rewards, x, subject.rewards, "reward", "reward", line={"color": color(0), "width": 1})
    cumulative = b.row("Cumulative reward", "return")
    b.line(cumulative, x, np.nancumsum(subject.rewards), "cumulative reward", "cumulative",
           line={"color": color(1)})
    if subject.components is not None:
        _components(b, x, subject.components, reward_names)
    _actions(b, x, subject.actions, labels)
    if subject.action_distribution is not None:
        _distribution(b, x, subject.action_distribution, labels)
    _values(b, subject, gamma)
    _health(b, subject)
    return Timeline(figure=_figure(b.rows, cursor), notes=_notes(b.reductions),
                    rows=[row.title for row in b.rows])


def _components(b: _Builder, x: np.ndarray, components: np.ndarray, names: list[str]) -> None:
    row = b.row("Reward components (stacked)", "reward")
    xs, columns, reduction = reduce_series(x, *components.T, max_points=b.max_points)
    b.note("components", reduction)
    for i, values in enumerate(columns):
        name = names[i] if i < len(names) else f"component {i}"
        row.traces.append({"type": "scatter", "mode": "lines", "stackgroup": "components", "name": name,
                           "meta": f"component:{i}", "x": typed(xs), "y": typed(values),
                           "line": {"width": 0.5, "color": color(i)}})


def _actions(b: _Builder, x: np.ndarray, actions: np.ndarray, labels: Labels) -> None:
    finite = actions[~np.isnan(actions)]
    values = np.unique(finite)
    discrete = len(values) <= MAX_DISCRETE and bool(np.all(values == np.round(values)))
    if not discrete:
        b.line(b.row("Action", "action"), x, actions, "action", "action", line={"color": color(2), "width": 1})
        return
    if len(x) <= MAX_MARKERS:
        row = b.row("Action", "action", height=max(ROW_PX, 14 * len(values)))
        row.traces.append({"type": "scatter", "mode": "markers", "name": "action", "meta": "action",
                           "x": typed(x), "y": typed(actions), "marker": {"size": 4, "color": color(2)},
                           "text": [labels.action(v) for v in actions.tolist()],
                           "hovertemplate": "step %{x}<br>%{text}<extra></extra>"})
        row.axis = {"tickvals": values.tolist(), "ticktext": [labels.action(v) for v in values.tolist()]}
        return
    # Too many steps to draw one marker each: the share of each action in buckets of steps, as a heat map.
    onehot = (actions[:, None] == values[None, :]).astype(np.float64)
    starts, shares, reduction = bucket_means(x, onehot, HEAT_COLUMNS)
    b.note("actions", reduction)
    row = b.row("Action (share of steps)", "action", height=max(HEAT_PX, 14 * len(values)))
    row.traces.append(_heatmap(starts, [labels.action(v) for v in values.tolist()], shares, "action share",
                               "action", "share"))


def _distribution(b: _Builder, x: np.ndarray, distribution: np.ndarray, labels: Labels) -> None:
    starts, means, reduction = bucket_means(x, distribution, HEAT_COLUMNS)
    b.note("distribution", reduction)
    names = labels.distribution(distribution.shape[1])
    row = b.row("Action distribution", "action", height=max(HEAT_PX, 14 * len(names)))
    row.traces.append(_heatmap(starts, names, means, "action distribution", "distribution", "probability"))


def _heatmap(x: np.ndarray, names: list[str], z: np.ndarray, name: str, key: str, scale: str) -> dict[str, Any]:
    return {"type": "heatmap", "name": name, "meta": key, "x": typed(x), "y": names,
            "z": typed(np.ascontiguousarray(z.T)), "colorscale": "Viridis", "zmin": 0,
            "hovertemplate": "step %{x}<br>%{y}: %{z:.3f}<extra></extra>",
            "colorbar": {"title": {"text": scale}, "thickness": 10}}


def _values(b: _Builder, subject: Subject, gamma: float) -> None:
    if subject.value_estimate is None and subject.predicted_reward is None:
        return
    row = b.row(f"Value estimate and predicted reward against the realised discounted return (γ = {gamma:g})",
                "value")
    x = subject.steps
    if subject.value_estimate is not None:
        b.line(row, x, subject.value_estimate, "value estimate", "value_estimate", line={"color": color(0)})
    if subject.predicted_reward is not None:
        b.line(row, x, subject.predicted_reward, "predicted reward", "predicted_reward", line={"color": color(1)})
    b.line(row, x, discounted_return(subject.rewards, gamma), "discounted return", "discounted_return",
           line={"color": "#222", "dash": "dot"})


def _health(b: _Builder, subject: Subject) -> None:
    groups = [(subject.health[:, None] if subject.health is not None else None, "health", "health"),
              (subject.enemy_agent_health, "enemy agent", "enemy_agent_health"),
              (subject.enemy_unit_health, "enemy unit", "enemy_unit_health")]
    if all(matrix is None for matrix, _, _ in groups):
        return
    row = b.row("Health", "health")
    index = 0
    for matrix, name, key in groups:
        if matrix is None:
            continue
        for j in range(matrix.shape[1]):
            label = name if key == "health" else f"{name} {j}"
            dash = {"dash": "dot"} if key != "health" else {}
            b.line(row, subject.steps, matrix[:, j], label, key if key == "health" else f"{key}:{j}",
                   line={"color": color(index), "width": 1.5 if key == "health" else 1, **dash})
            index += 1


def _figure(rows: list[_Row], cursor: bool) -> dict[str, Any]:
    rows = [row for row in rows if row.traces]
    plot_px = sum(row.height for row in rows) + GAP_PX * (len(rows) - 1)
    layout: dict[str, Any] = {
        "height": plot_px + TOP_PX + BOTTOM_PX, "margin": {"t": TOP_PX, "b": BOTTOM_PX, "l": 70, "r": 190},
        "hovermode": "closest", "annotations": [],
        "xaxis": {"title": {"text": "step"}, "anchor": f"y{len(rows)}" if len(rows) > 1 else "y",
                  "showspikes": True, "spikemode": "across", "spikethickness": 1},
    }
    data: list[dict[str, Any]] = []
    top = plot_px
    for i, row in enumerate(rows, start=1):
        suffix = "" if i == 1 else str(i)
        low, high = (top - row.height) / plot_px, top / plot_px
        top -= row.height + GAP_PX
        layout[f"yaxis{suffix}"] = {"domain": [max(low, 0.0), min(high, 1.0)], "title": {"text": row.axis_title},
                                    "automargin": True, **row.axis}
        layout[f"legend{suffix}"] = {"y": min(high, 1.0), "yanchor": "top", "x": 1.02, "xanchor": "left",
                                     "font": {"size": 11}}
        layout["annotations"].append({"text": f"<b>{row.title}</b>", "xref": "paper", "yref": "paper", "x": 0,
                                      "y": min(high, 1.0), "xanchor": "left", "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 12}})
        for trace in row.traces:
            trace["yaxis"] = f"y{suffix}"
            if trace["type"] == "heatmap":
                trace["colorbar"].update({"y": (low + high) / 2, "len": high - low, "yanchor": "middle"})
            else:
                trace["legend"] = f"legend{suffix}"
            data.append(trace)
    if cursor:
        layout["shapes"] = [cursor_shape()]
    return {"data": data, "layout": layout}


def _notes(reductions: dict[str, Reduction]) -> list[str]:
    notes = []
    if "series" in reductions:
        notes.append(reductions["series"].note("line"))
    if "components" in reductions:
        notes.append(reductions["components"].note("stacked component"))
    for key, what in (("actions", "the action heat map shows the share of each action"),
                      ("distribution", "the action distribution is the mean")):
        if key in reductions:
            r = reductions[key]
            notes.append(f"Reduced for drawing: {what} over every {r.bucket:,} consecutive steps "
                         f"({r.points:,} columns for {r.steps:,} steps).")
    return notes
