"""Reading the input: compression, URLs, streams, byte-level oddities, and the multi-prefix parser."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import json
import lzma
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import cli
from pipeline import SourceError, ingest
from pipeline.ingestion.hashing import BackgroundSha256
from pipeline.ingestion.parts import STEP, _Prefixes, read_document
from pipeline.ingestion.source import READ_SIZE, open_source
from tests.helpers import episode, full_episode, lake_snapshot, staging_leftovers, write_json

COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def content_id(data: bytes) -> str:
    """The documented episode id: the first 32 hex digits of the SHA-256 of the decompressed bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """An episode with every optional field (images, units, vector rewards), as plain JSON."""
    return write_json(tmp_path / "episode.json", full_episode())


def assert_ingested_like(result: Any, plain: Path) -> None:
    assert result.status == "ingested", result.error
    assert result.episode_id == content_id(plain.read_bytes())
    assert (result.steps, result.agent_steps, result.unit_steps) == (3, 3, 2)


# --- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_file_has_the_same_id_as_the_plain_file(suffix, plain, tmp_path, lake):
    packed = tmp_path / f"episode.json{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
    result = ingest(packed, lake=lake)
    assert result.source == str(packed)
    assert_ingested_like(result, plain)
    # ... so the plain file is then already present, and the lake holds one copy.
    again = ingest(plain, lake=lake)
    assert (again.status, again.episode_id) == ("exists", result.episode_id)
    assert len(list(lake.glob("environment=*/episode_id=*"))) == 1


def test_every_compressed_form_is_one_episode(plain, tmp_path, lake):
    results = [ingest(plain, lake=lake)]
    for suffix, compress in sorted(COMPRESSORS.items()):
        packed = tmp_path / f"episode.json{suffix}"
        packed.write_bytes(compress(plain.read_bytes()))
        results.append(ingest(packed, lake=lake))
    assert [r.status for r in results] == ["ingested"] + ["exists"] * len(COMPRESSORS)
    assert {r.episode_id for r in results} == {content_id(plain.read_bytes())}


