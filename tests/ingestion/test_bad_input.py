"""Hostile input through the command line: every file of ``tests/data/bad`` is rejected with the rule its
name gives, exit status 1, no traceback, and the lake unchanged byte for byte; every file of
``tests/data/odd`` looks hostile but is a valid episode and reads back as it should; and files whose point
is their size (generated here, hundreds of MB) are rejected in bounded memory.

``tests/data/make_bad_corpus.py`` writes the corpus; a test below checks the committed files are exactly
what it writes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from cli import cli
from pipeline import ingest
from pipeline.ingestion.rules import RULES
from pipeline.lake.layout import ENV_VAR, environment_name
from tests.helpers import episode, lake_snapshot, staging_leftovers, write_json

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
BAD = sorted((DATA / "bad").iterdir())
ODD = sorted((DATA / "odd").iterdir())
HIVE = {"environment": pl.String, "episode_id": pl.String}

# Every rule an invalid file may be rejected with. "schema" (the fallback for a schema error nobody
# explained) is deliberately missing: a file that gets it has found a gap in the messages.
KNOWN_RULES = frozenset(RULES)

# Corpus files the pipeline gets wrong today: each test stays, marked as an expected failure, until fixed.
BUGS: dict[str, str] = {}

ODD_BUGS: dict[str, str] = {}


def _marked(paths: list[Path], bugs: dict[str, str]) -> list[Any]:
    return [
        pytest.param(p, id=p.name,
                     marks=[pytest.mark.xfail(strict=True, reason=bugs[p.name])] if p.name in bugs else [])
        for p in paths
    ]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), env={ENV_VAR: None})


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding one valid episode, so "unchanged" is checked against real content."""
    folder = tmp_path_factory.mktemp("seeded")
    seed = write_json(folder / "seed.json", episode(steps=2, environment="Seed-v0"))
    assert ingest(seed, lake=folder / "lake").status == "ingested"
    return folder / "lake"


@pytest.fixture
def seeded_lake(seeded_template: Path, tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    shutil.copytree(seeded_template, lake)
    return lake


def assert_rejected(path: Path, rule: str, lake: Path) -> dict[str, Any]:
    """``run FILE`` rejects ``path`` with ``rule``, cleanly, twice (--json and plain), touching nothing."""
    before = lake_snapshot(lake)

    result = invoke("run", str(path), "--lake", str(lake), "--json")
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), f"escaped exception: {result.exception!r}"
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output
    record = json.loads(lines[0])
    assert record["status"] == "invalid", record
    assert record["source"] == str(path)
    error = record["error"]
    assert error["rule"] == rule, error["message"]
    assert error["message"].startswith(f"{path}: "), error["message"]
    assert "\n" not in error["message"]

    plain = invoke("run", str(path), "--lake", str(lake))
    assert plain.exit_code == 1 and isinstance(plain.exception, SystemExit)
    assert "Traceback" not in plain.output
    assert plain.stdout == ""
    assert plain.stderr == f"invalid: {error['message']}\n"

    assert lake_snapshot(lake) == before, "a rejected file changed the lake"
    assert staging_leftovers(lake) == []
    return record


# ---------------------------------------------------------------------------------------------
# The corpus itself
# ---------------------------------------------------------------------------------------------


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_bad_corpus", DATA / "make_bad_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_corpus_is_exactly_what_the_generator_writes():
    expected = _load_generator().corpus()
    on_disk = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in BAD + ODD}
    assert sorted(on_disk) == sorted(expected), "run: python tests/data/make_bad_corpus.py"
    changed = [name for name in expected if on_disk[name] != expected[name]]
    assert changed == [], "run: python tests/data/make_bad_corpus.py"


