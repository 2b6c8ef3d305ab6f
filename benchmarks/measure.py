"""One measurement, in this process, reported as one JSON line on standard output.

``benchmarks/run.py`` starts a fresh interpreter for every run, so that the peak RSS reported
(the high-water mark ``VmHWM`` of this process, interpreter and imports included, plus what the
child of a two-process ingest added) is that run's alone::

    python -m benchmarks.measure ingest FILE --lake DIR     # the whole `ingest-pipeline run` command
    python -m benchmarks.measure library FILE --lake DIR    # pipeline.ingest in this process
    python -m benchmarks.measure parse_floor FILE           # bare ijson (yajl2_c) loop over the steps
    python -m benchmarks.measure baseline FILE              # json.load + validate + Table.from_pylist
    python -m benchmarks.measure frames_work FILE           # parse floor + the work frames cannot avoid
    python -m benchmarks.measure startup FILE --how help|run  # `--help`, or `run` on a tiny FILE
    python -m benchmarks.measure lake_query LAKE [--how polars|lake]
    python -m benchmarks.measure trajectory LAKE --episode ID --how parquet|numpy|lake

``ingest`` and ``startup`` time a whole command as a user runs it, from starting the process to its
exit (interpreter start-up and imports included; ``benchmarks/command.py`` runs ``cli.py`` and
records its memory). For the others, wall and CPU time cover the work only, not starting Python or
importing modules; ``import_rss_mib`` is the peak RSS once the imports are done. Reads
(``lake_query``, ``trajectory``) report the first call (``seconds``) and the median of a few more
calls in the same process (``warm_seconds``).
Every function here can also be called directly (the smoke test does): it returns the same dict
it would print.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.procstatus import shared_kib, status_kib

STEPS_PREFIX = "inference.steps.item"
# Bytes ijson reads per call; the pipeline reads the same amount, so the floor is like for like.
READ_SIZE = 256 * 1024
HIVE_COLUMNS = ("environment", "episode_id")
TRAJECTORY_COLUMNS = ["observation", "action", "reward"]
# Read measurements repeat the call this many times after the first, in the same process.
WARM_RUNS = 5
FILE_KINDS = ("ingest", "library", "parse_floor", "baseline", "frames_work", "startup")
KINDS = (*FILE_KINDS, "lake_query", "trajectory")


class MeasurementError(Exception):
    """The measured operation did not do what it should (an ingest that did not ingest, ...)."""


def _rss_mib() -> float:
    """Peak RSS of this process in MiB.

    On Linux ``ru_maxrss`` survives ``execve``: a fresh interpreter started by a 50 MiB parent reports
    at least 50 MiB. ``VmHWM`` belongs to the process image, so it is read first.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _ChildMemory:
    """What the two-process ingest's child held, reported by the child itself as it finishes.

    ``EpisodeTabulator.finish`` is wrapped (before the fork, so the child inherits the wrapper)
    to write the child's VmHWM and the pages it still shares with its parent to a file.
    Benchmark instrumentation only: the pipeline itself is not changed.
    """

    def __init__(self) -> None:
        from pipeline.ingestion import builder

        fd, name = tempfile.mkstemp(prefix="child-memory-")
        os.close(fd)
        self._record = Path(name)
        self._parent = os.getpid()
        self._class = builder.EpisodeTabulator
        original = self._original = self._class.finish
        record, parent = self._record, self._parent

        def finish(tabulator: Any, facts: Any) -> Any:
            built = original(tabulator, facts)
            if os.getpid() != parent:
                record.write_text(json.dumps({"hwm_kib": status_kib(b"VmHWM:"), "shared_kib": shared_kib()}))
            return built

        self._class.finish = finish  # type: ignore[method-assign, assignment]

    def fields(self) -> dict[str, float]:
        """``child_rss_mib`` and ``child_shared_mib``, or nothing if no child finished."""
        self._class.finish = self._original  # type: ignore[method-assign]
        try:
            data = json.loads(self._record.read_text() or "{}")
        finally:
            self._record.unlink(missing_ok=True)
        if not data:
            return {}
        return {"child_rss_mib": data["hwm_kib"] / 1024, "child_shared_mib": data["shared_kib"] / 1024}


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class _Clock:
    """Started once the imports are done; :meth:`stop` ends the timed part."""

    def __init__(self) -> None:
        self.import_rss_mib = _rss_mib()
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds()
        self.seconds = self.cpu_seconds = 0.0

    def stop(self) -> _Clock:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = _cpu_seconds() - self._cpu
        return self

    def result(self, kind: str, target: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": kind, "status": "ok", "target": os.fspath(target),
            "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
            "peak_rss_mib": _rss_mib(), "import_rss_mib": self.import_rss_mib,
        }
        out.update(fields)
        size = out.get("input_bytes")
        if size is not None and self.seconds > 0:
            out["mb_per_s"] = size / 1e6 / self.seconds
        if out.get("steps") is not None and self.seconds > 0:
            out["steps_per_s"] = out["steps"] / self.seconds
        return out