@pytest.mark.parametrize(
    ("suffix", "cut"),
    [
        (".gz", "half"), (".gz", "last byte"),
        (".bz2", "half"), (".bz2", "last byte"),
        (".xz", "half"), (".xz", "last byte"),
        (".zst", "half"),
        (".zst", "last byte"),
    ],
)
def test_truncated_compressed_file_is_rejected_cleanly(suffix, cut, plain, reject):
    packed = COMPRESSORS[suffix](plain.read_bytes())
    truncated = packed[: len(packed) // 2] if cut == "half" else packed[:-1]
    error = reject(truncated, filename=f"episode.json{suffix}")
    assert error.rule in ("file.compression", "file.truncated"), (error.rule, str(error))
    assert "truncated" in str(error)


def test_zst_cut_in_its_checksum_is_rejected(plain, reject):
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(plain.read_bytes())
    error = reject(packed[:-1], filename="episode.json.zst")
    assert error.rule in ("file.compression", "file.truncated")


def test_corrupt_gzip_is_rejected_cleanly(plain, reject):
    packed = bytearray(gzip.compress(plain.read_bytes()))
    packed[len(packed) // 2] ^= 0xFF
    error = reject(bytes(packed), filename="episode.json.gz")
    assert error.rule in ("file.compression", "file.json", "file.truncated")


# --- URLs -----------------------------------------------------------------------------------------


def test_file_url(plain, lake):
    url = plain.as_uri()
    assert url.startswith("file:///")
    result = ingest(url, lake=lake)
    assert result.source == url
    assert_ingested_like(result, plain)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up early is not a test failure; keep the output clean."""


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path, list[tuple[str, str]]]]:
    """Serve a fresh folder on 127.0.0.1 (port chosen by the OS); yield base URL, folder and request log."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[tuple[str, str]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def send_head(self):  # type: ignore[no-untyped-def]
            requests.append((self.command, self.path))
            return super().send_head()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_url_ingests_with_the_same_id(plain, http_folder, lake):
    base, folder, _ = http_folder
    (folder / "episode.json").write_bytes(plain.read_bytes())
    url = f"{base}/episode.json"
    result = ingest(url, lake=lake)
    assert result.source == url
    assert_ingested_like(result, plain)


def test_http_url_of_a_compressed_file(plain, http_folder, lake):
    base, folder, _ = http_folder
    (folder / "episode.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
    result = ingest(f"{base}/episode.json.gz", lake=lake)
    assert_ingested_like(result, plain)


def test_http_404_is_a_clean_failure(http_folder, lake):
    base, _, _ = http_folder
    url = f"{base}/missing.json"
    result = ingest(url, lake=lake)
    assert result.status == "failed"
    assert isinstance(result.error, SourceError)
    assert str(result.error) == f"{url}: no such file"
    assert list(lake.glob("environment=*")) == []
    with pytest.raises(SourceError, match="no such file"):
        ingest(url, lake=lake, raise_errors=True)

    cli_result = CliRunner().invoke(cli, ["run", url, "--lake", str(lake)])
    assert cli_result.exit_code == 1
    assert cli_result.stderr == f"failed: {url}: no such file\n"
    assert "Traceback" not in cli_result.output


def test_a_server_that_cannot_be_reached_is_not_a_missing_file(lake):
    """A refused connection says so (it read "no such file", which sent people looking for a typo)."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/episode.json"
    result = ingest(url, lake=lake)
    assert result.status == "failed" and isinstance(result.error, SourceError)
    assert str(result.error).startswith(f"{url}: could not connect: ")
    assert f"127.0.0.1:{port}" in str(result.error).removeprefix(url)
    assert list(lake.glob("environment=*")) == []


def test_http_url_is_downloaded_once(plain, http_folder, lake):
    base, folder, requests = http_folder
    (folder / "episode.json").write_bytes(plain.read_bytes())
    assert ingest(f"{base}/episode.json", lake=lake).status == "ingested"
    # The file is far smaller than one read block, so one GET is enough; HEAD requests are fine.
    assert [r for r in requests if r[0] == "GET"] == [("GET", "/episode.json")]


def test_http_url_larger_than_one_block_from_a_server_without_ranges(http_folder, tmp_path, lake):
    base, folder, _ = http_folder
    document = episode(steps=2)
    document["training"]["config"] = {"padding": "x" * (6 * 2**20)}  # a 6 MiB file, cheap to parse
    path = write_json(folder / "large.json", document)
    result = ingest(f"{base}/large.json", lake=lake)
    assert result.status == "ingested", str(result.error)
    assert result.episode_id == content_id(path.read_bytes())


# --- streams --------------------------------------------------------------------------------------


def _pipe_reader(data: bytes) -> tuple[io.RawIOBase, threading.Thread]:
    """The read end of an OS pipe (not seekable), fed with ``data`` by a background thread."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:  # the reader stopped early; the test's asserts will say why
            pass

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return open(read_fd, "rb", buffering=0), thread


@pytest.mark.parametrize(("name", "compress"), [("pipe.json", None), ("pipe.json.gz", gzip.compress)])
def test_non_seekable_stream(name, compress, plain, lake):
    data = plain.read_bytes()
    stream, feeder = _pipe_reader(compress(data) if compress else data)
    with stream:
        assert not stream.seekable()
        result = ingest(stream, lake=lake, name=name)
    feeder.join()
    assert result.source == name
    assert_ingested_like(result, plain)


def test_unnamed_stream_is_labelled_and_ingests(plain, lake):
    stream, feeder = _pipe_reader(plain.read_bytes())
    with stream:
        result = ingest(stream, lake=lake)
    feeder.join()
    assert result.source == "<stream>"
    assert_ingested_like(result, plain)


def test_binary_stream_in_memory(plain, lake):
    result = ingest(io.BytesIO(plain.read_bytes()), lake=lake, name="memory.json")
    assert result.source == "memory.json"
    assert_ingested_like(result, plain)


# --- bytes at the edges ---------------------------------------------------------------------------


def test_utf8_bom_is_tolerated(plain, tmp_path, lake):
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    result = ingest(with_bom, lake=lake)
    assert result.status == "ingested", result.error
    assert (result.steps, result.agent_steps, result.unit_steps) == (3, 3, 2)
    assert result.episode_id == content_id(with_bom.read_bytes())


def test_utf8_bom_in_a_compressed_file(plain, tmp_path, lake):
    packed = tmp_path / "bom.json.gz"
    packed.write_bytes(gzip.compress(b"\xef\xbb\xbf" + plain.read_bytes()))
    result = ingest(packed, lake=lake)
    assert result.status == "ingested", result.error


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "the file is empty"),
        (b" \n\t\r\n", "only whitespace"),
        (b"\xef\xbb\xbf", "only whitespace"),
        (b"null", "found null"),
        (b"[]", "found an array"),
        (b'[{"training": {}}]', "found an array"),
        (b'"x"', "found a string"),
        (b"42", "found a number"),
        (b"-1.5", "found a number"),
        (b"true", "found a boolean"),
        (b"  \n null \n", "found null"),
    ],
)
def test_document_that_is_not_an_object_is_rejected(content, found, reject):
    error = reject(content)
    assert error.rule == "document.object"
    assert found in str(error), str(error)


