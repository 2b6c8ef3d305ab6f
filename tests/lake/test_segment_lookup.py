"""Finding an episode in a lake of many segments: the id index and the footer map, against brute force."""

from __future__ import annotations

import itertools
import random
import shutil
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import Lake, check, compact, ingest
from pipeline.lake import footer_map, segments
from pipeline.lake.layout import FOOTER_MAP, SEGMENT_INDEX, environment_folder, list_lake
from pipeline.lake.segment_index import index_ids
from pipeline.lake.segments import ID, episode_rows, new_segment_name, read_tables, write_segment
from pipeline.lake.tables import TABLES
from tests.helpers import agent_step, episode, write_json

ENVIRONMENT = "CartPole-v1"


def _two_agents(i: int) -> dict:
    document = episode(steps=2, config={"two": i})
    for number, step in enumerate(document["inference"]["steps"]):
        step["agent_steps"] = [agent_step("b", reward=1.0 + number), agent_step("a", reward=2.0)]
    return document


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """A lake of 14 episode folders (two of them with two agents), and each one's trajectories."""
    root = tmp_path_factory.mktemp("lookup")
    lake = root / "folders"
    for i in range(14):
        document = _two_agents(i) if i % 7 == 3 else episode(steps=1 + i % 5, config={"seed": i})
        assert ingest(write_json(root / f"ep{i}.json", document), lake=lake).status == "ingested"
    snapshot = Lake(lake)
    expected = {loc.episode_id: [snapshot.trajectory(loc.episode_id, agent) for agent in snapshot.agents(loc.episode_id)]
                for loc in snapshot.locations}
    return lake, expected


def _segmented(source: Path, target: Path, cuts: list[int], order: random.Random | None = None) -> list[Path]:
    """``target``: the episodes of ``source`` in segments, split at ``cuts`` of their (shuffled) order."""
    shutil.rmtree(target, ignore_errors=True)
    locations = list_lake(source).episodes
    if order is not None:
        order.shuffle(locations)
    env_dir = target / environment_folder(ENVIRONMENT)
    env_dir.mkdir(parents=True)
    folders = []
    for start, end in itertools.pairwise([0, *sorted(set(cuts)), len(locations)]):
        if start < end:
            folder = env_dir / new_segment_name()
            write_segment(folder, read_tables(locations[start:end]))
            folders.append(folder)
    return folders


def _brute_force(folders: list[Path], episode_id: str) -> Path | None:
    held = [f for f in folders if episode_id in pq.read_table(f / "episodes.parquet", columns=[ID]).column(ID).to_pylist()]
    assert len(held) <= 1
    return held[0] if held else None


def _same(a, b) -> None:
    assert (a.episode_id, a.agent) == (b.episode_id, b.agent)
    for name in ("steps", "observations", "actions", "rewards", "terminals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.randoms(use_true_random=False), cuts=st.lists(st.integers(0, 14), max_size=5),
       group_rows=st.integers(1, 9), absent=st.text("0123456789abcdef", min_size=32, max_size=32),
       old_layout=st.booleans())
def test_every_id_is_found_where_a_brute_force_scan_finds_it(tmp_path_factory, source, monkeypatch, order, cuts,
                                                               group_rows, absent, old_layout):
    lake, expected = source
    # Row groups of a few rows: an episode's rows then span several, and a segment has many.
    monkeypatch.setattr(segments, "ROW_GROUP_ROWS", group_rows)
    monkeypatch.setattr(segments, "STEP_ROW_GROUP_ROWS", group_rows + 1)
    target = tmp_path_factory.mktemp("segmented") / "lake"
    folders = _segmented(lake, target, cuts, order)
    if old_layout:  # segments written before the index and the footer map: the statistics route
        for folder in folders:
            (folder / SEGMENT_INDEX).unlink()
            (folder / FOOTER_MAP).unlink()
    snapshot = Lake(target)
    assert len(snapshot) == len(expected)
    for episode_id, trajectories in expected.items():
        location = snapshot.resolve(episode_id)
        assert location.path == _brute_force(folders, episode_id) and location.segment
        for table in TABLES:  # the episode's rows, read through its row groups, equal a whole-file filter
            whole = pq.read_table(location.table(table))
            mask = np.asarray(whole.column(ID).to_pylist()) == episode_id
            wanted = whole.filter(mask).drop_columns([ID])
            assert episode_rows(location, table).equals(wanted.cast(episode_rows(location, table).schema)), table
        assert [a for a in snapshot.agents(episode_id)] == [t.agent for t in trajectories]
        _same(snapshot.trajectory(episode_id), trajectories[0])
        for trajectory in trajectories:
            _same(snapshot.trajectory(episode_id, trajectory.agent), trajectory)
    if absent not in expected:
        assert _brute_force(folders, absent) is None
        with pytest.raises(Exception, match="no episode"):
            snapshot.resolve(absent)
    assert check(target, deep=True).ok


