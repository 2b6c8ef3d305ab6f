"""Segments, compaction and group commits: every episode exactly once, whatever runs or dies when."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import Lake, StaleSnapshot, check, compact, gc, ingest, ingest_many
from pipeline.lake.layout import list_episodes
from pipeline.lake.tables import TABLES
from tests.helpers import episode, full_episode, staging_leftovers, write_json

REPO = Path(__file__).resolve().parents[2]
# Every column but the two that differ between two ingests of the same content.
_VOLATILE = ["ingested_at", "source"]


def write_episodes(folder: Path, n: int, *, start: int = 0, environment: str = "CartPole-v1") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_json(folder / f"ep{i:04d}.json", episode(steps=2 + i % 5, environment=environment,
                                                           config={"seed": i}))
            for i in range(start, start + n)]


def tables(lake: Path) -> dict[str, pl.DataFrame]:
    """Every table of the lake, rows in a canonical order, without the volatile columns."""
    snapshot = Lake(lake)
    out = {}
    for table in TABLES:
        frame = snapshot.scan(table).collect()
        frame = frame.drop([c for c in _VOLATILE if c in frame.columns])
        keys = [c for c in ("environment", "episode_id", "step", "agent", "unit") if c in frame.columns]
        out[table] = frame.sort(keys)
    return out


def ids(lake: Path) -> list[str]:
    found = [loc.episode_id for loc in list_episodes(lake)]
    assert len(found) == len(set(found)), "an episode is visible twice"
    return sorted(found)


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A lake with a segment (from compaction), fresh folders, and a full-featured episode."""
    lake = tmp_path / "lake"
    files = write_episodes(tmp_path / "in", 8)
    files.append(write_json(tmp_path / "in" / "full.json", full_episode()))
    for path in files[:6]:
        assert ingest(path, lake=lake).status == "ingested"
    compact(lake)
    for path in files[6:]:
        assert ingest(path, lake=lake).status == "ingested"
    return lake, files


def test_compaction_changes_where_rows_live_never_what_they_say(tmp_path):
    lake = tmp_path / "lake"
    files = [*write_episodes(tmp_path / "in", 6), write_json(tmp_path / "in" / "full.json", full_episode())]
    results = [ingest(path, lake=lake) for path in files]
    before = tables(lake)
    trajectories = {r.episode_id: Lake(lake).trajectory(r.episode_id) for r in results}

    report = compact(lake)

    assert report.episodes == 6 and report.segments == 1  # the StarCraft environment has one episode: left alone
    assert report.skipped == ["environment=StarCraft%2F2m_vs_1z"]
    after = tables(lake)
    for table in TABLES:
        assert after[table].equals(before[table]), table
    fresh = Lake(lake)
    assert sum(loc.segment for loc in fresh.locations) == 6
    for episode_id, trajectory in trajectories.items():
        again = fresh.trajectory(episode_id)
        assert (again.observations == trajectory.observations).all()
        assert (again.rewards == trajectory.rewards).all() and (again.steps == trajectory.steps).all()
    assert check(lake, deep=True).ok
    assert staging_leftovers(lake) == []
    # Pushdown: one episode's rows come from its segment alone, filtered by episode_id.
    one = results[2].episode_id
    assert fresh.agent_steps(episodes=one[:8]).collect()["episode_id"].unique().to_list() == [one]
    assert fresh.agent_steps().filter(pl.col("episode_id") == one).collect().height == 4


def test_same_content_after_compaction_is_exists(mixed):
    lake, files = mixed
    assert [ingest(path, lake=lake).status for path in files] == ["exists"] * len(files)
    assert [r.status for r in ingest_many(files, lake=lake, jobs=2)] == ["exists"] * len(files)
    assert len(ids(lake)) == len(files)


