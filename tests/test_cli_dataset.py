"""The dataset commands ls, show, query, export and rm: the exact text a user sees, and exit codes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner, Result

from cli import cli
from pipeline import Lake
from pipeline.lake.layout import ENV_VAR
from tests.dataset_lake import build_lake, copy_lake


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cli")
    return root / "lake", build_lake(root, ["lander", "full", "cart", "numeric"])


@pytest.fixture
def lake_path(built: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    """A private copy of the lake, with two more copies of "cart" under ids that share "abcd"."""
    lake = copy_lake(built[0], tmp_path / "lake")
    cart = Lake(lake).resolve(built[1]["cart"]).path
    for digit in "12":
        shutil.copytree(cart, cart.with_name("episode_id=abcd" + digit * 28))
    return lake


@pytest.fixture
def ids(built: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return built[1]


def invoke(lake: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--lake", str(lake)], env={ENV_VAR: None})


def _stamp(lake: Path, episode_id: str) -> str:
    return Lake(lake).describe(episode_id)["episode"]["ingested_at"].strftime("%Y-%m-%dT%H:%M:%SZ")


# -- ls --------------------------------------------------------------------------------------


def test_ls_prints_one_aligned_line_per_episode(built: tuple[Path, dict[str, str]]) -> None:
    lake, ids = built
    result = invoke(lake, "ls")
    assert result.exit_code == 0, result.output
    lines = {  # the lander's total reward is 2.8424000000000014, shown to 4 decimals
        "lander": f"{ids['lander']}  LunarLander-v3      PPO           60       1        2.8424",
        "full": f"{ids['full']}  StarCraft/2m_vs_1z  QMIX           3       2          3.75",
        "cart": f"{ids['cart']}  CartPole-v1         PPO            4       1             6",
        "numeric": f"{ids['numeric']}  123                 PPO            2       1             1",
    }
    order = sorted(lines, key=lambda name: (Lake(lake).describe(ids[name])["episode"]["ingested_at"], ids[name]))
    assert result.output == (
        "EPISODE                           ENVIRONMENT         ALGORITHM  STEPS  AGENTS  TOTAL REWARD  INGESTED AT\n"
        + "".join(f"{lines[name]}  {_stamp(lake, ids[name])}\n" for name in order)
    )


def test_ls_env_and_json(built: tuple[Path, dict[str, str]]) -> None:
    lake, ids = built
    result = invoke(lake, "ls", "--env", "StarCraft/2m_vs_1z", "--json")
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.output.splitlines()] == [{
        "episode_id": ids["full"], "environment": "StarCraft/2m_vs_1z", "algorithm": "QMIX", "steps": 3,
        "agents": 2, "agent_steps": 3, "unit_steps": 2, "total_reward": 3.75,
        "ingested_at": _stamp(lake, ids["full"]), "source": str(lake.parent / "sources" / "full.json"),
    }]


def test_ls_on_an_empty_lake_prints_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty", "ls")
    assert (result.exit_code, result.output) == (0, "")


def test_reading_a_lake_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nowhere", "ls")
    assert (result.exit_code, result.output) == (1, (
        f"Error: no lake at {tmp_path / 'nowhere'} (no such folder); give --lake the lake's folder, "
        f"or ingest into it first with: ingest-pipeline run FILE --lake {tmp_path / 'nowhere'}\n"))


# -- show ------------------------------------------------------------------------------------


def test_show_prints_metadata_agents_and_labels(built: tuple[Path, dict[str, str]]) -> None:
    lake, ids = built
    result = invoke(lake, "show", ids["full"][:7])
    assert result.exit_code == 0, result.output
    source = lake.parent / "sources" / "full.json"
    assert result.output == f"""\
episode           {ids["full"]}
environment       StarCraft/2m_vs_1z
algorithm         QMIX (3 iterations, 0.5 GPUs, parallel)
source            {source} ({source.stat().st_size} bytes)
ingested at       {_stamp(lake, ids["full"])} (ingest-pipeline 0.1.0)
steps             3 (numbers 0 to 2), 3 agent steps, 2 unit steps, 1 image
total reward      3.75
training config   {{"lr":0.0005,"layers":[64,64],"nested":{{"a":null,"b":true,"c":"x"}}}}
inference config  {{"seed":7}}

agents
  AGENT      STEPS  FIRST  LAST  TOTAL REWARD   MEAN  MIN   MAX  UNITS  UNIT STEPS
  team_red       2      0     2          4.75  2.375  1.5  3.25      2           2
  team_blue      1      0     0            -1     -1   -1    -1      0           0

reward totals
  COMPONENT  team_red  team_blue
  damage         3.75         -1
  kills             1          0

actions
  -1  unknown
   0  noop
   1  fire

unit actions
  0  hold
  1  move