def test_each_new_segment_has_an_index_and_a_footer_map_that_agree_with_it(tmp_path, source):
    lake, expected = source
    target = tmp_path / "lake"
    shutil.copytree(lake, target)
    compact(target)
    (segment,) = [e.path for e in list_lake(target).entries if e.segment]
    assert index_ids(segment) == sorted(expected)
    assert (segment / FOOTER_MAP).exists()
    assert check(target, deep=True).ok
    # rm inside the segment: the new segment's index lists the others
    removed = sorted(expected)[3]
    Lake(target).remove([removed])
    (segment,) = [e.path for e in list_lake(target).entries if e.segment]
    assert index_ids(segment) == sorted(set(expected) - {removed})
    assert check(target).ok


def test_a_single_agent_trajectory_in_a_segment_reads_no_episode_agents(tmp_path, source, monkeypatch):
    lake, expected = source
    target = tmp_path / "lake"
    _segmented(lake, target, [5])
    single = next(i for i, t in expected.items() if len(t) == 1)
    from pipeline.engine import trajectory

    def refuse(location):
        raise AssertionError("read episode_agents")

    monkeypatch.setattr(trajectory, "agents", refuse)
    _same(Lake(target).trajectory(single), expected[single][0])


def test_a_damaged_index_or_footer_map_is_found_by_check_and_never_gives_wrong_rows(tmp_path, source, monkeypatch):
    lake, expected = source
    monkeypatch.setattr(segments, "STEP_ROW_GROUP_ROWS", 3)  # many row groups: a wrong one is likely
    target = tmp_path / "lake"
    folders = _segmented(lake, target, [7])
    # The first segment's footer map points each row group at the next one's metadata (CRC now wrong).
    body = orjson.loads((folders[0] / FOOTER_MAP).read_bytes()[9:])
    for table in body.values():
        spans = [group[:2] for group in table["groups"]]
        for group, span in zip(table["groups"], spans[1:] + spans[:1], strict=True):
            group[:2] = span
    (folders[0] / FOOTER_MAP).write_bytes(b"00000000\n" + orjson.dumps(body))
    # The second segment's index is cut short.
    index = folders[1] / SEGMENT_INDEX
    index.write_bytes(index.read_bytes()[:-7])
    snapshot = Lake(target)  # readers go back to the footers' statistics
    for episode_id, trajectories in expected.items():
        _same(snapshot.trajectory(episode_id, trajectories[0].agent), trajectories[0])
    problems = {(p.path.name, p.message) for p in check(target).problems}
    assert problems == {(FOOTER_MAP, "the footer map is damaged (CRC mismatch or not a map)"),
                        (SEGMENT_INDEX, "the episode id index is cut short or not an index")}
    # A map that is whole but wrong (a bug, not damage): readers check each row group's own
    # statistics against it, and check compares it with the footers.
    (folders[0] / FOOTER_MAP).write_bytes(footer_map.map_bytes(body))
    footer_map._maps.clear()
    for episode_id, trajectories in expected.items():
        _same(Lake(target).trajectory(episode_id, trajectories[0].agent), trajectories[0])
    assert (FOOTER_MAP, "the footer map differs from the footers of the step tables") in {
        (p.path.name, p.message) for p in check(target).problems}