def test_rm_inside_a_segment_publishes_the_segment_without_it(mixed):
    lake, files = mixed
    snapshot = Lake(lake)
    in_segment = [loc.episode_id for loc in snapshot.locations if loc.segment]
    before = tables(lake)
    removed = snapshot.remove([in_segment[1], in_segment[3][:10]])
    assert sorted(loc.episode_id for loc in removed) == sorted([in_segment[1], in_segment[3]])
    assert len(ids(lake)) == len(files) - 2
    after = tables(lake)
    for table in TABLES:
        expected = before[table].filter(~pl.col("episode_id").is_in([in_segment[1], in_segment[3]]))
        assert after[table].equals(expected), table
    assert check(lake, deep=True).ok
    # Removed, the same content can be ingested again, once.
    statuses = [ingest(path, lake=lake).status for path in files]
    assert statuses.count("ingested") == 2 and len(ids(lake)) == len(files)


def test_an_old_snapshot_reads_right_or_says_it_is_stale(mixed):
    lake, _ = mixed
    old = Lake(lake)
    expected = old.episodes().collect()
    write_episodes(lake.parent / "more", 3, start=100)
    list(ingest_many([lake.parent / "more"], lake=lake, jobs=1))  # adding never disturbs a snapshot
    assert old.episodes().collect().equals(expected)
    compact(lake)
    with pytest.raises(StaleSnapshot, match=r"call lake\.refresh\(\) and query again"):
        old.episodes()
    with pytest.raises(StaleSnapshot):
        old.trajectory(old.locations[0].episode_id)
    assert old.refresh().episodes().collect().height == expected.height + 3


def test_a_snapshot_reads_no_segment_ids_until_asked(mixed, monkeypatch):
    lake, _files = mixed
    expected = {loc.episode_id: loc for loc in Lake(lake).locations}
    in_segment = sorted(i for i, loc in expected.items() if loc.segment)
    from pipeline.lake import segments

    def refuse(folder):
        raise AssertionError(f"read every id of {folder}")

    monkeypatch.setattr(segments, "segment_ids", refuse)
    snapshot = Lake(lake)  # the listing: folder names only
    assert len(snapshot) == len(expected)  # counted from the footers
    assert snapshot.episodes().collect().height == len(expected)
    for episode_id in [*in_segment, *(i for i, loc in expected.items() if not loc.segment)]:
        location = snapshot.resolve(episode_id)  # a whole id: row-group statistics and one row group
        assert location == expected[episode_id]
        assert len(snapshot.trajectory(episode_id)) > 0
    monkeypatch.undo()
    with pytest.raises(Exception, match="no episode"):  # (a whole id found nowhere falls back to the prefix search)
        snapshot.resolve("f" * 32)
    assert snapshot.resolve(in_segment[0][:10]) == expected[in_segment[0]]  # a prefix reads the ids
    # Ids read lazily after a compaction swapped the segment out: StaleSnapshot, never a wrong answer.
    old = Lake(lake)
    list(ingest_many(write_episodes(lake.parent / "more", 20, start=200), lake=lake, jobs=1))
    compact(lake)
    with pytest.raises(StaleSnapshot):
        old.resolve(in_segment[0][:10])
    with pytest.raises(StaleSnapshot):
        old.trajectory(in_segment[1])


def test_group_commit_gives_each_file_its_status(tmp_path):
    lake = tmp_path / "lake"
    files = write_episodes(tmp_path / "in", 20)
    ingest(files[3], lake=lake)  # already present: reported exists
    (tmp_path / "in" / "ep0005.json").write_text("{")  # invalid: left out of its group
    (tmp_path / "in" / "copy.json").write_bytes(files[7].read_bytes())  # the same content twice
    results = list(ingest_many([tmp_path / "in"], lake=lake, jobs=2))
    by_name = {Path(r.source).name: r.status for r in results}
    assert by_name.pop("ep0003.json") == "exists"
    assert by_name.pop("ep0005.json") == "invalid"
    assert sorted([by_name.pop("copy.json"), by_name.pop("ep0007.json")]) == ["exists", "ingested"]
    assert set(by_name.values()) == {"ingested"}
    assert len(ids(lake)) == 19
    assert any(loc.segment for loc in list_episodes(lake))  # written straight as a segment
    assert check(lake, deep=True).ok


