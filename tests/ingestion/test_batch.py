"""Batch ingestion: many inputs (folders, globs, URLs, standard input) on any executor, from the CLI and make."""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import json
import lzma
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner

from cli import cli
from pipeline import ingest_many
from pipeline.console import bar_text
from pipeline.errors import (
    AmbiguousEpisodeId,
    DatasetError,
    EpisodeNotFound,
    InvalidEpisode,
    LakeError,
    MissingExtra,
    PipelineError,
    SourceError,
)
from pipeline.ingestion.batch import BatchSummary, expand_sources
from pipeline.ingestion.run import IngestResult
from pipeline.lake.layout import ENV_VAR, FOOTER_MAP, SEGMENT_INDEX, list_episodes
from pipeline.lake.segments import episode_rows
from pipeline.lake.tables import TABLES
from tests.helpers import episode, lake_snapshot, staging_leftovers, write_json

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"(\d+) files: (\d+) ingested, (\d+) already present, (\d+) invalid, (\d+) failed(?:, (\d+) skipped)?; "
    r"\d+\.\d MB in \d+\.\d s, \d+\.\d MB/s"
)
COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def invoke(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input, env={ENV_VAR: None})


def content_id(data: bytes) -> str:
    """The episode id the format promises: the SHA-256 of the decompressed file, first 32 hex digits."""
    return hashlib.sha256(data).hexdigest()[:32]


def summary_counts(stderr: str) -> dict[str, int]:
    match = SUMMARY.fullmatch(stderr.strip().splitlines()[-1])
    assert match, stderr
    files, ingested, exists, invalid, failed, skipped = (int(g or 0) for g in match.groups())
    return {"files": files, "ingested": ingested, "exists": exists, "invalid": invalid, "failed": failed,
            "skipped": skipped}


def episode_folders(lake: Path) -> set[str]:
    """Each committed episode as ``environment=<env>/episode_id=<id>``, whether in its own folder or
    a segment (a batch commits small files in groups, as segments)."""
    return {f"{loc.path.parent.name}/episode_id={loc.episode_id}" for loc in list_episodes(lake)}


def write(path: Path, data: bytes) -> Path:
    suffix = path.suffix
    path.write_bytes(COMPRESS[suffix](data) if suffix in COMPRESS else data)
    return path


# --- the folder of 30 files ------------------------------------------------------------------------


