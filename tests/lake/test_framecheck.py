"""``check`` over prepared frame stores, ``frames rm`` and ``frames ls``: damage is found and named as
derived (rebuild it), never as damage of the episode; stores are removed whole or by episode."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import cli
from pipeline import DatasetError, FrameOptions, Lake, LakeError, check
from pipeline.engine.prepared import store_key
from pipeline.lake.framecheck import DAMAGED_FRAMES, verify_entry
from pipeline.lake.framestore import MAGIC
from pipeline.lake.layout import FRAMES, frame_entry_name
from tests.engine.test_prepared import OPTIONS, _episode, _lake
from tests.engine.test_prepared_episode import _DAMAGE, _damaged

ATARI = FrameOptions.atari()
PLAIN = FrameOptions(grayscale=True, resize=(12, 10), stack_n=2)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = _lake(tmp_path, [_episode(n, 5 + n) for n in range(3)])
    lake.prepare_frames(ATARI, workers=1)
    lake.prepare_frames(PLAIN, codec="raw", workers=1)
    return lake


def _entry(lake: Lake, options: FrameOptions, n: int) -> Path:
    return lake.path / FRAMES / store_key(options) / frame_entry_name(lake.locations[n].episode_id, "p0")


def test_a_clean_store_checks_clean_and_is_counted(lake: Lake) -> None:
    for deep in (False, True):
        report = check(lake.path, deep=deep)
        assert report.problems == [] and report.frame_files == 6


def test_damage_is_found_and_named_as_derived(lake: Lake) -> None:
    cut, index, payload = _entry(lake, ATARI, 0), _entry(lake, ATARI, 1), _entry(lake, PLAIN, 2)
    cut.write_bytes(cut.read_bytes()[:-30])
    data = bytearray(index.read_bytes())
    data[-40] ^= 1  # inside the header JSON, under the index CRC
    index.write_bytes(bytes(data))
    data = bytearray(payload.read_bytes())
    data[len(MAGIC) + 5] ^= 0x10  # the first raw element's pixels: only decoding them finds it
    payload.write_bytes(bytes(data))
    cheap = check(lake.path)
    assert sorted(p.path for p in cheap.problems) == sorted([cut, index])
    deep = check(lake.path, deep=True)
    assert sorted(p.path for p in deep.problems) == sorted([cut, index, payload])
    messages = {p.path: p.message for p in deep.problems}
    assert messages[cut].startswith(f"{DAMAGED_FRAMES}: not a frame store entry (no end marker: cut short")
    assert messages[index].startswith(f"{DAMAGED_FRAMES}: its index does not match its CRC32; ")
    step = 1  # the first element's step number
    assert messages[payload].startswith(f"{DAMAGED_FRAMES}: a raw element's CRC32 does not match its bytes "
                                        f"(the element of step {step}); ")
    ids = [location.episode_id for location in lake.locations]
    assert messages[payload].endswith(
        f"`ingest-pipeline frames rm {store_key(PLAIN)} {ids[2]}` deletes them, `ingest-pipeline frames prepare "
        f"--store {store_key(PLAIN)} {ids[2]}` makes them again (until then, readers decode the PNGs)")
    assert deep.damaged_episodes == []  # the episodes themselves are whole
    assert deep.damaged_frames == {store_key(ATARI): sorted(ids[:2]), store_key(PLAIN): [ids[2]]}


def test_an_entry_under_another_name_or_a_stray_file_is_a_problem(lake: Lake) -> None:
    first, second = _entry(lake, ATARI, 0), _entry(lake, ATARI, 1)
    shutil.copyfile(first, second)  # whole, but another episode's frames
    (first.parent / "notes.txt").write_text("mine")
    problems = {p.path: p.message for p in check(lake.path).problems}
    assert problems[second].startswith(f"{DAMAGED_FRAMES}: its header names episode {lake.locations[0].episode_id}")
    assert problems[first.parent / "notes.txt"] == "unexpected file in a prepared frame store (not an entry)"
    # and no reader takes its frames for the other episode's
    with pytest.raises(LakeError, match="it holds other frames than its name says"):
        lake.trajectory(lake.locations[1].episode_id, frames=ATARI, prepared=True)


def test_a_store_of_an_older_format_is_left_alone(lake: Lake) -> None:
    old = lake.path / FRAMES / store_key(ATARI).replace("v2-", "v1-")
    shutil.copytree(lake.path / FRAMES / store_key(ATARI), old)
    for path in old.glob("*.frames"):
        path.write_bytes(path.read_bytes()[:20])  # not even readable: never opened
    report = check(lake.path, deep=True)
    assert report.problems == [] and report.frame_files == 6
    listing = CliRunner().invoke(cli, ["frames", "ls", "--lake", str(lake.path)]).output.splitlines()
    assert listing[0] == (f"{old.name}  3 prepared  old format, never read: ingest-pipeline frames rm {old.name}  "
                          f"0.0 MB")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = _lake(tmp_path_factory.mktemp("checked"), [_episode(5, 9)])
    lake.prepare_frames(ATARI, workers=1)
    lake.prepare_frames(PLAIN, codec="raw", workers=1)
    return lake


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codec=st.sampled_from(["zstd", "raw"]), damage=_DAMAGE)
def test_deep_check_finds_any_damage_that_matters(checked: Lake, codec: str, damage: tuple[str, float, int]) -> None:
    lake = checked
    options = ATARI if codec == "zstd" else PLAIN
    path = _entry(lake, options, 0)
    original = path.read_bytes()
    changed = _damaged(original, damage)
    path.write_bytes(changed)
    try:
        found = verify_entry(path, deep=True)
        if changed != original and found is None:  # only harmless damage may go unnoticed: same frames
            decoded = lake.trajectory(lake.locations[0].episode_id, frames=options, prepared=False).frames
            stored = lake.trajectory(lake.locations[0].episode_id, frames=options, prepared=True).frames
            assert np.array_equal(stored, decoded)  # type: ignore[arg-type]
        if verify_entry(path) is not None:  # what the cheap check finds, the deep one finds
            assert found is not None
    finally:
        path.write_bytes(original)


def test_remove_a_store_or_some_of_its_episodes(lake: Lake) -> None:
    ids = [location.episode_id for location in lake.locations]
    removed = lake.remove_frames(store_key(ATARI), [ids[0][:6], ids[1]])
    assert sorted(removed) == sorted([_entry(lake, ATARI, 0), _entry(lake, ATARI, 1)])
    assert sorted(p.name for p in (lake.path / FRAMES / store_key(ATARI)).glob("*.frames")) == [
        frame_entry_name(ids[2], "p0")]
    assert lake.trajectory(ids[0], frames=ATARI).frames is not None  # decoded again
    with pytest.raises(LakeError, match=f"no prepared frames of episode '{ids[0]}' in store {store_key(ATARI)}"):
        lake.remove_frames(store_key(ATARI), [ids[0]])
    with pytest.raises(LakeError, match="no prepared frames of episode '' in store"):
        lake.remove_frames(store_key(PLAIN), [""])
    assert lake.remove_frames(store_key(PLAIN)) == [lake.path / FRAMES / store_key(PLAIN)]
    assert not (lake.path / FRAMES / store_key(PLAIN)).exists()
    assert not any((lake.path / "_staging").iterdir())
    with pytest.raises(LakeError, match=f"no prepared frame store '{store_key(PLAIN)}' in {lake.path}; "
                                        f"`ingest-pipeline frames ls` lists them"):
        lake.remove_frames(store_key(PLAIN))
    with pytest.raises(LakeError, match=r"no prepared frame store '\.\./x'"):
        lake.remove_frames("../x")


def test_an_ambiguous_prefix_removes_nothing(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 2) for n in range(20)])  # 20 ids: two share a first hex digit
    lake.prepare_frames(PLAIN, workers=1)
    ids = sorted(location.episode_id for location in lake.locations)
    shared = next(a[0] for a, b in itertools.pairwise(ids) if a[0] == b[0])
    with pytest.raises(LakeError, match=f"episode id prefix '{shared}' is ambiguous in store"):
        lake.remove_frames(store_key(PLAIN), [ids[-1], shared])
    assert len(list((lake.path / FRAMES / store_key(PLAIN)).glob("*.frames"))) == 20


@pytest.mark.parametrize("options", OPTIONS, ids=store_key)
def test_store_options_give_the_store_back(tmp_path: Path, options: FrameOptions) -> None:
    lake = _lake(tmp_path, [_episode(0, 2)])
    lake.prepare_frames(options, workers=1)
    assert store_key(lake.store_options(store_key(options))) == store_key(options)
    with pytest.raises(DatasetError, match="no prepared frame store 'v2-nope'"):
        lake.store_options("v2-nope")
    options_file = lake.path / FRAMES / store_key(options) / "options.json"
    options_file.write_text(json.dumps({**json.loads(options_file.read_text()), "max_n": 7}))
    with pytest.raises(DatasetError, match=r"or its options\.json was changed"):
        lake.store_options(store_key(options))


def test_the_commands(lake: Lake) -> None:
    runner = CliRunner()
    path = str(lake.path)
    ids = [location.episode_id for location in lake.locations]
    ok = runner.invoke(cli, ["check", "--lake", path, "--deep"])
    assert ok.exit_code == 0 and ok.output == "ok: 3 episodes and 6 prepared frame files checked (deep)\n"
    lake.remove([ids[2]])
    listing = runner.invoke(cli, ["frames", "ls", "--lake", path]).output.splitlines()
    assert [line.rsplit("  ", 1)[0] for line in listing] == [
        f"{store_key(PLAIN)}  3 prepared  2/2 episodes (100%)  1 stale (gc deletes them)",
        f"{store_key(ATARI)}  3 prepared  2/2 episodes (100%)  1 stale (gc deletes them)"]
    assert all(line.endswith(" MB") for line in listing)
    entry = _entry(lake, ATARI, 0)
    entry.write_bytes(entry.read_bytes()[:-1])
    damaged = runner.invoke(cli, ["check", "--lake", path])
    assert damaged.exit_code == 1
    lines = damaged.output.splitlines()
    assert lines[0].startswith(f"problem: {entry} (episode {ids[0]}): {DAMAGED_FRAMES}: ")
    assert lines[1:] == ["1 problem in 2 episodes",
                         f"prepared frames are derived from the lake; to rebuild the damaged ones: ingest-pipeline "
                         f"frames rm {store_key(ATARI)} {ids[0]}; then ingest-pipeline frames prepare --store "
                         f"{store_key(ATARI)} {ids[0]}"]
    removed = runner.invoke(cli, ["frames", "rm", store_key(ATARI), ids[0], "--lake", path])
    assert removed.output == f"removed 1 prepared frame file from {store_key(ATARI)}\n"
    again = runner.invoke(cli, ["frames", "prepare", "--store", store_key(ATARI), ids[0], "--lake", path])
    assert again.exit_code == 0 and again.output.splitlines()[-1].startswith("1 episode prepared (")
    assert runner.invoke(cli, ["check", "--lake", path, "--deep"]).exit_code == 0
    refused = runner.invoke(cli, ["frames", "prepare", "--store", store_key(ATARI), "--atari", "--lake", path])
    assert refused.exit_code == 2 and "--store gives the frame options; give no other" in refused.output
    unknown = runner.invoke(cli, ["frames", "prepare", "--store", "v2-nope", "--lake", path])
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: no prepared frame store 'v2-nope'")
    whole = runner.invoke(cli, ["frames", "rm", store_key(PLAIN), "--lake", path])
    assert whole.output == f"removed the prepared frame store {store_key(PLAIN)}\n"
    gone = runner.invoke(cli, ["frames", "rm", store_key(PLAIN), "--lake", path])
    assert gone.exit_code == 1 and gone.output == (f"Error: no prepared frame store '{store_key(PLAIN)}' in "
                                                   f"{lake.path}; `ingest-pipeline frames ls` lists them\n")


def test_an_entry_of_the_older_format_is_never_read_as_this_one(lake: Lake) -> None:
    entry = _entry(lake, ATARI, 0)
    data = entry.read_bytes()
    entry.write_bytes(data[:-8] + b"IPFRAME1")  # version 1's end marker (its files had no checksums)
    assert verify_entry(entry) == "a frame store entry of another format version"
    with pytest.warns(UserWarning, match="a frame store entry of another format version; prepared frames are derived"):
        frames = lake.trajectory(lake.locations[0].episode_id, frames=ATARI).frames
    assert np.array_equal(frames, lake.trajectory(lake.locations[0].episode_id, frames=ATARI,  # type: ignore[arg-type]
                                                  prepared=False).frames)
