"""What a hostile-input campaign found (mutated and odd files through ``run`` and ``validate``, one and two
processes, small and pyarrow writers, batches), each pinned so it cannot come back.

* A key with a dot in it, at the root or directly inside ``inference``, spells the path the parser gives
  a part of the document: ijson joins keys with dots, so a key ``"steps.item"`` inside ``inference`` was
  read as one more step (the file was accepted, with a step that is no step of the format), and a root
  key ``"inference.steps"`` or ``"inference.parallel"`` was refused as a *repeated* key that the file
  does not repeat. Both are unknown keys, and the refusal names them.
* A ``.bz2`` or ``.xz`` file with bytes after its last stream, or a ``.gz`` file with zero bytes after its
  last member, was read as whole: the standard library's readers end quietly there. ``file.compression``
  says a compressed file decompresses whole, so anything after the last stream is refused.
* Memory grew with the file for steps heavy in custom metrics, action distributions or enemy healths: a
  batch was flushed by its rows, observations and images only, so such rows were all held to the end
  (1 GiB peak for 240 MB). The file's bytes behind the pending rows now bound a batch as well.
* A root key "" (whose path is the root's own) was refused as a repeated "inference", and an ``inference``
  array for an unknown key "item": now an unknown key "", and ``document.required`` (not an object).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline import ingest, ingest_many, validate
from pipeline.lake.layout import list_episodes
from tests.helpers import episode, staging_leftovers

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROOT_ALLOWED = '(allowed here: "training", "inference", "action_mapping")'
INFERENCE_ALLOWED = '(allowed here: "parallel", "config", "steps")'


def _text(root: list[tuple[str, Any]]) -> bytes:
    """A JSON object of these members, in this order (repeats and all)."""
    return ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in root) + "}").encode()


def _refusal(path: Path, parallel: bool) -> Any:
    lake = path.parent / f"lake-{parallel}"
    result = ingest(path, lake=lake, parallel=parallel)
    assert result.status == "invalid", (result.status, result.steps)
    assert staging_leftovers(lake) == []
    assert not lake.exists() or list_episodes(lake) == []
    checked = validate(path, parallel=parallel)
    assert (checked.status, str(checked.error)) == ("invalid", str(result.error))
    return result.error


DOC = episode(2)
STEP = {"number": 9, "agent_steps": []}

# (where the key goes, the key, its value, the path and words of the refusal)
DOTTED = [
    ("inference", "steps.item", STEP, "inference.steps.item", f'unknown key "steps.item" {INFERENCE_ALLOWED}'),
    ("inference", "steps.item", [STEP], "inference.steps.item", f'unknown key "steps.item" {INFERENCE_ALLOWED}'),
    ("inference", "parallel.x", True, "inference.parallel.x", f'unknown key "parallel.x" {INFERENCE_ALLOWED}'),
    ("root", "inference.steps", [STEP], "inference.steps", f'unknown key "inference.steps" {ROOT_ALLOWED}'),
    ("root", "inference.steps.item", STEP, "inference.steps.item", f'unknown key "inference.steps.item" {ROOT_ALLOWED}'),
    ("root", "inference.parallel", True, "inference.parallel", f'unknown key "inference.parallel" {ROOT_ALLOWED}'),
    ("root", "inference.config", {"a": 1}, "inference.config", f'unknown key "inference.config" {ROOT_ALLOWED}'),
    ("root", "training.x", 1, "training.x", f'unknown key "training.x" {ROOT_ALLOWED}'),
]


def _with_key(where: str, key: str, value: Any, position: int) -> bytes:
    if where == "root":
        members = [("training", DOC["training"]), ("inference", DOC["inference"])]
        members.insert(position % 3, (key, value))
        return _text(members)
    inner = [("steps", DOC["inference"]["steps"]), ("parallel", False)]
    inner.insert(position % 3, (key, value))
    return _text([("training", DOC["training"]), ("inference", dict(inner))])


@pytest.mark.parametrize("parallel", [False, True], ids=["one process", "two processes"])
@pytest.mark.parametrize(("where", "key", "value", "path", "words"), DOTTED, ids=[f"{c[0]}:{c[1]}" for c in DOTTED])
def test_a_dotted_key_spelling_a_parts_path_is_an_unknown_key(tmp_path, where, key, value, path, words, parallel):
    for position in range(3):  # before, between and after the other keys
        file = tmp_path / f"{position}.json"
        file.write_bytes(_with_key(where, key, value, position))
        error = _refusal(file, parallel)
        assert (error.rule, error.path) == ("document.unknown_key", path), str(error)
        assert words in str(error)


@SETTINGS
@given(where=st.sampled_from(["root", "inference"]),
       key=st.lists(st.sampled_from(["inference", "steps", "item", "parallel", "config", "training", "", "x"]),
                    min_size=2, max_size=4).map(".".join),
       value=st.sampled_from([STEP, [STEP], [], {}, True, None, 1]),
       position=st.integers(0, 2))
def test_no_dotted_key_adds_a_step_or_a_part(tmp_path_factory, where, key, value, position):
    folder = tmp_path_factory.mktemp("dotted")
    file = folder / "episode.json"
    file.write_bytes(_with_key(where, key, value, position))
    for parallel in (False, True):
        error = _refusal(file, parallel)
        assert error.rule == "document.unknown_key", str(error)
        assert f'unknown key "{key}"' in str(error), str(error)


def test_a_dotted_key_is_refused_in_a_batch_too(tmp_path):
    """Small files go through the group commit's own tabulation, with the same reader."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.json").write_bytes(_with_key("inference", "steps.item", STEP, 1))
    (inbox / "b.json").write_text(json.dumps(DOC))
    results = {Path(r.source).name: r for r in ingest_many([inbox], lake=tmp_path / "lake", jobs=2)}
    assert results["a.json"].status == "invalid"
    assert str(results["a.json"].error).endswith(f'inference.steps.item: unknown key "steps.item" {INFERENCE_ALLOWED}')
    assert results["b.json"].status == "ingested"
    assert results["b.json"].steps == 2