def test_corpus_is_large_small_and_named_after_known_rules():
    assert len(BAD) >= 40
    for path in BAD + ODD:
        assert path.stat().st_size < 200_000, path.name
    rules = {p.name.split("--")[0] for p in BAD}
    assert all("--" in p.name for p in BAD)
    assert rules <= KNOWN_RULES, rules - KNOWN_RULES
    # The list of hostile inputs, each covered by at least one file.
    assert {"document.depth", "number.int64", "number.finite", "file.utf8", "file.trailing_data", "file.truncated",
            "file.compression", "file.json", "document.duplicate_key", "document.object", "image.decodable",
            "image.base64", "value.length"} <= rules
    assert set(BUGS) <= {p.name for p in BAD} and set(ODD_BUGS) <= {p.name for p in ODD}


# ---------------------------------------------------------------------------------------------
# Rejected files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _marked(BAD, BUGS))
def test_bad_file_is_rejected_with_its_rule_and_changes_nothing(path, seeded_lake):
    assert_rejected(path, path.name.split("--")[0], seeded_lake)


def test_bad_file_through_standard_input_is_rejected_the_same_way(seeded_lake):
    path = DATA / "bad" / "image.decodable--png-bomb-100000x100000.json"
    before = lake_snapshot(seeded_lake)
    result = CliRunner().invoke(cli, ["run", "-", "--lake", str(seeded_lake), "--json"], input=path.read_bytes(),
                                env={ENV_VAR: None})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert json.loads(result.stdout)["error"]["rule"] == "image.decodable"
    assert lake_snapshot(seeded_lake) == before and staging_leftovers(seeded_lake) == []


def test_into_an_empty_lake_a_bad_file_leaves_no_episode(tmp_path):
    lake = tmp_path / "lake"
    result = invoke("run", str(DATA / "bad" / "file.truncated--cut-inside-a-step.json"), "--lake", str(lake), "--json")
    assert result.exit_code == 1
    assert list(lake.glob("environment=*")) == [] and staging_leftovers(lake) == []


# ---------------------------------------------------------------------------------------------
# Accepted odd files
# ---------------------------------------------------------------------------------------------


def read(lake: Path, table: str) -> list[dict[str, Any]]:
    return pl.read_parquet(str(lake / "*" / "*" / f"{table}.parquet"), hive_partitioning=True,
                           hive_schema=HIVE).to_dicts()


def first_agent_step(lake: Path) -> dict[str, Any]:
    rows = [r for r in read(lake, "agent_steps") if r["step"] == 0]
    assert len(rows) == 1
    return rows[0]


def training_config(lake: Path) -> Any:
    (row,) = read(lake, "episodes")
    return json.loads(row["training_config"])


def file_value(path: Path, *keys: Any) -> Any:
    node = json.loads(path.read_bytes())
    for key in keys:
        node = node[key]
    return node


def check_image_of_step_0(lake: Path, path: Path) -> None:
    (row,) = [r for r in read(lake, "steps") if r["step"] == 0]
    assert row["image"] == base64.b64decode(file_value(path, "inference", "steps", 0, "image"), validate=True)


def check_last_duplicate_wins(lake: Path, path: Path) -> None:
    assert read(lake, "episodes")[0]["algorithm"] == "A2C"
    assert training_config(lake) == {"lr": 2}
    assert first_agent_step(lake)["action"] == 3.0


def check_deep_config(lake: Path, path: Path) -> None:
    config, levels = training_config(lake), 0
    while isinstance(config, dict):
        config, levels = config["a"], levels + 1
    assert (levels, config) == (254, 1)


def check_extreme_numbers(lake: Path, path: Path) -> None:
    row = first_agent_step(lake)
    assert (row["action"], row["health"], row["value_estimate"]) == (float(2**63 - 1), 1.7976931348623157e308, 5e-324)


def check_agent_step_0(column: str, value: Any) -> Any:
    def check(lake: Path, path: Path) -> None:
        assert first_agent_step(lake)[column] == value

    return check


def check_episode(column: str, value: Any) -> Any:
    def check(lake: Path, path: Path) -> None:
        assert read(lake, "episodes")[0][column] == value

    return check


