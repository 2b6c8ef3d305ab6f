"""Run the benchmark suite and write BENCHMARKS.md (``make bench``, ``make bench-quick``).

    python -m benchmarks.run --quick                      # ~100 MB per profile: a few minutes
    python -m benchmarks.run                              # ~100 MB and ~1 GB per profile
    python -m benchmarks.run --sizes 20MB --profiles teams --repeat 3 --output /tmp/bench.md

Episode files are generated once into the data folder (``bench-data/`` by default, gitignored) and
reused. Every figure is the median of ``--repeat`` runs, and every run is a fresh process
(``benchmarks/measure.py``) reporting its own wall time, CPU time and peak RSS. Runs of the
different measurements are interleaved, so a burst of load elsewhere does not land on one of them.
The working tree's ``pipeline`` is measured, not an installed copy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.generate import (
    ALL_PROFILES,
    GENERATOR_VERSION,
    format_size,
    generate_file,
    parse_size,
    random_shape,
)

REPO = Path(__file__).resolve().parent.parent
# Where ``pipeline`` is imported from: this working tree, unless ``--pipeline`` names another copy
# (say ``git archive HEAD | tar -x -C /tmp/head``, to compare before and after a change).
pipeline_root = REPO
PROFILES = ALL_PROFILES
# Profiles with a frame on every step: their target is the frames reference (frames_work), not the floor.
FRAME_PROFILES = ("frames", "frames64", "frames_jpeg")
# Sizes of 1 GB and more are run for these only (the memory targets' profiles), unless --large-profiles;
# frames64 and vector are the shapes whose memory grew from 100 MB to 1 GB (issue 15: footer, step numbers).
LARGE_PROFILES = ("frames", "teams", "pixels", "frames64", "vector")
STARTUP_TARGET_S = 0.12
READ_ENVIRONMENTS = ("CartPole-v1", "LunarLander-v3", "ALE/Pong-v5", "MountainCar-v0", "Acrobot-v1")
PACKAGES = ("ijson", "jsonschema-rs", "pyarrow", "polars", "orjson", "pybase64", "pillow", "numpy")
MEMORY_TARGET_MIB = 256
# A measurement may use at most this share of the memory available when it starts; beyond that it
# fails with "out of memory" instead of waking the kernel's OOM killer on a shared machine.
MEMORY_SHARE = 0.8


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------------------------


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "missing"
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    if pipeline_root != REPO:
        commit += f"; pipeline imported from {pipeline_root}"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": _meminfo("MemTotal"),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "packages": versions,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
    }


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -- running one measurement --------------------------------------------------------------------------


def _memory_limit_mib() -> int | None:
    available = _meminfo("MemAvailable")
    return int(available * MEMORY_SHARE / 2**20) if available else None


def measure(kind: str, target: str | os.PathLike[str], *, lake: str | os.PathLike[str] | None = None,
            episode: str | None = None, how: str | None = None, timeout: float = 7200) -> dict[str, Any]:
    """Run ``benchmarks.measure`` in a fresh interpreter and return the JSON it printed."""
    command = [sys.executable, "-m", "benchmarks.measure", kind, os.fspath(target)]
    if lake is not None:
        command += ["--lake", os.fspath(lake)]
    if episode is not None:
        command += ["--episode", episode]
    if how is not None:
        command += ["--how", how]
    limit = _memory_limit_mib()
    if limit:
        command += ["--memory-limit-mib", str(limit)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pipeline_root), str(REPO), env.get("PYTHONPATH")]))
    try:
        # ``-m`` puts the working folder first on sys.path: it decides which ``pipeline`` is imported.
        done = subprocess.run(command, cwd=pipeline_root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "status": "failed", "target": os.fspath(target), "how": how,
                "error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        stderr = done.stderr.strip()
        oom = "MemoryError" in stderr or "bad_alloc" in stderr or done.returncode == -9
        return {"kind": kind, "status": "out_of_memory" if oom else "failed", "target": os.fspath(target),
                "how": how, "error": f"exit status {done.returncode}: {stderr[-600:]}"}


def _describe(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('error', '')[:200]}"
    text = f"{result['seconds']:.3g} s"
    if "mb_per_s" in result:
        text += f", {result['mb_per_s']:.1f} MB/s"
    return text + f", peak RSS {result['peak_rss_mib']:.0f} MiB"


# -- episode files --------------------------------------------------------------------------------


def episode_file(data: Path, profile: str, size: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The cached episode file of ``profile`` at ``size``, generated now if missing."""
    path = data / f"{profile}-{format_size(size)}-seed{seed}-v{GENERATOR_VERSION}.json"
    info: dict[str, Any] = {"profile": profile, "size": format_size(size), "path": str(path)}
    if not path.exists():
        log(f"generating {path.name} ...")
        started = time.perf_counter()
        written = generate_file(path, profile, size=size, seed=seed)
        info["generated_seconds"] = time.perf_counter() - started
        log(f"  {written.steps} steps, {written.bytes / 1e6:.1f} MB in {info['generated_seconds']:.1f} s")
    info["bytes"] = path.stat().st_size
    return path, info


