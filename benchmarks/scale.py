"""The scale benchmark: many small episodes, one batch ``run``, compaction, reads from fresh processes.

    python -m benchmarks.scale --episodes 100000          # data in bench-data/scale-<n>/ (reused)
    python -m benchmarks.scale --episodes 20000 --json

Small single-agent episodes (20-60 steps, 8-float observations, four environments), seeded, as the
scale issue measured them. Figures: batch ingest (episodes/s), compaction time, bytes on disk
against the JSON, and each read in a fresh process (the call alone, after imports; the median of
``--repeat``): ``episodes().collect()``, a filter on ``episode_agents``, a count of all agent
steps, the mean reward per environment, and one trajectory against the same from its own folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("CartPole-v1", "LunarLander-v3", "Acrobot-v1", "MountainCar-v0")
GENERATOR = 2  # bump when the episodes generated change

TARGETS = {  # seconds, from the scale issue
    "episodes": 0.05, "agents_filter": 0.05, "count_agent_steps": 0.05, "mean_reward_per_env": 0.5,
}


def small_episode(rng: random.Random, index: int) -> dict[str, Any]:
    """A control-task episode: the 8-float state moves a little each step, at 3 decimals (as
    CartPole-like environments log it), rewards of +1 with a final -1 or +10 now and then."""
    steps = rng.randint(20, 60)
    environment = ENVIRONMENTS[index % len(ENVIRONMENTS)]
    state = [rng.uniform(-0.05, 0.05) for _ in range(8)]
    observations = []
    for _ in range(steps):
        state = [x + rng.uniform(-0.02, 0.02) for x in state]
        observations.append([round(x, 3) for x in state])
    rewards = [1.0] * (steps - 1) + [rng.choice([-1.0, 1.0, 10.0])]
    return {
        "training": {"environment": environment, "algorithm": "PPO", "iterations": rng.randint(1, 1000),
                     "config": {"seed": index, "lr": 0.0003}},
        "inference": {"steps": [
            {"number": n, "agent_steps": [{
                "agent": "agent_0", "action": rng.randint(0, 3), "reward": rewards[n],
                "observation_space": observations[n],
            }]} for n in range(steps)
        ]},
    }


def generate(folder: Path, episodes: int, seed: int) -> int:
    """Write ``episodes`` files into ``folder`` (kept if already complete); return their bytes."""
    stamp = folder / ".complete"
    if stamp.exists() and stamp.read_text() == f"{GENERATOR} {episodes} {seed}":
        return sum(p.stat().st_size for p in folder.glob("*.json"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    total = 0
    for index in range(episodes):
        text = json.dumps(small_episode(rng, index), separators=(",", ":")).encode()
        (folder / f"ep{index:07d}.json").write_bytes(text)
        total += len(text)
    stamp.write_text(f"{GENERATOR} {episodes} {seed}")
    return total


_READ = """
import sys, time, json
sys.path.insert(0, {repo!r})
import polars as pl
from pipeline import Lake
kind, lake, arg = {kind!r}, {lake!r}, {arg!r}
started, cpu = time.perf_counter(), time.process_time()
if kind == "episodes":
    n = Lake(lake).episodes().collect().height
elif kind == "agents_filter":
    n = Lake(lake).episode_agents().filter((pl.col("environment") == "CartPole-v1")
                                           & (pl.col("total_reward") >= 2.0)).collect().height
elif kind == "count_agent_steps":
    n = Lake(lake).agent_steps().select(pl.len()).collect().item()
elif kind == "mean_reward_per_env":
    n = Lake(lake).agent_steps().group_by("environment").agg(pl.col("total_reward").mean()).collect().height
elif kind == "trajectory":
    n = len(Lake(lake).trajectory(arg))
