"""Several episodes side by side: their facts in columns, returns, lengths, reward components, curves."""

from __future__ import annotations

from typing import Any

import numpy as np

from .episode import timestamp
from .labels import number
from .page import Page, escape
from .plot import bar_figure, color, typed
from .reduce import reduce_series
from .series import EpisodeData


def label(data: EpisodeData) -> str:
    """A short name for an episode on an axis: its id's first 8 digits."""
    return data.episode_id[:8]


def compare_section(page: Page, episodes: list[EpisodeData], *, max_points: int) -> None:
    """Append the comparison of ``episodes`` (two or more) to ``page``."""
    page.add('<section class="compare"><h2>Comparison</h2>')
    page.add(_facts(episodes))
    names = [label(d) for d in episodes]
    agents = list(dict.fromkeys(a["agent"] for d in episodes for a in d.info["agents"]))
    returns = [(agent, [_total(d, agent) for d in episodes]) for agent in agents]  # None: not in that episode
    page.add('<div class="grid2">')
    page.figure(bar_figure("Return per agent", names, returns, x_title="episode", y_title="total reward"),
                key="compare:returns", kind="small")
    page.figure(bar_figure("Length", names, [("steps", [float(d.episode["length"]) for d in episodes])],
                           x_title="episode", y_title="steps"), key="compare:lengths", kind="small")
    components = _components(episodes)
    if components is not None:
        page.figure(components, key="compare:components", kind="small")
    page.add("</div>")
    page.figure(_curves(episodes, max_points), key="compare:cumulative",
                notes=["Cumulative reward against the position in the agent's steps, so episodes line up."])
    page.add("</section>")


def _total(data: EpisodeData, agent: str) -> float | None:
    return next((float(a["total_reward"]) for a in data.info["agents"] if a["agent"] == agent), None)


def _facts(episodes: list[EpisodeData]) -> str:
    rows = [
        ("environment", lambda d: d.episode["environment"]),
        ("algorithm", lambda d: d.episode["algorithm"]),
        ("source", lambda d: d.episode["source"]),
        ("ingested at", lambda d: timestamp(d.episode["ingested_at"])),
        ("steps", lambda d: f"{d.episode['length']:,}"),
        ("agents", lambda d: str(d.episode["agents"])),
        ("units", lambda d: str(sum(int(a["units"]) for a in d.info["agents"]))),
        ("total reward", lambda d: number(d.episode["total_reward"])),
        ("reward per agent", lambda d: ", ".join(f"{a['agent']}: {number(a['total_reward'])}"
                                                 for a in d.info["agents"])),
    ]
    head = "".join(f'<th><a href="#episode-{escape(d.episode_id)}"><code>{escape(label(d))}</code></a></th>'
                   for d in episodes)
    body = "".join(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{escape(cell(d))}</td>" for d in episodes) + "</tr>"
                   for name, cell in rows)
    return f'<div class="table-scroll"><table class="data compare"><thead><tr><th></th>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def _components(episodes: list[EpisodeData]) -> dict[str, Any] | None:
    """Reward totals per component, stacked, one bar per episode and agent; None when no episode has any."""
    bars: list[str] = []
    totals: dict[str, list[float]] = {}
    for data in episodes:
        for agent in data.info["agents"]:
            if not agent["reward_totals"]:
                continue
            bars.append(f"{label(data)} · {agent['agent']}")
            names = data.info["reward_names"] or []
            for i, value in enumerate(agent["reward_totals"]):
                name = names[i] if i < len(names) else f"component {i}"
                column = totals.setdefault(name, [])
                column.extend([0.0] * (len(bars) - 1 - len(column)))
                column.append(float(value))
    if not bars:
        return None
    traces = [(name, values + [0.0] * (len(bars) - len(values))) for name, values in totals.items()]
    return bar_figure("Reward components", bars, traces, x_title="episode · agent", y_title="total reward",
                      stacked=True, height=360)


def _curves(episodes: list[EpisodeData], max_points: int) -> dict[str, Any]:
    data = []
    for i, episode in enumerate(episodes):
        for j, agent in enumerate(episode.agents):
            cumulative = np.nancumsum(agent.rewards)
            x, (y,), _ = reduce_series(np.arange(len(cumulative)), cumulative, max_points=max_points)
            data.append({"type": "scatter", "mode": "lines", "name": f"{label(episode)} · {agent.agent}",
                         "meta": f"{episode.episode_id}:{agent.agent}", "x": typed(x), "y": typed(y),
                         "line": {"color": color(i), "dash": ["solid", "dot", "dash", "dashdot"][j % 4]}})
    return {"data": data, "layout": {"title": {"text": "Cumulative reward"}, "height": 380,
                                     "margin": {"t": 50, "b": 50},
                                     "xaxis": {"title": {"text": "agent step"}},
                                     "yaxis": {"title": {"text": "cumulative reward"}}}}