# --- kills ----------------------------------------------------------------------------------------

_KILLER = """
import os, signal, sys, shutil
sys.path.insert(0, {repo!r})
import pipeline.lake.compact as compact_module, pipeline.lake.segments as segments, pipeline.lake.commit as commit
count = [0]
def counted(module, name):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(module, name, wrapper)
for module in (compact_module, segments, commit):
    for name in ("fsync_path", "write_segment", "exchange", "new_segment_name", "_swap"):
        if hasattr(module, name):
            counted(module, name)
real_link, real_rename, real_rmtree = os.link, os.rename, shutil.rmtree
def link(*a, **k):
    count[0] += 1
    if count[0] == {kill_at}: os.kill(os.getpid(), signal.SIGKILL)
    return real_link(*a, **k)
def rename(*a, **k):
    count[0] += 1
    if count[0] == {kill_at}: os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(*a, **k)
def rmtree(*a, **k):
    count[0] += 1
    if count[0] == {kill_at}: os.kill(os.getpid(), signal.SIGKILL)
    return real_rmtree(*a, **k)
os.link, os.rename, shutil.rmtree = link, rename, rmtree
{action}
print("finished", count[0])
"""

_ACTIONS = {
    "compact": "from pipeline import compact; compact({lake!r})",
    # Threads, not worker processes: one process to kill, and the same group-commit path.
    "group": "from concurrent.futures import ThreadPoolExecutor as T; from pipeline import ingest_many; "
             "list(ingest_many([{inbox!r}], lake={lake!r}, executor=T(2), jobs=2))",
    "rm": "from pipeline import Lake; l = Lake({lake!r}); l.remove([x.episode_id for x in l.locations if x.segment][:2])",
}


@pytest.mark.parametrize("action", sorted(_ACTIONS))
def test_killed_at_any_moment_every_episode_stays_exactly_once(tmp_path, action):
    base = tmp_path / "base"
    inbox = tmp_path / "inbox"
    files = write_episodes(tmp_path / "first", 6)
    write_episodes(inbox, 5, start=50)
    for path in files[:4]:
        ingest(path, lake=base)
    compact(base)
    for path in files[4:]:
        ingest(path, lake=base)
    expected_before = ids(base)
    kill_at = 1
    outcomes = set()
    while kill_at < 200:
        lake = tmp_path / f"lake{kill_at}"
        subprocess.run(["cp", "-a", str(base), str(lake)], check=True)
        script = _KILLER.format(repo=str(REPO), kill_at=kill_at,
                                action=_ACTIONS[action].format(lake=str(lake), inbox=str(inbox)))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        now = ids(lake)
        assert check(lake, deep=True).ok, (kill_at, check(lake).problems)
        if action == "compact":
            assert now == expected_before
        elif action == "rm":
            assert set(now) <= set(expected_before) and len(now) in (len(expected_before), len(expected_before) - 2)
        else:
            assert set(expected_before) <= set(now) and (len(now) - len(expected_before)) in range(0, 6)
        gc(lake)
        assert staging_leftovers(lake) == []
        if done.returncode == -signal.SIGKILL:
            outcomes.add("killed")
        else:
            assert done.returncode == 0, done.stderr
            assert "finished" in done.stdout
            outcomes.add("finished")
            break
        subprocess.run(["rm", "-rf", str(lake)], check=True)
        kill_at += 1 if kill_at < 20 else 7
    assert outcomes == {"killed", "finished"}


# --- concurrency ----------------------------------------------------------------------------------


