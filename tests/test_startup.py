"""What the command line imports on its way (issue 15: `--help` and `run` on a tiny file in ~0.1 s).

Each check runs in a fresh interpreter and looks at ``sys.modules`` (or at ``-X importtime``), so
that a module-level import added anywhere on the way shows up here rather than as a slower start.
Times are not asserted: benchmarks/run.py measures them (see BENCHMARKS.md, Start-up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import Lake
from pipeline.ingestion.tabulate import SMALL_ROWS, SMALL_ROWS_VARIABLE
from tests.helpers import episode, png_bytes, write_json

ROOT = Path(__file__).resolve().parent.parent

# Never on the ingest path: the dataset engine (polars), pandas and numpy (pyarrow imports both on its
# own unless kept out, see pipeline/nopandas.py), fsspec (only for URLs and compressed files),
# Pillow (only for frames that are not PNG), zstandard (only for .zst).
NOT_ON_RUN = ("polars", "pandas", "numpy", "fsspec", "PIL", "zstandard", "multiprocessing")
# Nor, for a small episode, pyarrow: pipeline/lake/smallparquet.py writes its tables (~0.12 s of imports).
NOT_ON_SMALL_RUN = (*NOT_ON_RUN, "pyarrow")
# Nor these parts of packages it does import: pyarrow.compute (~30 ms: only compaction, segments and
# checks sort or filter), pyarrow.dataset, ctypes (compaction's folder swap, the -2**63 search from a
# file's 16th MiB on: pipeline/ingestion/int64min.py, and the early writeback of a table from its 16th MiB
# on: pipeline/lake/writer.py).
NOT_ON_RUN_MODULES = ("pyarrow.compute", "pyarrow.dataset", "ctypes")
# Not even that: --help needs click and the package's light modules.
NOT_ON_HELP = (*NOT_ON_RUN, "pyarrow", "ijson", "jsonschema_rs", "orjson", "pybase64")

# What `ingest-pipeline run FILE` does in its own process (cli.py's run command): keep pandas and
# numpy out, then ingest_many, which ingests a single file in this process.
RUN = """
import json, sys
from pipeline.ingestion.nopandas import keep_pandas_out
keep_pandas_out()
import pipeline
results = list(pipeline.ingest_many([sys.argv[1]], lake=sys.argv[2]))
print(json.dumps({"status": [r.status for r in results], "modules": sorted(sys.modules)}))
"""


# The default limits of a small episode, whatever the suite is run with (tabulate.SMALL_ROWS_VARIABLE).
DEFAULT_ENV = {name: value for name, value in os.environ.items() if name != SMALL_ROWS_VARIABLE}


def _run(tmp_path: Path, document: dict, lake: Path | None = None) -> tuple[list[str], set[str], set[str]]:
    path = write_json(tmp_path / "tiny.json", document)
    out = subprocess.run([sys.executable, "-c", RUN, str(path), str(lake or tmp_path / "lake")], cwd=ROOT,
                         capture_output=True, text=True, check=True, env=DEFAULT_ENV)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return found["status"], {name.partition(".")[0] for name in found["modules"]}, set(found["modules"])


def test_run_on_a_tiny_file_imports_only_what_an_ingest_needs(tmp_path: Path) -> None:
    status, top, modules = _run(tmp_path, episode(steps=20))
    assert status == ["ingested"]
    assert {"orjson", "jsonschema_rs"} <= top  # it did ingest (the fast walk parses with orjson)
    assert not top & set(NOT_ON_SMALL_RUN), sorted(top & set(NOT_ON_SMALL_RUN))
    # Nor what only the exact walk (ijson) and a failure's clean-up or a terminal's bar (shutil) need.
    assert not top & {"ijson", "shutil", "bz2", "lzma"}, sorted(top & {"ijson", "shutil", "bz2", "lzma"})
    assert not modules & set(NOT_ON_RUN_MODULES), sorted(modules & set(NOT_ON_RUN_MODULES))
    lake = Lake(tmp_path / "lake")
    assert lake.agent_steps().collect().height == 20  # and what it wrote reads back


def test_run_on_a_file_beyond_the_small_limits_writes_with_pyarrow(tmp_path: Path) -> None:
    status, top, modules = _run(tmp_path, episode(steps=SMALL_ROWS + 1))
    assert status == ["ingested"]
    assert "pyarrow" in top
    assert not top & set(NOT_ON_RUN), sorted(top & set(NOT_ON_RUN))
    assert not modules & set(NOT_ON_RUN_MODULES), sorted(modules & set(NOT_ON_RUN_MODULES))


def test_run_into_a_lake_with_segments_still_ingests(tmp_path: Path) -> None:
    """The lazy imports on the commit's way: a lake whose environment holds a segment (compacted),
    then the same content again ("exists", found in the segment) and a new episode."""
    import pipeline

    lake = tmp_path / "lake"
    for seed in range(3):
        pipeline.ingest(write_json(tmp_path / f"ep{seed}.json", episode(steps=3, iterations=10 + seed)), lake=lake)
    pipeline.compact(lake, min_entries=2)
    assert any(p.name.startswith("segment=") for p in lake.glob("environment=*/*"))
    status, _, _ = _run(tmp_path, episode(steps=3, iterations=10), lake=lake)
    assert status == ["exists"]
    status, _, modules = _run(tmp_path, episode(steps=3, iterations=99), lake=lake)
    assert status == ["ingested"]
    assert "pyarrow.compute" not in modules  # reading a segment's ids needs no compute kernels


SPLIT_RUN = RUN.replace("import pipeline\n", "import pipeline\nimport pipeline.ingestion.parallel as parallel\n"
                        "parallel.SPLIT_MIN_BYTES = 0  # split even this small file\n")


def test_the_reading_process_of_a_split_ingest_never_imports_pyarrow(tmp_path: Path) -> None:
    """It parses and commits; the forked writer converts and writes. Nor does the batch's check for
    compaction after the commit (pyarrow would cost every split ingest ~60 ms at its end)."""
    from pipeline.cores import usable_cores

    if usable_cores() < 2:
        pytest.skip("a file is split only with two cores to use")
    path = write_json(tmp_path / "tiny.json", episode(steps=20))
    out = subprocess.run([sys.executable, "-c", SPLIT_RUN, str(path), str(tmp_path / "lake")], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    top = {name.partition(".")[0] for name in found["modules"]}
    assert found["status"] == ["ingested"]
    assert "multiprocessing" in top and "orjson" in top  # it was split, and parsed here
    assert "pyarrow" not in top


def test_png_frames_need_no_pillow(tmp_path: Path) -> None:
    import base64

    document = episode(steps=5)
    for step in document["inference"]["steps"]:
        step["image"] = base64.b64encode(png_bytes(8, 6)).decode()
    status, top, _ = _run(tmp_path, document)
    assert status == ["ingested"]
    assert "PIL" not in top


def test_help_imports_neither_arrow_nor_the_parser() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "cli.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout
    imported = {line.split("|")[-1].strip().partition(".")[0]
                for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported and "pipeline" in imported
    assert not imported & set(NOT_ON_HELP), sorted(imported & set(NOT_ON_HELP))


def test_import_pipeline_is_light() -> None:
    script = "import sys, pipeline; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    top = {name.partition(".")[0] for name in out.stdout.split()}
    assert not top & set(NOT_ON_HELP), sorted(top & set(NOT_ON_HELP))