print(json.dumps({{"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "n": n}}))
"""


def read_once(kind: str, lake: Path, arg: str = "", *, repo: Path = REPO) -> dict[str, Any]:
    """One read in a fresh process, with the code of the checkout ``repo``: its wall and CPU seconds."""
    script = _READ.format(repo=str(repo), kind=kind, lake=str(lake), arg=arg)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_read(kind: str, lake: Path, repeat: int, arg: str = "") -> dict[str, Any]:
    runs = [read_once(kind, lake, arg) for _ in range(repeat)]
    return {"seconds": statistics.median(r["seconds"] for r in runs), "n": runs[0]["n"],
            "all": [round(r["seconds"], 4) for r in runs]}


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "_locks" not in p.parts)


def run(episodes: int, *, data: Path, seed: int, repeat: int, jobs: int) -> dict[str, Any]:
    inbox = data / f"scale-{episodes}" / "inbox"
    print(f"generating {episodes} small episodes in {inbox} ...", file=sys.stderr, flush=True)
    json_bytes = generate(inbox, episodes, seed)
    lake = data / f"scale-{episodes}" / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    print("ingesting ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "cli.py"), "run", str(inbox), "--lake", str(lake), "--quiet",
                    "--jobs", str(jobs)], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    ingest_seconds = time.perf_counter() - started
    segments_after_run = len(list(lake.glob("*/segment=*")))
    print("compacting ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "cli.py"), "compact", "--lake", str(lake)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    compact_seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "episodes": episodes, "json_bytes": json_bytes, "jobs": jobs,
        "ingest_seconds": round(ingest_seconds, 2), "episodes_per_s": round(episodes / ingest_seconds, 1),
        "segments_after_run": segments_after_run, "compact_seconds": round(compact_seconds, 2),
        "lake_bytes": disk_bytes(lake), "files": sum(1 for p in lake.rglob("*.parquet")),
    }
    report["bytes_ratio"] = round(report["lake_bytes"] / json_bytes, 3)
    print("reading ...", file=sys.stderr, flush=True)
    reads = {kind: median_read(kind, lake, repeat) for kind in TARGETS}
    # One trajectory: from its segment, and from its own folder (the same file ingested alone).
    one = sorted(inbox.glob("*.json"))[episodes // 2]
    alone = data / f"scale-{episodes}" / "alone"
    shutil.rmtree(alone, ignore_errors=True)
    sys.path.insert(0, str(REPO))
    from pipeline import ingest

    episode_id = ingest(one, lake=alone).episode_id or ""
    # Alternating fresh processes (segment, folder, segment, ...), at least 11 of each: the ratio of
    # two medians taken at the same moments, whatever else the machine does meanwhile.
    pairs = [(read_once("trajectory", lake, episode_id), read_once("trajectory", alone, episode_id))
             for _ in range(max(repeat, 11))]
    for name, runs in (("trajectory_segment", [a for a, _ in pairs]), ("trajectory_folder", [b for _, b in pairs])):
        reads[name] = {"seconds": statistics.median(r["seconds"] for r in runs), "n": runs[0]["n"],
                       "all": [round(r["seconds"], 4) for r in runs]}
    report["reads"] = reads
    ratio = reads["trajectory_segment"]["seconds"] / reads["trajectory_folder"]["seconds"]
    report["trajectory_ratio"] = round(ratio, 2)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return report


def render(report: dict[str, Any]) -> str:
    """The scale section of BENCHMARKS.md."""
    reads = report["reads"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    lines = [
        "## Scale",
        "",
        f"{report['episodes']:,} small episodes ({report['json_bytes'] / 1e6:.0f} MB of JSON; "
        "`python -m benchmarks.scale`): one batch `run`, `compact`, then each read in a fresh process "
        "(the call alone, after imports; medians). Load average at the end: "
        f"{', '.join(str(x) for x in report.get('load_average', []))}.",
        "",
        "| Measure | Target | Measured | Met |",
        "|---|---|---|---|",
        f"| batch `run --jobs {report['jobs']}` | >= 1,000 episodes/s | {report['ingest_seconds']} s, "
        f"{report['episodes_per_s']:,} episodes/s ({report['segments_after_run']} segments) "
        f"| {met(report['episodes_per_s'] >= 1000)} |",
        f"| `compact` | | {report['compact_seconds']} s | |",
        f"| bytes on disk | <= 0.25x the JSON | {report['lake_bytes'] / 1e6:.1f} MB in {report['files']} files, "
        f"{report['bytes_ratio']}x | {met(report['bytes_ratio'] <= 0.25)} |",
    ]
    for kind, target in TARGETS.items():
        seconds = reads[kind]["seconds"]
        lines.append(f"| {kind} (fresh process) | <= {target * 1000:.0f} ms | {seconds * 1000:.1f} ms "
                     f"| {met(seconds <= target)} |")
    lines.append(f"| trajectory from a segment / from its folder (alternating fresh processes) | <= 2x | "
                 f"{reads['trajectory_segment']['seconds'] * 1000:.1f} ms / "
                 f"{reads['trajectory_folder']['seconds'] * 1000:.1f} ms = {report['trajectory_ratio']}x "
                 f"| {met(report['trajectory_ratio'] <= 2)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=REPO / "bench-data")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON, not as a table")
    args = parser.parse_args(argv)
    report = run(args.episodes, data=args.data, seed=args.seed, repeat=args.repeat, jobs=args.jobs)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return report


if __name__ == "__main__":
    main()
