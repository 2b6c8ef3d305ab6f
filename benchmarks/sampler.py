"""The training sampler's throughput and memory (issue 16), each measurement in a fresh process.

    python -m benchmarks.sampler --transitions 200000 --vector --frames --frames-plain [--numpy] [--cache-mb 1024]

Builds (once, cached by size in ``bench-data/``) a seeded lake of episodes of 84x84 grayscale PNG
frames, an 8-float observation, an action and a reward per step, written as episode files and
ingested with ``ingest_many``. Then, each in its own interpreter so that the peak RSS (``VmHWM``) is
that measurement's alone:

- ``numpy``: the same transitions sampled from in-memory numpy arrays (the upper bound);
- ``vector``: ``Lake.sampler(observation="vector", batch_size=256)`` after a warm-up pass;
- ``frames``: ``observation="frames"`` with ``FrameOptions.atari()`` (84x84, 4 stacked) and
  ``cache_bytes``; ``frames-plain`` with ``FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)``;
- ``numpy-frames`` (``--numpy`` with frames): 4-stacks gathered from 50k resident 84x84 frames.

Each prints one JSON line: transitions per second and peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

EPISODE_STEPS = 2000
BATCH = 256


def _frames(n: int, steps: int) -> list[str]:
    """Breakout-like 84x84 grayscale screens, every step's different, as base64 PNGs (seeded by episode).

    Bricks, a moving paddle and ball, and ~6% of pixels noise drawn afresh each step: no two frames
    are equal, so zstd finds no repeats and the lake's bytes are those of distinct PNGs (~1.5 KB each).
    """
    import base64

    from PIL import Image

    rng = np.random.default_rng(n)
    bricks = np.repeat(rng.integers(60, 200, size=(5, 12), dtype=np.uint8), 4, 0).repeat(7, 1)[:20, :84]
    frames = []
    for i in range(steps):
        screen = np.zeros((84, 84), dtype=np.uint8)
        screen[10:30] = bricks
        noise = rng.random((84, 84)) < 0.06
        screen[noise] = rng.integers(0, 256, size=int(noise.sum()), dtype=np.uint8)
        x = (i * 3 + n) % 80
        screen[76:78, max(0, x - 6):x + 6] = 200
        y, bx = 40 + (i * 5 + n) % 30, (i * 7 + n) % 82
        screen[y:y + 2, bx:bx + 2] = 255
        buffer = io.BytesIO()
        Image.fromarray(screen, mode="L").save(buffer, format="PNG")
        frames.append(base64.b64encode(buffer.getvalue()).decode())
    return frames


def _write_episode(path: Path, n: int, steps: int) -> None:
    rng = np.random.default_rng(n)
    observations = rng.standard_normal((steps, 8)).astype(np.float32).astype(float)
    actions = rng.integers(0, 4, size=steps)
    rewards = rng.random(steps).round(3)
    images = _frames(n, steps)
    with open(path, "wb") as out:
        out.write(orjson.dumps({"training": {"environment": "BreakoutBench-v0", "algorithm": "DQN",
                                             "iterations": 1, "config": {"episode": n}}})[:-1])
        out.write(b',"inference":{"steps":[')
        for i in range(steps):
            if i:
                out.write(b",")
            out.write(orjson.dumps({"number": i, "image": images[i], "agent_steps": [
                {"agent": "player_0", "action": int(actions[i]), "reward": float(rewards[i]),
                 "observation_space": observations[i].tolist()}]}))
        out.write(b"]}}\n")


def build_lake(root: Path, transitions: int, seed: int = 0) -> Path:
    """A lake of ``transitions`` steps in episodes of ``EPISODE_STEPS`` (built once per size)."""
    lake = root / f"sampler-lake-v2-{transitions}"  # v2: distinct frames
    if (lake / ".complete").exists():
        return lake
    episodes = -(-transitions // EPISODE_STEPS)

    def write(path: Path, n: int) -> None:
        _write_episode(path, n, min(EPISODE_STEPS, transitions - n * EPISODE_STEPS))

    return ingest_generated(lake, root / f"sampler-sources-v2-{transitions}", episodes, write, chunk=20)


def ingest_generated(lake: Path, sources: Path, episodes: int, write: Callable[[Path, int], None], *,
                     chunk: int, compact: bool = True) -> Path:
    """Write episodes 0..``episodes``-1 with ``write(path, n)`` and ingest them, ``chunk`` files at a time
    (bounded disk for the JSON); ``lake/.complete`` records the time, so the lake is built once."""
    from pipeline import ingest_many

    sources.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for start in range(0, episodes, chunk):
        names = []
        for n in range(start, min(episodes, start + chunk)):
            path = sources / f"{n}.json"
            write(path, n)
            names.append(path)
        for result in ingest_many(names, lake=lake, compact=compact):
            if result.status != "ingested":
                raise SystemExit(f"{result.source}: {result.status} {result.error}")
        for path in names:
            path.unlink()
    (lake / ".complete").write_text(f"{time.perf_counter() - started:.1f} s\n")
    return lake


def _peak_rss_mib() -> float:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_CPU: dict[str, float] = {}


def _rate(make_batch: Any, seconds: float) -> tuple[float, int]:
    """Transitions per second of wall time; also CPU time per transition (all threads) in ``_CPU``:
    on a shared machine the wall rate depends on the load, the CPU time much less."""
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    j = 0
    while time.perf_counter() - started < seconds:
        done += len(make_batch(j)[0])
        j += 1
    _CPU["us"] = (time.process_time() - cpu) / max(done, 1) * 1e6
    return done / (time.perf_counter() - started), j


def _options(mode: str) -> Any:
    from pipeline import FrameOptions

    return {"frames": FrameOptions.atari(),
            "frames-plain": FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)}.get(mode, False)


def prepare(mode: str, lake_path: str, codec: str) -> dict[str, Any]:
    """Prepare the frame store ``mode``'s sampler reads (only what is missing), timed: wall, and CPU of
    this process and of the work in its worker processes."""
    from pipeline import Lake

    lake = Lake(lake_path)
    started, cpu = time.perf_counter(), time.process_time()
    report = lake.prepare_frames(_options(mode), codec=codec)  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    cpu_s = time.process_time() - cpu + report.cpu_seconds  # this process's, and the workers' own
    return {"prepare": mode, "store": report.key, "codec": codec, "entries_written": report.prepared,
            "entries_present": report.present, "frames": report.frames, "seconds": round(wall, 1),
            "cpu_seconds": round(cpu_s, 1), "frames_per_second": round(report.frames / wall) if report.frames else None,
            "store_mb": round(report.bytes / 1e6, 1), "png_mb": round(report.image_bytes / 1e6, 1),
            "bytes_per_frame": round(report.bytes / report.frames) if report.frames else None,
            "load_average": round(os.getloadavg()[0], 2), "peak_rss_mib": round(_peak_rss_mib(), 1)}


def measure(mode: str, lake_path: str, cache_mb: int, seconds: float, prepared: str = "auto") -> dict[str, Any]:
    from pipeline import FrameOptions, Lake

    lake = Lake(lake_path)
    cache = cache_mb << 20
    result: dict[str, Any] = {"mode": mode, "episodes": len(lake), "cache_mb": cache_mb}
    if mode == "numpy-frames":  # the upper bound for frames: stacks gathered from resident decoded frames
        n = min(50_000, sum(1 for _ in lake.locations) * EPISODE_STEPS)
        frames = np.random.default_rng(0).integers(0, 256, size=(n, 84, 84), dtype=np.uint8)
        rng = np.random.default_rng(0)
        back = np.arange(-3, 1)

        def frame_batch(j: int) -> tuple[np.ndarray, ...]:
            index = rng.integers(0, n - 1, size=BATCH)
            stacks = frames[np.maximum(index[:, None] + back, 0)]
            following = frames[np.maximum(index[:, None] + 1 + back, 0)]
            return np.moveaxis(stacks, 1, -1), np.moveaxis(following, 1, -1)

        rate, batches = _rate(frame_batch, seconds)
        result["transitions"] = n
    elif mode == "numpy":
        started = time.perf_counter()
        arrays = lake.to_numpy()
        observations = arrays["observations"].reshape(len(arrays["observations"]), -1)
        actions, rewards, terminals = arrays["actions"], arrays["rewards"], arrays["terminals"]
        n = len(actions)
        result["load_seconds"] = round(time.perf_counter() - started, 3)

        rng = np.random.default_rng(0)

        def numpy_batch(j: int) -> tuple[np.ndarray, ...]:
            index = rng.integers(0, n, size=BATCH)
            terminal = terminals[index]
            following = observations[np.minimum(index + 1, n - 1)]
            following[terminal] = 0
            return observations[index], actions[index], rewards[index], following, terminal

        rate, batches = _rate(numpy_batch, seconds)
        result["transitions"] = n
    else:
        choices: dict[str, FrameOptions] = {"frames": FrameOptions.atari(),
                                            "frames-plain": FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)}
        frame_options: bool | FrameOptions = choices.get(mode, False)
        started = time.perf_counter()
        sampler = lake.sampler(batch_size=BATCH, observation="vector" if mode == "vector" else "frames",
                               frames=frame_options, seed=0, cache_bytes=cache,
                               prepared={"auto": None, "yes": True, "no": False}[prepared])
        result["prepared"] = getattr(sampler, "prepared", None)
        result["index_seconds"] = round(time.perf_counter() - started, 3)
        result["transitions"] = sampler.transitions
        started = time.perf_counter()
        warm_batches = 3 * len(sampler.episodes) if mode == "vector" else 20
        for j in range(warm_batches):  # vector: until every episode is loaded, with high probability
            sampler.batch(1_000_000 + j)
        result["warmup_seconds"] = round(time.perf_counter() - started, 3)
        rate, batches = _rate(lambda j: tuple(sampler.batch(j)), seconds)
        result["resident"] = sampler._arrays.resident is not None
        decoded = sampler._decoded_frames  # None when a prepared store serves the frames, or for vectors
        result["frame_cache_mb"] = round((decoded.image_bytes if decoded else 0) / 2**20, 1)
    result["transitions_per_second"] = round(rate)
    result["cpu_us_per_transition"] = round(_CPU["us"], 1)
    result["load_average"] = round(os.getloadavg()[0], 2)
    result["batches"] = batches
    result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    return result


def _child(args: list[str]) -> dict[str, Any]:
    """One measurement in a fresh interpreter (its peak RSS its own): the JSON line it prints."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.sampler", *args], check=True, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


