"""Shared by the report tests: a lake of episodes worth reporting on, reading a written page, a browser.

The browser is the system's headless Chromium driven by its chromedriver (``.ci/run`` installs both
with apt; nothing is downloaded at run time). Without them the browser tests skip, except in CI
(``CI=true``), where they fail: there a missing browser is a broken set-up, not a reason to pass.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline import ingest
from tests.dataset_lake import build_lake, documents
from tests.helpers import write_json

LONG_STEPS = 3000
SPIKE_STEP = 1234
SPIKE = 500.0


def png_b64(value: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (value % 256, 40, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def long_episode() -> dict[str, Any]:
    """3,000 steps with a frame each, small rewards and one spike of 500 at step 1234, two actions."""
    frames = [png_b64(v) for v in range(0, 256, 16)]
    steps = []
    for i in range(LONG_STEPS):
        reward = SPIKE if i == SPIKE_STEP else round(((i * 7919) % 100) / 100 - 0.5, 2)
        steps.append({"number": i, "image": frames[i % len(frames)], "agent_steps": [
            {"agent": "runner", "action": i % 2, "reward": reward, "observation_space": [float(i % 5)],
             "value_estimate": 0.5, "health": 100 - i / 100}]})
    return {"action_mapping": {"0": "left", "1": "right"},
            "training": {"environment": "Long-v0", "algorithm": "A2C", "iterations": 7, "config": {"gamma": 0.9}},
            "inference": {"steps": steps}}


def build_report_lake(root: Path) -> dict[str, str]:
    """The dataset-engine test lake (lander, full, cart, multi, frames) plus "long"; name -> episode id."""
    ids = build_lake(root, ["lander", "full", "cart", "multi", "frames"])
    result = ingest(write_json(root / "sources" / "long.json", long_episode()), lake=root / "lake")
    assert result.status == "ingested", result.error
    ids["long"] = result.episode_id
    return ids


def source(name: str) -> dict[str, Any]:
    return long_episode() if name == "long" else documents()[name]


def page_figures(path: Path) -> list[dict[str, Any]]:
    """The figures a written page holds (its JSON data), each with key, episode, data and layout."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="report-figures">(.*?)</script>', text, re.S)
    assert match is not None
    return json.loads(match.group(1))["figures"]  # type: ignore[no-any-return]


def figure(figures: list[dict[str, Any]], key_end: str) -> dict[str, Any]:
    found = [f for f in figures if f["key"].endswith(key_end)]
    assert len(found) == 1, (key_end, [f["key"] for f in figures])
    return found[0]


def trace(fig: dict[str, Any], meta: str) -> dict[str, Any]:
    found = [t for t in fig["data"] if t.get("meta") == meta]
    assert len(found) == 1, (meta, [t.get("meta") for t in fig["data"]])
    return found[0]


def decoded(values: Any) -> list[Any]:
    """A trace's array as a list, whether plain JSON or a plotly typed array."""
    import numpy as np

    if isinstance(values, dict):
        dtype = {"f8": "<f8", "i4": "<i4", "f4": "<f4", "u1": "u1", "i1": "i1", "i2": "<i2", "u2": "<u2"}
        array = np.frombuffer(base64.b64decode(values["bdata"]), dtype=dtype[values["dtype"]])
        if "shape" in values:
            array = array.reshape([int(n) for n in values["shape"].split(",")])
        return array.tolist()  # type: ignore[no-any-return]
    return list(values)


# -- the browser ---------------------------------------------------------------------------------

def _browser_binaries() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    return browser, shutil.which("chromedriver")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs chromium and chromium-driver with apt: see .ci/run)")
    pytest.skip(reason)


def chromium() -> Iterator[Any]:
    """A headless Chromium (selenium), console and network logs on; skips (fails in CI) without one."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install 'ingest-pipeline[test]')")
    binary, driver_path = _browser_binaries()
    if binary is None or driver_path is None:
        _unavailable("no chromium and chromedriver on this machine (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--hide-scrollbars", "--disable-background-networking", "--no-first-run"):
        options.add_argument(argument)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(condition: Any, timeout: float = 90.0, what: str = "condition") -> Any:
    """Poll ``condition()`` until it is truthy; a generous bound, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def open_page(driver: Any, path: Path) -> None:
    """Open a report and wait until every figure is drawn; logs of earlier pages are dropped first."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(path.resolve().as_uri())
    wait_until(lambda: driver.execute_script("return window.__reportAllDrawn === true"), what="all figures drawn")


PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  return {key: gd.dataset.key, traces: gd._fullData.map(function (t) {
    return {meta: t.meta, name: t.name, type: t.type, x: t.x ? t.x.length : null, y: t.y ? t.y.length : null,
            z: t.z ? [t.z.length, t.z[0] ? t.z[0].length : 0] : null,
            ymax: (t.type === 'scatter' && t.y) ? Math.max.apply(null, Array.from(t.y).filter(isFinite)) : null};
  })};
});
"""


def drawn_plots(driver: Any) -> dict[str, list[dict[str, Any]]]:
    """Each drawn plot's traces as the page holds them: key -> [{meta, name, type, x, y, z, ymax}]."""
    return {plot["key"]: plot["traces"] for plot in driver.execute_script(PLOTS_JS)}


def severe_console_entries(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def network_requests(driver: Any) -> list[str]:
    """URLs the page asked for other than itself and data: URIs (from the DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("data:", "file:")):
                urls.append(url)
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    return urls + [url for url in resources if not url.startswith(("data:", "file:"))]


def artefact_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $REPORT_ARTEFACTS if set (kept by CI), else the test's tmp folder."""
    folder = Path(os.environ.get("REPORT_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
