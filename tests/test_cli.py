"""The ``ingest-pipeline`` command: the exact text a user sees, and the exit codes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cli import cli
from pipeline.lake.layout import ENV_VAR
from tests.helpers import episode, lake_snapshot, write_json

ENV_WITHOUT_LAKE = {ENV_VAR: None}  # CliRunner removes variables set to None


def episode_id(path: Path) -> str:
    """The id the format promises: the first 32 hex digits of the SHA-256 of the file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def summary_line(source: str, verb: str, path: Path, steps: int, agent_steps: int, unit_steps: int = 0) -> str:
    """A regular expression for one human summary line (the throughput varies, nothing else may)."""
    return (
        rf"{re.escape(source)}: {verb} episode {episode_id(path)} "
        rf"\({steps} steps, {agent_steps} agent steps, {unit_steps} unit steps, \d+\.\d MB/s\)"
    )


def invoke(*args: str, input: bytes | None = None, env: dict[str, str | None] | None = None):
    runner = CliRunner()
    return runner.invoke(cli, list(args), input=input, env={**ENV_WITHOUT_LAKE, **(env or {})})


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_json(tmp_path / "good.json", episode(steps=3))


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    """Step number 1 gives both "reward" and "rewards"."""
    document = episode(steps=3)
    document["inference"]["steps"][1]["agent_steps"][0]["rewards"] = [1.0]
    return write_json(tmp_path / "bad.json", document)


BAD_MESSAGE = (
    'inference.steps[1].agent_steps[0] (step number 1): '
    'exactly one of "reward" or "rewards" is required, found both'
)


def episode_folders(lake: Path) -> list[str]:
    """Each committed episode as ``environment=<env>/episode_id=<id>``, in its own folder or a segment."""
    from pipeline.lake.layout import list_episodes

    return sorted(f"{loc.path.parent.name}/episode_id={loc.episode_id}" for loc in list_episodes(lake))


# --- run ------------------------------------------------------------------------------------------


def test_run_prints_one_summary_line_and_exits_0(good, lake):
    result = invoke("run", str(good), "--lake", str(lake))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(summary_line(str(good), "ingested", good, 3, 3) + "\n", result.stdout), result.stdout
    assert result.stderr == ""
    assert episode_folders(lake) == [f"environment=CartPole-v1/episode_id={episode_id(good)}"]


def test_run_again_says_already_present_and_keeps_one_copy(good, lake):
    assert invoke("run", str(good), "--lake", str(lake)).exit_code == 0
    before = lake_snapshot(lake)
    result = invoke("run", str(good), "--lake", str(lake))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(summary_line(str(good), "already present", good, 3, 3) + "\n", result.stdout), result.stdout
    assert result.stderr == ""
    assert lake_snapshot(lake) == before


def batch_summary(files: int, ingested: int, exists: int, invalid: int, failed: int) -> str:
    """The closing line of a multi-file run (on stderr), MB figures left free."""
    return (rf"{files} files: {ingested} ingested, {exists} already present, {invalid} invalid, {failed} failed; "
            r"[\d.]+ MB in [\d.]+ s, [\d.]+ MB/s")


def test_run_json_lines_have_exactly_the_documented_keys(good, bad, tmp_path, lake):
    missing = tmp_path / "missing.json"
    result = invoke("run", str(good), str(good), str(bad), str(missing), "--lake", str(lake), "--json")
    assert result.exit_code == 1
    assert re.fullmatch(batch_summary(4, 1, 1, 1, 1), result.stderr.rstrip("\n")), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    keys = ["source", "status", "episode_id", "steps", "agent_steps", "unit_steps", "error"]
    for record in records:
        assert sorted(record) == sorted(keys)
    assert records[0] == {"source": str(good), "status": "ingested", "episode_id": episode_id(good),
                          "steps": 3, "agent_steps": 3, "unit_steps": 0, "error": None}
    assert records[1] == {**records[0], "status": "exists"}
    assert records[2] == {
        "source": str(bad), "status": "invalid", "episode_id": None, "steps": 0, "agent_steps": 0, "unit_steps": 0,
        "error": {"message": f"{bad}: {BAD_MESSAGE}", "path": "inference.steps[1].agent_steps[0]", "step": 1,
                  "rule": "reward.exactly_one"},
    }
    assert records[3]["status"] == "failed"
    assert records[3]["error"] == {"message": f"{missing}: no such file", "path": None, "step": None, "rule": None}


