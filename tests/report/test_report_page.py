"""Reports written by the library: what each page holds, read back from the file (no browser here)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline import AmbiguousEpisodeId, DatasetError, EpisodeNotFound, Lake, MissingExtra, ingest
from pipeline.report import plot
from tests.dataset_lake import copy_lake
from tests.helpers import PNG_B64, agent_step, episode, write_json
from tests.report.report_helpers import (
    LONG_STEPS,
    SPIKE,
    SPIKE_STEP,
    build_report_lake,
    decoded,
    figure,
    page_figures,
    source,
    trace,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("report")
    return root / "lake", build_report_lake(root)


@pytest.fixture(scope="module")
def lake(built: tuple[Path, dict[str, str]]) -> Lake:
    return Lake(built[0])


@pytest.fixture(scope="module")
def ids(built: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return built[1]


@pytest.fixture(scope="module")
def pages(lake: Lake, ids: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reports written once for the module: one per interesting episode, a comparison, an overview."""
    out = tmp_path_factory.mktemp("pages")
    return {
        "lander": lake.report(out / "lander.html", ids["lander"][:6]),
        "full": lake.report(out / "full.html", ids["full"]),
        "multi": lake.report(out / "multi.html", ids["multi"]),
        "long": lake.report(out / "long.html", ids["long"]),
        "compare": lake.report(out / "compare.html", [ids["lander"], ids["cart"], ids["full"]]),
        "overview": lake.report(out / "lake.html"),
    }


def frames_data(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(m) for m in re.findall(r'<script type="application/json" class="frames-data"[^>]*>(.*?)</script>',
                                                text, re.S)]


# -- standalone ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lander", "full", "long", "compare", "overview"])
def test_pages_stand_alone(pages: dict[str, Path], name: str) -> None:
    text = pages[name].read_text(encoding="utf-8")
    assert text.count("* plotly.js v") == 1  # plotly.js inlined once, whatever the number of figures
    for tag in re.findall(r"<(?:script|link|img|iframe|source)\b[^>]*>", text):
        assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", tag, re.I), tag
    assert "<link" not in text
    assert not list(pages[name].parent.glob(".*partial*"))


def test_data_cannot_end_its_script_element(tmp_path: Path) -> None:
    hostile = "</script><img src=x onerror=alert(1)>"
    doc = episode(steps=2, environment=hostile)
    doc["inference"]["steps"][0]["agent_steps"][0] = agent_step(
        hostile, custom_metrics={hostile: {"y": [1], "y_label": hostile}})
    result = ingest(write_json(tmp_path / "x.json", doc), lake=tmp_path / "lake")
    path = Lake(tmp_path / "lake").report(tmp_path / "x.html", result.episode_id)
    text = path.read_text(encoding="utf-8")
    assert hostile not in text
    keys = [f["key"] for f in page_figures(path)]
    assert f"{result.episode_id}:{hostile}:metric:{hostile}" in keys


# -- one episode ---------------------------------------------------------------------------------


def test_header_says_what_the_episode_is(pages: dict[str, Path], lake: Lake, ids: dict[str, str]) -> None:
    text = pages["lander"].read_text(encoding="utf-8")
    info = lake.describe(ids["lander"])["episode"]
    for fact in ("LunarLander-v3", "PPO (100,000 iterations, 0 GPUs)", info["source"], "ingested at",
                 "60 (numbers 0 to 59), 60 agent steps, 0 unit steps, 12 images",
                 "lander: <b>2.8424</b>", "Shaping, Main engine, Leg contact",
                 "<summary>Training config</summary>", "&quot;learning_rate&quot;: 0.0003",
                 "<summary>Inference config</summary>", "&quot;deterministic&quot;: true"):
        assert fact in text, fact
    assert "<th>units</th><td>0</td>" in text and "<th>agents</th><td>1</td>" in text


