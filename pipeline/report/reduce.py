"""Long series reduced for drawing without hiding spikes: the minimum and maximum of each bucket.

A browser draws a few thousand points per line as fast as it draws a hundred; a 100,000-step line
costs seconds and megabytes and shows no more on a 1,000-pixel plot. So a series longer than
``max_points`` is cut into about ``max_points / 2`` buckets of consecutive steps, and each bucket keeps
the steps of its smallest and largest value (and the series keeps its first and last step). Every
spike survives: the largest value of the whole series is the largest of its bucket. Several series
drawn together (stacked reward components) keep the union of their extremes, so they stay aligned;
they get fewer, larger buckets, so that the union still holds at most ``max_points`` points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_POINTS = 2000  # per line: the minimum and maximum of 1,000 buckets, one per pixel of a wide plot


@dataclass(frozen=True)
class Reduction:
    """What a reduction did, for the note under a plot."""

    steps: int            # points before
    points: int           # points after (per series)
    bucket: int           # steps per bucket

    def note(self, what: str = "series") -> str:
        return (f"Reduced for drawing: {self.steps:,} steps shown as {self.points:,} points per {what} "
                f"(the minimum and maximum of every {self.bucket:,} consecutive steps, so no spike is hidden).")


def extremes(values: np.ndarray, max_points: int) -> np.ndarray | None:
    """Indices to keep from ``values`` (``[T]`` or ``[T, K]``), or None when ``T <= max_points``.

    NaN counts as missing: a bucket of NaN only keeps its first step (drawn as a gap).
    """
    count = len(values)
    if count <= max_points:
        return None
    matrix = values.reshape(count, -1).astype(np.float64)
    size = -(-count // _buckets(max_points, matrix.shape[1]))
    padded_rows = size * (-(-count // size))
    lows = np.where(np.isnan(matrix), np.inf, matrix)
    highs = np.where(np.isnan(matrix), -np.inf, matrix)
    if padded_rows > count:  # repeat the last row so the last bucket has the others' size
        extra = padded_rows - count
        lows = np.concatenate([lows, np.repeat(lows[-1:], extra, axis=0)])
        highs = np.concatenate([highs, np.repeat(highs[-1:], extra, axis=0)])
    shape = (padded_rows // size, size, matrix.shape[1])
    base = (np.arange(shape[0]) * size)[:, None]
    kept = np.zeros(padded_rows, dtype=bool)  # a mask rather than np.unique: no sort
    kept[base + lows.reshape(shape).argmin(axis=1)] = True
    kept[base + highs.reshape(shape).argmax(axis=1)] = True
    kept[[0, count - 1]] = True
    return np.flatnonzero(kept[:count])


def _buckets(max_points: int, columns: int) -> int:
    """Buckets such that their minima and maxima (of every column) and the two ends fit in ``max_points``."""
    return max((max_points - 2) // (2 * columns), 1)


def reduce_series(x: np.ndarray, *ys: np.ndarray, max_points: int) -> tuple[np.ndarray, list[np.ndarray],
                                                                             Reduction | None]:
    """``x`` and each ``y`` kept at the extremes of the ``y`` together (see :func:`extremes`)."""
    if not ys or len(x) <= max_points:
        return x, list(ys), None
    kept = extremes(np.column_stack(ys), max_points)
    if kept is None:
        return x, list(ys), None
    reduction = Reduction(steps=len(x), points=len(kept), bucket=-(-len(x) // _buckets(max_points, len(ys))))
    return x[kept], [y[kept] for y in ys], reduction


def bucket_means(x: np.ndarray, matrix: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray, Reduction | None]:
    """``matrix`` ``[T, K]`` averaged over buckets of consecutive steps (for heat maps), at most ``columns``.

    Returns the first step of each bucket, the ``[buckets, K]`` means (NaN-aware) and the reduction.
    """
    count = len(x)
    if count <= columns:
        return x, matrix, None
    size = -(-count // columns)
    starts = np.arange(0, count, size)
    valid = ~np.isnan(matrix)
    sums = np.add.reduceat(np.where(valid, matrix, 0.0), starts, axis=0)
    counts = np.add.reduceat(valid.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return x[starts], means, Reduction(steps=count, points=len(starts), bucket=size)