def test_run_invalid_file_exits_1_with_path_and_step_and_no_traceback(bad, lake):
    result = invoke("run", str(bad), "--lake", str(lake))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"invalid: {bad}: {BAD_MESSAGE}\n"
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert episode_folders(lake) == []


def test_run_processes_every_file_of_a_mix_and_exits_1(good, bad, tmp_path, lake):
    other = write_json(tmp_path / "other.json", episode(steps=2))
    missing = tmp_path / "missing.json"
    result = invoke("run", str(bad), str(good), str(missing), str(other), "--lake", str(lake))
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert len(out) == 2
    assert re.fullmatch(summary_line(str(good), "ingested", good, 3, 3), out[0]), out[0]
    assert re.fullmatch(summary_line(str(other), "ingested", other, 2, 2), out[1]), out[1]
    errors = result.stderr.splitlines()
    assert errors[:2] == [f"invalid: {bad}: {BAD_MESSAGE}", f"failed: {missing}: no such file"]
    assert len(errors) == 3 and re.fullmatch(batch_summary(4, 2, 0, 1, 1), errors[2]), errors
    assert episode_folders(lake) == sorted(
        f"environment=CartPole-v1/episode_id={episode_id(p)}" for p in (good, other)
    )


def test_run_missing_file_fails_with_no_such_file(tmp_path, lake):
    missing = tmp_path / "nowhere" / "missing.json"
    result = invoke("run", str(missing), "--lake", str(lake))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"failed: {missing}: no such file\n"
    assert "Traceback" not in result.output

    as_json = invoke("run", str(missing), "--lake", str(lake), "--json")
    assert as_json.exit_code == 1
    record = json.loads(as_json.stdout)
    assert record["status"] == "failed"
    assert record["error"]["message"] == f"{missing}: no such file"