def compile_checkout(root: Path) -> None:
    """Compile the measured checkout's modules, as ``pip install`` does for the installed command.

    Without it, a process started with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI and
    development machines) compiles every module of the command from source, on every run.
    """
    import compileall

    for folder in ("pipeline", "benchmarks"):
        compileall.compile_dir(str(root / folder), quiet=1)
    if (root / "cli.py").exists():
        compileall.compile_file(str(root / "cli.py"), quiet=1)


def _warm(path: Path) -> None:
    """Read the file once so every run starts with it in the page cache, as the first one would not."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def has_frames(profile: str, seed: int) -> bool:
    """Whether the profile's files carry a frame on every step (the frames reference then applies)."""
    return profile in FRAME_PROFILES or (profile == "random" and random_shape(seed).frame is not None)


def bench_startup(data: Path, *, repeat: int, scratch: Path) -> dict[str, list[dict[str, Any]]]:
    """``ingest-pipeline --help`` and ``run`` on a tiny file (20 steps), whole processes, interleaved."""
    tiny = data / f"startup-vector-20steps-v{GENERATOR_VERSION}.json"
    if not tiny.exists():
        generate_file(tiny, "vector", steps=20, seed=0)
    runs: dict[str, list[dict[str, Any]]] = {"help": [], "run": []}
    for round_ in range(1, repeat + 1):
        for how in runs:
            result = measure("startup", tiny, how=how)
            runs[how].append(result)
            log(f"  start-up {how} run {round_}/{repeat}: {_describe(result)}")
    return runs


