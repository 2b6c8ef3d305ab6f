"""The report targets of issue 14: how long a report takes to write, how large it is, how soon it is usable.

    python -m benchmarks.report                          # generate, ingest, measure; print a Markdown section
    python -m benchmarks.report --repeat 5 --append BENCHMARKS.md
    python -m benchmarks.report --json

Two episodes from ``benchmarks/generate.py``: ``frames`` for 100,000 steps (one lander agent, a 600x400
PNG per step) and ``teams`` for 5,000 steps (two teams of units, reward vectors, custom metrics). They are
generated and ingested once into ``<data>/report/`` and reused. Each run is fresh:

- **write**: the ``ingest-pipeline report ID -o FILE`` command in a new process, wall time from start to
  exit (interpreter start and imports included: what a user waits for); ``in-process`` is the
  ``Lake.report`` call alone, timed in another new process;
- **size**: the file written, with the default frame subset (200 frames);
- **interactive**: a new headless Chromium (Debian's ``chromium`` and ``chromium-driver``) opens the file;
  from navigation start to ``window.__reportReady`` (the player works and every plot on the first screen is
  drawn), and to ``window.__reportAllDrawn`` (every plot of the page drawn, in the background).

Figures are medians over ``--repeat`` runs; the load average is printed with them, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.generate import GENERATOR_VERSION, generate_file

REPO = Path(__file__).resolve().parent.parent
EPISODES = {  # name: (profile, steps, targets)
    "frames 100,000 steps": ("frames", 100_000, {"write_seconds": 5.0, "megabytes": 15.0, "interactive_seconds": 3.0}),
    "teams 5,000 steps": ("teams", 5_000, {"write_seconds": 2.0}),
}
_IN_PROCESS = """
import json, sys, time
started = time.perf_counter()
from pipeline import Lake
import pipeline.report
lake = Lake(sys.argv[1])
imported = time.perf_counter()
lake.report(sys.argv[3], sys.argv[2])
print(json.dumps({"import_seconds": imported - started, "seconds": time.perf_counter() - imported}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def prepare(data: Path) -> dict[str, str]:
    """Generate and ingest the two episodes (once); name -> episode id."""
    folder = data / "report"
    folder.mkdir(parents=True, exist_ok=True)
    lake = folder / "lake"
    ids = {}
    for name, (profile, steps, _) in EPISODES.items():
        path = folder / f"{profile}-{steps}-v{GENERATOR_VERSION}.json"
        if not path.exists():
            generate_file(path, profile, steps=steps, seed=0)
        done = subprocess.run([sys.executable, str(REPO / "cli.py"), "run", str(path), "--lake", str(lake), "--json",
                               "--jobs", "1"], capture_output=True, text=True, env=_env(), check=True)
        ids[name] = json.loads(done.stdout.strip().splitlines()[-1])["episode_id"]
    return ids


def _write(lake: Path, episode_id: str, out: Path) -> dict[str, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "cli.py"), "report", episode_id, "-o", str(out), "--lake", str(lake)],
                   capture_output=True, text=True, env=_env(), check=True)
    wall = time.perf_counter() - started
    done = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(lake), episode_id, str(out)],
                          capture_output=True, text=True, env=_env(), check=True)
    inside = json.loads(done.stdout.strip().splitlines()[-1])
    return {"write_seconds": wall, "in_process_seconds": inside["seconds"], "megabytes": out.stat().st_size / 1e6}


def _open(path: Path, timeout: float = 300.0) -> dict[str, float]:
    """Open ``path`` in a new headless Chromium; seconds from navigation start to ready and to all drawn.

    NaN (not measured) without selenium, chromium or chromedriver.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return dict.fromkeys(("interactive_seconds", "all_drawn_seconds", "script_seconds"), float("nan"))
    if not shutil.which("chromedriver") or not any(shutil.which(n) for n in ("chromium", "google-chrome")):
        return dict.fromkeys(("interactive_seconds", "all_drawn_seconds", "script_seconds"), float("nan"))

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        driver.get(path.resolve().as_uri())
        deadline = time.monotonic() + timeout
        while not driver.execute_script("return window.__reportAllDrawn === true"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} was not drawn within {timeout:.0f} s")
            time.sleep(0.05)
        ready, drawn, script = driver.execute_script(
            "return [window.__reportReadyAt, window.__reportAllDrawnAt, window.__reportScriptAt]")
        return {"interactive_seconds": ready / 1000, "all_drawn_seconds": drawn / 1000, "script_seconds": script / 1000}
    finally:
        driver.quit()


def run(data: Path, repeat: int) -> dict[str, Any]:
    """Measure both episodes ``repeat`` times; the medians, each run, and the targets met."""
    ids = prepare(data)
    lake = data / "report" / "lake"
    results: dict[str, Any] = {"load_average": os.getloadavg()[0], "episodes": {}}
    for name, episode_id in ids.items():
        runs = []
        for i in range(repeat):
            out = data / "report" / f"{EPISODES[name][0]}-{i}.html"
            figures = _write(lake, episode_id, out)
            figures.update(_open(out))
            runs.append(figures)
        medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        targets = {key: (limit, None if medians[key] != medians[key] else medians[key] <= limit)
                   for key, limit in EPISODES[name][2].items()}
        results["episodes"][name] = {"episode_id": episode_id, "median": medians, "runs": runs, "targets": targets}
    return results


_LABELS = {"write_seconds": ("report written (command, wall)", "s"), "megabytes": ("file size", "MB"),
           "interactive_seconds": ("interactive in Chromium", "s")}


def render(results: dict[str, Any]) -> str:
    """A Markdown section: targets, then every median."""
    lines = ["## Reports (issue 14)", "",
             f"`python -m benchmarks.report`: medians of {len(next(iter(results['episodes'].values()))['runs'])} "
             f"fresh runs; load average {results['load_average']:.1f} when it started.", "",
             "| target | episode | measured | met |", "|---|---|--:|---|"]
    for name, entry in results["episodes"].items():
        for key, (limit, ok) in entry["targets"].items():
            label, unit = _LABELS[key]
            met = "– (no chromium)" if ok is None else ("yes" if ok else "**no**")
            lines.append(f"| {label} ≤ {limit:g} {unit} | {name} | {entry['median'][key]:.2f} {unit} | {met} |")
    lines += ["", "| episode | command s | Lake.report s | MB | script starts s | interactive s | all drawn s |",
              "|---|--:|--:|--:|--:|--:|--:|"]
    for name, entry in results["episodes"].items():
        m = entry["median"]
        lines.append(f"| {name} | {m['write_seconds']:.2f} | {m['in_process_seconds']:.2f} | {m['megabytes']:.1f} | "
                     f"{m['script_seconds']:.2f} | {m['interactive_seconds']:.2f} | {m['all_drawn_seconds']:.2f} |")
    lines += ["", "*script starts*: plotly.js (4.8 MB, inlined) and the data are parsed; *interactive*: the player "
              "works and the plots of the first screen are drawn; *all drawn*: every plot of the page.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench-data", help="folder for episode files and lake")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--append", type=Path, help="append the Markdown section to this file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    args = parser.parse_args(argv)
    results = run(args.data, args.repeat)
    text = render(results)
    if args.append:
        with args.append.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    print(json.dumps(results, indent=1) if args.json else text)
    return results


if __name__ == "__main__":
    main()