# ---------------------------------------------------------------------------------------------
# Compressed files: whole streams, and nothing after them
# ---------------------------------------------------------------------------------------------

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
TEXT = json.dumps(episode(20)).encode()


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
@pytest.mark.parametrize(("case", "after"), [("garbage", b"garbage"), ("zero padding", b"\0" * 16),
                                             ("one byte", b"\n"), ("a cut stream", None)])
def test_bytes_after_the_last_stream_are_refused(tmp_path, suffix, case, after):
    """``BZ2File`` and ``LZMAFile`` ended quietly at them, ``GzipFile`` skipped zeros: the file read as whole."""
    packed = COMPRESS[suffix](TEXT)
    file = tmp_path / f"episode.json{suffix}"
    file.write_bytes(packed + (after if after is not None else COMPRESS[suffix](b" " * 1000)[:-5]))
    for parallel in (False, True):
        error = _refusal(file, parallel)
        assert error.rule == "file.compression", str(error)
        words = "ends before its end marker" if after is None else "are not another"
        assert words in str(error) or "ends before its end marker" in str(error), str(error)


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_whole_streams_one_after_another_are_one_text(tmp_path, suffix):
    pack = COMPRESS[suffix]
    cut = len(TEXT) // 3
    file = tmp_path / f"episode.json{suffix}"
    file.write_bytes(pack(TEXT[:cut]) + pack(b"") + pack(TEXT[cut:]))
    result = ingest(file, lake=tmp_path / "lake")
    assert (result.status, result.steps) == ("ingested", 20), result.error
    plain = tmp_path / "episode.json"
    plain.write_bytes(TEXT)
    assert ingest(plain, lake=tmp_path / "lake").status == "exists"  # the same text: the same episode
    empty = tmp_path / f"empty.json{suffix}"
    empty.write_bytes(b"")
    assert validate(empty).error.rule == "file.compression"  # no stream at all
    empty.write_bytes(pack(b""))
    assert validate(empty).error.rule == "document.object"  # a stream of no text


@SETTINGS
@given(suffix=st.sampled_from(sorted(COMPRESS)), after=st.binary(min_size=1, max_size=40), cut=st.integers(0, 12))
def test_a_compressed_file_with_anything_after_it_or_cut_short_is_refused(tmp_path_factory, suffix, after, cut):
    packed = COMPRESS[suffix](TEXT)
    damaged = packed[: len(packed) - cut] + after
    assume(damaged != packed)  # a last byte cut and written again
    file = tmp_path_factory.mktemp("packed") / f"episode.json{suffix}"
    file.write_bytes(damaged)
    result = validate(file)
    assert result.status == "invalid"
    # Bytes appended are found by the decompressor; a cut last block may first decode to text that breaks the JSON.
    rules = {"file.compression"} if not cut else {"file.compression", "file.json", "file.trailing_data",
                                                    "file.truncated", "file.utf8"}
    assert result.error.rule in rules, str(result.error)


# ---------------------------------------------------------------------------------------------
# Memory: rows whose weight is not in their observations or images
# ---------------------------------------------------------------------------------------------