class Inbox:
    """30 episode files (distinct, duplicate, compressed, invalid) plus files a folder search skips."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.expected: dict[str, tuple[str, str | None]] = {}  # file name -> ("valid" | rule, content id)
        self.steps: dict[str, int] = {}  # content id -> number of steps
        self.environment: dict[str, str] = {}  # content id -> environment
        contents = []
        for i in range(18):
            environment = "ALE/Pong-v5" if i % 3 == 0 else "CartPole-v1"
            data = json.dumps(episode(steps=2 + i % 4, environment=environment, config={"seed": i})).encode()
            contents.append(data)
            self.steps[content_id(data)] = 2 + i % 4
            self.environment[content_id(data)] = environment
        suffixes = [".json"] * 8 + [".json.gz"] * 3 + [".json.bz2"] * 2 + [".json.xz"] * 2 + [".json.zst"] * 3
        for i, (data, suffix) in enumerate(zip(contents, suffixes, strict=True)):
            self._add(f"ep{i:02d}{suffix}", data, "valid")
        for i, suffix in enumerate([".json", ".json", ".json.gz", ".json.bz2", ".json.xz", ".json.zst"]):
            self._add(f"dup{i}{suffix}", contents[i * 3], "valid")  # same content as ep00, ep03, ...
        both = episode(steps=3)
        both["inference"]["steps"][1]["agent_steps"][0]["rewards"] = [1.0]
        self._add("bad_both.json", json.dumps(both).encode(), "reward.exactly_one")
        self._add("bad_truncated.json", b'{"training": {"environment": "x"', "file.truncated")
        self._add("bad_empty.json", b"", "document.object")
        self._add("bad_unknown.json.xz", json.dumps({**episode(), "extra": 1}).encode(), "document.unknown_key")
        self._add("bad_root.json.zst", b"[]", "document.object")
        (root / "bad_corrupt.json.gz").write_bytes(b"\x1f\x8b\x08\x00this is not deflate data")
        self.expected["bad_corrupt.json.gz"] = ("file.compression", None)
        assert len(self.expected) == 30
        # Skipped by a folder search: other suffixes, hidden files, and (without --recursive) sub-folders.
        (root / "notes.txt").write_text("not an episode")
        (root / ".partial.json").write_bytes(b"{")
        (root / "nested").mkdir()
        write_json(root / "nested" / "deeper.json", episode(steps=1, environment="Nested-v0"))

    def _add(self, name: str, data: bytes, kind: str) -> None:
        write(self.root / name, data)
        self.expected[name] = (kind, content_id(data) if kind == "valid" else None)

    @property
    def distinct(self) -> set[str]:
        return {cid for kind, cid in self.expected.values() if cid is not None}


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Inbox:
    return Inbox(tmp_path_factory.mktemp("batch") / "inbox")


def assert_lake_holds(lake: Path, inbox: Inbox) -> None:
    """Each distinct valid episode once, whole: five tables whose row counts agree, nothing staged."""
    assert episode_folders(lake) == {
        f"environment={inbox.environment[cid].replace('/', '%2F')}/episode_id={cid}" for cid in inbox.distinct
    }
    for location in list_episodes(lake):
        extra = [SEGMENT_INDEX, FOOTER_MAP] if location.segment else []  # a segment's id index and footer map
        assert sorted(p.name for p in location.path.iterdir()) == sorted([*(f"{t}.parquet" for t in TABLES), *extra])
        cid = location.episode_id
        row = episode_rows(location, "episodes").to_pylist()
        assert len(row) == 1
        assert (row[0]["length"], row[0]["agent_steps"], row[0]["unit_steps"]) == (inbox.steps[cid],) * 2 + (0,)
        assert episode_rows(location, "steps").num_rows == inbox.steps[cid]
        assert episode_rows(location, "agent_steps").num_rows == inbox.steps[cid]
        assert episode_rows(location, "unit_steps").num_rows == 0
        assert episode_rows(location, "episode_agents").num_rows == 1
    assert staging_leftovers(lake) == []
    if "check" in cli.commands:  # the lake's own integrity check, where this build has it
        checked = invoke("check", "--lake", str(lake))
        assert checked.exit_code == 0, checked.output


def test_folder_of_30_files_with_two_jobs(inbox, tmp_path):
    lake = tmp_path / "lake"
    result = invoke("run", str(inbox.root), "--lake", str(lake), "--jobs", "2", "--json")

    assert result.exit_code == 1, result.output  # because of the invalid files
    records = [json.loads(line) for line in result.stdout.splitlines()]
    # One line per file, in the folder's sorted order, whatever order the workers finished in.
    assert [r["source"] for r in records] == [str(inbox.root / name) for name in sorted(inbox.expected)]
    by_content: dict[str, list[str]] = {}
    for record in records:
        kind, cid = inbox.expected[Path(record["source"]).name]
        if kind == "valid":
            assert record["status"] in ("ingested", "exists"), record
            assert record["episode_id"] == cid
            assert record["error"] is None
            by_content.setdefault(cid, []).append(record["status"])
        else:
            # The error crossed from a worker process with every attribute.
            assert record["status"] == "invalid", record
            assert record["error"]["rule"] == kind
            assert record["error"]["message"].startswith(f"{record['source']}: ")
    assert set(by_content) == inbox.distinct
    for statuses in by_content.values():  # duplicates: exactly one copy is ingested, whichever came first
        assert sorted(statuses) == ["exists"] * (len(statuses) - 1) + ["ingested"]
    assert records[[r["source"] for r in records].index(str(inbox.root / "bad_both.json"))]["error"] == {
        "message": f"{inbox.root / 'bad_both.json'}: inference.steps[1].agent_steps[0] (step number 1): "
                   'exactly one of "reward" or "rewards" is required, found both',
        "path": "inference.steps[1].agent_steps[0]", "step": 1, "rule": "reward.exactly_one",
    }
    assert summary_counts(result.stderr) == {"files": 30, "ingested": 18, "exists": 6, "invalid": 6,
                                             "failed": 0, "skipped": 0}
    assert result.stderr.count("\n") == 1  # --json: nothing on stderr but the summary
    assert_lake_holds(lake, inbox)


def test_recursive_adds_sub_folders(inbox, tmp_path):
    lake = tmp_path / "lake"
    flat = expand_sources([inbox.root])
    deep = expand_sources([inbox.root], recursive=True)
    assert len(flat) == 30
    assert deep == sorted([*flat, str(inbox.root / "nested" / "deeper.json")])
    result = invoke("run", str(inbox.root / "nested"), str(inbox.root / "ep00.json"), "--lake", str(lake), "-r",
                    "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert summary_counts(result.stderr)["ingested"] == 2


# --- standard input, HTTP, failed downloads ---------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by a local HTTP server on 127.0.0.1, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_stdin_and_http_ingest_the_same_episode_as_the_local_file(http_root, tmp_path):
    served, base = http_root
    data = json.dumps(episode(steps=4)).encode()
    local = write(tmp_path / "local.json", data)
    write(served / "remote.json", data)
    write(served / "remote.json.gz", data)  # decompressed by its suffix, like a local file
    lake = tmp_path / "lake"
    missing = f"{base}/missing.json"

    result = invoke("run", "-", f"{base}/remote.json", f"{base}/remote.json.gz", missing, str(local),
                    "--lake", str(lake), "--jobs", "2", "--json", input=data)

    assert result.exit_code == 1, result.output  # the 404
    records = {r["source"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert list(records) == ["-", f"{base}/remote.json", f"{base}/remote.json.gz", missing, str(local)]
    same = [records[s] for s in ("-", f"{base}/remote.json", f"{base}/remote.json.gz", str(local))]
    assert {r["episode_id"] for r in same} == {content_id(data)}
    assert sorted(r["status"] for r in same) == ["exists", "exists", "exists", "ingested"]
    # A failed download is a clean failure of that input alone.
    assert records[missing]["status"] == "failed"
    assert records[missing]["error"] == {"message": f"{missing}: no such file", "path": None, "step": None,
                                         "rule": None}
    assert summary_counts(result.stderr) == {"files": 5, "ingested": 1, "exists": 3, "invalid": 0,
                                             "failed": 1, "skipped": 0}
    assert len(episode_folders(lake)) == 1
    assert staging_leftovers(lake) == []


# --- the CLI's options -----------------------------------------------------------------------------


@pytest.fixture
def valid_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "valid"
    folder.mkdir()
    for i in range(3):
        write_json(folder / f"ep{i}.json", episode(steps=2 + i))
    return folder


def test_quiet_prints_only_the_summary(valid_folder, tmp_path):
    result = invoke("run", str(valid_folder), "--lake", str(tmp_path / "lake"), "--quiet", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert SUMMARY.fullmatch(result.stderr.rstrip("\n")), result.stderr
    assert summary_counts(result.stderr) == {"files": 3, "ingested": 3, "exists": 0, "invalid": 0, "failed": 0,
                                             "skipped": 0}


def test_human_output_is_one_line_per_file_then_the_summary(valid_folder, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[1]")
    result = invoke("run", str(valid_folder / "*.json"), str(bad), "--lake", str(tmp_path / "lake"), "--jobs", "1")
    assert result.exit_code == 1
    out = result.stdout.splitlines()  # the exact per-file line is pinned in test_cli.py
    assert len(out) == 3
    for i, line in enumerate(out):
        path = valid_folder / f"ep{i}.json"
        assert line.startswith(f"{path}: ingested episode {content_id(path.read_bytes())} ({2 + i} steps"), line
    lines = result.stderr.splitlines()
    assert lines[0] == (f"invalid: {bad}: the document must be a JSON object with \"training\" and "
                        f"\"inference\", found an array")
    assert summary_counts(lines[1]) == {"files": 4, "ingested": 3, "exists": 0, "invalid": 1, "failed": 0,
                                        "skipped": 0}
    assert len(lines) == 2


def test_fail_fast_stops_scheduling_after_the_first_failure(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "000_bad.json").write_bytes(b"{")  # sorted first: the first file to start
    for i in range(12):
        write_json(folder / f"ep{i:02d}.json", episode(steps=2, config={"seed": i}))
    lake = tmp_path / "lake"

    result = invoke("run", str(folder), "--lake", str(lake), "--jobs", "2", "--fail-fast", "--json")

    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["status"] == "invalid"
    counts = summary_counts(result.stderr)
    assert counts["invalid"] == 1
    assert counts["skipped"] >= 1
    assert counts["ingested"] + counts["invalid"] + counts["skipped"] == counts["files"] == 13
    assert len(records) == 13 - counts["skipped"]
    assert len(episode_folders(lake)) == counts["ingested"]
    assert staging_leftovers(lake) == []


def test_fail_fast_in_process_is_exact(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "a_bad.json").write_bytes(b"{")
    for i in range(3):
        write_json(folder / f"ep{i}.json", episode(steps=2 + i))
    batch = ingest_many([folder], lake=tmp_path / "lake", jobs=1, fail_fast=True)
    results = list(batch)
    assert [r.status for r in results] == ["invalid"]
    assert (batch.summary.invalid, batch.summary.skipped, batch.summary.ok) == (1, 3, False)
    assert not (tmp_path / "lake").exists() or episode_folders(tmp_path / "lake") == set()


def test_no_episode_files_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("run", str(tmp_path / "empty"), "--lake", str(tmp_path / "lake"))
    assert result.exit_code == 2
    assert "Error: no episode files (*.json, *.json.gz, .bz2, .xz, .zst) in " in result.stderr
    assert not (tmp_path / "lake").exists()


def test_jobs_must_be_positive(valid_folder, tmp_path):
    result = invoke("run", str(valid_folder), "--jobs", "0", "--lake", str(tmp_path / "lake"))
    assert result.exit_code == 2
    assert "--jobs" in result.stderr
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        ingest_many([valid_folder], lake=tmp_path / "lake", jobs=0)


def test_progressbar_text():
    summary = BatchSummary(files=30, ingested=9, exists=3, bytes_read=12_000_000, bytes_total=30_000_000,
                           seconds=4.0)
    text = bar_text(summary, 100)
    assert text.startswith("[") and len(text) <= 100
    assert text.endswith(" 12/30 files  12.0/30.0 MB  3.0 MB/s  ETA 00:06")
    assert bar_text(summary, 29) == "12/30 files  12.0/30.0 MB  3."  # a narrow terminal: no bar, cut
    unknown = BatchSummary(files=4, failed=1, bytes_read=1_000_000, seconds=2.0)
    assert bar_text(unknown, 80).endswith(" 1/4 files  1.0 MB  0.5 MB/s  ETA 00:06")  # by files


# --- the library -----------------------------------------------------------------------------------


def test_expand_sources(tmp_path):
    runs = tmp_path / "runs"
    (runs / "a" / "b").mkdir(parents=True)
    (runs / ".hidden").mkdir()
    for rel in ["x.json", "y.json.gz", "z.JSON.ZST", "a/p.json.bz2", "a/b/q.json.xz", ".hidden/h.json",
                "a/.dot.json", "skip.txt", "skip.json.tar"]:
        (runs / rel).write_bytes(b"{}")
    top = [str(runs / n) for n in ("x.json", "y.json.gz", "z.JSON.ZST")]
    deep = sorted([*top, str(runs / "a/p.json.bz2"), str(runs / "a/b/q.json.xz")])

    assert expand_sources([runs]) == top
    assert expand_sources([str(runs)], recursive=True) == deep
    # A pattern's matches are taken as the user wrote it, whatever their suffix.
    assert expand_sources([f"{runs}/*.json*"]) == [str(runs / n) for n in ("skip.json.tar", "x.json", "y.json.gz")]
    assert expand_sources([f"{runs}/**/*.json.*z*"]) == [str(runs / "a/b/q.json.xz"), str(runs / "a/p.json.bz2"),
                                                       str(runs / "y.json.gz")]
    # A matched folder is searched like a named one.
    assert expand_sources([f"{runs}/*"]) == [str(runs / "a/p.json.bz2"), str(runs / "skip.json.tar"),
                                             str(runs / "skip.txt"), *top]
    # Kept as they are, for the ingest to report: missing files, unmatched patterns, URLs, -, streams.
    stream = open(runs / "x.json", "rb")  # noqa: SIM115
    try:
        kept = [str(tmp_path / "missing.json"), f"{tmp_path}/none-*.json", "https://example.org/e.json?sig=a*b",
                "-", stream]
        assert expand_sources(kept) == kept
    finally:
        stream.close()
    # Other fsspec URLs are listed like folders.
    assert expand_sources([f"file://{runs}"]) == [f"file://{p}" for p in top]


def test_errors_pickle_with_their_attributes():
    errors: list[PipelineError] = [
        InvalidEpisode("reward.exactly_one", "found both", path="inference.steps[1]", step=1, offset=40, source="e"),
        InvalidEpisode("file.json", "not valid JSON").with_source("later.json"),
        SourceError("no such file", source="x.json"),
        LakeError("disk full"),
        EpisodeNotFound("no episode abc"),
        AmbiguousEpisodeId("ab matches 2 episodes"),
        DatasetError("no agent p9", episode_id="e1", agent="p9"),
        MissingExtra("Dask execution", "dask", "distributed"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert vars(copy) == vars(error)
    assert isinstance(pickle.loads(pickle.dumps(errors[-1])), ImportError)
    result = IngestResult(source="e", status="invalid", error=errors[0])
    assert pickle.loads(pickle.dumps(result)).to_dict() == result.to_dict()


class _Flaky(ThreadPoolExecutor):
    """An executor whose task dies for one input, as a lost worker would."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        named = args[0] if args and isinstance(args[0], list) else args[:1]  # a chunk of small files, or one
        if any(str(name).endswith("crash.json") for name in named):
            return super().submit(_raise, RuntimeError("worker lost"))
        return super().submit(fn, *args, **kwargs)