FRAME_MODES = ("frames", "frames-plain")


def run(sizes: list[int], *, data: Path, cache_mb: int = 1024, seconds: float = 8.0, repeat: int = 3,
        log: Any = print) -> dict[str, Any]:
    """The sampler section of ``make bench``: for each lake size, prepare the frame stores (once: the
    figures of the run that prepared them are kept next to the lake), then sample frames from the store
    and by decoding PNGs, and vectors, ``repeat`` times each, interleaved; medians."""
    import statistics

    from pipeline.lake.framestore import FORMAT_VERSION

    results: dict[str, Any] = {"cache_mb": cache_mb, "seconds": seconds, "repeat": repeat, "sizes": {}}
    for size in sizes:
        log(f"sampler: lake of {size:,} transitions")
        lake = build_lake(data, size)
        png = sum(f.stat().st_size for f in lake.rglob("steps.parquet"))
        entry: dict[str, Any] = {"lake": str(lake), "steps_parquet_mb": round(png / 1e6), "prepare": {}, "runs": {}}
        for mode in FRAME_MODES:
            cached = data / f"sampler-prepare-v{FORMAT_VERSION}-{size}-{mode}.json"  # a store per format version
            if cached.exists():
                figures = json.loads(cached.read_text())
            else:
                log(f"sampler: preparing {mode} ({size:,} transitions)")
                figures = _child(["--prepare-only", mode, "--lake", str(lake)])
                if figures["entries_written"] and not figures["entries_present"]:  # a whole prepare: keep it
                    cached.write_text(json.dumps(figures))
            entry["prepare"][mode] = figures
        plan = [("vector", "auto"), *[(m, how) for m in FRAME_MODES for how in ("yes", "no")]]
        runs: dict[str, list[dict[str, Any]]] = {f"{m}/{how}": [] for m, how in plan}
        for _ in range(repeat):
            for mode, how in plan:
                runs[f"{mode}/{how}"].append(_child(["--measure", mode, "--lake", str(lake), "--cache-mb",
                                                     str(cache_mb), "--seconds", str(seconds), "--prepared", how]))
        for name, measured in runs.items():
            entry["runs"][name] = {
                "transitions_per_second": statistics.median(r["transitions_per_second"] for r in measured),
                "cpu_us_per_transition": statistics.median(r["cpu_us_per_transition"] for r in measured),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in measured),
                "load": [r["load_average"] for r in measured],
                "prepared": measured[0].get("prepared"),
            }
        results["sizes"][str(size)] = entry
    return results


