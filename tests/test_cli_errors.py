"""No traceback for anything a user can cause: every command, run as a command, with bad data and bad arguments.

Each case runs ``python -m pipeline`` (the installed command's entry point) from this checkout in a
fresh process, and asserts the exit status, that nothing says ``Traceback``, and that standard
error ends with one line saying what is wrong (click's usage errors, exit 2, add their usage lines).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import Lake
from tests.dataset_lake import build_lake
from tests.lake.test_damage import cut, flip

ROOT = Path(__file__).resolve().parent.parent


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "INGEST_PIPELINE_LAKE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cli-errors")
    ids = build_lake(root, ["lander", "cart"])
    lake = Lake(root / "lake")
    cart = lake.resolve(ids["cart"]).path
    for digit in "12":  # two ids that share the prefix "abcd"
        shutil.copytree(cart, cart.with_name("episode_id=abcd" + digit * 28))
    return root / "lake", ids


@dataclass(frozen=True)
class Case:
    args: list[str]  # {lake}, {lander}, {tmp} are filled in
    status: int
    message: str  # the start of standard error's last line
    setup: Callable[[Path, dict[str, str]], None] | None = None


def _damage_page(lake: Path, ids: dict[str, str]) -> None:
    # At the start of a column chunk: a page header polars cannot decode either. (A flip inside a
    # page's data polars may decode into wrong values without a word: it verifies no checksums.)
    flip(Lake(lake).resolve(ids["lander"]).table("agent_steps"), at_start=True)


def _cut_footer(lake: Path, ids: dict[str, str]) -> None:
    cut(Lake(lake).resolve(ids["lander"]).table("episodes"))


def _empty(lake: Path, ids: dict[str, str]) -> None:
    shutil.rmtree(lake)
    lake.mkdir()


def _missing(lake: Path, ids: dict[str, str]) -> None:
    shutil.rmtree(lake)


def _file(lake: Path, ids: dict[str, str]) -> None:
    shutil.rmtree(lake)
    lake.write_text("not a lake")


DAMAGED = "Error: episode {lander}: damaged file {lake}/"
NO_LAKE = "Error: no lake at {lake} (no such folder); give --lake the lake's folder"
IS_FILE = "Error: Invalid value for '--lake' (env var: 'INGEST_PIPELINE_LAKE'): Directory '{lake}' is a file."
UNDER_FILE = "Error: cannot read the lake {tmp}/afile/lake: Not a directory"

CASES = {
    # a lake folder that does not exist
    "ls-missing": Case(["ls", "--lake", "{lake}"], 1, NO_LAKE, _missing),
    "show-missing": Case(["show", "257a", "--lake", "{lake}"], 1, NO_LAKE, _missing),
    "query-missing": Case(["query", "SELECT 1", "--lake", "{lake}"], 1, NO_LAKE, _missing),
    "export-missing": Case(["export", "257a", "--to", "npz", "-o", "{tmp}/x.npz", "--lake", "{lake}"], 1,
                           NO_LAKE, _missing),
    "rm-missing": Case(["rm", "257a", "--lake", "{lake}"], 1, NO_LAKE, _missing),
    "check-missing": Case(["check", "--lake", "{lake}"], 1, "Error: no lake at {lake} (no such folder)", _missing),
    # an empty lake: reading commands find no episode
    "show-empty": Case(["show", "257a", "--lake", "{lake}"], 1, "Error: no episode '257a' in {lake}", _empty),
    "export-empty": Case(["export", "257a", "--to", "npz", "-o", "{tmp}/x.npz", "--lake", "{lake}"], 1,
                         "Error: no episode '257a' in {lake}", _empty),
    "query-empty-unknown-table": Case(["query", "SELECT * FROM nope", "--lake", "{lake}"], 1,
                                      "Error: relation 'nope' was not found", _empty),
    # a lake path that is a file, or under one (the way to be refused reading, when tests run as root)
    "ls-file": Case(["ls", "--lake", "{lake}"], 2, IS_FILE, _file),
    "check-file": Case(["check", "--lake", "{lake}"], 2, IS_FILE, _file),
    "gc-file": Case(["gc", "--lake", "{lake}"], 2, IS_FILE, _file),
    "run-file": Case(["run", "{tmp}/sources/cart.json", "--lake", "{lake}"], 2, IS_FILE, _file),
    "ls-under-file": Case(["ls", "--lake", "{tmp}/afile/lake"], 1, UNDER_FILE),
    "query-under-file": Case(["query", "SELECT 1", "--lake", "{tmp}/afile/lake"], 1, UNDER_FILE),
    "check-under-file": Case(["check", "--lake", "{tmp}/afile/lake"], 1, UNDER_FILE),
    "gc-under-file": Case(["gc", "--lake", "{tmp}/afile/lake"], 1, UNDER_FILE),
    "run-under-file": Case(["run", "{tmp}/sources/cart.json", "--lake", "{tmp}/afile/lake"], 1,
                           "failed: {tmp}/sources/cart.json: "),
    # a damaged data page, and a file cut to 100 bytes
    "query-damaged-page": Case(["query", "SELECT * FROM agent_steps", "--lake", "{lake}"], 1, DAMAGED,
                               _damage_page),
    "export-damaged-page": Case(["export", "{lander}", "--to", "npz", "-o", "{tmp}/x.npz", "--lake", "{lake}"], 1,
                                DAMAGED, _damage_page),
    "check-deep-damaged-page": Case(["check", "--deep", "--lake", "{lake}"], 1,
                                    "to take the damaged episodes out of the lake: ingest-pipeline rm {lander}",
                                    _damage_page),
    "query-cut-file": Case(["query", "SELECT count(*) FROM episodes", "--lake", "{lake}"], 1, DAMAGED, _cut_footer),
    "ls-cut-file": Case(["ls", "--lake", "{lake}"], 1, DAMAGED, _cut_footer),
    "show-cut-file": Case(["show", "{lander}", "--lake", "{lake}"], 1, DAMAGED, _cut_footer),
    "check-cut-file": Case(["check", "--lake", "{lake}"], 1, "to take the damaged episodes out", _cut_footer),
    # episode ids that match nothing, or several
    "show-unknown": Case(["show", "0000", "--lake", "{lake}"], 1, "Error: no episode '0000' in {lake}"),
    "rm-unknown": Case(["rm", "{lander}", "0000", "--lake", "{lake}"], 1, "Error: no episode '0000' in {lake}"),
    "export-ambiguous": Case(["export", "abcd", "--to", "npz", "-o", "{tmp}/x.npz", "--lake", "{lake}"], 1,
                             "Error: episode id prefix 'abcd' is ambiguous"),
    # bad arguments
    "no-command": Case(["nope"], 2, "Error: No such command 'nope'."),
    "run-no-file": Case(["run", "{tmp}/none.json", "--lake", "{lake}"], 1, "failed: {tmp}/none.json: "),
    "run-bad-jobs": Case(["run", "x.json", "--jobs", "0"], 2, "Error: Invalid value for '--jobs'"),
    "validate-no-args": Case(["validate"], 2, "Error: Missing argument 'FILE_OR_URL...'."),
    "ls-bad-option": Case(["ls", "--envv", "x"], 2, "Error: No such option '--envv'. Did you mean '--env'?"),
    "show-no-id": Case(["show", "--lake", "{lake}"], 2, "Error: Missing argument 'EPISODE_ID'."),
    "query-bad-sql": Case(["query", "SELEC 1", "--lake", "{lake}"], 1, "Error: sql parser error: "),
    "query-bad-format": Case(["query", "SELECT 1", "--format", "xml"], 2, "Error: Invalid value for '--format'"),
    "query-parquet-no-o": Case(["query", "SELECT 1", "--format", "parquet"], 2,
                               "Error: --format parquet needs -o FILE"),
    "query-o-missing-folder": Case(["query", "SELECT 1", "-o", "{tmp}/no/x.csv", "--format", "csv", "--lake",
                                    "{lake}"], 1, "Error: could not write {tmp}/no/x.csv: No such file or directory"),
    "export-no-to": Case(["export", "{lander}", "-o", "x.npz"], 2, "Error: Missing option '--to'."),
    "export-bad-resize": Case(["export", "{lander}", "--to", "npz", "-o", "x.npz", "--resize", "big"], 2,
                              "Error: Invalid value for '--resize': expected HEIGHTxWIDTH"),
    "export-unknown-agent": Case(["export", "{lander}", "--to", "npz", "-o", "{tmp}/x.npz", "--agent", "nobody",
                                  "--lake", "{lake}"], 1, "Error: episode {lander} has no agent 'nobody'"),
    "rm-no-id": Case(["rm"], 2, "Error: Missing argument 'EPISODE_ID...'."),
    "gc-bad-duration": Case(["gc", "--older-than", "soon"], 2, "Error: Invalid value for '--older-than'"),
    # a full disk during export, and during query -o
    "export-full-disk": Case(["export", "{lander}", "--to", "npz", "-o", "/dev/full", "--lake", "{lake}"], 1,
                             "Error: could not write /dev/full: No space left on device; free some space"),
    "query-full-disk": Case(["query", "SELECT 1", "--format", "csv", "-o", "/dev/full", "--lake", "{lake}"], 1,
                            "Error: could not write /dev/full: No space left on device"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_command_ends_with_one_line_and_no_traceback(name: str, built: tuple[Path, dict[str, str]],
                                                      tmp_path: Path) -> None:
    case = CASES[name]
    if "/dev/full" in case.args and not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    lake = shutil.copytree(built[0], tmp_path / "lake")
    shutil.copytree(built[0].parent / "sources", tmp_path / "sources")
    (tmp_path / "afile").write_text("a file, not a folder")
    ids = built[1]
    if case.setup is not None:
        case.setup(lake, ids)
    names = {"lake": str(lake), "lander": ids["lander"], "tmp": str(tmp_path)}
    result = command(*(arg.format(**names) for arg in case.args), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == case.status, output
    lines = result.stderr.rstrip("\n").split("\n")
    errors = [line for line in lines if line.startswith("Error:")]
    if case.status == 2:  # click's usage error: usage lines, then the one error line (--to's lists choices)
        assert len(errors) == 1 and errors[0].startswith(case.message.format(**names)), output
        return
    assert lines[-1].startswith(case.message.format(**names)), output
    if case.args[0] not in ("check", "run"):  # check lists problems; run prints a line per file
        assert lines == errors and len(errors) == 1, output


def test_rm_of_a_damaged_episode_then_a_clean_check(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake = shutil.copytree(built[0], tmp_path / "lake")
    _damage_page(lake, built[1])
    _cut_footer(lake, built[1])
    removed = command("rm", built[1]["lander"], "--lake", str(lake), cwd=tmp_path)
    assert (removed.returncode, removed.stderr) == (0, "")
    checked = command("check", "--deep", "--lake", str(lake), cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (0, "ok: 3 episodes checked (deep)\n")