def test_run_quiet_prints_nothing_for_successes_but_still_reports_errors(good, bad, lake):
    result = invoke("run", str(good), "--lake", str(lake), "--quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    again = invoke("run", str(good), "-q", "--lake", str(lake))
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")
    assert len(episode_folders(lake)) == 1

    mixed = invoke("run", str(good), str(bad), "--lake", str(lake), "--quiet")
    assert mixed.exit_code == 1
    assert mixed.stdout == ""
    errors = mixed.stderr.splitlines()
    assert errors[0] == f"invalid: {bad}: {BAD_MESSAGE}"
    assert len(errors) == 2 and re.fullmatch(batch_summary(2, 0, 1, 1, 0), errors[1]), errors


def test_run_lake_option_and_environment_variable(good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_option = tmp_path / "by_option"
    by_env = tmp_path / "by_env"

    assert invoke("run", str(good), "--lake", str(by_option)).exit_code == 0
    assert len(episode_folders(by_option)) == 1

    assert invoke("run", str(good), env={ENV_VAR: str(by_env)}).exit_code == 0
    assert len(episode_folders(by_env)) == 1

    # The option wins over the variable.
    other = write_json(tmp_path / "other.json", episode(steps=2))
    assert invoke("run", str(other), "--lake", str(by_option), env={ENV_VAR: str(by_env)}).exit_code == 0
    assert len(episode_folders(by_option)) == 2
    assert len(episode_folders(by_env)) == 1
    assert not (tmp_path / "lake").exists()


def test_run_defaults_to_lake_in_the_current_folder(good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", str(good))
    assert result.exit_code == 0, result.output
    assert episode_folders(tmp_path / "lake") == [f"environment=CartPole-v1/episode_id={episode_id(good)}"]


def test_run_dash_reads_standard_input(good, lake):
    result = invoke("run", "-", "--lake", str(lake), input=good.read_bytes())
    assert result.exit_code == 0, result.output
    assert re.fullmatch(summary_line("-", "ingested", good, 3, 3) + "\n", result.stdout), result.stdout
    # Same content, same id: the file itself is now already present.
    again = invoke("run", str(good), "--lake", str(lake))
    assert re.fullmatch(summary_line(str(good), "already present", good, 3, 3) + "\n", again.stdout)


def test_run_dash_with_invalid_input_names_standard_input(bad, lake):
    result = invoke("run", "-", "--lake", str(lake), input=bad.read_bytes())
    assert result.exit_code == 1
    assert result.stderr == f"invalid: -: {BAD_MESSAGE}\n"


# --- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "Error: Missing argument 'FILE_OR_URL...'."),
        (["validate"], "Error: Missing argument 'FILE_OR_URL...'."),
        (["run", "--bogus", "x.json"], "Error: No such option: --bogus"),
        (["validate", "--bogus", "x.json"], "Error: No such option: --bogus"),
        (["frobnicate"], "Error: No such command 'frobnicate'."),
    ],
)
def test_usage_errors_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    # click's wording of "No such option" changed between versions; compare without punctuation.
    normalise = lambda text: re.sub(r"[^\w ]", "", text)  # noqa: E731
    assert normalise(message) in normalise(result.stderr), result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "lake").exists()


def test_no_arguments_shows_usage_and_exits_2():
    result = invoke()
    assert result.exit_code == 2
    assert "Usage:" in result.output
    assert "run" in result.output and "validate" in result.output


# --- validate -------------------------------------------------------------------------------------


def test_validate_reports_valid_and_invalid_and_writes_nothing(good, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env_lake = tmp_path / "env_lake"
    result = invoke("validate", str(good), str(bad), env={ENV_VAR: str(env_lake)})
    assert result.exit_code == 1
    assert re.fullmatch(summary_line(str(good), "valid", good, 3, 3) + "\n", result.stdout), result.stdout
    assert result.stderr == f"invalid: {bad}: {BAD_MESSAGE}\n"
    assert not (tmp_path / "lake").exists()
    assert not env_lake.exists()


def test_validate_valid_file_exits_0_and_json(good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", str(good), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"source": str(good), "status": "valid", "episode_id": episode_id(good),
                                         "steps": 3, "agent_steps": 3, "unit_steps": 0, "error": None}
    assert not (tmp_path / "lake").exists()


def test_json_lines_stay_one_line_for_every_line_splitter(tmp_path):
    """A file name and an error holding U+2028, U+2029 and U+0085 (line breaks to str.splitlines and to
    JavaScript) still give one record a line; the text reads back exactly, other non-ASCII text as it is."""
    doc = episode()
    doc["training"]["config"] = {}
    doc["trainingé\u2028x\x85y\u2029"] = 1  # an unknown root key: its name is in the message
    path = write_json(tmp_path / "épisode\u2028.json", doc)
    result = invoke("validate", str(path), "--json")
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert record["source"] == str(path) and record["status"] == "invalid"
    assert "trainingé\u2028x\x85y\u2029" in record["error"]["message"]
    assert "é" in line and "\u2028" not in line


def test_validate_quiet_and_standard_input(good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", "-", "--quiet", input=good.read_bytes())
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "lake").exists()


# --- help -----------------------------------------------------------------------------------------


def _commands() -> list[Any]:
    found = [pytest.param([], cli, id="ingest-pipeline")]
    found += [pytest.param([name], command, id=name) for name, command in sorted(cli.commands.items())]
    return found


@pytest.mark.parametrize(("path", "command"), _commands())
def test_every_command_has_help_with_an_example(path, command):
    assert command.help and "Example" in command.help
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "ingest-pipeline" in result.stdout
    # Every option is explained too.
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path) or 'cli'}: option {param.name} has no help"


