"""Crash-safety, fault injection, concurrency, gc and check: the lake holds only whole episodes."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.lake.commit
import pipeline.lake.maintenance
import pipeline.lake.writer
from pipeline import ingest
from pipeline.ingestion.tabulate import SMALL_ROWS, SMALL_ROWS_VARIABLE
from pipeline.lake.check import check
from pipeline.lake.layout import OWNER_LOCK, STAGING, list_episodes
from pipeline.lake.maintenance import gc
from pipeline.lake.tables import STEPS
from tests.helpers import episode, lake_snapshot, staging_leftovers, write_json

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")


def big_episode(path: Path, steps: int, *, seed: int = 0, environment: str = "Kill-v0") -> Path:
    """A multi-agent episode with unit steps, written step by step (a few MB per thousand steps)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"training": {"environment": environment, "algorithm": "MAPPO", "iterations": 5,
                                         "reward_mapping": ["a", "b"]}})[:-1])
        f.write(', "inference": {"steps": [')
        for i in range(steps):
            agents = [{
                "agent": f"team{a}", "action": rng.randrange(6), "rewards": [rng.random(), rng.random()],
                "observation_space": [[rng.random() for _ in range(8)] for _ in range(8)],
                "unit_steps": [{"unit": f"u{u}", "action": u, "rewards": [0.5, rng.random()]} for u in range(5)],
            } for a in range(2)]
            f.write(("," if i else "") + json.dumps({"number": i, "agent_steps": agents}))
        f.write("]}}")
    return path


def episode_is_whole(location) -> bool:
    """Every table is there and its row count is what the episode records."""
    counts = pq.read_table(location.table("episodes")).to_pylist()[0]
    rows = {t: pq.ParquetFile(location.table(t)).metadata.num_rows for t in TABLES}
    return (rows["episodes"] == 1 and rows["steps"] == counts["length"] and rows["agent_steps"] == counts["agent_steps"]
            and rows["unit_steps"] == counts["unit_steps"] and rows["episode_agents"] == counts["agents"])


INGEST_SCRIPT = "import sys; from pipeline import ingest; r = ingest(sys.argv[1], lake=sys.argv[2]); print(r.status)"


