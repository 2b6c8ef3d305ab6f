"""The lake on disk: idempotent commits, concurrent ingests, failures that change nothing, error types."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import pipeline.lake.commit
import pipeline.lake.tables
import pipeline.lake.writer
from pipeline import InvalidEpisode, LakeError, PipelineError, SourceError, ingest
from pipeline.lake.layout import ENV_VAR, resolve_lake
from tests.helpers import episode, lake_snapshot, staging_leftovers, write_json

ROOT = Path(__file__).resolve().parents[2]
NO_SPACE = os.strerror(errno.ENOSPC)


def episode_folders(lake: Path) -> list[Path]:
    return sorted(lake.glob("environment=*/episode_id=*"))


def read_table(lake: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(
        lake / "*" / "*" / f"{table}.parquet", hive_partitioning=True,
        hive_schema={"environment": pl.String, "episode_id": pl.String},
    )


# --- idempotence ----------------------------------------------------------------------------------


def test_reingesting_the_same_file_reports_exists_and_keeps_one_copy(tmp_path, lake):
    path = write_json(tmp_path / "episode.json", episode(steps=4))
    first = ingest(path, lake=lake)
    assert first.status == "ingested"
    before = lake_snapshot(lake)

    second = ingest(path, lake=lake)
    assert second.status == "exists"
    assert second.error is None
    assert (second.episode_id, second.environment, second.steps, second.agent_steps) == (
        first.episode_id, first.environment, 4, 4)
    assert lake_snapshot(lake) == before, "re-ingesting changed the lake"
    assert staging_leftovers(lake) == []
    assert [p.relative_to(lake).as_posix() for p in episode_folders(lake)] == [
        f"environment=CartPole-v1/episode_id={first.episode_id}"]
    assert read_table(lake, "steps").height == 4


def test_same_content_under_another_name_is_the_same_episode(tmp_path, lake):
    path = write_json(tmp_path / "a.json", episode(steps=2))
    copy = tmp_path / "elsewhere" / "b.json"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert ingest(path, lake=lake).status == "ingested"
    assert ingest(copy, lake=lake).status == "exists"
    assert len(episode_folders(lake)) == 1


def test_environment_name_is_one_percent_encoded_folder(tmp_path, lake):
    path = write_json(tmp_path / "pong.json", episode(steps=1, environment="ALE/Pong-v5"))
    result = ingest(path, lake=lake)
    assert result.status == "ingested"
    assert [p.relative_to(lake).as_posix() for p in episode_folders(lake)] == [
        f"environment=ALE%2FPong-v5/episode_id={result.episode_id}"]


# --- two processes at the same moment -------------------------------------------------------------

# Each worker ingests on request, one JSON command per line on stdin, one result per line on stdout.
# With "hold" set, it waits before committing until every worker has staged its copy, so the
# commits really race; without it, the two ingests simply start together.
_WORKER = r"""
import json, os, sys, time
from pathlib import Path
import pipeline
import pipeline.lake.commit

original_commit = pipeline.lake.commit.Staging.commit
hold = None

def commit(self, environment, episode_id):
    if hold is not None:
        Path(hold["folder"], str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(hold["folder"])) < hold["workers"] and time.monotonic() < deadline:
            time.sleep(0.001)
    return original_commit(self, environment, episode_id)

pipeline.lake.commit.Staging.commit = commit
print("ready", flush=True)
for line in sys.stdin:
    command = json.loads(line)
    hold = command["hold"]
    result = pipeline.ingest(command["file"], lake=command["lake"])
    print(json.dumps({**result.to_dict(), "error": str(result.error) if result.error else None}), flush=True)