def test_time_plots_of_an_agent(pages: dict[str, Path], ids: dict[str, str]) -> None:
    doc = source("lander")
    rows = [step["agent_steps"][0] for step in doc["inference"]["steps"]]
    totals = [sum(row["rewards"]) for row in rows]
    timeline = figure(page_figures(pages["lander"]), "lander:timeline")
    assert timeline["cursor"] and timeline["layout"]["shapes"][0]["type"] == "line"
    assert decoded(trace(timeline, "reward")["y"]) == pytest.approx(totals)
    assert decoded(trace(timeline, "cumulative")["y"]) == pytest.approx(np.cumsum(totals).tolist())
    names = [trace(timeline, f"component:{i}")["name"] for i in range(3)]
    assert names == ["Shaping", "Main engine", "Leg contact"]
    assert decoded(trace(timeline, "component:1")["y"]) == [row["rewards"][1] for row in rows]
    actions = trace(timeline, "action")
    assert decoded(actions["y"]) == [row["action"] for row in rows]
    assert actions["text"][0] == {0: "Do nothing (0)", 1: "Fire left engine (1)", 2: "Fire main engine (2)",
                                  3: "Fire right engine (3)"}[rows[0]["action"]]
    distribution = trace(timeline, "distribution")
    assert distribution["type"] == "heatmap" and distribution["y"][2] == "Fire main engine (2)"
    assert decoded(distribution["z"])[2] == [0.6] * 60  # [actions, steps]
    assert decoded(trace(timeline, "value_estimate")["y"]) == [row["value_estimate"] for row in rows]
    assert decoded(trace(timeline, "predicted_reward")["y"]) == [row["predicted_reward"] for row in rows]
    expected, running = [], 0.0
    for reward in reversed(totals):
        running = reward + 0.99 * running
        expected.append(running)
    assert decoded(trace(timeline, "discounted_return")["y"]) == pytest.approx(expected[::-1])
    assert decoded(trace(timeline, "health")["y"]) == [row["health"] for row in rows]


def test_action_histogram_is_labelled(pages: dict[str, Path]) -> None:
    rows = [step["agent_steps"][0] for step in source("lander")["inference"]["steps"]]
    histogram = figure(page_figures(pages["lander"]), "lander:actions")
    bars = trace(histogram, "actions")
    assert bars["x"] == ["Do nothing (0)", "Fire left engine (1)", "Fire main engine (2)", "Fire right engine (3)"]
    assert bars["y"] == [sum(row["action"] == a for row in rows) for a in range(4)]


def test_custom_metrics_are_drawn_as_the_file_describes(pages: dict[str, Path]) -> None:
    fuel = figure(page_figures(pages["lander"]), "lander:metric:Fuel")
    assert fuel["layout"]["title"]["text"] == "Fuel"
    assert fuel["layout"]["xaxis"]["title"]["text"] == "step"
    assert fuel["layout"]["yaxis"]["title"]["text"] == "fuel"
    assert decoded(fuel["data"][0]["x"]) == [0, 20, 40]
    assert decoded(fuel["data"][0]["y"]) == pytest.approx([1.0, 2 / 3, 1 / 3])


def test_units_get_their_own_plots_labelled_from_unit_mapping(pages: dict[str, Path], ids: dict[str, str]) -> None:
    figures = page_figures(pages["full"])
    keys = [f["key"].removeprefix(ids["full"] + ":") for f in figures]
    assert keys == ["team_red:timeline", "team_red:actions", "team_red:metric:Loss",
                    "team_red / marine_1:timeline", "team_red / marine_1:actions",
                    "team_red / marine_1:metric:Speed",
                    "team_red / marine_2:timeline", "team_red / marine_2:actions",
                    "team_blue:timeline", "team_blue:actions"]
    marine = figure(figures, "marine_2:actions")
    assert trace(marine, "actions")["x"] == ["-1", "hold (0)", "move (1)"]
    assert trace(marine, "actions")["y"] == [1, 0, 0]
    red = figure(figures, "team_red:timeline")
    assert decoded(trace(red, "enemy_unit_health:2")["y"]) == [30.0]
    assert decoded(trace(red, "enemy_agent_health:1")["y"]) == [50.5]
    assert [trace(red, f"component:{i}")["name"] for i in range(2)] == ["damage", "kills"]
    text = pages["full"].read_text(encoding="utf-8")
    assert "Units of team_red (2)" in text and "<th>units</th><td>2</td>" in text