def check_step_numbers(lake: Path, path: Path) -> None:
    assert sorted(r["step"] for r in read(lake, "steps")) == [0, 1, 2]


def check_long_config_string(lake: Path, path: Path) -> None:
    assert training_config(lake) == {"notes": "n" * 150_000}


# What each odd file must read back as, beyond "ingested, everything inside the lake".
ODD_CHECKS: dict[str, Any] = {
    "nested-duplicate-keys-last-wins.json": check_last_duplicate_wins,
    "escaped-nul-in-strings.json": check_agent_step_0("agent", "p\x00q"),
    "gif-small.json": check_image_of_step_0,
    "bmp-small.json": check_image_of_step_0,
    "jpeg-small.json": check_image_of_step_0,
    "jpeg-bit-flipped-in-entropy-coded-data.json": check_image_of_step_0,
    "png-8192x8192-at-the-pixel-cap.json": check_image_of_step_0,
    "float-underflow-becomes-zero.json": check_agent_step_0("reward", 0.0),
    "extreme-finite-numbers.json": check_extreme_numbers,
    "10000-digit-mantissa.json": check_agent_step_0("reward", 0.5),
    "integral-float-iterations.json": check_episode("iterations", 10),
    "integral-float-step-number.json": check_step_numbers,
    "long-string-in-config.json": check_long_config_string,
    "config-254-levels-deep.json": check_deep_config,
}


def _decompressed(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


@pytest.mark.parametrize("path", _marked(ODD, ODD_BUGS))
def test_odd_file_is_accepted_and_stays_inside_the_lake(path, tmp_path):
    lake = tmp_path / "lake"
    result = invoke("run", str(path), "--lake", str(lake), "--json")
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ingested", record
    assert record["episode_id"] == hashlib.sha256(_decompressed(path)).hexdigest()[:32]

    # Nothing written anywhere but the lake, and everything in it strictly inside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]
    lake_root = lake.resolve()
    assert all(p.resolve().is_relative_to(lake_root) for p in lake.rglob("*"))
    (env_dir,) = [p for p in lake.iterdir() if p.name not in ("_staging", "_locks")]
    (episode_dir,) = list(env_dir.iterdir())
    assert episode_dir.name == f"episode_id={record['episode_id']}"
    assert sorted(p.name for p in episode_dir.iterdir()) == sorted(
        f"{t}.parquet" for t in ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps"))
    assert staging_leftovers(lake) == []

    # The environment name reads back unchanged, whatever it holds ("..", "/", NUL, ...).
    environment = file_value(DATA / "odd" / path.name, "training", "environment") if path.suffix == ".json" else None
    if environment is not None:
        assert environment_name(env_dir.name) == environment
        assert [r["environment"] for r in read(lake, "episodes")] == [environment]
    if path.name in ODD_CHECKS:
        ODD_CHECKS[path.name](lake, path)


# ---------------------------------------------------------------------------------------------
# Size: hundreds of MB, generated here, rejected in bounded memory
# ---------------------------------------------------------------------------------------------

HUGE_BYTES = 300 * 2**20
MEMORY_CEILING = 1.5 * 2**30  # bytes of peak resident memory allowed for one ingest of a hostile file

# The child runs the real command and reports its own peak resident set size (Linux: KiB) on stderr.
_CHILD = """
import resource, sys
from cli import cli
try:
    cli.main(sys.argv[1:], prog_name="ingest-pipeline")
except SystemExit:
    pass
sys.stderr.write(f"\\npeak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def write_huge(path: Path, before: bytes, unit: bytes, after: bytes, size: int = HUGE_BYTES) -> Path:
    """``before`` + ``unit`` repeated to about ``size`` bytes (its last trailing comma dropped) + ``after``."""
    block = unit * (2**20 // len(unit))
    with open(path, "wb") as f:
        f.write(before)
        for _ in range(size // len(block)):
            f.write(block)
        f.write(unit.rstrip(b","))
        f.write(after)
    return path


def _split(document: dict[str, Any], marker: str) -> tuple[bytes, bytes]:
    before, after = json.dumps(document).encode().split(f'"{marker}"'.encode())
    return before, after


def huge_config(path: Path, unit: bytes) -> Path:
    """``training.config`` = ``{"k": [unit, unit, ...]}``, about 300 MB."""
    before, after = _split(episode(config="@HUGE@"), "@HUGE@")
    return write_huge(path, before + b'{"k": [', unit, b"]}" + after)


def huge_custom_metrics(path: Path) -> Path:
    doc = episode()
    doc["inference"]["steps"][1]["agent_steps"][0]["custom_metrics"] = {"Loss": {"y": "@HUGE@", "y_label": "loss"}}
    before, after = _split(doc, "@HUGE@")
    return write_huge(path, before + b"[", b"0.25,", b"]" + after)


def huge_observation(path: Path) -> Path:
    doc = episode()
    doc["inference"]["steps"][2]["agent_steps"][0]["observation_space"] = "@HUGE@"
    before, after = _split(doc, "@HUGE@")
    return write_huge(path, before + b"[", b"0.5,", b"]" + after)


def huge_string(path: Path) -> Path:
    before, after = _split(episode(config={"notes": "@HUGE@"}), "@HUGE@")
    return write_huge(path, before + b'"', b"abcdefgh", b'"' + after)


HUGE_CASES = {
    "config-of-floats": lambda p: huge_config(p, b"1.5,"),
    "custom-metrics-axis": huge_custom_metrics,
    "observation-array": huge_observation,
    "string-in-config": huge_string,
}


def _start_measured(path: Path, lake: Path) -> subprocess.Popen[str]:
    """Start ingesting ``path`` with the real command in a child process that reports its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ENV_VAR, None)
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, "run", str(path), "--lake", str(lake), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )


def _finish_measured(child: subprocess.Popen[str]) -> tuple[dict[str, Any], float, str]:
    """The child's --json record, its peak resident memory in bytes, and its stderr."""
    stdout, stderr = child.communicate(timeout=300)
    match = re.search(r"peak_rss_kib=(\d+)\s*$", stderr)
    assert match, stderr[-2000:]
    return json.loads(stdout.splitlines()[-1]), int(match.group(1)) * 1024, stderr


def run_measured(path: Path, lake: Path) -> tuple[dict[str, Any], float, str]:
    return _finish_measured(_start_measured(path, lake))


@pytest.fixture(scope="module")
def huge_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], float, str]]:
    """Generate every huge file, then ingest them all at once, each in its own child process."""
    folder = tmp_path_factory.mktemp("huge")
    paths = {name: make(folder / f"{name}.json") for name, make in HUGE_CASES.items()}
    assert all(p.stat().st_size > 250 * 2**20 for p in paths.values())
    children = {name: _start_measured(path, folder / f"lake-{name}") for name, path in paths.items()}
    try:
        return {name: _finish_measured(child) for name, child in children.items()}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        for path in paths.values():
            path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(HUGE_CASES))
def test_huge_value_is_rejected_in_bounded_memory(case, huge_results):
    record, peak, stderr = huge_results[case]
    assert "Traceback" not in stderr
    assert record["status"] == "invalid", record
    assert record["error"]["rule"] == "document.part_size", record["error"]
    assert peak < MEMORY_CEILING, f"peak resident memory {peak / 2**20:.0f} MiB"


@pytest.mark.slow
def test_huge_config_of_empty_objects_is_rejected_in_bounded_memory(tmp_path):
    path = huge_config(tmp_path / "empty-objects.json", b"{},")
    record, peak, stderr = run_measured(path, tmp_path / "lake")
    assert "Traceback" not in stderr
    assert record["error"]["rule"] == "document.part_size", record
    assert peak < MEMORY_CEILING, f"peak resident memory {peak / 2**20:.0f} MiB"