"""


@pytest.fixture
def workers():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ENV_VAR, None)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        yield procs
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_two_processes_ingesting_the_same_file_leave_one_episode(workers, tmp_path):
    steps = 4000
    path = write_json(tmp_path / "big.json", episode(steps=steps))
    for round_number, held in enumerate([False, True, False, True, True]):
        lake = tmp_path / f"lake{round_number}"
        hold = None
        if held:
            hold_folder = tmp_path / f"hold{round_number}"
            hold_folder.mkdir()
            hold = {"folder": str(hold_folder), "workers": len(workers)}
        command = json.dumps({"file": str(path), "lake": str(lake), "hold": hold}) + "\n"
        for proc in workers:  # send to both before reading either answer
            assert proc.stdin is not None
            proc.stdin.write(command)
            proc.stdin.flush()
        results: list[dict[str, Any]] = []
        for proc in workers:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))

        label = f"round {round_number} (held={held}): {results}"
        assert sorted(r["status"] for r in results) == ["exists", "ingested"], label
        assert len({r["episode_id"] for r in results}) == 1, label
        assert all(r["steps"] == steps and r["error"] is None for r in results), label
        folders = episode_folders(lake)
        assert [p.name for p in folders] == [f"episode_id={results[0]['episode_id']}"], label
        assert sorted(p.name for p in folders[0].iterdir()) == sorted(
            f"{t}.parquet" for t in pipeline.lake.tables.TABLES), label
        assert staging_leftovers(lake) == [], label
        assert read_table(lake, "steps").height == steps
        assert read_table(lake, "episodes").height == 1


# --- failures while writing change nothing --------------------------------------------------------


def _raise_no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, NO_SPACE)


def _fail_writes(monkeypatch, table: str | None) -> None:
    """Make the Parquet writer hit a full disk: on the first write, or on the first write of ``table``
    (through pyarrow, or through the small writer that writes a small episode's tables whole)."""
    for method in ("_write", "_write_columns"):
        original = getattr(pipeline.lake.writer.EpisodeWriter, method)

        def _write(self, name, *args, original=original):
            if table is None or name == table:
                _raise_no_space()
            return original(self, name, *args)

        monkeypatch.setattr(pipeline.lake.writer.EpisodeWriter, method, _write)


@pytest.fixture
def seeded(tmp_path, lake) -> dict[str, bytes | None]:
    """A lake holding one committed episode; returns its snapshot."""
    assert ingest(write_json(tmp_path / "seed.json", episode(steps=2)), lake=lake).status == "ingested"
    return lake_snapshot(lake)


@pytest.mark.parametrize("where", ["first write", "last table", "rename"])
def test_full_disk_leaves_the_lake_unchanged(where, monkeypatch, seeded, tmp_path, lake):
    path = write_json(tmp_path / "episode.json", episode(steps=300))
    if where == "rename":
        monkeypatch.setattr(pipeline.lake.commit.os, "rename", _raise_no_space)
    else:
        _fail_writes(monkeypatch, None if where == "first write" else "episodes")

    result = ingest(path, lake=lake)

    assert result.status == "failed"
    assert isinstance(result.error, LakeError)
    message = str(result.error)
    assert message.startswith(f"{path}: ")
    assert message.endswith(f": {NO_SPACE}")
    assert "could not" in message
    monkeypatch.undo()
    assert lake_snapshot(lake) == seeded
    assert staging_leftovers(lake) == []
    # Nothing was half-done: the same file ingests normally afterwards.
    assert ingest(path, lake=lake).status == "ingested"


def test_failed_rename_into_a_new_environment_leaves_the_lake_unchanged(monkeypatch, seeded, tmp_path, lake):
    path = write_json(tmp_path / "new.json", episode(steps=3, environment="Brand/New-v0"))
    monkeypatch.setattr(pipeline.lake.commit.os, "rename", _raise_no_space)
    result = ingest(path, lake=lake)
    monkeypatch.undo()
    assert result.status == "failed"
    assert staging_leftovers(lake) == []
    assert lake_snapshot(lake) == seeded


def test_failed_write_into_a_new_environment_leaves_the_lake_unchanged(monkeypatch, seeded, tmp_path, lake):
    path = write_json(tmp_path / "new.json", episode(steps=3, environment="Brand/New-v0"))
    _fail_writes(monkeypatch, None)
    assert ingest(path, lake=lake).status == "failed"
    monkeypatch.undo()
    assert lake_snapshot(lake) == seeded


def test_lake_that_cannot_be_created_is_a_clean_failure(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    path = write_json(tmp_path / "episode.json", episode(steps=1))
    result = ingest(path, lake=not_a_folder)
    assert result.status == "failed"
    assert isinstance(result.error, LakeError)
    assert str(result.error).startswith(f"{path}: cannot create a staging folder in {not_a_folder}")
    assert not_a_folder.read_text() == ""


# --- raise_errors=True ----------------------------------------------------------------------------


def test_raise_errors_raises_invalid_episode_with_its_context(tmp_path, seeded, lake):
    document = episode(steps=3)
    document["inference"]["steps"][2]["agent_steps"][0]["rewards"] = [1.0]
    path = write_json(tmp_path / "bad.json", document)
    with pytest.raises(InvalidEpisode) as caught:
        ingest(path, lake=lake, raise_errors=True)
    error = caught.value
    assert isinstance(error, PipelineError)
    assert (error.rule, error.path, error.step) == ("reward.exactly_one", "inference.steps[2].agent_steps[0]", 2)
    assert error.source == str(path)
    assert str(error) == (f'{path}: inference.steps[2].agent_steps[0] (step number 2): '
                          'exactly one of "reward" or "rewards" is required, found both')
    assert lake_snapshot(lake) == seeded


def test_raise_errors_raises_source_error_for_a_missing_file(tmp_path, seeded, lake):
    missing = tmp_path / "missing.json"
    with pytest.raises(SourceError) as caught:
        ingest(missing, lake=lake, raise_errors=True)
    assert str(caught.value) == f"{missing}: no such file"
    assert caught.value.source == str(missing)
    assert lake_snapshot(lake) == seeded


def test_raise_errors_raises_lake_error_for_a_failed_rename(monkeypatch, tmp_path, seeded, lake):
    path = write_json(tmp_path / "episode.json", episode(steps=2, iterations=7))
    monkeypatch.setattr(pipeline.lake.commit.os, "rename", _raise_no_space)
    with pytest.raises(LakeError) as caught:
        ingest(path, lake=lake, raise_errors=True)
    monkeypatch.undo()
    assert str(caught.value).startswith(f"{path}: could not publish the episode")
    assert str(caught.value).endswith(NO_SPACE)
    assert lake_snapshot(lake) == seeded
    assert staging_leftovers(lake) == []


def test_without_raise_errors_nothing_is_raised(tmp_path, lake):
    result = ingest(tmp_path / "missing.json", lake=lake)
    assert result.status == "failed"
    assert isinstance(result.error, SourceError)
    assert result.to_dict()["error"] == {"message": f"{tmp_path / 'missing.json'}: no such file",
                                         "path": None, "step": None, "rule": None}


# --- where the lake is ----------------------------------------------------------------------------


def test_resolve_lake_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_lake() == tmp_path / "lake"
    assert resolve_lake().is_absolute()

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    assert resolve_lake() == tmp_path / "from_env"
    assert resolve_lake(tmp_path / "given") == tmp_path / "given"
    assert resolve_lake("relative") == tmp_path / "relative"

    monkeypatch.setenv(ENV_VAR, "")  # set but empty: the default
    assert resolve_lake() == tmp_path / "lake"


def test_ingest_without_a_lake_uses_the_environment_variable_then_dot_lake(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_json(tmp_path / "episode.json", episode(steps=1))

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from_env"))
    assert ingest(path).status == "ingested"
    assert len(episode_folders(tmp_path / "from_env")) == 1
    assert not (tmp_path / "lake").exists()

    monkeypatch.delenv(ENV_VAR)
    assert ingest(path).status == "ingested"
    assert len(episode_folders(tmp_path / "lake")) == 1


@pytest.mark.parametrize("layout", ["files", "nested", "missing"])
def test_a_staging_folder_is_removed_whole_without_following_links(tmp_path, layout):
    """commit._remove_tree: files alone (a committed ingest's lock and kept copy) without shutil, anything
    else through it; a link is removed, never what it points to."""
    from pipeline.lake.commit import _remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    root = tmp_path / "staging"
    if layout != "missing":
        root.mkdir()
        (root / "owner.lock").write_text("host 1\n")
        (root / "input").write_bytes(b"x" * 1000)
        (root / "link").symlink_to(outside, target_is_directory=True)
        if layout == "nested":
            (root / "episode" / "deep").mkdir(parents=True)
            (root / "episode" / "deep" / "steps.parquet").write_bytes(b"PAR1")
    _remove_tree(root)
    assert not root.exists() and not root.is_symlink()
    assert (outside / "keep.txt").read_text() == "keep"


def test_a_staging_folder_removal_cut_short_keeps_its_lock_so_gc_removes_it_at_once(tmp_path, monkeypatch):
    """The owner lock goes last: killed after removing some files, the folder still has its lock, and gc
    (which spares a fresh unlocked folder for a minute, as maybe being created) removes it straight away."""
    import pipeline.lake.commit as commit_module
    from pipeline.lake.maintenance import gc

    lake = tmp_path / "lake"
    root = lake / "_staging" / "token"
    root.mkdir(parents=True)
    names = ["owner.lock", *(f"file{i}" for i in range(11))]
    for name in names:
        (root / name).write_text(name)
    real_unlink = os.unlink
    removed: list[str] = []

    def unlink_then_die(path, *args, **kwargs):
        if len(removed) == len(names) - 1:
            raise KeyboardInterrupt  # stands for the process being killed before its last removal
        removed.append(os.path.basename(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(commit_module.os, "unlink", unlink_then_die)
    with pytest.raises(KeyboardInterrupt):
        commit_module._remove_tree(root)
    monkeypatch.setattr(commit_module.os, "unlink", real_unlink)
    assert "owner.lock" not in removed and (root / "owner.lock").exists()
    report = gc(lake)
    assert report.removed == [root] and not root.exists()