def _raise(error: BaseException) -> None:
    raise error


def test_any_executor_and_a_task_that_dies(valid_folder, tmp_path):
    crash = write_json(tmp_path / "crash.json", episode(steps=5))
    first = valid_folder / "ep0.json"
    seen: list[tuple[int, int]] = []
    with _Flaky(max_workers=3) as executor:
        batch = ingest_many([first, valid_folder, crash], lake=tmp_path / "lake", executor=executor,
                            progress=lambda s: seen.append((s.done, s.bytes_read)))
        results = list(batch)
        assert executor.submit(int, "7").result() == 7  # ours to shut down, not the batch's
    # The same file named twice runs once at a time, so the second is always the one already present.
    assert [r.status for r in results] == ["ingested", "exists", "ingested", "ingested", "failed"]
    assert str(results[-1].error) == f"{crash}: the ingest stopped unexpectedly: RuntimeError: worker lost"
    summary = batch.summary
    assert (summary.files, summary.ingested, summary.exists, summary.failed, summary.ok) == (5, 3, 1, 1, False)
    assert summary.bytes_read == sum(r.bytes_read for r in results) == summary.bytes_total - crash.stat().st_size
    assert seen[0] == (0, 0) and seen[-1] == (5, summary.bytes_read)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_in_process_progress_reports_bytes_as_they_are_read(tmp_path):
    big = write_json(tmp_path / "big.json", episode(steps=600))
    seen: list[tuple[int, int]] = []
    batch = ingest_many([big], lake=tmp_path / "lake", progress=lambda s: seen.append((s.done, s.bytes_read)))
    assert [r.status for r in batch] == ["ingested"]
    during = [b for done, b in seen if done == 0 and b > 0]
    assert during and max(during) <= big.stat().st_size
    assert seen[-1] == (1, big.stat().st_size)
    assert batch.summary.eta == 0.0 and batch.summary.mb_per_s > 0