def test_json_cut_inside_the_steps_names_the_step(tmp_path, reject):
    text = json.dumps(episode(steps=5))
    cut = text.index('{"number": 3')
    error = reject(text[: cut + 5])
    assert error.rule == "file.truncated"
    assert error.path == "inference.steps[3]"
    assert "truncated" in str(error)


# --- the multi-prefix parser ----------------------------------------------------------------------


def _big_steps(count: int) -> list[dict[str, Any]]:
    """Steps whose contents reuse the header's key names and paths, to tempt a wrong match."""
    return [
        {
            "number": i,
            "agent_steps": [{
                "agent": "training",
                "action": i % 4,
                "reward": i / 8,
                "observation_space": [float(i + k) for k in range(40)],
                "custom_metrics": {"inference": {"steps": [i], "config": "inference.steps.item"},
                                   "training": {"x": [1, 2], "y": [3, 4]}},
            }],
        }
        for i in range(count)
    ]


def _document(order: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    training = {"environment": "Env/steps", "algorithm": "PPO", "iterations": 1,
                "config": {"steps": [1, 2], "inference": {"config": {}}}}
    action_mapping = {"0": "left", "1": "right"}
    config = {"seed": 3, "steps": {"item": [0]}}
    if order == "training first":
        return {"training": training, "action_mapping": action_mapping,
                "inference": {"parallel": True, "config": config, "steps": steps}}
    return {"inference": {"steps": steps, "config": config, "parallel": True},
            "action_mapping": action_mapping, "training": training}


def _read(data: bytes) -> list[tuple[str, Any]]:
    with open_source(io.BytesIO(data), name="document.json") as source:
        return list(read_document(source))


@pytest.mark.parametrize("order", ["training first", "inference first"])
def test_header_parts_and_steps_come_out_in_file_order(order):
    steps = _big_steps(2500)
    document = _document(order, steps)
    data = json.dumps(document).encode()
    assert len(data) > 3 * READ_SIZE  # the parser refills its buffer many times

    parts = _read(data)

    headers = {
        "training": document["training"],
        "action_mapping": document["action_mapping"],
        "inference.parallel": True,
        "inference.config": document["inference"]["config"],
    }
    if order == "training first":
        expected_order = ["training", "action_mapping", "inference.parallel", "inference.config"] + [STEP] * 2500
    else:
        expected_order = [STEP] * 2500 + ["inference.config", "inference.parallel", "action_mapping", "training"]
    assert [part for part, _ in parts] == expected_order
    assert [value for part, value in parts if part == STEP] == steps
    assert {part: value for part, value in parts if part != STEP} == headers


def test_header_parts_between_steps_and_without_optional_parts():
    steps = _big_steps(3)
    document = {"inference": {"config": {}, "steps": steps},
                "training": {"environment": "E", "algorithm": "A", "iterations": 1}}
    parts = _read(json.dumps(document).encode())
    assert [p for p, _ in parts] == ["inference.config", STEP, STEP, STEP, "training"]
    # A null action_mapping and parallel are still yielded, as themselves.
    document = {"action_mapping": None, "inference": {"steps": steps[:1], "parallel": False},
                "training": document["training"]}
    parts = _read(json.dumps(document).encode())
    assert parts == [("action_mapping", None), (STEP, steps[0]), ("inference.parallel", False),
                     ("training", document["training"])]


def test_prefixes_object_matches_each_wanted_path_and_records_it():
    prefixes = _Prefixes()
    # The paths ijson compares for {"training": {..}, "inference": {"config": {..}, "parallel": true,
    # "steps": [{..}, {..}]}, "action_mapping": {..}}: one per event outside a matched value, the
    # path of a map key's event being that of the object holding it.
    paths = ["", "", "training", "", "inference", "inference", "inference.config", "inference",
             "inference.parallel", "inference", "inference.steps", "inference.steps.item",
             "inference.steps.item", "inference.steps", "inference", "", "action_mapping", ""]
    # ijson compares ``current_path == prefix`` with the plain str on the left, as here.
    matches = [path == prefixes for path in paths]
    assert [path for path, match in zip(paths, matches, strict=True) if match] == [
        "training", "inference.config", "inference.parallel", "inference.steps.item", "inference.steps.item",
        "action_mapping"]
    assert list(prefixes.matched) == ["training", "inference.config", "inference.parallel",
                                      "inference.steps.item", "inference.steps.item", "action_mapping"]
    assert prefixes.unknown is None
    other = "inference.extra"  # any other path is remembered as the first unknown key
    assert (other == prefixes) is False
    assert prefixes.unknown == other
    # A step's path right after the root's key event is a root key "inference.steps.item", not a step.
    prefixes = _Prefixes()
    assert [path == prefixes for path in ["", "", "inference.steps.item"]] == [False, False, False]
    assert (prefixes.unknown, prefixes.unknown_parent) == ("inference.steps.item", "")


@pytest.mark.parametrize("order", ["training first", "inference first"])
def test_both_key_orders_ingest_the_same_counts(order, tmp_path, lake):
    path = write_json(tmp_path / f"{order}.json", _document(order, _big_steps(300)))
    result = ingest(path, lake=lake)
    assert result.status == "ingested", result.error
    assert (result.steps, result.agent_steps, result.unit_steps) == (300, 300, 0)
    assert result.environment == "Env/steps"


@pytest.mark.parametrize("order", ["training first", "inference first"])
def test_unknown_top_level_key_is_found_in_either_order(order, reject):
    document = _document(order, _big_steps(3))
    document["extra"] = {"steps": []}
    error = reject(document)
    assert error.rule == "document.unknown_key"
    assert error.path == "extra"
    assert 'unknown key "extra"' in str(error)


def test_staging_and_lake_untouched_by_a_rejected_stream(tmp_path, lake):
    assert ingest(write_json(tmp_path / "seed.json", episode(steps=1)), lake=lake).status == "ingested"
    before = lake_snapshot(lake)
    result = ingest(io.BytesIO(b"[1, 2, 3]"), lake=lake, name="stream.json")
    assert result.status == "invalid"
    assert str(result.error).startswith("stream.json: ")
    assert lake_snapshot(lake) == before
    assert staging_leftovers(lake) == []


def test_zst_file_of_several_frames_ingests_whole(tmp_path, lake):
    """fsspec's zstd reader stops after the first frame; every frame must be read."""
    import zstandard

    text = json.dumps(episode(steps=6)).encode()
    plain = tmp_path / "plain.json"
    plain.write_bytes(text)
    framed = tmp_path / "framed.json.zst"
    framed.write_bytes(zstandard.ZstdCompressor().compress(text[:50]) + zstandard.ZstdCompressor().compress(text[50:]))
    first, second = ingest(plain, lake=lake), ingest(framed, lake=lake)
    assert (second.status, second.episode_id, second.steps) == ("exists", first.episode_id, 6)


# -- the content hash (the episode id) -------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=40), batch=st.integers(1, 700),
       pending=st.integers(1, 3), digests=st.integers(1, 3))