def bench_file(path: Path, profile: str, *, repeat: int, scratch: Path,
               seed: int = 0, baseline: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Every file measurement of one file, ``repeat`` rounds, interleaved (``baseline``: with the baseline)."""
    kinds = (["ingest", "parse_floor"] + (["baseline"] if baseline else [])
             + (["frames_work"] if has_frames(profile, seed) else []))
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    _warm(path)
    for round_ in range(1, repeat + 1):
        for kind in kinds:
            lake = scratch / f"lake-{uuid.uuid4().hex[:8]}" if kind == "ingest" else None
            try:
                result = measure(kind, path, lake=lake)
            finally:
                if lake is not None:
                    shutil.rmtree(lake, ignore_errors=True)
            runs[kind].append(result)
            log(f"  {path.name} {kind} run {round_}/{repeat}: {_describe(result)}")
    return runs


def bench_shapes(data: Path, *, count: int, size: int, first_seed: int, repeat: int,
                 scratch: Path) -> list[dict[str, Any]]:
    """The ingest and its reference on ``count`` random-profile files, one shape per seed (issue 15:
    speed that holds on every shape of file, not only on the profiles')."""
    shapes = []
    for seed in range(first_seed, first_seed + count):
        path, info = episode_file(data, "random", size, seed)
        log(f"random shape {seed} {format_size(size)}: {random_shape(seed)}")
        runs = bench_file(path, "random", repeat=repeat, scratch=scratch, seed=seed, baseline=False)
        shapes.append({**info, "seed": seed, "shape": random_shape(seed).__dict__, "runs": runs,
                       "summary": {k: summarise(v) for k, v in runs.items()}})
    return shapes


def shape_ratio(entry: dict[str, Any]) -> tuple[str, float | None, float]:
    """(reference, reference / ingest, its target) of one random shape: the frames reference when
    the shape has frames, else the parse floor."""
    s = entry["summary"]
    if "frames_work" in s:
        return "parse + frame work", _ratio(s.get("frames_work"), s.get("ingest"), "seconds"), 0.8
    return "parse floor", _ratio(s.get("parse_floor"), s.get("ingest"), "seconds"), 0.6


def _shape_label(shape: dict[str, Any]) -> str:
    observation = "x".join(str(n) for n in shape["observation"])
    parts = [f"{shape['agents']} agent{'s' if shape['agents'] > 1 else ''}", f"{observation} {shape['numbers']}",
             f"{shape['reward_components']}-part rewards" if shape["reward_components"] else "scalar reward"]
    if shape["units"]:
        parts.append(f"up to {shape['units']} units")
    if shape["metrics"]:
        parts.append(f"metrics on {shape['metrics']:.0%}")
    if shape["frame"]:
        parts.append(f"{shape['frame'][0]}x{shape['frame'][1]} PNG")
    return ", ".join(parts)


def render_shapes(shapes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "### Random shapes",
        "",
        "`random`-profile files, one shape per seed (`benchmarks.generate.random_shape`), each measured as the "
        "profiles above: the whole command against the parse floor, or against the frames reference when every "
        "step has a frame.",
        "",
        "| seed | shape | MB | steps | floor s | frames ref. s | ingest s | reference / ingest | target | met |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for entry in shapes:
        s = entry["summary"]
        _, ratio, target = shape_ratio(entry)
        ing = s.get("ingest") or {}
        lines.append(
            f"| {entry['seed']} | {_shape_label(entry['shape'])} | {entry['bytes'] / 1e6:.3g} "
            f"| {_num(ing.get('steps') or (s.get('parse_floor') or {}).get('steps'))} "
            f"| {_cell(s.get('parse_floor'), 'seconds')} "
            f"| {_cell(s.get('frames_work'), 'seconds') if 'frames_work' in s else '–'} | {_cell(ing, 'seconds')} "
            f"| {_x(ratio)} | {target}x | {'–' if ratio is None else 'yes' if ratio >= target else '**no**'} |")
    return lines


# -- the read side ------------------------------------------------------------------------------------


def _source_key() -> str:
    """Changes whenever the pipeline, the schema or the generator does, so cached lakes are rebuilt."""
    digest = hashlib.sha256(f"generator {GENERATOR_VERSION}".encode())
    for path in sorted([*pipeline_root.glob("pipeline/**/*.py"), *pipeline_root.glob("schemas/*.json")]):
        digest.update(str(path.relative_to(pipeline_root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _ingest_into(args: tuple[str, str]) -> tuple[str, str | None, str]:
    from pipeline import ingest

    path, lake = args
    result = ingest(path, lake=lake)
    return result.status, result.episode_id, str(result.error or "")


def _ingest_all(paths: list[Path], lake: Path, workers: int) -> list[str]:
    """Ingest every file (in a pool of fresh processes when there are many); their episode ids."""
    jobs = [(str(p), str(lake)) for p in paths]
    if workers > 1 and len(jobs) >= 20:
        # "spawn": the runner may hold threads (pyarrow's, a test runner's), which fork does not mix with.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_ingest_into, jobs, chunksize=8))
    else:
        results = [_ingest_into(job) for job in jobs]
    ids = []
    for path, (status, episode_id, error) in zip(paths, results, strict=True):
        if status != "ingested":
            raise RuntimeError(f"could not ingest {path} into {lake}: {status} {error}")
        ids.append(episode_id or "")
    return ids


def _small_episodes(folder: Path, first: int, last: int, seed: int) -> list[Path]:
    """Small single-agent episodes (20-400 steps) spread over a few environments."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(first, last):
        steps = random.Random(seed * 1_000_003 + k).randint(20, 400)
        path = folder / f"episode-{k:05d}.json"
        generate_file(path, "vector", steps=steps, seed=seed * 1_000_003 + k,
                      environment=READ_ENVIRONMENTS[k % len(READ_ENVIRONMENTS)])
        paths.append(path)
    return paths


def read_lakes(data: Path, *, lake_sizes: list[int], trajectory_steps: int, seed: int) -> dict[str, Any]:
    """Lakes of small episodes and a lake with one long trajectory, built once per pipeline version."""
    key = _source_key()
    root = data / f"read-{key}"
    manifest_path = root / "manifest.json"
    wanted = {"lake_sizes": sorted(lake_sizes), "trajectory_steps": trajectory_steps, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("wanted") == wanted:
            log(f"reusing the read-side lakes in {root}")
            return manifest
    for old in data.glob("read-*"):
        shutil.rmtree(old, ignore_errors=True)
    sys.path.insert(0, str(pipeline_root))  # the pool's workers (spawned) get this sys.path too
    workers = os.cpu_count() or 1
    scratch = data / "tmp" / f"episodes-{uuid.uuid4().hex[:8]}"
    manifest = {"wanted": wanted, "key": key, "lakes": {}}
    try:
        built = 0
        previous: Path | None = None
        for size in sorted(lake_sizes):
            lake = root / f"lake-{size}"
            if previous is not None:
                shutil.copytree(previous, lake)
            log(f"building a lake of {size} small episodes in {lake} ...")
            started = time.perf_counter()
            _ingest_all(_small_episodes(scratch, built, size, seed), lake, workers)
            log(f"  {size - built} ingests in {time.perf_counter() - started:.1f} s")
            manifest["lakes"][str(size)] = str(lake)
            built, previous = size, lake
        log(f"building a lake with one {trajectory_steps}-step trajectory ...")
        path = scratch / "trajectory.json"
        generate_file(path, "vector", steps=trajectory_steps, seed=seed, environment="LunarLander-v3")
        manifest["trajectory_lake"] = str(root / "trajectory")
        manifest["trajectory_episode"] = _ingest_all([path], root / "trajectory", 1)[0]
        manifest["trajectory_bytes"] = path.stat().st_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def bench_reads(manifest: dict[str, Any], *, repeat: int) -> dict[str, list[dict[str, Any]]]:
    """Lake queries and trajectory loads, ``repeat`` fresh processes each (interleaved)."""
    jobs: list[tuple[str, dict[str, Any]]] = []
    for size, lake in sorted(manifest["lakes"].items(), key=lambda item: int(item[0])):
        jobs.append((f"query {size} polars", {"kind": "lake_query", "target": lake, "how": "polars"}))
        jobs.append((f"query {size} lake", {"kind": "lake_query", "target": lake, "how": "lake"}))
    for how in ("parquet", "numpy", "lake"):
        jobs.append((f"trajectory {how}", {"kind": "trajectory", "target": manifest["trajectory_lake"],
                                           "episode": manifest["trajectory_episode"], "how": how}))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in jobs}
    for round_ in range(1, repeat + 1):
        for name, job in jobs:
            result = measure(**job)
            runs[name].append(result)
            log(f"  {name} run {round_}/{repeat}: {_describe(result)}")
    return runs


# -- figures ----------------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the successful runs; the status of the first failure if any run failed."""
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    summary: dict[str, Any] = {"runs": len(runs), "ok_runs": len(ok)}
    if failed:
        summary["status"] = failed[0].get("status")
        summary["error"] = failed[0].get("error")
    else:
        summary["status"] = "ok"
    for field in ("seconds", "warm_seconds", "cpu_seconds", "peak_rss_mib", "import_rss_mib", "mb_per_s",
                  "steps_per_s", "parent_rss_mib", "child_rss_mib", "child_shared_mib", "rss_sum_mib"):
        values = [r[field] for r in ok if r.get(field) is not None]
        if values:
            summary[field] = statistics.median(values)
    for field in ("steps", "agent_steps", "unit_steps", "input_bytes", "lake_bytes", "frames", "episodes",
                  "environments", "shape", "returned"):
        if ok and field in ok[0]:
            summary[field] = ok[0][field]
    return summary


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, field: str) -> float | None:
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return None
    x, y = a.get(field), b.get(field)
    return x / y if x is not None and y else None


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _cell(summary: dict[str, Any] | None, field: str, digits: int = 3) -> str:
    if not summary:
        return "–"
    if summary.get("status") == "out_of_memory":
        return "out of memory"
    if summary.get("status") != "ok":
        return str(summary.get("status"))
    return _num(summary.get(field), digits)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def targets(files: list[dict[str, Any]], reads: dict[str, dict[str, Any]],
            startup: dict[str, dict[str, Any]] | None = None,
            shapes: list[dict[str, Any]] | None = None) -> list[tuple[str, str, str, str]]:
    """The targets of issues 5 and 15 against what was measured: (target, where, measured, verdict).

    Ingest times are the whole command's (start-up included, issue 15).
    """
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("yes" if ok else "**no**")

    by_profile: dict[str, list[dict[str, Any]]] = {}
    for entry in files:
        by_profile.setdefault(entry["profile"], []).append(entry)
    for entry in files:
        where = f"{entry['profile']} {entry['size']}"
        s = entry["summary"]
        speed = _ratio(s.get("parse_floor"), s.get("ingest"), "seconds")
        # Where frames add work no design avoids, issue 5 sets the next target instead of this one.
        rows.append(("ingest ≥ 0.6x parse-floor throughput", where, _x(speed),
                     "– (frames: the next row applies)" if "frames_work" in s
                     else verdict(None if speed is None else speed >= 0.6)))
        if "frames_work" in s:
            speed = _ratio(s.get("frames_work"), s.get("ingest"), "seconds")
            rows.append(("ingest ≥ 0.8x (parse floor + frame work) throughput", where, _x(speed),
                         verdict(None if speed is None else speed >= 0.8)))
        faster = _ratio(s.get("baseline"), s.get("ingest"), "seconds")
        base = s.get("baseline") or {}
        if base.get("status") == "out_of_memory":
            rows.append(("faster than the load-everything baseline", where, "baseline ran out of memory", "yes"))
        else:
            rows.append(("faster than the load-everything baseline", where, _x(faster) + " of its speed",
                         verdict(None if faster is None else faster > 1)))
    for profile, entries in by_profile.items():
        entries = sorted(entries, key=lambda e: parse_size(e["size"]))
        largest = entries[-1]
        ingest = largest["summary"].get("ingest") or {}
        rss = ingest.get("peak_rss_mib") if ingest.get("status") == "ok" else None
        gigabyte = parse_size(largest["size"]) >= 10**9
        note = "" if gigabyte else " (1 GB not run)"
        rows.append((f"peak RSS ≤ {MEMORY_TARGET_MIB} MiB at 1 GB", f"{profile} {largest['size']}{note}",
                     f"{_num(rss)} MiB", verdict(None if rss is None or not gigabyte else rss <= MEMORY_TARGET_MIB)))
        if len(entries) > 1:
            growth = _ratio(ingest, entries[0]["summary"].get("ingest"), "peak_rss_mib")
            rows.append(("RSS grows < 15% from the smallest to the largest size",
                         f"{profile} {entries[0]['size']} → {largest['size']}",
                         "–" if growth is None else f"{(growth - 1) * 100:+.0f}%",
                         verdict(None if growth is None else growth < 1.15)))
        base = largest["summary"].get("baseline") or {}
        if base.get("status") == "out_of_memory":
            rows.append(("memory ≥ 5x smaller than the baseline at 1 GB", f"{profile} {largest['size']}{note}",
                         "baseline ran out of memory", "yes"))
        else:
            smaller = _ratio(base, ingest, "peak_rss_mib")
            rows.append(("memory ≥ 5x smaller than the baseline at 1 GB", f"{profile} {largest['size']}{note}",
                         _x(smaller) + " smaller", verdict(None if smaller is None or not gigabyte else smaller >= 5)))
    for kind in ("parse floor", "parse + frame work"):
        measured = [(entry, ratio, target) for entry in shapes or [] for what, ratio, target in [shape_ratio(entry)]
                    if what == kind and ratio is not None]
        if measured:
            met = sum(ratio >= target for _, ratio, target in measured)
            worst_entry, worst, target = min(measured, key=lambda item: item[1])
            rows.append((f"ingest ≥ {target}x the {kind} on random shapes",
                         f"{len(measured)} random shape{'s' if len(measured) > 1 else ''}, {worst_entry['size']}",
                         f"{met} of {len(measured)}; lowest {_x(worst)} (seed {worst_entry['seed']})",
                         verdict(met == len(measured))))
    for how, label in (("help", "`ingest-pipeline --help`"), ("run", "`ingest-pipeline run` on a 20-step file")):
        s = (startup or {}).get(how)
        if s:
            seconds = s.get("seconds") if s.get("status") == "ok" else None
            rows.append((f"start-up ≤ {STARTUP_TARGET_S} s", label, "–" if seconds is None else f"{seconds:.3f} s",
                         verdict(None if seconds is None else seconds <= STARTUP_TARGET_S)))
    lake_load = reads.get("trajectory lake")
    parquet = reads.get("trajectory parquet")
    if lake_load:
        for field, label in (("warm_seconds", "warm calls"), ("seconds", "first call in a fresh process")):
            ratio = _ratio(lake_load, parquet, field)
            rows.append(("trajectory load ≤ 2x the bare Parquet read", f"Lake.trajectory, {label}", _x(ratio),
                         verdict(None if ratio is None else ratio <= 2)))
    return rows


def render(report: dict[str, Any]) -> str:
    """BENCHMARKS.md from a report (what :func:`main` collects)."""
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"`{report['command']}` on {m['date']}, commit {m['commit']}. "
        f"Each figure is the median of {report['repeat']} runs ({report.get('read_repeat', report['repeat'])} "
        "for the read side); each run is a fresh process "
        "(`benchmarks/measure.py`). Written by `benchmarks/run.py`; see the end for what each figure is.",
        "",
        f"> Load average {report['load_start']:.2f} at the start and {report['load_end']:.2f} at the end of the run "
        f"(this machine has {m['cores']} cores). Anything above ~0.3 means other work shared the machine: "
        "compare ratios rather than absolute times.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| RAM | {m['ram_bytes'] / 2**30:.1f} GiB |" if m.get("ram_bytes") else "| RAM | unknown |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        "| packages | " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + " |",
        "",
    ]
    files = report["files"]
    if files:
        imports = {kind: _num(files[0]["summary"].get(kind, {}).get("import_rss_mib"))
                   for kind in ("parse_floor", "baseline")}
        lines += [
            "## Ingest and its references",
            "",
            "**ingest** is the whole `ingest-pipeline run FILE --lake LAKE --jobs 1 --json` command as a user "
            "runs it, timed from starting the process to its exit (interpreter start-up and imports "
            "included); the floor and the baseline time their work alone, imports excluded. "
            "MB are 10^6 bytes of input; RSS is the peak resident set (`VmHWM`) of the run's process in MiB, "
            "interpreter and imports included; when the ingest runs on two processes, "
            "the parent's plus what the child added (see *Memory of the two-process ingest*), and CPU/wall "
            "counts both processes. Once its imports are done, "
            f"the parse floor holds {imports['parse_floor']} MiB, the baseline {imports['baseline']} MiB.",
            "",
            "| profile | size | steps | ingest s | MB/s | steps/s | CPU/wall | RSS MiB "
            "| floor s | floor MB/s | floor RSS | baseline s | baseline MB/s | baseline RSS |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for entry in files:
            s = entry["summary"]
            ing, floor, base = s.get("ingest") or {}, s.get("parse_floor") or {}, s.get("baseline") or {}
            cores = ing["cpu_seconds"] / ing["seconds"] if ing.get("status") == "ok" and ing.get("seconds") else None
            steps = ing.get("steps") or floor.get("steps")
            lines.append(
                f"| {entry['profile']} | {entry['size']} | {_num(steps)} | {_cell(ing, 'seconds')} "
                f"| {_cell(ing, 'mb_per_s')} | {_cell(ing, 'steps_per_s')} | {_num(cores, 2)} "
                f"| {_cell(ing, 'peak_rss_mib')} | {_cell(floor, 'seconds')} | {_cell(floor, 'mb_per_s')} "
                f"| {_cell(floor, 'peak_rss_mib')} | {_cell(base, 'seconds')} | {_cell(base, 'mb_per_s')} "
                f"| {_cell(base, 'peak_rss_mib')} |"
            )
        lines += [
            "",
            "### Ratios",
            "",
            "Time ratios above 1 mean ingest is slower; `floor / ingest` is ingest's throughput as a share of the "
            "parse floor's.",
            "",
            "| profile | size | time ingest / floor | time ingest / baseline | RSS ingest / floor "
            "| RSS ingest / baseline | throughput: floor / ingest |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for entry in files:
            s = entry["summary"]
            ing, floor, base = s.get("ingest"), s.get("parse_floor"), s.get("baseline")
            lines.append(
                f"| {entry['profile']} | {entry['size']} | {_x(_ratio(ing, floor, 'seconds'))} "
                f"| {_x(_ratio(ing, base, 'seconds'))} | {_x(_ratio(ing, floor, 'peak_rss_mib'))} "
                f"| {_x(_ratio(ing, base, 'peak_rss_mib'))} | {_x(_ratio(floor, ing, 'seconds'))} |"
            )
        split = [e for e in files if (e["summary"].get("ingest") or {}).get("rss_sum_mib")]
        if split:
            lines += [
                "",
                "### Memory of the two-process ingest",
                "",
                "RSS above: the parent's VmHWM plus the child's VmHWM less the pages the child still shared "
                "with its parent when it finished. The child's RSS counts those shared pages (the parent's "
                "imports, mostly) although they take memory once; sharing only ends over time (copy on write), "
                "so the pages shared at the end were shared at the child's peak too, and the figure is an "
                "upper bound. Linux keeps no high-water mark of private pages. A file's pages count as shared "
                "only when the parent maps that file too (`benchmarks/procstatus.py`): pyarrow's library, which "
                "only the child loads, counted as shared whenever another process on the machine had it loaded.",
                "",
                "| profile | size | RSS MiB | parent VmHWM | child VmHWM | child shared at the end | "
                "the two VmHWMs added |",
                "|---|---|--:|--:|--:|--:|--:|",
            ]
            for entry in split:
                ing = entry["summary"]["ingest"]
                lines.append(f"| {entry['profile']} | {entry['size']} | {_cell(ing, 'peak_rss_mib')} "
                             f"| {_cell(ing, 'parent_rss_mib')} | {_cell(ing, 'child_rss_mib')} "
                             f"| {_cell(ing, 'child_shared_mib')} | {_cell(ing, 'rss_sum_mib')} |")
        frames = [e for e in files if "frames_work" in e["summary"]]
        if frames:
            lines += [
                "",
                "### Frames: the unavoidable work, measured alone",
                "",
                "Parse floor plus, for every frame, the work an ingest cannot avoid, in one process: "
                "`pybase64.b64decode(validate=True)` (strict base64), the project's own frame integrity check "
                "(`benchmarks.measure.check_frame`) and writing the decoded bytes to a file, fsynced at the end. "
                "No Pillow. The ingest is the whole command, as above.",
                "",
                "| profile | size | floor s | floor + frames s | ingest s | time ingest / (floor + frames) "
                "| throughput: (floor + frames) / ingest |",
                "|---|---|--:|--:|--:|--:|--:|",
            ]
            for entry in frames:
                s = entry["summary"]
                ing, work = s.get("ingest"), s.get("frames_work")
                lines.append(
                    f"| {entry['profile']} | {entry['size']} | {_cell(s.get('parse_floor'), 'seconds')} "
                    f"| {_cell(work, 'seconds')} "
                    f"| {_cell(ing, 'seconds')} | {_x(_ratio(ing, work, 'seconds'))} "
                    f"| {_x(_ratio(work, ing, 'seconds'))} |"
                )
    if report.get("shapes"):
        lines += render_shapes(report["shapes"])
    if files or report.get("shapes"):
        failures = [(e, kind, s) for e in [*files, *(report.get("shapes") or [])]
                    for kind, s in e["summary"].items() if s.get("status") != "ok"]
        if failures:
            lines += ["", "Runs that did not succeed:", ""]
            for entry, kind, s in failures:
                lines.append(f"- {entry['profile']} {entry['size']} {kind}: {s.get('status')}: "
                             f"{str(s.get('error', ''))[:300]}")
    reads = report["reads"]
    startup = report.get("startup") or {}
    if startup:
        lines += [
            "",
            "## Start-up",
            "",
            "Whole processes, from start to exit: `ingest-pipeline --help`, and `ingest-pipeline run FILE "
            "--lake LAKE --jobs 1 --json` on a 20-step file (5 KB) into a new lake.",
            "",
            "| command | s | RSS MiB |",
            "|---|--:|--:|",
        ]
        for how, label in (("help", "`--help`"), ("run", "`run` on a 20-step file")):
            if how in startup:
                lines.append(f"| {label} | {_cell(startup[how], 'seconds')} | {_cell(startup[how], 'peak_rss_mib')} |")
    lines += ["", "## Targets (issue 5), extended by issue 15", "", "| target | where | measured | met |",
              "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(files, reads, startup, report.get("shapes"))]
    if reads:
        manifest = report["read_manifest"]
        lines += [
            "",
            "## Read side",
            "",
            "First call: the median over fresh processes of the first call in each (one-time costs included). "
            "Warm: the median of the next calls in the same processes.",
            "",
            "| question | how | first call s | warm s | RSS MiB | note |",
            "|---|---|--:|--:|--:|---|",
        ]
        for size in sorted(manifest["lakes"], key=int):
            for how in ("polars", "lake"):
                s = reads.get(f"query {size} {how}")
                if s is None:
                    continue
                note = (f"{s.get('episodes')} episodes, {s.get('environments')} environments"
                        if s.get("status") == "ok" else str(s.get("error", "")))
                what = ("`pl.scan_parquet(…/episodes.parquet, hive_partitioning=True)` → group_by → collect"
                        if how == "polars" else "through `pipeline.Lake`")
                lines.append(f"| open a lake of {size} episodes, mean total reward per environment | {what} "
                             f"| {_cell(s, 'seconds')} | {_cell(s, 'warm_seconds')} | {_cell(s, 'peak_rss_mib')} "
                             f"| {note} |")
        steps = manifest["wanted"]["trajectory_steps"]
        labels = {
            "parquet": "`pq.read_table(agent_steps.parquet, columns=[observation, action, reward])`",
            "numpy": "the same, then to numpy by hand (observations as an (n, 8) array)",
            "lake": "`pipeline.Lake(lake).trajectory(episode_id)`",
        }
        for how in ("parquet", "numpy", "lake"):
            s = reads.get(f"trajectory {how}")
            if s is None:
                continue
            parquet = reads.get("trajectory parquet")
            note = (f"{_x(_ratio(s, parquet, 'seconds'))} / {_x(_ratio(s, parquet, 'warm_seconds'))} the Parquet read"
                    if s.get("status") == "ok" else str(s.get("error", "")))
            lines.append(f"| load one {steps:,}-step trajectory | {labels[how]} | {_cell(s, 'seconds', 2)} "
                         f"| {_cell(s, 'warm_seconds', 2)} | {_cell(s, 'peak_rss_mib')} | {note} |")
    lines += [
        "",
        "## What each figure is",
        "",
        "- **Files**: `benchmarks/generate.py` (deterministic, seeded, streamed) writes each profile once into "
        "`bench-data/`. `frames`: one lander agent, 8 floats, discrete action, scalar reward, a 600x400 PNG frame "
        "on every step (a pool of 50 frames of ~2.5 KB). `teams`: two teams per step with 3-10 unit steps each, "
        "3-component rewards with `reward_mapping`, 8x8 observations, action distributions, health, value "
        "estimates, enemy health lists, custom metrics on some steps. `pixels`: one agent, an 84x84 grayscale "
        "(0-255) Breakout screen per step. Observations are float32 values printed as `json.dumps(obs.tolist())` "
        "does. Added for issue 15: `vector`: `frames` without the frames (~230 B a step, a classic-control run); "
        "`teams_metrics`: the teams battle with 3-decimal numbers and `custom_metrics` on every agent step and "
        "on some units (~4.7 KB a step); `teams_plain`: the same without `custom_metrics`; `teams_nounits`: the "
        "same without unit steps; `long_floats`: one agent, 84x84 float64 values written in full (~140 KB a "
        "step); `frames64`: `frames` with a 64x64 PNG (~1.8 KB) instead; `frames_jpeg`: with an 84x84 JPEG "
        "(quality 90, ~2.1 KB) instead; `random`: a shape drawn from the seed "
        "(`benchmarks.generate.random_shape`: agents, observation shape and number style, reward kind, units, "
        "metrics, frames). Added in session 12: `sparse_frames`: `vector` with a 96x72 PNG on every 20th step "
        "only (measured against the parse floor: not every step has a frame); `swarm`: 32 agents a step, each "
        "with 4 short decimals, an action distribution, health and a value estimate (~5.5 KB a step).",
        "- **ingest**: the whole `ingest-pipeline run FILE --lake LAKE --jobs 1 --json` command, start-up "
        "included: parse, validate, build batches, write zstd Parquet (frames with LZ4, and only when it "
        "shrinks them: PNG and JPEG are compressed already), commit. **CPU/wall** above 1 means more than one "
        "core was busy.",
        "- **parse floor**: `for step in ijson.items(f, 'inference.steps.item', use_float=True)` with the yajl2_c "
        "backend and 256 KiB reads, nothing else: the speed limit of any ijson-based design. Since session 9 an "
        "ingest of a local file parses with orjson (`pipeline/ingestion/fastwalk.py`), and can beat this floor; "
        "it stays the reference issue 15's targets are stated against.",
        "- **baseline**: what a user writes without this tool: `json.load` of the whole file, the same compiled "
        "jsonschema-rs step validator on every step, rows of agent steps (observations flattened, frame "
        "base64-decoded) and of unit steps, `pyarrow.Table.from_pylist` (types inferred). It writes nothing. Its "
        "process may use at most 80% of the memory available when it starts; past that it reports out of memory.",
        "- **read side**: lakes of small single-agent episodes (20-400 steps) over five environments, and one lake "
        "with a single long trajectory, built with `pipeline.ingest` and cached per pipeline version.",
        "",
        "Run it: `make bench-quick` (~100 MB sizes), `make bench` (~100 MB and ~1 GB), or "
        "`python -m benchmarks.run --help` for sizes, profiles and repeats.",
        "",
    ]
    return "\n".join(lines)


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100MB,1GB", help="file sizes per profile (default: 100MB,1GB)")
    parser.add_argument("--quick", action="store_true", help="the 100MB size only (overrides --sizes)")
    parser.add_argument("--profiles", default=",".join(PROFILES), help=f"default: {','.join(PROFILES)}")
    parser.add_argument("--large-profiles", default=",".join(LARGE_PROFILES),
                        help=f"profiles also run at sizes of 1 GB and more (default: {','.join(LARGE_PROFILES)})")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median; at least 3 for the report)")
    parser.add_argument("--read-repeat", type=int, default=15,
                        help="runs per read-side figure (default 15: they take 10-300 ms and swing with the machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(REPO / "bench-data"), help="cache of generated files and lakes")
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="where to write the report")
    parser.add_argument("--lake-sizes", default="100,1000", help="episodes in the read-side lakes")
    parser.add_argument("--trajectory-steps", type=int, default=100_000)
    parser.add_argument("--no-read", action="store_true", help="skip the read side")
    parser.add_argument("--no-files", action="store_true", help="skip the ingest side")
    parser.add_argument("--pipeline", help="import pipeline from this folder instead of the working tree")
    parser.add_argument("--scale", type=int, default=100_000,
                        help="small episodes in the scale section (benchmarks/scale.py; 0 skips it)")
    parser.add_argument("--sampler", default="200000",
                        help="transitions in the sampler section's lakes, e.g. 200000,2000000 (benchmarks/sampler.py; "
                             "0 skips it; lakes and prepared frame stores are cached in the data folder)")
    parser.add_argument("--sampler-seconds", type=float, default=8.0, help="seconds of sampling per run")
    parser.add_argument("--shapes", type=int, default=8,
                        help="random-profile files, one shape each, seeds SEED+1 on (default 8; 0 skips them)")
    parser.add_argument("--shapes-size", default="100MB", help="size of each random-shape file (default 100MB)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    global pipeline_root
    pipeline_root = Path(args.pipeline).absolute() if args.pipeline else REPO
    sizes = [parse_size(s) for s in (["100MB"] if args.quick else _parse_list(args.sizes))]
    profiles = _parse_list(args.profiles)
    for profile in profiles:
        if profile not in PROFILES:
            parser.error(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    data = Path(args.data).absolute()
    scratch = data / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    shown = ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
    report: dict[str, Any] = {
        "command": " ".join(shown), "repeat": args.repeat, "read_repeat": max(args.read_repeat, 3),
        "machine": machine(), "load_start": load_average(),
        "files": [], "reads": {}, "read_manifest": None, "startup": {},
    }
    large = _parse_list(args.large_profiles)
    compile_checkout(pipeline_root)
    if not args.no_startup:
        log("start-up")
        runs = bench_startup(data, repeat=max(args.repeat, 5), scratch=scratch)
        report["startup"] = {how: summarise(v) for how, v in runs.items()}
    if not args.no_files:
        for size in sizes:
            for profile in profiles:
                if size >= 10**9 and profile not in large:
                    continue
                path, info = episode_file(data, profile, size, args.seed)
                log(f"{profile} {format_size(size)}: {info['bytes'] / 1e6:.1f} MB, {args.repeat} rounds")
                runs = bench_file(path, profile, repeat=args.repeat, scratch=scratch, seed=args.seed)
                report["files"].append({**info, "runs": runs, "summary": {k: summarise(v) for k, v in runs.items()}})
    if args.shapes and not args.no_files:
        report["shapes"] = bench_shapes(data, count=args.shapes, size=parse_size(args.shapes_size),
                                        first_seed=args.seed + 1, repeat=args.repeat, scratch=scratch)
    if not args.no_read:
        manifest = read_lakes(data, lake_sizes=[int(n) for n in _parse_list(args.lake_sizes)],
                              trajectory_steps=args.trajectory_steps, seed=args.seed)
        report["read_manifest"] = manifest
        log("read side")
        runs = bench_reads(manifest, repeat=max(args.read_repeat, 3))
        report["read_runs"] = runs
        report["reads"] = {name: summarise(v) for name, v in runs.items()}
    if args.scale:
        from benchmarks import scale

        log(f"scale: {args.scale} small episodes")
        report["scale"] = scale.run(args.scale, data=data, seed=args.seed, repeat=max(args.read_repeat, 3),
                                    jobs=os.cpu_count() or 1)
    sampler_sizes = [int(n) for n in _parse_list(args.sampler) if int(n) > 0]
    if sampler_sizes:
        from benchmarks import sampler

        report["sampler"] = sampler.run(sampler_sizes, data=data, repeat=args.repeat, log=log,
                                        seconds=args.sampler_seconds)
    report["load_end"] = load_average()
    text = render(report)
    if report.get("scale"):
        from benchmarks import scale

        text += "\n" + scale.render(report["scale"])
    if report.get("sampler"):
        from benchmarks import sampler

        text += "\n" + sampler.render(report["sampler"])
    Path(args.output).write_text(text, encoding="utf-8")
    (data / "last-run.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(text)
    log(f"wrote {args.output} and {data / 'last-run.json'}")
    shutil.rmtree(scratch, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