def test_every_agent_has_a_section_in_order(pages: dict[str, Path], ids: dict[str, str]) -> None:
    keys = [f["key"] for f in page_figures(pages["multi"])]
    assert keys == [f"{ids['multi']}:{k}" for k in ("zeta:timeline", "zeta:actions", "alpha:timeline", "alpha:actions")]


# -- long episodes: reduction and frames ----------------------------------------------------------


def test_long_series_are_reduced_visibly_and_keep_spikes(pages: dict[str, Path]) -> None:
    text = pages["long"].read_text(encoding="utf-8")
    timeline = figure(page_figures(pages["long"]), "runner:timeline")
    reward = trace(timeline, "reward")
    x, y = decoded(reward["x"]), decoded(reward["y"])
    assert len(x) <= 2000 < LONG_STEPS
    assert max(y) == SPIKE and x[y.index(SPIKE)] == SPIKE_STEP
    assert "Reduced for drawing: 3,000 steps shown as" in text
    assert 'class="banner">Some long series are reduced for drawing' in text
    assert "γ = 0.9 (training config)" in text


def test_long_episodes_show_an_evenly_spaced_subset_of_frames(pages: dict[str, Path]) -> None:
    (player,) = frames_data(pages["long"])
    assert len(player["steps"]) == 200 and player["steps"][0] == 0 and player["steps"][-1] == LONG_STEPS - 1
    gaps = np.diff(player["steps"])
    assert gaps.min() >= 15 and gaps.max() <= 16
    assert all(src.startswith("data:image/png;base64,") for src in player["sources"])
    assert "Showing 200 of 3,000 frames, evenly spaced" in pages["long"].read_text(encoding="utf-8")


