"""Reports opened in a real browser (headless Chromium): drawn, playable, and never on the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Lake
from tests.report.report_helpers import (
    LONG_STEPS,
    SPIKE,
    artefact_dir,
    build_report_lake,
    chromium,
    decoded,
    drawn_plots,
    network_requests,
    open_page,
    page_figures,
    severe_console_entries,
    source,
    wait_until,
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-browser")
    ids = build_report_lake(root)
    lake = Lake(root / "lake")
    return {
        "lander": lake.report(root / "lander.html", ids["lander"]),
        "long": lake.report(root / "long.html", ids["long"]),
        "compare": lake.report(root / "compare.html", [ids["full"], ids["multi"], ids["lander"]]),
        "overview": lake.report(root / "lake.html"),
    }


def _expected_lengths(fig: dict[str, Any]) -> list[tuple[str, int]]:
    """(trace meta, number of points) of each trace of a figure, from the data written into the page."""
    out = []
    for t in fig["data"]:
        values = t.get("x") if t["type"] != "box" else t.get("y")
        out.append((str(t.get("meta")), len(decoded(values)) if values is not None else 0))
    return out


def _check_page(driver: Any, path: Path, tmp_path: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """Open ``path``: every figure drawn with all its points, no console error, no request; a screenshot."""
    open_page(driver, path)
    plots = drawn_plots(driver)
    figures = page_figures(path)
    assert sorted(plots) == sorted(f["key"] for f in figures)
    for fig in figures:
        drawn = [(str(t["meta"]), t["y"] if t["type"] == "box" else t["x"]) for t in plots[fig["key"]]]
        assert drawn == _expected_lengths(fig), fig["key"]
    assert severe_console_entries(driver) == []
    assert network_requests(driver) == []
    shot = artefact_dir(tmp_path) / f"report-{name}.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    return plots


def test_an_episode_is_drawn_with_every_point(browser: Any, pages: dict[str, Path], tmp_path: Path) -> None:
    plots = _check_page(browser, pages["lander"], tmp_path, "lander")
    (timeline,) = [traces for key, traces in plots.items() if key.endswith("lander:timeline")]
    by_meta = {t["meta"]: t for t in timeline}
    for meta in ("reward", "cumulative", "component:0", "component:1", "component:2", "action", "value_estimate",
                 "predicted_reward", "discounted_return", "health"):
        assert by_meta[meta]["x"] == 60, meta
    assert by_meta["distribution"]["z"] == [4, 60]
    assert by_meta["component:1"]["name"] == "Main engine"
    (fuel,) = [traces for key, traces in plots.items() if key.endswith("metric:Fuel")]
    assert fuel[0]["x"] == 3


def test_the_player_advances_and_moves_the_cursor(browser: Any, pages: dict[str, Path]) -> None:
    open_page(browser, pages["lander"])
    player = browser.find_element("css selector", ".player")
    assert player.get_attribute("data-step") == "0"
    assert player.find_element("css selector", ".counter").text == "frame 1 of 12"
    player.find_element("css selector", "button.play").click()
    wait_until(lambda: int(player.get_attribute("data-step")) >= 10, what="the player to reach step 10")
    step = int(wait_until(lambda: player.get_attribute("data-playing") == "false" and player.get_attribute("data-step"),
                          what="the player to stop at the end"))
    assert step == 55
    assert player.find_element("css selector", ".step").text == "step 55"
    cursor = "return document.querySelector('[data-key$=\"lander:timeline\"]').layout.shapes[0]"
    wait_until(lambda: browser.execute_script(cursor)["x0"] == 55, what="the cursor to follow the player")
    assert browser.execute_script(cursor)["visible"] is True
    src = browser.find_element("css selector", ".player img.frame").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    # A click on a time plot moves the player to the last frame at or before the clicked step.
    browser.execute_script("document.querySelector('[data-key$=\"lander:timeline\"]')"
                           ".emit('plotly_click', {points: [{x: 27}]})")
    wait_until(lambda: player.get_attribute("data-step") == "25", what="the player to follow a click")
    assert player.find_element("css selector", ".counter").text == "frame 6 of 12"
    assert severe_console_entries(browser) == []


def test_a_long_episode_is_reduced_without_losing_its_spike(browser: Any, pages: dict[str, Path],
                                                            tmp_path: Path) -> None:
    plots = _check_page(browser, pages["long"], tmp_path, "long")
    (timeline,) = [traces for key, traces in plots.items() if key.endswith("runner:timeline")]
    reward = next(t for t in timeline if t["meta"] == "reward")
    assert reward["x"] <= 2000 < LONG_STEPS
    assert reward["ymax"] == SPIKE
    slider = browser.find_element("css selector", ".player .slider")
    assert slider.get_attribute("max") == "199"


def test_several_episodes_and_units(browser: Any, pages: dict[str, Path], tmp_path: Path) -> None:
    plots = _check_page(browser, pages["compare"], tmp_path, "compare")
    assert {"compare:returns", "compare:lengths", "compare:components", "compare:cumulative"} <= set(plots)
    assert any(key.endswith("team_red / marine_1:metric:Speed") for key in plots)
    units = source("full")["inference"]["steps"][0]["agent_steps"][0]["unit_steps"]
    assert len([key for key in plots if ":team_red / " in key and key.endswith(":timeline")]) == len(units)


def test_the_lake_overview_sorts_its_table(browser: Any, pages: dict[str, Path], tmp_path: Path) -> None:
    _check_page(browser, pages["overview"], tmp_path, "overview")
    header = browser.find_element("xpath", "//table[contains(@class,'episodes')]//th[text()='TOTAL REWARD']")
    rewards = ("return Array.from(document.querySelectorAll('table.episodes tbody tr'))"
               ".map(function (r) { return parseFloat(r.cells[5].dataset.value); })")
    header.click()
    ascending = browser.execute_script(rewards)
    assert ascending == sorted(ascending) and len(ascending) == 6
    header.click()
    assert browser.execute_script(rewards) == sorted(ascending, reverse=True)
