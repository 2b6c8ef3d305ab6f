"""The two-process ingest (pipeline/split.py) behaves exactly like the single-process one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import full_episode, write_json
from test_bad_input import BUGS as KNOWN_LIMITATIONS
from test_reliability import big_episode, episode_is_whole

from pipeline import ingest, validate
from pipeline.integrity import check
from pipeline.lake import gc, list_episodes

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted(p for p in (ROOT / "tests" / "data" / "bad").iterdir() if p.name not in KNOWN_LIMITATIONS)
TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")


def _tables(lake: Path) -> dict[str, object]:
    (location,) = list_episodes(lake)
    tables = {t: pq.read_table(location.table(t)) for t in TABLES}
    tables["episodes"] = tables["episodes"].drop(["ingested_at"])
    return tables


@pytest.mark.parametrize("make", [full_episode, lambda: None], ids=["full", "multi-agent-units"])
def test_both_paths_write_identical_tables(tmp_path, make):
    document = make()
    path = write_json(tmp_path / "e.json", document) if document else big_episode(tmp_path / "e.json", 400)
    single = ingest(path, lake=tmp_path / "one", parallel=False)
    split = ingest(path, lake=tmp_path / "two", parallel=True)
    assert single.status == split.status == "ingested"
    assert (single.episode_id, single.steps, single.agent_steps, single.unit_steps) == \
        (split.episode_id, split.steps, split.agent_steps, split.unit_steps)
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for table in TABLES:
        assert one[table].equals(two[table]), table


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_both_paths_report_the_same_first_error(path):
    single, split = validate(path, parallel=False), validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert (split.error.rule, split.error.path, split.error.step, str(split.error)) == \
        (single.error.rule, single.error.path, single.error.step, str(single.error))


SCRIPT = ("import sys; from pipeline import ingest; "
          "print(ingest(sys.argv[1], lake=sys.argv[2], parallel=True).status)")


@pytest.mark.slow
def test_sigkill_of_the_reader_leaves_whole_episode_or_nothing(tmp_path):
    source = big_episode(tmp_path / "big.json", 2000)
    lake = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", SCRIPT, str(source), str(tmp_path / "timing")], env=env, check=True)
    duration = time.monotonic() - started
    rng = random.Random(7)
    for _ in range(10):
        process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(source), str(lake)], env=env,
                                   stdout=subprocess.DEVNULL)
        time.sleep(duration * rng.uniform(0.05, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        locations = list_episodes(lake)
        assert all(episode_is_whole(location) for location in locations)
        assert not lake.exists() or check(lake, deep=True).ok
        # The orphaned child sees the pipe close and exits; its copy of the lock is already closed.
        deadline = time.monotonic() + 30
        while gc(lake).running:
            assert time.monotonic() < deadline, "a staging folder stayed locked after its reader died"
            time.sleep(0.1)
        assert not (lake / "_staging").exists() or list((lake / "_staging").iterdir()) == []
        for location in locations:
            from pipeline.lake import remove_episodes
            remove_episodes(lake, [location])