def test_ingests_compaction_rm_and_a_reader_at_once(tmp_path):
    lake = tmp_path / "lake"
    first = write_episodes(tmp_path / "a", 30)
    for path in first[:10]:
        ingest(path, lake=lake)
    stop = threading.Event()
    seen_problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            snapshot = Lake(lake)
            try:
                episodes = snapshot.episodes().collect()
                agents = snapshot.episode_agents().collect()
                listed = [loc.episode_id for loc in snapshot.locations]  # segment ids are read lazily
            except StaleSnapshot:
                continue
            except Exception as exc:  # a file retired under a snapshot: only in the stale window
                if "No such file" not in str(exc) and "not found" not in str(exc).lower():
                    seen_problems.append(repr(exc))
                continue
            if len(listed) != len(set(listed)):
                seen_problems.append("a duplicate in the listing")
            if episodes["episode_id"].n_unique() != episodes.height or sorted(episodes["episode_id"]) != sorted(listed):
                seen_problems.append("episodes differ from the listing")
            if set(agents["episode_id"]) != set(listed):
                seen_problems.append("episode_agents differ from the listing")
            reads[0] += 1

    def compactor() -> None:
        for _ in range(4):
            compact(lake, target_bytes=1 << 30, min_entries=2)
            time.sleep(0.05)

    def remover() -> None:
        time.sleep(0.2)
        snapshot = Lake(lake)
        snapshot.remove([snapshot.locations[0].episode_id])

    threads = [threading.Thread(target=reader), threading.Thread(target=compactor), threading.Thread(target=remover)]
    try:
        for thread in threads:
            thread.start()
        ingest_thread = threading.Thread(target=lambda: [ingest(p, lake=lake) for p in first[10:20]])
        ingest_thread.start()
        list(ingest_many(first[20:], lake=lake, jobs=2))
        ingest_thread.join()
        for thread in threads[1:]:
            thread.join()
    finally:
        stop.set()
        threads[0].join()
    assert seen_problems == []
    assert reads[0] > 0
    assert len(ids(lake)) == 29
    assert check(lake, deep=True).ok


# --- property -------------------------------------------------------------------------------------

_OPS = st.lists(st.tuples(st.sampled_from(["ingest", "again", "batch", "compact", "rm"]), st.integers(0, 5)),
                min_size=1, max_size=8)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_any_sequence_of_changes_matches_a_model(tmp_path_factory, ops):
    root = tmp_path_factory.mktemp("model")
    lake = root / "lake"
    files = write_episodes(root / "in", 6)
    contents = {}
    model: set[str] = set()
    for op, i in ops:
        path = files[i]
        if op in ("ingest", "again"):
            result = ingest(path, lake=lake)
            assert result.status == ("exists" if result.episode_id in model else "ingested")
            model.add(result.episode_id)
            contents[result.episode_id] = path
        elif op == "batch":
            for result in ingest_many(files[i:], lake=lake, jobs=2):
                model.add(result.episode_id)
                contents[result.episode_id] = Path(result.source)
        elif op == "compact":
            compact(lake)
        elif model:
            victim = sorted(model)[i % len(model)]
            Lake(lake).remove([victim])
            model.discard(victim)
        assert ids(lake) == sorted(model)
    assert not lake.exists() or check(lake, deep=True).ok
    if model:  # every table's rows equal those of the same files ingested alone into a fresh lake
        reference = root / "reference"
        for episode_id in model:
            ingest(contents[episode_id], lake=reference)
        got, want = tables(lake), tables(reference)
        for table in TABLES:
            assert got[table].equals(want[table]), table


# --- external readers -----------------------------------------------------------------------------


def _readme_block(language: str, marker: str) -> str:
    text = (REPO / "README.md").read_text()
    for block in text.split(f"```{language}\n")[1:]:
        code = block.split("```", 1)[0]
        if marker in code:
            return code
    raise AssertionError(f"no {language} block with {marker!r} in README.md")


