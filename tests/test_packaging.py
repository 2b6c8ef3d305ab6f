"""The install a user or a contributor makes gives a working command, from any folder."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "lunar_lander.json"


def test_the_version_is_defined_once_and_installed_as_such() -> None:
    assert importlib.metadata.version("ingest-pipeline") == pipeline.__version__
    lines = (REPO / "pyproject.toml").read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith("version")], "the version is written in pyproject.toml too"


def test_the_package_ships_its_type_marker_and_schema() -> None:
    import pipeline.ingestion.schema as schema

    assert importlib.resources.files("pipeline").joinpath("py.typed").is_file()
    assert schema.schema_path().is_file()


def _command() -> list[str]:
    found = shutil.which("ingest-pipeline", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("ingest-pipeline is not installed in this environment")
    return [found]


@pytest.mark.parametrize("how", ["installed command", "python -m pipeline"])
def test_the_command_works_from_any_folder(tmp_path: Path, how: str) -> None:
    command = _command() if how == "installed command" else [sys.executable, "-m", "pipeline"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INGEST_PIPELINE_LAKE")}
    if how != "installed command":
        env["PYTHONPATH"] = str(REPO)
    version = subprocess.run([*command, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"ingest-pipeline, version {pipeline.__version__}"
    checked = subprocess.run([*command, "validate", str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{EXAMPLE}: valid episode ")