def _command(argv: list[str]) -> tuple[subprocess.CompletedProcess[bytes], float, dict[str, int]]:
    """Run ``ingest-pipeline ARGV...`` (``cli.py`` through ``benchmarks/command.py``) as a new process.

    Returns the finished process, its wall time from start to exit and the memory it recorded (see
    ``benchmarks/command.py``).
    """
    fd, record = tempfile.mkstemp(prefix="command-memory-")
    os.close(fd)
    # As an installed command runs: with the bytecode pip compiled at install time (benchmarks/run.py
    # compiles the checkout once), even where PYTHONDONTWRITEBYTECODE asks every run to compile anew.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.command", record, *argv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = process.communicate()
        seconds = time.perf_counter() - started
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        memory: dict[str, int] = {}
        for line in Path(record).read_text().split():
            key, _, value = line.partition("=")
            memory[key] = int(value)
    finally:
        os.unlink(record)
    return done, seconds, memory


def ingest(path: str | os.PathLike[str], lake: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole ``ingest-pipeline run FILE --lake LAKE --jobs 1 --json`` command, start-up included.

    ``lake`` should be new and empty. Wall time runs from starting the process to its exit; CPU time
    is the process's and its forked child's; RSS as for :func:`library` (the parent's peak, plus
    what a forked child added).
    """
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done, seconds, memory = _command(["run", os.fspath(path), "--lake", os.fspath(lake), "--jobs", "1", "--json"])
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.decode().strip().splitlines()
    try:
        line = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise MeasurementError(f"the command printed no result (exit status {done.returncode}): "
                               f"{done.stderr.decode()[-400:]}") from None
    if line.get("status") != "ingested":
        raise MeasurementError(f"ingest reported {line.get('status')!r}: {line.get('error')}")
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    parent = memory.get("hwm_kib", 0) / 1024
    out: dict[str, Any] = {
        "kind": "ingest", "status": "ok", "target": os.fspath(path), "seconds": seconds, "cpu_seconds": cpu,
        "peak_rss_mib": parent, "import_rss_mib": None, "input_bytes": os.path.getsize(path),
        "steps": line["steps"], "agent_steps": line["agent_steps"], "unit_steps": line["unit_steps"],
        "lake_bytes": sum(p.stat().st_size for p in Path(lake).rglob("*.parquet")),
        "command": "ingest-pipeline run FILE --lake LAKE --jobs 1 --json",
    }
    out["mb_per_s"] = out["input_bytes"] / 1e6 / seconds
    out["steps_per_s"] = out["steps"] / seconds
    if "child_hwm_kib" in memory:
        child, shared = memory["child_hwm_kib"] / 1024, memory["child_shared_kib"] / 1024
        out.update(parent_rss_mib=parent, child_rss_mib=child, child_shared_mib=shared,
                   rss_sum_mib=parent + child, peak_rss_mib=parent + child - shared)
    return out


def startup(path: str | os.PathLike[str], how: str = "run") -> dict[str, Any]:
    """``ingest-pipeline --help`` (``how="help"``), or ``run`` on a tiny ``path`` into a new lake, whole."""
    lake = tempfile.mkdtemp(prefix="startup-lake-")
    try:
        argv = ["--help"] if how == "help" else ["run", os.fspath(path), "--lake", lake, "--jobs", "1", "--json"]
        done, seconds, memory = _command(argv)
    finally:
        import shutil

        shutil.rmtree(lake, ignore_errors=True)
    if done.returncode != 0:
        raise MeasurementError(f"exit status {done.returncode}: {done.stderr.decode()[-400:]}")
    return {"kind": "startup", "status": "ok", "target": os.fspath(path), "how": how, "seconds": seconds,
            "cpu_seconds": None, "peak_rss_mib": memory.get("hwm_kib", 0) / 1024, "import_rss_mib": None,
            "input_bytes": os.path.getsize(path)}


def library(path: str | os.PathLike[str], lake: str | os.PathLike[str]) -> dict[str, Any]:
    """``pipeline.ingest`` of one file into ``lake`` (new and empty), in this process, imports excluded."""
    from pipeline import ingest as run_ingest

    child = _ChildMemory()
    clock = _Clock()
    result = run_ingest(path, lake=lake)
    clock.stop()
    if result.status != "ingested":
        raise MeasurementError(f"ingest reported {result.status!r}: {result.error}")
    lake_bytes = sum(p.stat().st_size for p in Path(lake).rglob("*.parquet"))
    out = clock.result("library", path, input_bytes=os.path.getsize(path), steps=result.steps,
                       agent_steps=result.agent_steps, unit_steps=result.unit_steps, lake_bytes=lake_bytes)
    memory = child.fields()
    if memory:
        # Two processes: the parent's peak plus what the child added (an upper bound, see run.py).
        parent = out["parent_rss_mib"] = out["peak_rss_mib"]
        out["rss_sum_mib"] = parent + memory["child_rss_mib"]
        out["peak_rss_mib"] = parent + memory["child_rss_mib"] - memory["child_shared_mib"]
        out.update(memory)
    return out


def parse_floor(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The speed limit of an ijson design: build every step as Python objects, do nothing with them."""
    import ijson

    items = ijson.get_backend("yajl2_c").items
    clock = _Clock()
    steps = 0
    with open(path, "rb") as f:
        for _ in items(f, STEPS_PREFIX, use_float=True, buf_size=READ_SIZE):
            steps += 1
    clock.stop()
    return clock.result("parse_floor", path, input_bytes=os.path.getsize(path), steps=steps)


def check_frame(data: bytes) -> None:
    """The project's own integrity check of one decoded frame (raises if the frame is refused).

    The one place the frames reference names it: :func:`pipeline.ingestion.images.check_image`, the
    structure walk every frame gets at ingest (PNG chunks and CRCs through IEND, JPEG segments through
    EOI), exactly as ``rules.decode_image`` calls it.
    """
    from pipeline.ingestion.images import ImageDamaged, check_image
    from pipeline.ingestion.rules import MAX_IMAGE_PIXELS

    try:
        check_image(data, max_pixels=MAX_IMAGE_PIXELS)
    except ImageDamaged as exc:
        raise MeasurementError(f"a frame is refused: {exc}") from None


def frames_work(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse floor plus the work no design avoids for frames, in one process.

    For every frame: ``pybase64.b64decode(validate=True)`` (strict base64), the project's own
    integrity check (:func:`check_frame`), and writing the decoded bytes to a file, fsynced at
    the end, as the ingest must store them. No Pillow (unless a frame is not a PNG).
    """
    import ijson
    import pybase64

    import pipeline.ingestion.images  # noqa: F401 - check_frame's imports, done before the clock starts

    items = ijson.get_backend("yajl2_c").items
    out_fd, out_path = tempfile.mkstemp(prefix="frames-work-")
    clock = _Clock()
    steps = frames = frame_bytes = 0
    try:
        with open(path, "rb") as f, os.fdopen(out_fd, "wb", buffering=1 << 20) as out:
            for step in items(f, STEPS_PREFIX, use_float=True, buf_size=READ_SIZE):
                steps += 1
                text = step.get("image")
                if text is not None:
                    data = pybase64.b64decode(text, validate=True)
                    check_frame(data)
                    out.write(data)
                    frames += 1
                    frame_bytes += len(data)
            out.flush()
            os.fsync(out.fileno())
        clock.stop()
    finally:
        os.unlink(out_path)
    return clock.result("frames_work", path, input_bytes=os.path.getsize(path), steps=steps, frames=frames,
                        frame_bytes=frame_bytes)


def baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a user writes without this tool: load the whole file, validate each step, build Arrow tables.

    Uses the same compiled step validator (jsonschema-rs over the project's schema). Rows are agent
    steps joined with their step (observations flattened), plus a table of unit steps; the frame
    of a step is base64-decoded into its rows but not checked. Types are inferred by
    ``Table.from_pylist``, as a user would; nothing is written to disk.
    """
    import jsonschema_rs
    import pyarrow as pa
    import pybase64

    from pipeline.ingestion.schema import part_schema

    validator = jsonschema_rs.validator_for(part_schema("step"))
    clock = _Clock()
    with open(path, "rb") as f:
        document = json.load(f)
    rows: list[dict[str, Any]] = []
    unit_rows: list[dict[str, Any]] = []
    for index, step in enumerate(document["inference"]["steps"]):
        if not validator.is_valid(step):
            raise MeasurementError(f"step {index} is not valid")
        number = step["number"]
        image = step.get("image")
        image_bytes = pybase64.b64decode(image, validate=True) if image is not None else None
        for agent_step in step.get("agent_steps") or ():
            agent = agent_step["agent"]
            observation = agent_step["observation_space"]
            if observation and isinstance(observation[0], list):
                shape = [len(observation), len(observation[0])]
                observation = [value for row in observation for value in row]
            else:
                shape = [len(observation)]
            rows.append({
                "step": number, "image": image_bytes, "agent": agent, "action": agent_step["action"],
                "reward": agent_step.get("reward"), "rewards": agent_step.get("rewards"),
                "observation": observation, "observation_shape": shape,
                "action_distribution": agent_step.get("action_distribution"),
                "health": agent_step.get("health"), "value_estimate": agent_step.get("value_estimate"),
                "predicted_reward": agent_step.get("predicted_reward"),
                "enemy_agent_health": agent_step.get("enemy_agent_health"),
                "enemy_unit_health": agent_step.get("enemy_unit_health"),
                "custom_metrics": _json_or_none(agent_step.get("custom_metrics")),
            })
            for unit_step in agent_step.get("unit_steps") or ():
                unit_rows.append({
                    "step": number, "agent": agent, "unit": unit_step["unit"], "action": unit_step["action"],
                    "reward": unit_step.get("reward"), "rewards": unit_step.get("rewards"),
                    "action_distribution": unit_step.get("action_distribution"),
                    "health": unit_step.get("health"), "value_estimate": unit_step.get("value_estimate"),
                    "predicted_reward": unit_step.get("predicted_reward"),
                    "custom_metrics": _json_or_none(unit_step.get("custom_metrics")),
                })
    steps = len(document["inference"]["steps"])
    agent_table = pa.Table.from_pylist(rows)
    unit_table = pa.Table.from_pylist(unit_rows) if unit_rows else None
    clock.stop()
    return clock.result("baseline", path, input_bytes=os.path.getsize(path), steps=steps,
                        agent_steps=agent_table.num_rows, unit_steps=unit_table.num_rows if unit_table else 0,
                        arrow_bytes=agent_table.nbytes + (unit_table.nbytes if unit_table else 0))


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _reads(kind: str, target: str | os.PathLike[str], how: str, load: Callable[[], Any],
           describe: Callable[[Any], dict[str, Any]], warm_runs: int) -> dict[str, Any]:
    """Time ``load()`` once as a fresh process's first call (``seconds``), then ``warm_runs`` more times.

    The first call pays one-time costs a user pays too (thread pools, caches); the median of the
    warm calls (``warm_seconds``) is the steadier figure for comparing two ways of reading.
    """
    clock = _Clock()
    value = load()
    clock.stop()
    warm = []
    for _ in range(warm_runs):
        started = time.perf_counter()
        load()
        warm.append(time.perf_counter() - started)
    return clock.result(kind, target, how=how, warm_seconds=statistics.median(warm) if warm else None,
                        **describe(value))


def lake_query(lake: str | os.PathLike[str], how: str = "polars", *, warm_runs: int = WARM_RUNS) -> dict[str, Any]:
    """Open a lake and compute the mean total reward per environment over its episodes.

    ``how``: ``polars`` (``pl.scan_parquet`` of the episodes files with hive partitioning) or
    ``lake`` (``pipeline.Lake(lake).episodes()``).
    """
    import polars as pl

    def mean_reward(episodes: pl.LazyFrame) -> pl.DataFrame:
        return (
            episodes.group_by("environment")
            .agg(pl.len().alias("episodes"), pl.col("total_reward").mean().alias("mean_total_reward"))
            .sort("environment")
            .collect()
        )

    if how == "polars":
        pattern = os.path.join(lake, "environment=*", "episode_id=*", "episodes.parquet")
        hive = {column: pl.String for column in HIVE_COLUMNS}

        def load() -> pl.DataFrame:
            return mean_reward(pl.scan_parquet(pattern, hive_partitioning=True, hive_schema=hive))
    elif how == "lake":
        from pipeline import Lake

        def load() -> pl.DataFrame:
            return mean_reward(Lake(lake).episodes())
    else:
        raise ValueError(f"unknown way to query a lake: {how!r}")
    return _reads("lake_query", lake, how, load,
                  lambda table: {"episodes": int(table["episodes"].sum()), "environments": table.height},
                  warm_runs)


def agent_steps_file(lake: str | os.PathLike[str], episode_id: str) -> str:
    """The ``agent_steps.parquet`` file of one episode of ``lake``."""
    found = glob.glob(os.path.join(glob.escape(os.fspath(lake)), "environment=*",
                                   f"episode_id={episode_id}", "agent_steps.parquet"))
    if len(found) != 1:
        raise MeasurementError(f"episode {episode_id} not found once in {lake} (found {len(found)})")
    return found[0]


def trajectory(lake: str | os.PathLike[str], episode_id: str, how: str, *,
               warm_runs: int = WARM_RUNS) -> dict[str, Any]:
    """Load one episode's observation/action/reward columns.

    ``how``: ``parquet`` (``pyarrow.parquet.read_table`` of the three columns: the bar),
    ``numpy`` (the same read turned into numpy arrays by hand, observations as an (n, k) array),
    ``lake`` (``pipeline.Lake(lake).trajectory(episode_id)``: numpy arrays through the library).
    """
    import pyarrow.dataset  # noqa: F401 - read_table imports it on first use: a module import, not reading
    import pyarrow.parquet as pq

    def shape(value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            observations, steps = value["observation"], len(value["observation"])
        else:
            observations, steps = getattr(value, "observations", None), len(value)
        return {"episode_id": episode_id, "steps": steps, "returned": type(value).__name__,
                "shape": list(observations.shape) if observations is not None else None}

    if how in ("parquet", "numpy"):
        path = agent_steps_file(lake, episode_id)

        def load() -> Any:
            table = pq.read_table(path, columns=TRAJECTORY_COLUMNS)
            if how == "parquet":
                return table
            observations = table.column("observation").combine_chunks()
            return {
                "observation": observations.flatten().to_numpy().reshape(len(observations), -1),
                "action": table.column("action").to_numpy(),
                "reward": table.column("reward").to_numpy(),
            }

        if how == "parquet":
            return _reads("trajectory", lake, how, load,
                          lambda table: {"episode_id": episode_id, "steps": table.num_rows,
                                         "shape": [table.num_rows], "returned": "Table"}, warm_runs)
        return _reads("trajectory", lake, how, load, shape, warm_runs)
    if how == "lake":
        from pipeline import Lake

        return _reads("trajectory", lake, how, lambda: Lake(lake).trajectory(episode_id), shape, warm_runs)
    raise ValueError(f"unknown way to load a trajectory: {how!r}")


def _limit_memory(mib: int | None) -> None:
    """Cap this process's address space so an over-large baseline fails here, not in the OOM killer."""
    if mib:
        limit = mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "ArrowMemoryError" or "bad_alloc" in str(exc)


def run(kind: str, target: str, *, lake: str | None = None, episode: str | None = None,
        how: str | None = None) -> dict[str, Any]:
    """Dispatch one measurement by name (what the command line does)."""
    if kind in ("ingest", "library"):
        if lake is None:
            raise ValueError(f"{kind} needs --lake")
        return ingest(target, lake) if kind == "ingest" else library(target, lake)
    if kind == "startup":
        return startup(target, how or "run")
    if kind == "parse_floor":
        return parse_floor(target)
    if kind == "baseline":
        return baseline(target)
    if kind == "frames_work":
        return frames_work(target)
    if kind == "lake_query":
        return lake_query(target, how or "polars")
    if kind == "trajectory":
        if episode is None:
            raise ValueError("trajectory needs --episode")
        return trajectory(target, episode, how or "numpy")
    raise ValueError(f"unknown measurement {kind!r}; choose from {', '.join(KINDS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmark measurement and print it as JSON.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("target", help="the episode file, or the lake for lake_query and trajectory")
    parser.add_argument("--lake", help="the (new) lake to ingest into")
    parser.add_argument("--episode", help="episode id, for trajectory")
    parser.add_argument("--how", help="polars|lake for lake_query; parquet|numpy|lake for trajectory; "
                                      "help|run for startup")
    parser.add_argument("--memory-limit-mib", type=int, help="cap the address space of this process")
    args = parser.parse_args(argv)
    _limit_memory(args.memory_limit_mib)
    try:
        result = run(args.kind, args.target, lake=args.lake, episode=args.episode, how=args.how)
    except Exception as exc:  # reported, not raised: the runner records it and carries on
        status = "out_of_memory" if _is_out_of_memory(exc) else "failed"
        result = {"kind": args.kind, "status": status, "target": args.target,
                  "error": f"{type(exc).__name__}: {exc}", "peak_rss_mib": _rss_mib()}
    print(json.dumps(result), flush=True)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
