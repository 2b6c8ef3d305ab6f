"""Write a report: one episode, several side by side, or an overview of the lake or of a selection."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import DatasetError
from ..version import __version__
from .compare import compare_section
from .episode import episode_section
from .frames import DEFAULT_FRAMES, frame_count, load_frames
from .overview import overview_section
from .page import Page, escape
from .plot import plotly_js
from .reduce import DEFAULT_MAX_POINTS
from .series import load_episode

if TYPE_CHECKING:
    from ..engine.lake import Lake, Selection


def write_report(
    lake: Lake,
    output: str | os.PathLike[str],
    episodes: Selection = None,
    *,
    overview: bool | None = None,
    environment: str | None = None,
    where: str | None = None,
    sql: str | None = None,
    frames: int | str | None = DEFAULT_FRAMES,
    resize: tuple[int, int] | None = None,
    gamma: float | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> Path:
    """Write a self-contained HTML report to ``output`` and return its path.

    ``episodes`` given as ids (or unique prefixes) makes an episode report, several episodes compared
    side by side; nothing, or a polars frame with an ``episode_id`` column, makes an overview of the lake
    or of those episodes, narrowed by ``environment``, ``where`` (an SQL condition on the ``episodes``
    table) or ``sql`` (a query returning ``episode_id``). ``overview`` forces one or the other.
    ``frames`` is how many frames the player shows (an evenly spaced subset; ``"all"`` or ``"none"``),
    ``resize`` their ``(height, width)``; ``gamma`` the discount of the realised return (default: the
    training config's ``gamma``, else 0.99); series longer than ``max_points`` are reduced for drawing,
    and the page says so.
    """
    plotly_js()  # a missing extra fails here, before any reading
    if max_points < 10:
        raise DatasetError(f"max_points must be at least 10, got {max_points}")
    selects = environment is not None or where is not None or sql is not None
    if overview is None:
        overview = episodes is None or isinstance(episodes, pl.DataFrame | pl.LazyFrame)
    if overview:
        page = _overview(lake, episodes, environment=environment, where=where, sql=sql)
    else:
        if selects:
            raise DatasetError("environment, where and sql select the episodes of a lake overview; "
                               "an episode report takes episode ids")
        page = _episodes(lake, episodes, frames=frame_count(frames), resize=_size(resize), gamma=gamma,
                         max_points=max_points)
    if page.reduced:
        page.parts.insert(1, '<p class="banner">Some long series are reduced for drawing, keeping the minimum and '
                             "maximum of each bucket of steps so that no spike is hidden; the note under each "
                             "plot says how.</p>")
    return page.write(output)


def _size(resize: tuple[int, int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    if len(resize) != 2 or not all(isinstance(n, int) and n > 0 for n in resize):
        raise DatasetError(f"resize must be (height, width) in pixels, got {resize!r}")
    return int(resize[0]), int(resize[1])


def _title(page: Page, heading: str, lake: Lake) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page.add(f"<h1>{escape(heading)}</h1><p class='subtitle'>ingest-pipeline {escape(__version__)} report of "
             f"<code>{escape(lake.path)}</code>, written {now}. Plots: drag to zoom, double-click to reset; "
             f"click a time plot to move the frame player there.</p>")


def _episodes(lake: Lake, episodes: Selection, *, frames: int | None, resize: tuple[int, int] | None,
              gamma: float | None, max_points: int) -> Page:
    ids = list(dict.fromkeys(location.episode_id for location, _ in lake.select(episodes)))
    if not ids:
        raise DatasetError("no episode to report on: give at least one episode id")
    loaded = [load_episode(lake, episode_id, gamma=gamma) for episode_id in ids]
    first = loaded[0].episode
    heading = (f"{first['environment']} · {first['algorithm']} · {first['episode_id'][:8]}" if len(loaded) == 1
               else f"{len(loaded)} episodes compared")
    page = Page(f"{heading} — ingest-pipeline report")
    _title(page, heading, lake)
    if len(loaded) > 1:
        compare_section(page, loaded, max_points=max_points)
    for data in loaded:
        episode_frames = load_frames(lake, data.episode, frames, resize)
        episode_section(page, data, episode_frames, max_points=max_points)
    return page


def _overview(lake: Lake, episodes: Selection, *, environment: str | None, where: str | None,
              sql: str | None) -> Page:
    listing = lake.listing(environment)
    described: list[str] = [f"environment = {environment!r}"] if environment is not None else []
    for ids, text in _selections(lake, episodes, where, sql):
        listing = listing.filter(pl.col("episode_id").is_in(ids))
        described.append(text)
    if listing.is_empty():
        what = " and ".join(described) if described else "any"
        raise DatasetError(f"no episode in {lake.path} matches {what}" if described
                           else f"the lake {lake.path} has no episodes")
    heading = f"Lake overview: {len(listing):,} episode{'s' if len(listing) != 1 else ''}"
    page = Page(f"{heading} — ingest-pipeline report")
    _title(page, heading, lake)
    overview_section(page, listing, lake=str(lake.path), selection=" and ".join(described) or None)
    return page


def _selections(lake: Lake, episodes: Selection, where: str | None, sql: str | None) -> list[tuple[list[str], str]]:
    """The episode ids each given selection keeps, with how the page describes it."""
    chosen: list[tuple[list[str], str]] = []
    if episodes is not None:
        ids = [location.episode_id for location, _ in lake.select(episodes)]
        chosen.append((ids, f"{len(ids):,} selected episodes" if not isinstance(episodes, str) else episodes))
    if where is not None:
        chosen.append((_ids(lake.sql(f"SELECT episode_id FROM episodes WHERE {where}")), f"WHERE {where}"))
    if sql is not None:
        chosen.append((_ids(lake.sql(sql)), sql))
    return chosen


def _ids(frame: Any) -> list[str]:
    frame = frame.lazy()
    if "episode_id" not in frame.collect_schema():
        raise DatasetError("a selection query must return an episode_id column")
    return list(frame.select("episode_id").unique().collect()["episode_id"].to_list())