HEAVY = {  # an agent step's field holding most of a step's text, and the value of it
    "custom_metrics": lambda size: {"notes": {"x_label": "n" * size}},
    "action_distribution": lambda size: [0.123456789] * (size // 12),
    "enemy_unit_health": lambda size: [99.5] * (size // 6),
}


def _heavy_file(path: Path, field: str, steps: int, size: int) -> Path:
    """``steps`` steps, each with one agent step whose ``field`` spans about ``size`` bytes of text."""
    value = json.dumps(HEAVY[field](size))
    with path.open("w") as out:
        out.write('{"training": {"environment": "E", "algorithm": "A", "iterations": 1}, "inference": {"steps": [')
        for i in range(steps):
            out.write(("," if i else "") + f'{{"number": {i}, "agent_steps": [{{"agent": "a", "action": 0, '
                      f'"reward": 1, "observation_space": [0.5], "{field}": {value}}}]}}')
        out.write("]}}")
    return path


@pytest.mark.parametrize("parallel", [False, True], ids=["one process", "two processes"])
@pytest.mark.parametrize("field", sorted(HEAVY))
def test_rows_heavy_in_other_fields_are_written_in_bounded_batches(tmp_path, monkeypatch, field, parallel):
    """Only observations and images counted toward a batch's size: a file of steps each holding megabytes
    of custom metrics (or action distributions, enemy healths) kept every row until its end."""
    import pyarrow.parquet as pq

    from pipeline.ingestion import tabulate

    monkeypatch.setattr(tabulate, "BATCH_TEXT_BYTES", 2**20, raising=False)
    path = _heavy_file(tmp_path / "heavy.json", field, steps=12, size=300_000)
    result = ingest(path, lake=tmp_path / "lake", parallel=parallel)
    assert (result.status, result.steps) == ("ingested", 12), result.error
    (location,) = list_episodes(tmp_path / "lake")
    table = pq.ParquetFile(location.table("agent_steps"))
    # About 1 MiB of text a row group (the reader's 256 KiB reads make the count a little uneven).
    assert 3 <= table.metadata.num_row_groups <= 6, table.metadata.num_row_groups
    rows = table.read().to_pylist()
    assert [row["step"] for row in rows] == list(range(12))
    stored = rows[5][field]
    assert (json.loads(stored) if field == "custom_metrics" else stored) == HEAVY[field](300_000)


@pytest.mark.slow
@pytest.mark.parametrize("field", ["custom_metrics", "action_distribution"])
def test_memory_does_not_grow_with_a_file_of_heavy_rows(tmp_path, field):
    """Measured (``run``, peak RSS): 20 MB of 4 MB custom metrics 175 MiB before the fix and after; 240 MB
    1,039 MiB before, 368 MiB after (action distributions: 1,446 MiB before, 355 MiB after)."""
    from tests.ingestion.test_bad_input import run_measured

    peaks = {}
    for steps in (5, 60):
        path = _heavy_file(tmp_path / f"{steps}.json", field, steps=steps, size=4_000_000)
        record, peaks[steps], stderr = run_measured(path, tmp_path / f"lake-{steps}")
        assert "Traceback" not in stderr
        assert (record["status"], record["steps"]) == ("ingested", steps), record
        path.unlink()
    assert peaks[60] < peaks[5] + 300 * 2**20, {k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()}


@pytest.mark.parametrize("value", [1, None, {"training": DOC["training"]}, [STEP], {}], ids=repr)
@pytest.mark.parametrize("where", ["root", "inference"])
def test_an_empty_key_is_an_unknown_key(tmp_path, value, where):
    """A root key "" has the root's own path: it was refused as a repeated "inference", which no file repeated."""
    for position in range(3):
        file = tmp_path / f"{position}.json"
        file.write_bytes(_with_key(where, "", value, position))
        error = _refusal(file, parallel=False)
        assert error.rule == "document.unknown_key", str(error)
        assert str(error).endswith(f'unknown key "" {ROOT_ALLOWED if where == "root" else INFERENCE_ALLOWED}')


@pytest.mark.parametrize("value", [[DOC["inference"]["steps"]], [[1]], [], 5, "steps", None], ids=repr)
def test_an_inference_that_is_no_object_is_refused_as_such(tmp_path, value):
    """An array was refused for an unknown key "item" (the parser's name for an array's elements)."""
    file = tmp_path / "episode.json"
    file.write_bytes(_text([("training", DOC["training"]), ("inference", value)]))
    error = _refusal(file, parallel=False)
    assert (error.rule, error.path) == ("document.required", "inference"), str(error)
    assert str(error).endswith('inference: must be an object with a "steps" array')


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_zip_archive_is_refused_in_one_line(tmp_path, command):
    """fsspec's zip reader seeks to the archive's end: every .zip (whole or not) was zipfile's traceback."""
    import subprocess
    import sys
    import zipfile

    whole = tmp_path / "episode.json.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("episode.json", TEXT)
    lake = tmp_path / "lake"
    for path in (whole, tmp_path / "bytes.json.zip"):
        if not path.exists():
            path.write_bytes(TEXT)
        args = [command, str(path), "--json"] + (["--lake", str(lake)] if command == "run" else [])
        out = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2])
        assert "Traceback" not in out.stderr, out.stderr
        assert out.returncode == 1
        record = json.loads(out.stdout)
        assert record["status"] == "failed"
        assert record["error"]["message"] == (f"{path}: a .zip archive cannot be read as a stream; unzip it, or "
                                              "compress the episode file with gzip, bzip2, xz or zstd (.gz, .bz2, .xz, .zst)")
    assert not lake.exists() or list_episodes(lake) == []


def test_a_lzma_file_is_read_whole_too(tmp_path):
    alone = lzma.compress(TEXT, format=lzma.FORMAT_ALONE)
    file = tmp_path / "episode.json.lzma"
    file.write_bytes(alone)
    assert validate(file).status == "valid"
    file.write_bytes(alone + b"junk")
    assert _refusal(file, parallel=False).rule == "file.compression"