def test_summary_eta():
    assert BatchSummary(files=4).eta is None  # nothing measured yet
    assert BatchSummary(files=4, ingested=1, bytes_read=10, bytes_total=40, seconds=1.0).eta == 3.0
    assert BatchSummary(files=4, ingested=2, seconds=1.0).eta == 1.0  # sizes unknown: by files
    assert BatchSummary(files=4, ingested=1, invalid=1, skipped=2, seconds=1.0).eta == 0.0


# --- Dask --------------------------------------------------------------------------------------------


def lake_tables(lake: Path) -> dict[str, Any]:
    """Every table of every episode, without the columns that may differ between two batch runs.

    ``ingested_at`` always differs; ``source`` names whichever of several identical files (copies
    under other names) won the race to commit, which depends on scheduling.
    """
    tables = {}
    for location in list_episodes(lake):
        for name in TABLES:
            table = episode_rows(location, name)
            if "ingested_at" in table.column_names:
                table = table.drop_columns(["ingested_at", "source"])
            tables[f"{location.path.parent.name}/{location.episode_id}/{name}"] = table
    return tables


def test_dask_executor_builds_the_same_lake_as_the_process_pool(inbox, tmp_path):
    distributed = pytest.importorskip("distributed")
    by_pool = list(ingest_many([inbox.root], lake=tmp_path / "pool", jobs=2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        batch = ingest_many([inbox.root], lake=tmp_path / "dask", executor=client.get_executor(), jobs=2)
        by_dask = list(batch)
    assert [r.source for r in by_dask] == [r.source for r in by_pool]
    assert Counter(r.status for r in by_dask) == Counter(r.status for r in by_pool) == Counter(
        {"ingested": 18, "exists": 6, "invalid": 6})
    assert [r.episode_id for r in by_dask] == [r.episode_id for r in by_pool]
    assert episode_folders(tmp_path / "dask") == episode_folders(tmp_path / "pool")
    pool_tables, dask_tables = lake_tables(tmp_path / "pool"), lake_tables(tmp_path / "dask")
    assert list(dask_tables) == list(pool_tables)
    for name, table in pool_tables.items():
        assert dask_tables[name].equals(table), name
    assert_lake_holds(tmp_path / "dask", inbox)


# --- make ingest --------------------------------------------------------------------------------------


def make_ingest(inbox: Path, lake: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", ENV_VAR)}
    return subprocess.run(
        ["make", "--no-print-directory", "-j2", "ingest", f"INBOX={inbox}", f"LAKE={lake}",
         f"INGEST={sys.executable} {REPO / 'cli.py'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_ingest_is_incremental_and_reports_invalid_files(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    data = json.dumps(episode(steps=3)).encode()
    write(inbox / "a.json", data)
    write(inbox / "sub" / "a-again.json.gz", data)
    write_json(inbox / "b.json", episode(steps=2))
    (inbox / "broken.json").write_bytes(b'{"training": [')
    lake = tmp_path / "lake"

    first = make_ingest(inbox, lake)

    assert first.returncode == 0, first.stdout + first.stderr
    statuses = dict(line.rsplit(": ", 1) for line in first.stdout.splitlines() if line.startswith(str(inbox)))
    assert sorted(statuses.values()) == ["exists", "ingested", "ingested", "invalid"]
    assert statuses[str(inbox / "broken.json")] == "invalid"
    assert len(episode_folders(lake)) == 2
    report = [json.loads(line) for line in (lake / "_reports" / "invalid.jsonl").read_text().splitlines()]
    assert [(r["source"], r["status"], r["error"]["rule"]) for r in report] == [
        (str(inbox / "broken.json"), "invalid", "file.truncated")
    ]
    before = lake_snapshot(lake)

    second = make_ingest(inbox, lake)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Nothing to be done for 'ingest'" in second.stdout
    assert str(inbox) not in second.stdout
    assert lake_snapshot(lake) == before

    # A new file, and a fixed one, are all that the next run ingests.
    write_json(inbox / "c.json", episode(steps=4))
    write_json(inbox / "broken.json", episode(steps=5))
    third = make_ingest(inbox, lake)
    assert third.returncode == 0, third.stdout + third.stderr
    assert sorted(line for line in third.stdout.splitlines() if line.startswith(str(inbox))) == [
        f"{inbox / 'broken.json'}: ingested", f"{inbox / 'c.json'}: ingested"
    ]
    assert (lake / "_reports" / "invalid.jsonl").read_text() == ""
    assert len(episode_folders(lake)) == 4


def test_a_folder_that_cannot_be_listed_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()

    def denied(path: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(SourceError, match="cannot list the folder: Permission denied"):
        expand_sources([folder])
    result = invoke("run", str(folder), "--lake", str(tmp_path / "lake"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {folder}: cannot list the folder: Permission denied\n"


def test_an_unexpected_error_in_process_fails_that_file_only(valid_folder, tmp_path, monkeypatch):
    import pipeline.ingestion.batch

    real = pipeline.ingestion.batch.ingest

    def flaky(source: Any, **kwargs: Any) -> IngestResult:
        if str(source).endswith("ep1.json"):
            raise RuntimeError("a bug")
        return real(source, **kwargs)

    monkeypatch.setattr(pipeline.ingestion.batch, "ingest", flaky)
    results = list(ingest_many([valid_folder], lake=tmp_path / "lake", jobs=1))
    assert [r.status for r in results] == ["ingested", "failed", "ingested"]
    assert str(results[1].error) == f"{valid_folder / 'ep1.json'}: the ingest stopped unexpectedly: RuntimeError: a bug"
