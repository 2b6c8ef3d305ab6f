"""Whole-trajectory reads with and without a prepared frame store (issue 16), paired, in fresh processes.

    python -m benchmarks.prepared_reads [--data bench-data] [--repeat 5] [--only trajectory,d3rlpy]

Builds (once, cached in ``--data``) three seeded lakes with the sampler benchmark's frames
(``benchmarks.sampler``: Breakout-like 84x84 grayscale PNGs, ~6% noise, every frame different):
``long``, one episode of 10,000 steps; ``many``, 300 episodes of 200 steps; and ``rgb``, one episode
of 3,000 Atari-sized 210x160 RGB frames (what CrowdPlay records). Prepares the stores the reads use
(only what is missing), then times each read as decode (``prepared=False``) and store
(``prepared=True``), alternating which goes first, each in its own interpreter: wall and CPU seconds
(all threads) of the read alone, after imports and opening the lake, and peak RSS. Prints one JSON
line per run and, at the end, the medians and their ratio with the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.sampler import _peak_rss_mib, _write_episode, ingest_generated

LAKES = {"long": (1, 10_000), "many": (300, 200), "rgb": (1, 3_000)}


def _options(read: str) -> Any:
    from pipeline import FrameOptions

    if read == "d3rlpy":
        return FrameOptions.atari(stack_n=1, framestack_axis_first=True)  # the README's d3rlpy example
    if read.endswith("plain"):
        return FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)
    return FrameOptions.atari()


# read -> (lake, what it does)
READS = {
    "trajectory": ("long", "lake.trajectory(<10,000 steps>, frames=FrameOptions.atari()): [10000, 84, 84, 4]"),
    "trajectory-plain": ("long", "the same with FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)"),
    "trajectory-rgb": ("rgb", "lake.trajectory(<3,000 steps of 210x160 RGB>, frames=FrameOptions.atari())"),
    "d3rlpy": ("many", "lake.to_d3rlpy(<300 episodes>, observation='frames', frames=FrameOptions.atari(stack_n=1, "
                       "framestack_axis_first=True), downsample_frequency=4)"),
    "numpy-plain": ("many", "lake.to_numpy(<300 episodes>, frames=FrameOptions(grayscale=True, resize=(84, 84), "
                            "stack_n=4))"),
}


def _write_rgb_episode(path: Path, n: int, steps: int) -> None:
    """Atari-sized screens (210x160 RGB): coloured bands of bricks, a paddle, a ball, ~2% noise."""
    import base64

    from PIL import Image

    rng = np.random.default_rng(n)
    bands = rng.integers(40, 220, size=(6, 3), dtype=np.uint8)
    actions = rng.integers(0, 4, size=steps)
    with open(path, "wb") as out:
        out.write(orjson.dumps({"training": {"environment": "BreakoutRGB-v0", "algorithm": "DQN",
                                             "iterations": 1, "config": {"episode": n}}})[:-1])
        out.write(b',"inference":{"steps":[')
        for i in range(steps):
            screen = np.zeros((210, 160, 3), dtype=np.uint8)
            for b in range(6):
                screen[57 + 6 * b:63 + 6 * b, 8:152] = bands[b]
            noise = rng.random((210, 160)) < 0.02
            screen[noise] = rng.integers(0, 256, size=(int(noise.sum()), 3), dtype=np.uint8)
            x = (i * 3 + n) % 140
            screen[189:193, 8 + x:24 + x] = (200, 72, 72)
            y, bx = 100 + (i * 5) % 80, 8 + (i * 7) % 140
            screen[y:y + 4, bx:bx + 2] = 236
            buffer = io.BytesIO()
            Image.fromarray(screen).save(buffer, format="PNG")
            if i:
                out.write(b",")
            out.write(orjson.dumps({"number": i, "image": base64.b64encode(buffer.getvalue()).decode(),
                                    "agent_steps": [{"agent": "player_0", "action": int(actions[i]),
                                                     "reward": float(i % 7 == 0), "observation_space": [float(i)]}]}))
        out.write(b"]}}\n")


def build(root: Path, name: str) -> Path:
    """The lake ``name`` of :data:`LAKES` (built once)."""
    episodes, steps = LAKES[name]
    lake = root / f"prepared-reads-{name}-{episodes}x{steps}"
    if (lake / ".complete").exists():
        return lake
    writer = _write_rgb_episode if name == "rgb" else _write_episode
    return ingest_generated(lake, root / f"prepared-reads-sources-{name}", episodes,
                            lambda path, n: writer(path, n, steps), chunk=50, compact=False)


def prepare(lake_path: str, read: str) -> dict[str, Any]:
    from pipeline import Lake

    started, cpu = time.perf_counter(), time.process_time()
    report = Lake(lake_path).prepare_frames(_options(read))
    return {"prepare": read, "store": report.key, "prepared": report.prepared, "present": report.present,
            "frames": report.frames, "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(time.process_time() - cpu + report.cpu_seconds, 2),
            "store_mb": round(report.bytes / 1e6, 1), "png_mb": round(report.image_bytes / 1e6, 1)}


def measure(lake_path: str, read: str, prepared: bool) -> dict[str, Any]:
    from pipeline import Lake

    lake = Lake(lake_path)
    options = _options(read)
    ids = [location.episode_id for location in lake.locations]
    if read == "d3rlpy":
        import d3rlpy  # noqa: F401 -- its import (and torch's, ~2 s) is not the read's
    started, cpu = time.perf_counter(), time.process_time()
    if read.startswith("trajectory"):
        frames = lake.trajectory(ids[0], frames=options, prepared=prepared).frames
        assert frames is not None
        shape, rows = list(frames.shape), len(frames)
    elif read == "d3rlpy":
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # d3rlpy logs on stdout
            dataset = lake.to_d3rlpy(ids, observation="frames", frames=options, downsample_frequency=4,
                                     prepared=prepared)
        rows = sum(len(e.observations) for e in dataset.episodes)
        shape = [rows, *dataset.episodes[0].observations.shape[1:]]
    else:
        arrays = lake.to_numpy(ids, frames=options, prepared=prepared)
        shape, rows = list(arrays["frames"].shape), len(arrays["frames"])
    wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    return {"read": read, "prepared": prepared, "wall_s": round(wall, 3), "cpu_s": round(cpu_s, 3),
            "rows": rows, "shape": shape, "peak_rss_mib": round(_peak_rss_mib()), "load": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="comma-separated reads: " + ", ".join(READS))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", choices=["yes", "no"], help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.lake, args.measure, args.prepared == "yes")), flush=True)
        return
    if args.prepare_only:
        print(json.dumps(prepare(args.lake, args.prepare_only)), flush=True)
        return
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    reads = args.only.split(",") if args.only else list(READS)
    lakes = {name: build(root, name) for name in dict.fromkeys(READS[read][0] for read in reads)}
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def run(*flags: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "benchmarks.prepared_reads", *flags], check=True, env=env,
                             capture_output=True, text=True).stdout
        print(out.strip(), flush=True)
        return dict(json.loads(out.splitlines()[-1]))

    for read in reads:
        run("--prepare-only", read, "--lake", str(lakes[READS[read][0]]))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.repeat):
        for read in reads:
            order = ("no", "yes") if r % 2 == 0 else ("yes", "no")
            for prepared in order:
                results.setdefault((read, prepared), []).append(
                    run("--measure", read, "--prepared", prepared, "--lake", str(lakes[READS[read][0]])))
    for read in reads if args.repeat else ():
        decode, store = results[read, "no"], results[read, "yes"]
        med = {k: {m: statistics.median(x[m] for x in runs) for m in ("wall_s", "cpu_s", "peak_rss_mib", "load")}
               for k, runs in (("decode", decode), ("store", store))}
        print(json.dumps({"summary": read, "what": READS[read][1], "rows": decode[0]["rows"], "repeat": args.repeat,
                          **med, "wall_ratio": round(med["decode"]["wall_s"] / med["store"]["wall_s"], 2),
                          "cpu_ratio": round(med["decode"]["cpu_s"] / med["store"]["cpu_s"], 2),
                          "load_range": [min(x["load"] for x in decode + store),
                                         max(x["load"] for x in decode + store)]}), flush=True)


if __name__ == "__main__":
    main()