def test_readme_recipes_read_every_episode_once_from_folders_and_segments(mixed, monkeypatch):
    lake, _files = mixed
    monkeypatch.chdir(lake.parent)
    expected = sorted(ids(lake))
    assert any(loc.segment for loc in list_episodes(lake)) and not all(loc.segment for loc in list_episodes(lake))

    namespace: dict = {}
    exec(_readme_block("python", "def lake_table"), namespace)
    for table in TABLES:
        frame = namespace["lake_table"](table).collect()
        ours = Lake(lake).scan(table).collect()
        assert sorted(frame["episode_id"].unique()) == sorted(ours["episode_id"].unique())
        assert frame.height == ours.height, table
    episodes = namespace["lake_table"]("episodes").collect()
    assert sorted(episodes["episode_id"]) == expected

    namespace = {}
    exec(_readme_block("python", "to_pandas()"), namespace)
    assert sorted(namespace["agent_steps"]["episode_id"].unique()) == expected
    assert len(namespace["agent_steps"]) == Lake(lake).agent_steps().collect().height

    duckdb = pytest.importorskip("duckdb")
    sql = _readme_block("sql", "UNION ALL BY NAME")
    rows = duckdb.sql(sql).fetchall()
    assert sum(n for _, n, _ in rows) == len(expected)


def test_a_batch_compacts_a_fragmented_environment_unless_told_not_to(tmp_path):
    lake = tmp_path / "lake"
    # Files one by one (jobs=1: each its own folder) cross the threshold of 16 small entries.
    files = write_episodes(tmp_path / "in", 17)
    assert {r.status for r in ingest_many(files, lake=lake, jobs=1, compact=False)} == {"ingested"}
    env = lake / "environment=CartPole-v1"
    assert len(list(env.glob("episode_id=*"))) == 17 and not list(env.glob("segment=*"))
    more = write_episodes(tmp_path / "more", 1, start=50)
    assert [r.status for r in ingest_many(more, lake=lake, jobs=1)] == ["ingested"]
    assert not list(env.glob("episode_id=*")) and len(list(env.glob("segment=*"))) == 1
    assert len(ids(lake)) == 18
    done = subprocess.run([sys.executable, str(REPO / "cli.py"), "run", str(tmp_path / "in"), "--lake",
                           str(tmp_path / "lake2"), "--jobs", "1", "--quiet", "--no-compact"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "lake2" / "environment=CartPole-v1").glob("episode_id=*"))) == 17


@pytest.mark.parametrize("kind", ["folders only", "segments only", "empty"])
def test_readme_recipes_on_a_lake_with_no_folders_or_no_segments(tmp_path, monkeypatch, kind):
    lake = tmp_path / "lake"
    lake.mkdir()
    if kind != "empty":
        for path in write_episodes(tmp_path / "in", 4):
            ingest(path, lake=lake)
        if kind == "segments only":
            compact(lake)
    monkeypatch.chdir(tmp_path)
    located = list_episodes(lake)
    assert all(loc.segment for loc in located) if kind == "segments only" else not any(loc.segment for loc in located)
    expected = sorted(ids(lake))
    namespace: dict = {}
    # The function only (the example after it filters on columns an empty lake does not have).
    exec("\n\n".join(_readme_block("python", "def lake_table(").split("\n\n")[:2]), namespace)
    namespace["pandas"] = {}
    exec(_readme_block("python", "to_pandas()"), namespace["pandas"])
    for table in TABLES:
        polars_rows = namespace["lake_table"](table).collect()
        pandas_rows = namespace["pandas"]["lake_table_pandas"](table)
        ours = Lake(lake).scan(table).collect()
        assert polars_rows.height == len(pandas_rows) == ours.height, table
        if ours.height:
            assert sorted(polars_rows["episode_id"].unique()) == sorted(pandas_rows["episode_id"].unique())
    if expected:
        assert sorted(namespace["pandas"]["lake_table_pandas"]("episodes")["episode_id"]) == expected
