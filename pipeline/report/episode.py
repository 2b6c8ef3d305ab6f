"""The section of one episode: header facts, configs, frame player, and per agent and unit its plots."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import numpy as np
import orjson

from .frames import Frames
from .labels import Labels, number
from .metrics import metric_plots
from .page import Page, escape
from .plot import bar_figure
from .series import EpisodeData, Subject
from .timeline import MAX_DISCRETE, build_timeline

HISTOGRAM_BINS = 40


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def facts_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table of already-escaped HTML values."""
    return '<table class="facts">' + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _pretty_json(text: str | None) -> str:
    if not text:
        return "{}"
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


def header(data: EpisodeData) -> str:
    """Environment, algorithm, source, ingest time, steps, agents, units, total reward per agent, configs."""
    e = data.episode
    units = sum(int(a["units"]) for a in data.info["agents"])
    parallel = ", parallel" if e["training_parallel"] else ""
    rewards = "<br>".join(f"{escape(a['agent'])}: <b>{escape(number(a['total_reward']))}</b>"
                          for a in data.info["agents"]) or "-"
    rows = [
        ("episode", f"<code>{escape(e['episode_id'])}</code>"),
        ("environment", escape(e["environment"])),
        ("algorithm", escape(f"{e['algorithm']} ({e['iterations']:,} iterations, {e['num_gpus']:g} GPUs{parallel})")),
        ("source", f"{escape(e['source'])} ({e['source_bytes']:,} bytes)"),
        ("ingested at", escape(f"{timestamp(e['ingested_at'])} (ingest-pipeline {e['pipeline_version']})")),
        ("steps", escape(f"{e['length']:,} (numbers {e['first_step']} to {e['last_step']}), "
                         f"{e['agent_steps']:,} agent steps, {e['unit_steps']:,} unit steps, {e['images']:,} images")),
        ("agents", str(e["agents"])),
        ("units", str(units)),
        ("total reward", rewards),
        ("reward components", escape(", ".join(data.info["reward_names"]) or "-")),
    ]
    configs = "".join(
        f"<details><summary>{title}</summary><pre>{escape(_pretty_json(e[column]))}</pre></details>"
        for title, column in (("Training config", "training_config"), ("Inference config", "inference_config")))
    return facts_table(rows) + configs


def episode_section(page: Page, data: EpisodeData, frames: Frames | None, *, max_points: int,
                    title_level: int = 2) -> None:
    """Append one episode's section to ``page``."""
    e = data.episode
    h = f"h{title_level}"
    episode_id = escape(e["episode_id"])
    page.add(f'<section class="episode" id="episode-{episode_id}" data-episode="{episode_id}">'
             f"<{h}>{escape(e['environment'])} · {escape(e['algorithm'])} · "
             f"<code>{escape(e['episode_id'][:12])}</code></{h}>")
    page.add(header(data))
    page.add(f'<div class="episode-body{"" if frames else " no-frames"}"><div class="plots">')
    agent_labels = Labels(data.info["actions"])
    unit_labels = Labels(data.info["unit_actions"])
    for agent in data.agents:
        _subject(page, data, agent, agent_labels, frames is not None, max_points, level=3)
        units = data.units.get(agent.agent, [])
        if units:
            page.add(f'<details class="units" open><summary>Units of {escape(agent.agent)} ({len(units)})</summary>')
            for unit in units:
                _subject(page, data, unit, unit_labels, frames is not None, max_points, level=4)
            page.add("</details>")
    if not data.agents:
        page.add('<p class="note">This episode has no agent steps.</p>')
    page.add("</div>")
    if frames is not None:
        page.player(e["episode_id"], frames)
    page.add("</div></section>")


def _subject(page: Page, data: EpisodeData, subject: Subject, labels: Labels, cursor: bool, max_points: int,
             *, level: int) -> None:
    episode_id = data.episode_id
    kind = "Unit" if subject.unit is not None else "Agent"
    total = float(np.nansum(subject.rewards))
    page.add(f"<h{level}>{kind} {escape(subject.unit or subject.agent)}</h{level}>"
             f'<p class="subtitle">{len(subject):,} steps (numbers {subject.steps[0]} to {subject.steps[-1]}), '
             f"total reward {escape(number(total))}</p>")
    key = f"{episode_id}:{subject.name}"
    timeline = build_timeline(subject, labels, data.info["reward_names"], data.gamma, max_points=max_points,
                              cursor=cursor)
    notes = list(timeline.notes)
    if any(row.startswith("Value estimate") for row in timeline.rows):
        notes.append(f"Discounted return: G_t = r_t + γ·G_t+1 over this {kind.lower()}'s steps, "
                     f"γ = {data.gamma:g} ({data.gamma_source}).")
    page.figure(timeline.figure, key=f"{key}:timeline", episode=episode_id, cursor=cursor, notes=notes)
    page.add('<div class="grid2">')
    page.figure(action_histogram(subject, labels), key=f"{key}:actions", kind="small")
    for plot in metric_plots(subject.custom_metrics, max_points=max_points, cursor=cursor):
        page.figure(plot.figure, key=f"{key}:metric:{plot.title}", episode=episode_id,
                    cursor=cursor and plot.on_steps, notes=plot.notes)
    page.add("</div>")


def action_histogram(subject: Subject, labels: Labels) -> dict[str, Any]:
    """How often each action was taken (labelled), or a histogram of continuous actions."""
    actions = subject.actions[~np.isnan(subject.actions)]
    values = np.unique(actions)
    if len(values) <= MAX_DISCRETE and bool(np.all(values == np.round(values))):
        counts = Counter(actions.tolist())
        shown = sorted(set(counts) | set(float(k) for k in labels.mapping))
        x = [labels.action(v) for v in shown]
        figure = bar_figure("Actions taken", x, [("steps", [counts.get(v, 0) for v in shown])],
                            x_title="action", y_title="steps")
    else:
        heights, edges = np.histogram(actions, bins=HISTOGRAM_BINS)
        centres = ((edges[:-1] + edges[1:]) / 2).tolist()
        figure = bar_figure("Actions taken", [], [("steps", heights.tolist())], x_title="action", y_title="steps")
        figure["data"][0].update({"x": centres, "width": float(edges[1] - edges[0])})
        figure["layout"]["xaxis"]["type"] = "linear"
    figure["data"][0]["meta"] = "actions"
    return figure