def test_check_passes_on_what_run_writes_and_fails_with_problems(good, lake):
    assert invoke("run", str(good), "--lake", str(lake)).exit_code == 0
    clean = invoke("check", "--lake", str(lake), "--deep")
    assert (clean.exit_code, clean.stdout) == (0, "ok: 1 episode checked (deep)\n")
    (folder,) = [p for p in lake.glob("environment=*/episode_id=*")]
    (folder / "steps.parquet").unlink()
    broken = invoke("check", "--lake", str(lake))
    assert broken.exit_code == 1
    assert broken.stderr == (f"problem: {folder / 'steps.parquet'} (episode {folder.name[len('episode_id='):]}): "
                             f"missing table\n1 problem in 1 episode\n")


def test_gc_removes_dead_staging_folders_and_reports_them(lake):
    leftover = lake / "_staging" / "20260101T000000-host-1-abc"
    (leftover / "episode").mkdir(parents=True)
    (leftover / "owner.lock").write_text("host 1\n")
    assert invoke("gc", "--lake", str(lake), "--older-than", "12h").stdout == \
        "0 staging folders removed, 0 still running, 1 too recent\n"
    result = invoke("gc", "--lake", str(lake))
    assert (result.exit_code, result.stdout) == (0, f"removed {leftover}\n1 staging folder removed, 0 still running, 0 too recent\n")
    assert invoke("gc", "--lake", str(lake)).stdout == "nothing to remove\n"
    bad = invoke("gc", "--lake", str(lake), "--older-than", "soon")
    assert bad.exit_code == 2 and "is not a duration such as 90s" in bad.stderr


def test_the_command_in_its_own_process_leaves_every_line_and_its_status(bad, tmp_path):
    """`run` and `validate` end their own process without the interpreter's teardown (cli._leave):
    what they printed to a file (fully buffered) is all there, in order, and the status is theirs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    files = [str(write_json(tmp_path / f"e{k:02d}.json", episode(steps=2 + k))) for k in range(12)]
    lake = str(tmp_path / "lake")
    for args, status, lines in [(("run", *files, "--jobs", "1", "--lake", lake, "--json"), 0, 12),
                                (("validate", *files, str(bad), "--json"), 1, 13),
                                (("run", *files, "--lake", lake, "--json"), 0, 12)]:
        out = tmp_path / "out.txt"
        with out.open("w") as sink:
            done = subprocess.run([sys.executable, "cli.py", *args], cwd=root, stdout=sink, stderr=subprocess.PIPE,
                                  text=True)
        printed = [json.loads(line) for line in out.read_text().splitlines()]
        assert done.returncode == status, done.stderr
        assert [Path(row["source"]).name for row in printed] == [Path(f).name for f in args if f.endswith(".json")][:lines]
    assert len(episode_folders(Path(lake))) == 12


def test_the_command_in_its_own_process_ingests_without_pandas(good, bad, tmp_path):
    """`ingest-pipeline run` and `validate` keep pyarrow from importing pandas in their own process
    and in the workers (0.2-0.27 s a run): one file here, several in workers, all still work."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    second = write_json(tmp_path / "second.json", episode(steps=5))
    lake = str(tmp_path / "lake")
    commands = {
        ("run", str(good), "--lake", lake): 0,
        ("run", str(second), str(bad), "--jobs", "2", "--lake", lake): 1,  # bad is invalid
        ("validate", str(good)): 0,
    }
    for args, status in commands.items():
        done = subprocess.run([sys.executable, "cli.py", *args], cwd=root, capture_output=True, text=True)
        assert (done.returncode, "pandas" in done.stderr) == (status, False), done.stderr
    assert len(episode_folders(Path(lake))) == 2