def test_background_hash_equals_sha256_of_the_whole_stream(chunks, batch, pending, digests):
    """The hash runs on a helper thread in hand-overs of ``batch`` bytes; order and completeness
    decide the episode id, so it must equal hashlib's over the concatenation, asked any number of times."""
    hasher = BackgroundSha256()
    hasher.BATCH_BYTES, hasher.MAX_PENDING = batch, pending
    for chunk in chunks:
        hasher.update(chunk)
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert [hasher.hexdigest() for _ in range(digests)] == [expected] * digests


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=40), batch=st.integers(1, 700),
       first=st.integers(1, 64))
def test_background_hash_copies_what_it_is_given(chunks, batch, first):
    """The reader hands the hash the parser's own buffer, which the next read overwrites at once."""
    hasher = BackgroundSha256()
    hasher.BATCH_BYTES, hasher.FIRST_BLOCK_BYTES = batch, first
    buffer = bytearray(300)
    for chunk in chunks:
        buffer[: len(chunk)] = chunk
        hasher.update(memoryview(buffer)[: len(chunk)])
        buffer[:] = b"\xff" * len(buffer)  # reused before the helper may have hashed it
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_the_parser_reads_into_its_own_buffer_and_the_hash_sees_every_byte(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (3 * BackgroundSha256.BATCH_BYTES // 256 + 77)
    path.write_bytes(data)
    with open_source(path) as src:
        reader, buffer, got = src.reader, bytearray(READ_SIZE), bytearray()
        reader.mark = lambda: None
        reader._limit = len(data)
        while count := reader.readinto(buffer):
            got += buffer[:count]
        assert bytes(got) == data and reader.consumed == len(data)
        assert reader.hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_hash_helper_thread_is_gone_once_the_source_is_closed(tmp_path):
    before = threading.active_count()
    path = tmp_path / "big.bin"
    path.write_bytes(b"0123456789abcdef" * (3 * BackgroundSha256.BATCH_BYTES // 32))  # 1.5 hand-overs
    with open_source(path) as src:
        while src.reader.read(READ_SIZE):
            pass
        assert threading.active_count() == before + 1  # the helper, started by the first hand-over
    assert threading.active_count() == before