"""


def test_show_json(built: tuple[Path, dict[str, str]]) -> None:
    lake, ids = built
    info = json.loads(invoke(lake, "show", ids["lander"], "--json").output)
    assert info["episode"]["episode_id"] == ids["lander"]
    assert info["reward_names"] == ["Shaping", "Main engine", "Leg contact"]
    assert info["actions"] == {"0": "Do nothing", "1": "Fire left engine", "2": "Fire main engine",
                               "3": "Fire right engine"}
    assert [agent["agent"] for agent in info["agents"]] == ["lander"]


def test_ambiguous_and_unknown_ids_are_clear_errors(lake_path: Path) -> None:
    ambiguous = invoke(lake_path, "show", "abcd")
    assert ambiguous.exit_code == 1
    assert ambiguous.output == (f"Error: episode id prefix 'abcd' is ambiguous: it matches 2 episodes "
                                f"(abcd{'1' * 28}, abcd{'2' * 28})\n")
    unknown = invoke(lake_path, "show", "0000")
    assert (unknown.exit_code, unknown.output) == (1, f"Error: no episode '0000' in {lake_path}\n")
    assert invoke(lake_path, "show", "abcd1").exit_code == 0


# -- query -----------------------------------------------------------------------------------

COUNTS = "SELECT environment, count(*) AS steps FROM agent_steps GROUP BY environment ORDER BY environment"


def test_query_csv(built: tuple[Path, dict[str, str]]) -> None:
    result = invoke(built[0], "query", COUNTS, "--format", "csv")
    assert result.exit_code == 0
    assert result.output == "environment,steps\n123,2\nCartPole-v1,4\nLunarLander-v3,60\nStarCraft/2m_vs_1z,3\n"


def test_query_json_is_one_object_per_line(built: tuple[Path, dict[str, str]]) -> None:
    result = invoke(built[0], "query", COUNTS + " LIMIT 2", "--format", "json")
    assert result.output == '{"environment":"123","steps":2}\n{"environment":"CartPole-v1","steps":4}\n'


def test_query_table(built: tuple[Path, dict[str, str]]) -> None:
    result = invoke(built[0], "query", COUNTS)
    assert result.exit_code == 0
    assert result.output.startswith("shape: (4, 2)\n")
    assert "│ StarCraft/2m_vs_1z ┆ 3     │" in result.output


def test_query_with_labels(built: tuple[Path, dict[str, str]]) -> None:
    sql = ("SELECT s.step, l.action_label FROM agent_steps s JOIN action_labels l USING (episode_id, action) "
           "WHERE s.environment = 'LunarLander-v3' ORDER BY s.step LIMIT 3")
    assert invoke(built[0], "query", sql, "--format", "csv").output == (
        "step,action_label\n0,Fire main engine\n1,Fire right engine\n2,Fire right engine\n")


def test_query_to_files(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    result = invoke(built[0], "query", COUNTS, "--format", "parquet", "-o", str(tmp_path / "counts.parquet"))
    assert (result.exit_code, result.output) == (0, "")
    assert pl.read_parquet(tmp_path / "counts.parquet").rows()[0] == ("123", 2)
    invoke(built[0], "query", COUNTS, "--format", "csv", "-o", str(tmp_path / "counts.csv"))
    assert (tmp_path / "counts.csv").read_text().startswith("environment,steps\n123,2\n")


def test_query_errors(built: tuple[Path, dict[str, str]]) -> None:
    no_file = invoke(built[0], "query", COUNTS, "--format", "parquet")
    assert no_file.exit_code == 2 and "Error: --format parquet needs -o FILE" in no_file.output
    syntax = invoke(built[0], "query", "SELEC 1")
    assert syntax.exit_code == 1
    assert syntax.output == "Error: sql parser error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\n"
    column = invoke(built[0], "query", "SELECT nope FROM episodes")
    assert column.exit_code == 1 and column.output.startswith('Error: unable to find column "nope"')
    assert "Resolved plan" not in column.output


# -- export ----------------------------------------------------------------------------------


def test_export_npz(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "out.npz"
    result = invoke(lake, "export", ids["cart"][:6], ids["numeric"][:6], "--to", "npz", "-o", str(out))
    assert (result.exit_code, result.output) == (0, f"exported 2 episodes to {out}\n")
    with np.load(out) as arrays:
        assert arrays["episode_ids"].tolist() == [ids["cart"], ids["numeric"]]
        assert arrays["rewards"].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0]


def test_export_npz_with_frames(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "frames.npz"
    result = invoke(lake, "export", ids["lander"], "--to", "npz", "-o", str(out), "--resize", "21x21",
                    "--grayscale", "--stack-n", "4", "--framestack-axis-first", "--downsample-frequency", "5")
    assert result.exit_code == 0, result.output
    with np.load(out) as arrays:
        assert arrays["frames"].shape == (12, 4, 21, 21)
        assert arrays["steps"].tolist() == list(range(0, 60, 5))


def test_export_frames_from_a_prepared_store(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """--prepared requires the store (the error says how to make it), then gives the frames --decode gives."""
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(built[0], lake)
    episode = built[1]["lander"]
    frames = ["--resize", "21x21", "--grayscale", "--stack-n", "4", "--missing-frames", "previous"]
    missing = invoke(lake, "export", episode, "--to", "npz", "-o", str(tmp_path / "x.npz"), *frames, "--prepared")
    assert missing.exit_code == 1 and missing.output.startswith("Error: ")
    assert "frames prepare" in missing.output and not (tmp_path / "x.npz").exists()
    prepare = invoke(lake, "frames", "prepare", "--resize", "21x21", "--grayscale", "--missing-frames", "previous")
    assert prepare.exit_code == 0, prepare.output
    for how in ("--prepared", "--decode"):
        result = invoke(lake, "export", episode, "--to", "npz", "-o", str(tmp_path / f"{how}.npz"), *frames, how)
        assert result.exit_code == 0, result.output
    with np.load(tmp_path / "--prepared.npz") as stored, np.load(tmp_path / "--decode.npz") as decoded:
        assert stored["frames"].shape == (60, 21, 21, 4)
        assert np.array_equal(stored["frames"], decoded["frames"])


def test_export_errors(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "x.npz"
    agent = invoke(lake, "export", ids["full"], "--to", "npz", "-o", str(out), "--agent", "nobody")
    assert agent.output == f"Error: episode {ids['full']} has no agent 'nobody'; its agents: team_red, team_blue\n"
    frames = invoke(lake, "export", ids["lander"], "--to", "npz", "-o", str(out), "--frames")
    assert frames.output.startswith(f"Error: episode {ids['lander']}: step 1 has no image")
    size = invoke(lake, "export", ids["lander"], "--to", "npz", "-o", str(out), "--resize", "big")
    assert size.exit_code == 2 and "expected HEIGHTxWIDTH such as 84x84, not 'big'" in size.output
    assert not out.exists()


def test_export_d3rlpy(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    d3rlpy = pytest.importorskip("d3rlpy")
    lake, ids = built
    out = tmp_path / "lander.h5"
    result = invoke(lake, "export", ids["lander"], "--to", "d3rlpy", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"exported 1 episode to {out}\n"  # d3rlpy's own log lines go to stderr
    with open(out, "rb") as file:
        loaded = d3rlpy.dataset.ReplayBuffer.load(file, d3rlpy.dataset.InfiniteBuffer())
    assert loaded.episodes[0].observations.shape == (60, 8)


# -- rm --------------------------------------------------------------------------------------


def test_rm_removes_whole_episodes(lake_path: Path, ids: dict[str, str]) -> None:
    result = invoke(lake_path, "rm", ids["full"][:8], ids["cart"], "abcd1")
    assert result.exit_code == 0
    assert result.output == (f"removed episode {ids['full']} (StarCraft/2m_vs_1z)\n"
                             f"removed episode {ids['cart']} (CartPole-v1)\n"
                             f"removed episode abcd{'1' * 28} (CartPole-v1)\n")
    lake = Lake(lake_path)
    remaining = sorted([ids["lander"], ids["numeric"], "abcd" + "2" * 28])
    assert sorted(loc.episode_id for loc in lake.locations) == remaining
    assert set(lake.agent_steps().select("episode_id").collect()["episode_id"]) == {
        loc.episode_id for loc in lake.locations}
    assert not list((lake_path / "_staging").iterdir())


def test_rm_checks_every_id_before_removing_any(lake_path: Path, ids: dict[str, str]) -> None:
    before = sorted(p.name for p in lake_path.glob("*/*"))
    ambiguous = invoke(lake_path, "rm", ids["full"], "abcd")
    assert ambiguous.exit_code == 1 and ambiguous.output.startswith("Error: episode id prefix 'abcd' is ambiguous")
    unknown = invoke(lake_path, "rm", ids["full"], "0000")
    assert unknown.output == f"Error: no episode '0000' in {lake_path}\n"
    assert sorted(p.name for p in lake_path.glob("*/*")) == before


def test_rm_never_leaves_half_an_episode(lake_path: Path, ids: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash while deleting: the episode is already out of the lake, whole, in the staging area."""
    import pipeline.lake.maintenance

    def crash(path: object, ignore_errors: bool = False) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.lake.maintenance.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        Lake(lake_path).remove([ids["lander"]])
    monkeypatch.undo()
    lake = Lake(lake_path)
    assert ids["lander"] not in {loc.episode_id for loc in lake.locations}
    assert ids["lander"] not in set(lake.steps().select("episode_id").collect()["episode_id"])
    leftovers = list((lake_path / "_staging").glob("*/removed"))
    assert [sorted(p.name for p in folder.iterdir()) for folder in leftovers] == [[
        "agent_steps.parquet", "episode_agents.parquet", "episodes.parquet", "steps.parquet", "unit_steps.parquet"]]


def test_export_d3rlpy_without_the_extra(built: tuple[Path, dict[str, str]], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "d3rlpy", None)
    result = invoke(built[0], "export", built[1]["cart"], "--to", "d3rlpy", "-o", str(tmp_path / "x.h5"))
    assert (result.exit_code, result.output) == (
        1, "Error: d3rlpy export needs d3rlpy, which is not installed: pip install 'ingest-pipeline[rl]'\n")
    assert not (tmp_path / "x.h5").exists()
