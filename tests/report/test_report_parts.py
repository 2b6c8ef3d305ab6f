"""The report's parts one at a time: reduction, discounted return, labels, custom metrics, frames."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from pipeline import DatasetError
from pipeline.report.frames import data_uri, frame_count
from pipeline.report.labels import Labels, number
from pipeline.report.metrics import metric_plots
from pipeline.report.plot import typed
from pipeline.report.reduce import bucket_means, extremes, reduce_series
from pipeline.report.series import _discount, discounted_return
from tests.report.report_helpers import decoded

# -- reduction -----------------------------------------------------------------------------------


def test_short_series_are_not_reduced() -> None:
    x = np.arange(100)
    assert extremes(np.ones(100), 100) is None
    assert reduce_series(x, np.ones(100), max_points=100)[2] is None


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float64, st.integers(50, 3000), elements=st.floats(-1e6, 1e6)),
       max_points=st.integers(10, 400))
def test_reduction_keeps_every_spike_and_the_bound(values: np.ndarray, max_points: int) -> None:
    x = np.arange(len(values))
    xs, (ys,), reduction = reduce_series(x, values, max_points=max_points)
    assert len(xs) <= max_points
    assert ys.max() == values.max() and ys.min() == values.min()
    assert xs[0] == 0 and xs[-1] == len(values) - 1
    assert bool(np.all(np.diff(xs) > 0))
    assert np.array_equal(values[xs], ys)
    if len(values) > max_points:
        assert reduction is not None and reduction.steps == len(values) and reduction.points == len(xs)
        # Every bucket's extremes are kept: the maximum of each bucket of the note's size is among the points.
        for start in range(0, len(values), reduction.bucket):
            assert values[start:start + reduction.bucket].max() in set(ys.tolist())


def test_stacked_series_keep_each_columns_extremes_at_the_same_steps() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(5000, 3))
    matrix[4321, 2] = 99.0
    matrix[17, 0] = -99.0
    xs, columns, reduction = reduce_series(np.arange(5000), *matrix.T, max_points=600)
    assert reduction is not None and len(xs) <= 600
    assert all(len(column) == len(xs) for column in columns)
    assert 4321 in xs.tolist() and 17 in xs.tolist()
    assert columns[2].max() == 99.0 and columns[0].min() == -99.0


def test_missing_values_do_not_become_extremes() -> None:
    values = np.full(1000, np.nan)
    values[::3] = np.arange(334, dtype=float)
    kept = extremes(values, 100)
    assert kept is not None and 999 in kept.tolist()  # the series' ends are kept, NaN or not
    finite = values[kept][~np.isnan(values[kept])]
    assert finite.max() == 333.0 and finite.min() == 0.0


def test_bucket_means_average_heat_map_columns() -> None:
    x = np.arange(10)
    matrix = np.column_stack([np.arange(10, dtype=float), np.full(10, np.nan)])
    starts, means, reduction = bucket_means(x, matrix, 5)
    assert starts.tolist() == [0, 2, 4, 6, 8]
    assert means[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert np.isnan(means[:, 1]).all()
    assert reduction is not None and reduction.bucket == 2
    assert bucket_means(x, matrix, 10)[2] is None


def test_the_note_says_what_was_done() -> None:
    _, _, reduction = reduce_series(np.arange(100_000), np.sin(np.arange(100_000)), max_points=2000)
    assert reduction is not None
    assert reduction.note("line") == (
        "Reduced for drawing: 100,000 steps shown as 1,984 points per line (the minimum and maximum of every "
        "101 consecutive steps, so no spike is hidden).")


# -- typed arrays, labels, returns ---------------------------------------------------------------


@pytest.mark.parametrize(("values", "dtype"), [
    (np.arange(5), "i4"), (np.array([2**40]), "f8"), (np.array([0.5, np.nan]), "f8"), (np.array([True]), "u1")])
def test_typed_arrays_round_trip(values: np.ndarray, dtype: str) -> None:
    encoded = typed(values)
    assert isinstance(encoded, dict) and encoded["dtype"] == dtype
    assert np.array_equal(np.asarray(decoded(encoded), dtype=float), values.astype(float), equal_nan=True)


def test_two_dimensional_typed_arrays_carry_their_shape() -> None:
    encoded = typed(np.arange(6.0).reshape(2, 3))
    assert isinstance(encoded, dict) and encoded["shape"] == "2, 3"
    assert decoded(encoded) == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_strings_stay_plain_lists() -> None:
    assert typed(np.array(["a", "b"], dtype=object)) == ["a", "b"]


def test_labels_name_mapped_actions_and_keep_numbers_otherwise() -> None:
    labels = Labels({0: "noop", 2: "fire"})
    assert labels.action(2.0) == "fire (2)"
    assert labels.action(1.0) == "1"
    assert labels.action(0.25) == "0.25"
    assert labels.distribution(3) == ["noop (0)", "1", "fire (2)"]
    assert number(2.84240000001) == "2.8424" and number(None) == "-" and number(float("nan")) == "-"


def test_discounted_return() -> None:
    returns = discounted_return(np.array([1.0, 0.0, 2.0]), 0.5)
    assert returns.tolist() == [1.5, 1.0, 2.0]
    assert discounted_return(np.array([1.0, np.nan]), 1.0).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("config", "given", "expected"), [
    ('{"gamma": 0.9}', None, (0.9, "training config")),
    ('{"gamma": 0.9}', 0.5, (0.5, "given")),
    ('{"gamma": "high"}', None, (0.99, "default")),
    ('{"gamma": 7}', None, (0.99, "default")),
    ("{}", None, (0.99, "default")),
])
def test_the_discount_comes_from_the_caller_the_config_or_the_default(
        config: str, given: float | None, expected: tuple[float, str]) -> None:
    assert _discount(config, given) == expected


# -- custom metrics ------------------------------------------------------------------------------


def _plot(metrics: list[tuple[int, object]], title: str, max_points: int = 1000):  # type: ignore[no-untyped-def]
    plots = {plot.title: plot for plot in metric_plots(metrics, max_points=max_points, cursor=True)}
    return plots[title]


def test_one_point_per_step_joins_into_one_line_with_the_files_labels() -> None:
    metrics = [(t, {"Fuel": {"x": [t], "y": [1 - t / 100], "x_label": "step", "y_label": "fuel"}}) for t in (0, 20, 40)]
    plot = _plot(metrics, "Fuel")
    trace = plot.figure["data"][0]
    assert decoded(trace["x"]) == [0, 20, 40] and decoded(trace["y"]) == [1.0, 0.8, 0.6]
    assert plot.figure["layout"]["title"]["text"] == "Fuel"
    assert plot.figure["layout"]["xaxis"]["title"]["text"] == "step"
    assert plot.figure["layout"]["yaxis"]["title"]["text"] == "fuel"
    assert plot.points == 3 and plot.notes == []


def test_arrays_per_step_are_separate_segments_coloured_by_step() -> None:
    metrics = [(0, {"Loss": {"x": [0, 1], "y": [0.5, 0.25], "x_label": "t"}}), (5, {"Loss": {"x": [0, 1], "y": [1, 2]}})]
    plot = _plot(metrics, "Loss")
    trace = plot.figure["data"][0]
    x, y = decoded(trace["x"]), decoded(trace["y"])
    assert x[:2] == [0.0, 1.0] and np.isnan(x[2]) and x[3:5] == [0.0, 1.0]
    assert y[:2] == [0.5, 0.25] and y[3:5] == [1.0, 2.0]
    assert decoded(trace["marker"]["color"])[:2] == [0.0, 0.0] and decoded(trace["marker"]["color"])[3] == 5.0
    assert plot.figure["layout"]["xaxis"]["title"]["text"] == "t"
    assert plot.figure["layout"]["yaxis"]["title"]["text"] == "y"
    assert plot.points == 4 and not plot.on_steps


def test_a_single_axis_is_drawn_against_the_step_or_the_position_in_its_array() -> None:
    by_step = _plot([(3, {"Speed": {"y": [3]}}), (4, {"Speed": {"y": 5}})], "Speed")
    assert decoded(by_step.figure["data"][0]["x"]) == [3, 4] and by_step.on_steps
    assert by_step.figure["layout"]["xaxis"]["title"]["text"] == "step"
    assert by_step.figure["layout"]["shapes"]  # the player's cursor applies on a step axis
    by_index = _plot([(0, {"Damage": {"y": [1, 2, 3], "y_label": "hp"}})], "Damage")
    assert decoded(by_index.figure["data"][0]["x"])[:3] == [0.0, 1.0, 2.0]
    assert by_index.figure["layout"]["xaxis"]["title"]["text"] == "index"
    assert by_index.figure["layout"]["yaxis"]["title"]["text"] == "hp"


def test_a_third_axis_colours_the_points_and_a_fourth_is_named() -> None:
    plot = _plot([(0, {"Map": {"x": [1], "y": [2], "z": [3], "w": [4], "z_label": "heat"}})], "Map")
    marker = plot.figure["data"][0]["marker"]
    assert decoded(marker["color"]) == [3.0] and marker["colorbar"]["title"]["text"] == "heat"
    assert plot.notes == ["Axes not drawn: w."]


def test_strings_make_a_category_axis_and_nested_values_are_named_not_drawn() -> None:
    plot = _plot([(0, {"Votes": {"x": ["a", "b"], "y": [1, 2]}}), (1, {"Votes": {"x": ["c"], "y": [3]}})], "Votes")
    assert plot.figure["data"][0]["x"] == ["a", "b", None, "c", None]
    nested = _plot([(0, {"Odd": {"x": [[1, 2]], "y": [1]}})], "Odd")
    assert "Axis 'x' holds nested arrays or objects and is not drawn." in nested.notes


def test_steps_that_do_not_fit_are_left_out_and_counted() -> None:
    metrics = [(0, {"P": {"x": [1, 2], "y": [1]}}), (1, {"P": {"x": [1], "y": [1]}}), (2, {"P": "text"})]
    plot = _plot(metrics, "P")
    assert plot.points == 1
    assert "2 step(s) that lack one of the axes or give arrays of unequal length are left out." in plot.notes


def test_long_metric_lines_are_reduced_and_many_arrays_thinned() -> None:
    line = _plot([(t, {"M": {"y": [float(t % 7)]}}) for t in range(5000)], "M", max_points=200)
    assert line.points <= 200 and any(note.startswith("Reduced for drawing") for note in line.notes)
    arrays = _plot([(t, {"A": {"x": list(range(10)), "y": list(range(10))}}) for t in range(100)], "A", max_points=200)
    assert arrays.points == 200
    assert "Reduced for drawing: the arrays of 20 of 100 steps, evenly spaced." in arrays.notes


def test_metrics_that_are_not_objects_are_ignored() -> None:
    assert metric_plots([(0, [1, 2]), (1, "x")], max_points=100, cursor=False) == []


# -- frames --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "count"), [(None, 200), ("all", None), ("none", 0), ("12", 12), (5, 5), (" ALL ", None)])
def test_frame_counts(spec: object, count: int | None) -> None:
    assert frame_count(spec) == count  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["some", "-1", -1, 1.5, True])
def test_bad_frame_counts_say_what_is_expected(spec: object) -> None:
    with pytest.raises(DatasetError, match="frames must be a number"):
        frame_count(spec)  # type: ignore[arg-type]


def test_browser_images_are_embedded_as_given_and_others_converted() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2), (1, 2, 3)).save(buffer, format="PNG")
    png = buffer.getvalue()
    assert data_uri(png) == "data:image/png;base64," + base64.b64encode(png).decode()
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="TIFF")
    assert data_uri(buffer.getvalue()).startswith("data:image/png;base64,")
    resized = data_uri(png, (6, 10))
    with Image.open(io.BytesIO(base64.b64decode(resized.split(",", 1)[1]))) as image:
        assert image.size == (10, 6)