def _ingest_process(path: Path, lake: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", INGEST_SCRIPT, str(path), str(lake)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_whole_episode_or_nothing(tmp_path):
    source = big_episode(tmp_path / "big.json", 3000)
    lake = tmp_path / "lake"
    started = time.monotonic()
    full = _ingest_process(source, tmp_path / "timing-lake")
    assert full.wait(timeout=300) == 0
    duration = time.monotonic() - started
    rng = random.Random(42)
    outcomes = {"whole": 0, "nothing": 0}
    for trial in range(26):
        # Spread kills over the whole run, start-up and commit included; the last trials aim at the end.
        delay = duration * (rng.uniform(0.02, 1.05) if trial < 20 else rng.uniform(0.85, 1.0))
        process = _ingest_process(source, lake)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        locations = list_episodes(lake)
        assert len(locations) <= 1
        if locations:
            assert episode_is_whole(locations[0])
            outcomes["whole"] += 1
        else:
            outcomes["nothing"] += 1
        report = check(lake, deep=True) if lake.exists() else None
        assert report is None or report.ok, report.problems
        removed = gc(lake)
        assert staging_leftovers(lake) == [], "gc left a dead ingest's staging folder"
        assert removed.running == []
        if locations:  # start the next trial from an empty lake so both outcomes stay possible
            for location in locations:
                pipeline.lake.maintenance.remove_episodes(lake, [location])
    assert outcomes["nothing"] > 0


def _fail(exc_errno: int):
    def raiser(*args, **kwargs):
        raise OSError(exc_errno, os.strerror(exc_errno))
    return raiser


# Where an ingest can hit the disk: each is made to fail with ENOSPC and with EIO.
STAGES = {
    "staging-mkdir": (pipeline.lake.commit.Path, "mkdir"),
    "parquet-write": (pipeline.lake.writer.EpisodeWriter, "_write"),  # through pyarrow
    "small-parquet-write": (pipeline.lake.writer.EpisodeWriter, "_write_columns"),  # a small episode's
    "fsync": (pipeline.lake.writer, "fsync_path"),
    "rename": (pipeline.lake.commit.os, "rename"),
}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_disk_failure_at_each_stage_leaves_lake_unchanged(monkeypatch, tmp_path, stage, code):
    lake = tmp_path / "lake"
    assert ingest(write_json(tmp_path / "seed.json", episode(steps=2)), lake=lake).status == "ingested"
    before = lake_snapshot(lake)
    target, name = STAGES[stage]
    monkeypatch.setattr(target, name, _fail(code))
    # The episode is small: written by pyarrow only when the small writer is turned off, and the other way round.
    monkeypatch.setenv(SMALL_ROWS_VARIABLE, "0" if stage == "parquet-write" else str(SMALL_ROWS))
    result = ingest(write_json(tmp_path / "new.json", episode(steps=30, environment="Other-v1")), lake=lake)
    monkeypatch.undo()
    assert result.status == "failed"
    assert os.strerror(code) in str(result.error)
    assert lake_snapshot(lake) == before
    assert staging_leftovers(lake) == []


def test_eight_processes_and_a_reader_never_see_partial_episodes(tmp_path):
    distinct = [big_episode(tmp_path / f"d{i}.json", 150 + 40 * i, seed=i, environment=f"Env{i % 3}") for i in range(5)]
    sources = distinct + distinct[:3]  # 8 ingests, three of them duplicates of others
    lake = tmp_path / "lake"
    stop = threading.Event()
    seen_partial: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for location in list_episodes(lake):
                if not episode_is_whole(location):
                    seen_partial.append(location.episode_id)
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    processes = [_ingest_process(path, lake) for path in sources]
    statuses = [p.communicate(timeout=300)[0].decode().strip() for p in processes]
    stop.set()
    thread.join()
    assert seen_partial == []
    assert reads > 0
    assert sorted(statuses).count("ingested") == 5
    assert sorted(statuses).count("exists") == 3
    assert len(list_episodes(lake)) == 5
    assert check(lake, deep=True).ok
    assert staging_leftovers(lake) == []


def test_gc_keeps_a_running_ingest_and_removes_a_dead_one(tmp_path):
    lake = tmp_path / "lake"
    source = big_episode(tmp_path / "slow.json", 200)
    read_fd, write_fd = os.pipe()
    script = ("import sys, os; from pipeline import ingest; "
              "r = ingest(os.fdopen(int(sys.argv[1]), 'rb'), lake=sys.argv[2], name='slow.json'); print(r.status)")
    process = subprocess.Popen([sys.executable, "-c", script, str(read_fd), str(lake)], cwd=ROOT, pass_fds=(read_fd,),
                               stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(read_fd)
    data = source.read_bytes()
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(data[: len(data) // 2])
        pipe.flush()
        deadline = time.monotonic() + 60
        # Two: a stream's ingest holds its episode's folder and one keeping what the fast walk read (keptcopy).
        while sum((folder / OWNER_LOCK).exists() for folder in _staging(lake)) < 2:
            assert time.monotonic() < deadline, "the ingest never created its staging folder"
            time.sleep(0.05)
        dead = lake / STAGING / "19700101T000000-host-1-deadbeef"
        (dead / "episode").mkdir(parents=True)
        (dead / OWNER_LOCK).write_text("host 1\n")
        report = gc(lake)
        assert report.removed == [dead]
        assert len(report.running) == 2
        assert all((folder / OWNER_LOCK).exists() for folder in report.running)
        pipe.write(data[len(data) // 2:])
    assert process.communicate(timeout=120)[0].decode().strip() == "ingested"
    assert check(lake, deep=True).ok


def test_gc_removes_a_dead_ingest_even_while_its_writer_opens_a_file(tmp_path, monkeypatch):
    """A killed two-process ingest: its lock is free, but its writer process may still open a table file
    while gc removes the folder (this left the folder behind, reported removed). gc renames the folder
    out of the writer's way first: the writer's file fails to open, and the folder is gone."""
    from pipeline.lake import maintenance

    lake = tmp_path / "lake"
    dead = lake / STAGING / "19700101T000000-host-1-deadbeef"
    (dead / "episode").mkdir(parents=True)
    (dead / "episode" / "agent_steps.parquet").write_bytes(b"PAR1")
    (dead / OWNER_LOCK).write_text("host 1\n")
    real_rmtree, opened = shutil.rmtree, []

    def rmtree_while_the_writer_opens_a_file(path, ignore_errors=False):
        try:
            with open(dead / "episode" / "steps.parquet", "wb"):  # the writer's path to its next table
                opened.append(True)
        except FileNotFoundError:
            opened.append(False)
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(maintenance.shutil, "rmtree", rmtree_while_the_writer_opens_a_file)
    report = gc(lake)
    assert opened == [False]
    assert (report.removed, report.running) == ([dead], [])
    assert list((lake / STAGING).iterdir()) == []


def _staging(lake: Path) -> list[Path]:
    staging = lake / STAGING
    return list(staging.iterdir()) if staging.exists() else []


def test_gc_older_than_spares_recent_leftovers(tmp_path):
    lake = tmp_path / "lake"
    leftover = lake / STAGING / "x"
    leftover.mkdir(parents=True)
    (leftover / OWNER_LOCK).write_text("")
    assert gc(lake, older_than=3600).recent == [leftover]
    assert gc(lake).removed == [leftover]


@pytest.fixture
def committed(tmp_path):
    lake = tmp_path / "lake"
    doc = episode(steps=4)
    doc["inference"]["steps"][0]["agent_steps"][0]["unit_steps"] = [{"unit": "u", "action": 1, "reward": 1}]
    result = ingest(write_json(tmp_path / "ok.json", doc), lake=lake)
    assert check(lake, deep=True).ok
    return lake, list_episodes(lake)[0], result


def test_check_reports_a_missing_table(committed):
    lake, location, _ = committed
    location.table("steps").unlink()
    report = check(lake)
    assert [p.message for p in report.problems] == ["missing table"]


def test_check_reports_an_unreadable_table(committed):
    lake, location, _ = committed
    path = location.table("agent_steps")
    path.write_bytes(path.read_bytes()[:40])
    report = check(lake)
    assert len(report.problems) == 1 and "cannot be read as Parquet" in report.problems[0].message


def test_check_reports_row_counts_that_disagree(committed):
    lake, location, _ = committed
    table = pq.read_table(location.table("steps"))
    pq.write_table(table.slice(0, 2), location.table("steps"))
    report = check(lake)
    assert [p.message for p in report.problems] == ["holds 2 rows but the episode records length=4"]


def test_deep_check_reports_duplicate_step_numbers(committed):
    lake, location, _ = committed
    steps = pq.read_table(location.table("steps"))
    same_number = pa.array([0] * steps.num_rows, pa.int64())
    pq.write_table(steps.set_column(0, STEPS.field("step"), same_number), location.table("steps"))
    assert check(lake).ok  # the shallow check only reads metadata and row counts
    assert "step numbers are not unique" in [p.message for p in check(lake, deep=True).problems]


def test_check_reports_stray_files(committed):
    lake, location, _ = committed
    (location.path / "notes.txt").write_text("hi")
    (lake / "random.parquet").write_text("x")
    messages = sorted(p.message for p in check(lake).problems)
    assert messages == ["unexpected entry at the top of the lake", "unexpected file in an episode folder"]
