"""The lake (or a selection of it) at a glance: return and length distributions per environment and
algorithm, a summary per group, and a table of the episodes with the columns of ``ingest-pipeline ls``."""

from __future__ import annotations

from typing import Any

import polars as pl

from .episode import facts_table, timestamp
from .labels import number
from .page import Page, escape
from .plot import color, typed

MAX_TABLE_ROWS = 10_000
ALL_POINTS = 2_000   # groups with more episodes show the box and its outliers only
_LS_COLUMNS = (("EPISODE", "episode_id", False), ("ENVIRONMENT", "environment", False),
               ("ALGORITHM", "algorithm", False), ("STEPS", "steps", True), ("AGENTS", "agents", True),
               ("TOTAL REWARD", "total_reward", True), ("INGESTED AT", "ingested_at", False))


def overview_section(page: Page, listing: pl.DataFrame, *, lake: str, selection: str | None) -> None:
    """Append the overview of the episodes of ``listing`` (rows as ``Lake.listing`` gives them)."""
    listing = listing.with_columns(
        (pl.col("environment") + " · " + pl.col("algorithm")).alias("group"))
    groups = listing.group_by("group", maintain_order=True).agg(
        pl.len().alias("episodes"), pl.col("total_reward").mean().alias("mean"),
        pl.col("total_reward").median().alias("median"), pl.col("total_reward").min().alias("min"),
        pl.col("total_reward").max().alias("max"), pl.col("steps").mean().alias("mean_steps"),
        pl.col("steps").sum().alias("all_steps"),
    ).sort("group")
    page.add('<section class="overview"><h2>Episodes</h2>')
    page.add(facts_table([
        ("lake", f"<code>{escape(lake)}</code>"),
        ("selection", escape(selection or "every episode")),
        ("episodes", f"{len(listing):,}"),
        ("environments", escape(", ".join(sorted(listing["environment"].unique().to_list())))),
        ("algorithms", escape(", ".join(sorted(listing["algorithm"].unique().to_list())))),
        ("steps", f"{int(listing['steps'].sum()):,}"),
    ]))
    page.add('<div class="grid2">')
    page.figure(_boxes(listing, "total_reward", "Return per episode", "total reward"), key="overview:returns")
    page.figure(_boxes(listing, "steps", "Length per episode", "steps"), key="overview:lengths")
    page.add("</div><h3>Per environment and algorithm</h3>")
    page.add(_group_table(groups))
    page.add("<h3>Episodes</h3>")
    page.add(episode_table(listing))
    page.add("</section>")


def _boxes(listing: pl.DataFrame, column: str, title: str, axis: str) -> dict[str, Any]:
    data = []
    for i, (group, part) in enumerate(listing.group_by("group", maintain_order=True)):
        name = str(group[0])
        values = part[column].cast(pl.Float64).to_numpy()
        data.append({"type": "box", "name": name, "meta": name, "y": typed(values),
                     "text": part["episode_id"].str.slice(0, 12).to_list() if len(part) <= ALL_POINTS else None,
                     "boxpoints": "all" if len(part) <= ALL_POINTS else "outliers", "jitter": 0.4, "pointpos": 0,
                     "marker": {"size": 4, "color": color(i)}, "boxmean": True})
    data.sort(key=lambda trace: str(trace["name"]))
    return {"data": data, "layout": {"title": {"text": title}, "height": 380, "showlegend": False,
                                     "margin": {"t": 50, "b": 50},
                                     "yaxis": {"title": {"text": axis}, "zeroline": False},
                                     "xaxis": {"automargin": True}}}


def _group_table(groups: pl.DataFrame) -> str:
    head = ("<tr><th>ENVIRONMENT · ALGORITHM</th><th class='num'>EPISODES</th><th class='num'>MEAN RETURN</th>"
            "<th class='num'>MEDIAN</th><th class='num'>MIN</th><th class='num'>MAX</th>"
            "<th class='num'>MEAN STEPS</th><th class='num'>STEPS</th></tr>")
    rows = "".join(
        f"<tr><td>{escape(g['group'])}</td><td class='num'>{g['episodes']:,}</td>"
        + "".join(f"<td class='num'>{escape(number(g[k]))}</td>" for k in ("mean", "median", "min", "max"))
        + f"<td class='num'>{escape(number(g['mean_steps']))}</td><td class='num'>{g['all_steps']:,}</td></tr>"
        for g in groups.iter_rows(named=True))
    return f'<table class="data groups"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def episode_table(listing: pl.DataFrame) -> str:
    """The episodes, one row each, with the columns of ``ingest-pipeline ls`` (sortable by a click)."""
    shown = listing.head(MAX_TABLE_ROWS)
    head = "".join(f"<th{' class=num' if numeric else ''}>{name}</th>" for name, _, numeric in _LS_COLUMNS)
    body = []
    for row in shown.iter_rows(named=True):
        cells = []
        for _, column, numeric in _LS_COLUMNS:
            value = row[column]
            if column == "ingested_at":
                text, key = timestamp(value), value.isoformat()
            elif column == "total_reward":
                text, key = number(value), repr(float(value))
            else:
                text, key = (f"{value:,}" if numeric else str(value)), str(value)
            inner = f"<code>{escape(text)}</code>" if column == "episode_id" else escape(text)
            cells.append(f'<td{" class=num" if numeric else ""} data-value="{escape(key)}">{inner}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (f'<p class="note">Showing the first {MAX_TABLE_ROWS:,} of {len(listing):,} episodes (oldest ingest '
            f"first); narrow the selection to see the others.</p>" if len(listing) > MAX_TABLE_ROWS else "")
    return (f'{note}<div class="table-scroll"><table class="data sortable episodes"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