def test_frames_all_none_n_and_resize(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    (every,) = frames_data(lake.report(tmp_path / "a.html", ids["lander"], frames="all"))
    assert every["steps"] == list(range(0, 60, 5))
    assert frames_data(lake.report(tmp_path / "n.html", ids["long"], frames="none")) == []
    assert 'class="player"' not in (tmp_path / "n.html").read_text(encoding="utf-8")
    (few,) = frames_data(lake.report(tmp_path / "f.html", ids["long"], frames=3, resize=(12, 16)))
    assert few["steps"] == [0, 1500, 2999]
    with Image.open(io.BytesIO(base64.b64decode(few["sources"][0].split(",", 1)[1]))) as image:
        assert image.size == (16, 12)


def test_an_episode_without_images_has_no_player(pages: dict[str, Path]) -> None:
    assert frames_data(pages["multi"]) == []
    assert all(not f["cursor"] for f in page_figures(pages["multi"]))


# -- several episodes ----------------------------------------------------------------------------


def test_several_episodes_are_compared_side_by_side(pages: dict[str, Path], lake: Lake, ids: dict[str, str]) -> None:
    figures = page_figures(pages["compare"])
    short = [ids[name][:8] for name in ("lander", "cart", "full")]
    returns = figure(figures, "compare:returns")
    assert [t["name"] for t in returns["data"]] == ["lander", "p0", "team_red", "team_blue"]
    assert returns["data"][0]["x"] == short and returns["data"][0]["y"] == [pytest.approx(2.8424), None, None]
    assert trace(figure(figures, "compare:lengths"), "steps")["y"] == [60.0, 4.0, 3.0]
    components = figure(figures, "compare:components")
    assert components["data"][0]["x"] == [f"{short[0]} · lander", f"{short[2]} · team_red", f"{short[2]} · team_blue"]
    assert [t["name"] for t in components["data"]] == ["Shaping", "Main engine", "Leg contact", "damage", "kills"]
    assert trace(components, "damage")["y"] == [0.0, 3.75, -1.0]
    assert len(figure(figures, "compare:cumulative")["data"]) == 4
    text = pages["compare"].read_text(encoding="utf-8")
    assert all(f'<section class="episode" id="episode-{ids[n]}"' in text for n in ("lander", "cart", "full"))
    assert "<h1>3 episodes compared</h1>" in text


# -- the lake ------------------------------------------------------------------------------------


def test_overview_of_the_whole_lake(pages: dict[str, Path], lake: Lake) -> None:
    text = pages["overview"].read_text(encoding="utf-8")
    listing = lake.listing()
    rows = re.findall(r"<tr><td data-value=\"([0-9a-f]{32})\">", text)
    assert rows == listing["episode_id"].to_list()
    assert "<th>EPISODE</th><th>ENVIRONMENT</th><th>ALGORITHM</th><th class=num>STEPS</th>" in text
    figures = page_figures(pages["overview"])
    returns = figure(figures, "overview:returns")
    groups = sorted(f"{e} · {a}" for e, a in set(zip(listing["environment"], listing["algorithm"], strict=True)))
    assert [t["name"] for t in returns["data"]] == groups
    assert sum(len(decoded(t["y"])) for t in returns["data"]) == len(listing)
    assert trace(figure(figures, "overview:lengths"), "Long-v0 · A2C")["y"]["dtype"] == "f8"


@pytest.mark.parametrize(("options", "expected"), [
    ({"environment": "CartPole-v1"}, ["cart"]),
    ({"where": "algorithm = 'PPO'"}, ["lander", "cart"]),
    ({"sql": "SELECT episode_id FROM episode_agents WHERE agent = 'runner'"}, ["long"]),
    ({"where": "length > 5", "environment": "Long-v0"}, ["long"]),
])
def test_overview_of_a_selection(lake: Lake, ids: dict[str, str], tmp_path: Path, options: dict[str, str],
                                 expected: list[str]) -> None:
    text = lake.report(tmp_path / "lake.html", **options).read_text(encoding="utf-8")  # type: ignore[arg-type]
    assert sorted(re.findall(r"<tr><td data-value=\"([0-9a-f]{32})\">", text)) == sorted(ids[n] for n in expected)


def test_overview_of_a_polars_selection(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    chosen = lake.episode_agents().filter(pl.col("total_reward") > 5)
    text = lake.report(tmp_path / "lake.html", chosen).read_text(encoding="utf-8")
    found = re.findall(r"<tr><td data-value=\"([0-9a-f]{32})\">", text)
    assert sorted(found) == sorted(ids[n] for n in ("cart", "frames", "long"))
    assert lake.report(tmp_path / "one.html", [ids["cart"]], overview=True).read_text().count("<tr><td data-value") == 1


# -- errors --------------------------------------------------------------------------------------


def test_unknown_and_ambiguous_ids(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    copy = copy_lake(built[0], tmp_path / "lake")
    cart = Lake(copy).resolve(built[1]["cart"]).path
    for digit in "12":
        shutil.copytree(cart, cart.with_name("episode_id=abcd" + digit * 28))
    with pytest.raises(EpisodeNotFound, match=f"no episode '0000' in {copy}"):
        Lake(copy).report(tmp_path / "r.html", "0000")
    with pytest.raises(AmbiguousEpisodeId, match="'abcd' is ambiguous: it matches 2 episodes"):
        Lake(copy).report(tmp_path / "r.html", ["abcd1", "abcd"])
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"environment": "Nope-v0"}, "no episode in {lake} matches environment = 'Nope-v0'"),
    ({"sql": "SELECT agent FROM episode_agents"}, "a selection query must return an episode_id column"),
])
def test_empty_or_odd_selections_are_errors(lake: Lake, tmp_path: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(DatasetError) as info:
        lake.report(tmp_path / "lake.html", **options)  # type: ignore[arg-type]
    assert str(info.value) == message.format(lake=lake.path)


def test_episode_ids_and_a_selection_do_not_mix(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="environment, where and sql select the episodes of a lake overview"):
        lake.report(tmp_path / "r.html", ids["cart"], environment="CartPole-v1")


def test_bad_options(lake: Lake, ids: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"resize must be \(height, width\) in pixels, got \(0, 4\)"):
        lake.report(tmp_path / "r.html", ids["lander"], resize=(0, 4))
    with pytest.raises(DatasetError, match="frames must be a number, 'all' or 'none', not 'many'"):
        lake.report(tmp_path / "r.html", ids["lander"], frames="many")


def test_missing_plotly_names_the_install_line(lake: Lake, ids: dict[str, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plot.plotly_js.cache_clear()
    monkeypatch.setattr(plot.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(MissingExtra) as info:
            lake.report(tmp_path / "r.html", ids["lander"])
    finally:
        plot.plotly_js.cache_clear()
    assert str(info.value) == "an HTML report needs plotly, which is not installed: pip install 'ingest-pipeline[report]'"
    assert not (tmp_path / "r.html").exists()


# -- odd episodes --------------------------------------------------------------------------------


def test_odd_episodes_still_make_a_page(tmp_path: Path) -> None:
    continuous = episode(steps=50)
    for i, step in enumerate(continuous["inference"]["steps"]):
        step["agent_steps"][0].update(action=i / 7, action_distribution=[0.5] * (1 + i % 3))
    no_agents = {"training": {"environment": "Empty-v0", "algorithm": "X", "iterations": 1},
                 "inference": {"steps": [{"number": 3, "image": PNG_B64}, {"number": 9}]}}
    lake_path = tmp_path / "lake"
    made = {name: ingest(write_json(tmp_path / f"{name}.json", doc), lake=lake_path).episode_id
            for name, doc in (("continuous", continuous), ("single", episode(steps=1)), ("empty", no_agents))}
    lake = Lake(lake_path)
    figures = page_figures(lake.report(tmp_path / "c.html", made["continuous"]))
    histogram = trace(figure(figures, "p0:actions"), "actions")
    assert sum(histogram["y"]) == 50 and len(histogram["x"]) == 40
    timeline = figure(figures, "p0:timeline")
    assert trace(timeline, "action")["type"] == "scatter" and trace(timeline, "action")["mode"] == "lines"
    third = decoded(trace(timeline, "distribution")["z"])[2]  # action 2: given on steps 2, 5, 8, ...
    assert np.isnan(third[0]) and np.isnan(third[1]) and third[2] == 0.5
    single = figure(page_figures(lake.report(tmp_path / "s.html", made["single"])), "p0:timeline")
    assert trace(single, "reward")["mode"] == "markers"
    empty = lake.report(tmp_path / "e.html", made["empty"])
    assert page_figures(empty) == []
    assert "This episode has no agent steps." in empty.read_text(encoding="utf-8")
    assert frames_data(empty)[0]["steps"] == [3]


def test_units_come_in_order_of_first_appearance(tmp_path: Path) -> None:
    doc = episode(steps=3)
    for i, step in enumerate(doc["inference"]["steps"]):
        units = [{"unit": "zed", "action": 0, "reward": 1.0}, {"unit": "abe", "action": 1, "reward": 2.0}]
        if i == 0:
            units = [{"unit": "mid", "action": 0, "reward": 0.5}]  # first seen on step 0
        step["agent_steps"][0]["unit_steps"] = units
    made = ingest(write_json(tmp_path / "u.json", doc), lake=tmp_path / "lake").episode_id
    keys = [f["key"].split(":")[1] for f in page_figures(Lake(tmp_path / "lake").report(tmp_path / "u.html", made))
            if f["key"].endswith(":timeline")]
    assert keys == ["p0", "p0 / mid", "p0 / zed", "p0 / abe"]
