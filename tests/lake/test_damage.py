"""A damaged file (flipped bytes, cut short) is found by ``check``, named by every read path, and removable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import DamagedFile, ExportError, FrameOptions, Lake, LakeError, check
from pipeline.lake.damage import find_damaged, page_problem
from tests.dataset_lake import build_lake


def flip(path: Path, count: int = 200, *, at_start: bool = False) -> None:
    """Flip ``count`` bytes in the middle (or at the start: a page header) of the file's largest column chunk."""
    metadata = pq.read_metadata(path)
    chunk = max((metadata.row_group(g).column(c) for g in range(metadata.num_row_groups)
                 for c in range(metadata.num_columns)), key=lambda chunk: chunk.total_compressed_size)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    first = start if at_start else max(start, middle - count // 2)
    for i in range(first, min(first + count, start + chunk.total_compressed_size)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def cut(path: Path, size: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("damage")
    return root / "lake", build_lake(root, ["lander", "cart", "full"])


@pytest.fixture
def lake(built: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(built[0], tmp_path / "lake"))


@pytest.fixture
def ids(built: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return built[1]


def table(lake: Path, episode_id: str, name: str) -> Path:
    return Lake(lake).resolve(episode_id).table(name)


def test_every_table_is_written_with_page_checksums(lake: Path, ids: dict[str, str]) -> None:
    # Without checksums most flips in a zstd page decode to wrong values unnoticed; with them, none does.
    for name in ("agent_steps", "steps", "episodes"):
        path = table(lake, ids["lander"], name)
        flip(path)
        assert page_problem(path) is not None, name


def test_deep_check_lists_every_damaged_file_with_its_episode(lake: Path, ids: dict[str, str]) -> None:
    flip(table(lake, ids["lander"], "agent_steps"))
    flip(table(lake, ids["cart"], "steps"))
    cut(table(lake, ids["full"], "unit_steps"))
    shallow = check(lake)
    assert [(p.path.name, p.episode_id) for p in shallow.problems] == [("unit_steps.parquet", ids["full"])]
    assert shallow.problems[0].message.startswith("damaged: cannot be read as Parquet: ")
    deep = check(lake, deep=True)
    found = sorted((p.episode_id, p.path.name) for p in deep.problems)
    assert found == sorted([(ids["lander"], "agent_steps.parquet"), (ids["cart"], "steps.parquet"),
                            (ids["full"], "unit_steps.parquet")])
    assert all(p.message.startswith("damaged: ") for p in deep.problems)
    assert sorted(deep.damaged_episodes) == sorted(ids.values())
    lander = next(p for p in deep.problems if p.episode_id == ids["lander"])
    assert str(lander).startswith(f"{lander.path} (episode {ids['lander']}): damaged: ")


def test_trajectory_of_a_damaged_episode_names_episode_and_file(lake: Path, ids: dict[str, str]) -> None:
    path = table(lake, ids["lander"], "agent_steps")
    flip(path)
    with pytest.raises(DamagedFile) as caught:
        Lake(lake).trajectory(ids["lander"][:8])
    error = caught.value
    assert (error.episode_id, error.file) == (ids["lander"], str(path))
    assert str(error).startswith(f"episode {ids['lander']}: damaged file {path}: ")
    assert str(error).endswith("; run `ingest-pipeline check --deep` to list every damaged file, "
                               "then `ingest-pipeline rm` its episodes")
    assert "\n" not in str(error)
    Lake(lake).trajectory(ids["cart"])  # the others still read


def test_frames_and_exports_of_a_damaged_episode(lake: Path, ids: dict[str, str], tmp_path: Path) -> None:
    steps = table(lake, ids["lander"], "steps")
    flip(steps)
    the_lake = Lake(lake)
    with pytest.raises(DamagedFile, match=r"damaged file .*steps\.parquet"):
        the_lake.trajectory(ids["lander"], frames=FrameOptions(missing="previous"))
    with pytest.raises(DamagedFile, match=f"episode {ids['lander']}"):
        the_lake.to_npz(tmp_path / "out.npz", [ids["lander"]], frames=FrameOptions(missing="previous"))
    assert not (tmp_path / "out.npz").exists()
    cut(table(lake, ids["full"], "episode_agents"))
    with pytest.raises(DamagedFile, match=f"episode {ids['full']}: damaged file .*episode_agents.parquet"):
        the_lake.to_numpy([ids["full"]])  # two agents: the first is read from episode_agents
    with pytest.raises(DamagedFile, match=r"episode_agents\.parquet"):
        the_lake.agents(ids["full"])


def test_polars_reads_name_the_damaged_file(lake: Path, ids: dict[str, str]) -> None:
    path = table(lake, ids["cart"], "agent_steps")
    count = "SELECT count(*) AS n FROM agent_steps"
    rows = Lake(lake).sql(count, eager=True)["n"].to_list()
    flip(path)
    the_lake = Lake(lake)
    # polars verifies no checksums: a metadata-only answer is as good as the footers
    assert the_lake.sql(count, eager=True)["n"].to_list() == rows
    with pytest.raises(DamagedFile) as caught:
        the_lake.sql("SELECT * FROM agent_steps", eager=True)
    assert (caught.value.file, caught.value.episode_id) == (str(path), ids["cart"])
    cut(table(lake, ids["full"], "episodes"))
    for read in (the_lake.listing, lambda: the_lake.describe(ids["full"]),
                 lambda: the_lake.sql("SELECT count(*) FROM episodes", eager=True)):
        with pytest.raises(DamagedFile, match=f"episode {ids['full']}: damaged file .*episodes.parquet"):
            read()
    with pytest.raises(DamagedFile, match=r"episodes\.parquet"), the_lake.reading():
        the_lake.episodes().collect()


def test_a_polars_error_that_is_not_damage_passes_through(lake: Path) -> None:
    import polars as pl

    with pytest.raises(pl.exceptions.InvalidOperationError), Lake(lake).reading():
        Lake(lake).episodes().select(pl.col("source").cast(pl.Int64)).collect()


def test_find_damaged_looks_at_footers_then_pages(lake: Path, ids: dict[str, str]) -> None:
    files = [table(lake, ids["lander"], name) for name in ("episodes", "steps", "agent_steps")]
    assert find_damaged(files, page_budget=1 << 30) == []
    flip(files[2])
    assert find_damaged(files) == []  # footers only
    assert [d.file for d in find_damaged(files, page_budget=1 << 30)] == [str(files[2])]
    cut(files[1])
    assert [d.file for d in find_damaged(files, page_budget=1 << 30)] == [str(files[1])]


def test_rm_takes_a_damaged_episode_out_without_reading_it(lake: Path, ids: dict[str, str]) -> None:
    for name in ("episodes", "agent_steps"):
        cut(table(lake, ids["lander"], name), 10)
    the_lake = Lake(lake)
    assert [loc.episode_id for loc in the_lake.remove([ids["lander"][:6]])] == [ids["lander"]]
    assert check(lake, deep=True).ok
    assert len(the_lake.listing()) == 2


def test_a_lake_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    file = tmp_path / "lake"
    file.write_text("not a lake")
    with pytest.raises(LakeError, match=f"^{file} is a file, not a lake folder"):
        Lake(file)
    with pytest.raises(LakeError, match=f"^cannot read the lake {file}/lake: Not a directory"):
        Lake(file / "lake")
    with pytest.raises(LakeError, match=f"^{file} is a file, not a lake folder"):
        check(file)
    with pytest.raises(LakeError, match=f"^no lake at {tmp_path / 'nowhere'} "):
        check(tmp_path / "nowhere")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_export_to_a_full_disk(lake: Path, ids: dict[str, str]) -> None:
    with pytest.raises(ExportError, match=r"^could not write /dev/full: No space left on device; free some space"):
        Lake(lake).to_npz("/dev/full", [ids["cart"]])
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written to, never replaced
    assert not Path("/dev/.full.partial").exists()


def test_export_into_a_missing_folder(lake: Path, ids: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="create its folder first"):
        Lake(lake).to_npz(tmp_path / "no" / "out.npz", [ids["cart"]])


def test_a_lake_that_may_not_be_read(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, whom chmod 000 does not stop: refuse the listing itself.
    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(LakeError, match=f"^cannot read the lake {lake}: Permission denied$"):
        Lake(lake)
    with pytest.raises(LakeError, match=f"^cannot read the lake {lake}: Permission denied$"):
        check(lake)