def render(results: dict[str, Any]) -> str:
    """The sampler section of BENCHMARKS.md."""
    lines = [f"## Sampler (issue 16): batches of {BATCH}, cache {results['cache_mb']} MB, "
             f"median of {results['repeat']} fresh processes, {results['seconds']} s each", "",
             "| transitions | sampling | frames from | transitions/s | CPU us/transition | peak RSS MiB | load |",
             "|---:|---|---|---:|---:|---:|---|"]
    for size, entry in results["sizes"].items():
        for name, r in entry["runs"].items():
            mode, how = name.split("/")
            source = "-" if mode == "vector" else ("prepared store" if how == "yes" else "PNG decode")
            loads = ", ".join(f"{x:.1f}" for x in r["load"])
            lines.append(f"| {int(size):,} | {mode} | {source} | {r['transitions_per_second']:,.0f} | "
                         f"{r['cpu_us_per_transition']} | {r['peak_rss_mib']:.0f} | {loads} |")
    lines += ["", "Preparing the frame stores (`Lake.prepare_frames`, 2 worker processes):", "",
              "| transitions | store | frames/s | wall s | CPU s | store MB | PNG MB | bytes/frame | load |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size, entry in results["sizes"].items():
        for p in entry["prepare"].values():
            lines.append(f"| {int(size):,} | `{p['store']}` | {p['frames_per_second'] or 0:,} | {p['seconds']} | "
                         f"{p['cpu_seconds']} | {p['store_mb']:,} | {p['png_mb']:,} | {p['bytes_per_frame']} | "
                         f"{p['load_average']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=200_000)
    parser.add_argument("--vector", action="store_true")
    parser.add_argument("--frames", action="store_true", help="FrameOptions.atari()")
    parser.add_argument("--frames-plain", action="store_true",
                        help="FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)")
    parser.add_argument("--numpy", action="store_true", help="the in-memory baseline (default with --vector; "
                        "with --frames/--frames-plain also stacks gathered from 50k resident decoded frames)")
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--cache-mb", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--prepare", action="store_true",
                        help="first prepare the frame store of each frames mode (timed; only what is missing)")
    parser.add_argument("--codec", choices=["zstd", "raw"], default="zstd", help="the frame store's codec")
    parser.add_argument("--prepared", choices=["auto", "yes", "no"], default="auto",
                        help="frames from a prepared store: when it covers the lake, required, or never (decode PNGs)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-only", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.lake, args.cache_mb, args.seconds, args.prepared)), flush=True)
        return
    if args.prepare_only:
        print(json.dumps(prepare(args.prepare_only, args.lake, args.codec)), flush=True)
        return
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lake = build_lake(root, args.transitions)
    size = sum(f.stat().st_size for f in lake.rglob("*.parquet"))
    print(json.dumps({"lake": str(lake), "transitions": args.transitions, "parquet_mb": round(size / 1e6),
                      "build": (lake / ".complete").read_text().strip(),
                      "seconds_here": round(time.perf_counter() - started, 1)}), flush=True)
    framed = args.frames or args.frames_plain
    modes = [m for m, on in (("numpy", args.numpy or args.vector), ("numpy-frames", args.numpy and framed),
                             ("vector", args.vector),
                             ("frames", args.frames), ("frames-plain", args.frames_plain)) if on]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    if args.prepare:
        for mode in [m for m in modes if m in ("frames", "frames-plain")]:
            subprocess.run([sys.executable, "-m", "benchmarks.sampler", "--prepare-only", mode, "--lake", str(lake),
                            "--codec", args.codec], check=True, env=env)
    for mode in modes:
        subprocess.run([sys.executable, "-m", "benchmarks.sampler", "--measure", mode, "--lake", str(lake),
                        "--cache-mb", str(args.cache_mb), "--seconds", str(args.seconds),
                        "--prepared", args.prepared], check=True, env=env)


if __name__ == "__main__":
    main()
