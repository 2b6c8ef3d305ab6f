"""Inputs read once (URLs, pipes, streams) take the fast walk too, with a copy of what it read kept for the
exact walk (pipeline.ingestion.keptcopy): still one download, one read of the pipe, and the same episode,
the same refusals, as from a local file."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.ingestion.parts as parts
from pipeline import InvalidEpisode, SourceError, ingest, validate
from pipeline.ingestion.keptcopy import KeptCopy
from pipeline.ingestion.parts import read_batches
from tests.helpers import episode, staging_leftovers
from tests.ingestion.test_source import _pipe_reader, http_folder

_ = http_folder  # a fixture, imported for the tests here


def _documents() -> dict[str, dict[str, Any]]:
    valid = episode(steps=300)
    doubtful = episode(steps=300)  # a header value too long for the fast walk to look for: the exact walk's
    doubtful["training"]["config"] = {"notes": ["n" * 1000] * 5000}
    invalid = episode(steps=300)
    invalid["inference"]["steps"][250]["agent_steps"][0]["action"] = "left"
    return {"valid": valid, "doubtful": doubtful, "invalid": invalid}


@pytest.fixture
def exact_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the exact walk's readings."""
    calls: list[int] = []
    monkeypatch.setattr(parts, "read_batches", lambda *a, **k: calls.append(1) or read_batches(*a, **k))
    return calls


def _local(tmp_path: Path, kind: str, text: bytes) -> Any:
    path = tmp_path / f"local-{kind}.json"
    path.write_bytes(text)
    return ingest(path, lake=tmp_path / f"lake-local-{kind}")


@pytest.mark.parametrize("kind", ["valid", "doubtful", "invalid"])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_url_is_downloaded_once_and_ingested_as_the_local_file(
        tmp_path: Path, http_folder: Any, exact_walks: list[int], kind: str, compressed: bool) -> None:
    base, folder, requests = http_folder
    text = json.dumps(_documents()[kind]).encode()
    local = _local(tmp_path, kind, text)
    exact_walks.clear()
    name = "episode.json.gz" if compressed else "episode.json"
    (folder / name).write_bytes(gzip.compress(text) if compressed else text)
    lake = tmp_path / "lake"
    result = ingest(f"{base}/{name}", lake=lake)
    assert [r for r in requests if r[0] == "GET"] == [("GET", f"/{name}")]
    assert (result.status, result.episode_id, result.steps) == (local.status, local.episode_id, local.steps)
    assert result.source == f"{base}/{name}"
    assert exact_walks == ([] if kind == "valid" else [1])
    if kind == "invalid":
        assert isinstance(result.error, InvalidEpisode) and isinstance(local.error, InvalidEpisode)
        assert (result.error.rule, result.error.path, result.error.step) == (
            local.error.rule, local.error.path, local.error.step)
    assert staging_leftovers(lake) == []


@pytest.mark.parametrize("kind", ["valid", "doubtful", "invalid"])
def test_a_pipe_is_read_once_and_ingested_as_the_local_file(tmp_path: Path, exact_walks: list[int],
                                                              kind: str) -> None:
    text = json.dumps(_documents()[kind]).encode()
    local = _local(tmp_path, kind, text)
    exact_walks.clear()
    stream, feeder = _pipe_reader(text)
    lake = tmp_path / "lake"
    with stream:
        result = ingest(stream, lake=lake, name="from-a-pipe.json")
    feeder.join()
    assert (result.status, result.episode_id, result.steps) == (local.status, local.episode_id, local.steps)
    assert result.source == "from-a-pipe.json"
    assert exact_walks == ([] if kind == "valid" else [1])
    assert staging_leftovers(lake) == []


def test_a_two_process_ingest_of_a_url_keeps_its_copy_too(tmp_path: Path, http_folder: Any,
                                                           exact_walks: list[int]) -> None:
    base, folder, requests = http_folder
    text = json.dumps(_documents()["doubtful"]).encode()
    local = _local(tmp_path, "doubtful", text)
    (folder / "e.json").write_bytes(text)
    result = ingest(f"{base}/e.json", lake=tmp_path / "lake", parallel=True)
    assert (result.status, result.episode_id) == ("ingested", local.episode_id)
    assert [r for r in requests if r[0] == "GET"] == [("GET", "/e.json")]


def test_a_validation_reads_a_url_once_with_the_exact_walk(tmp_path: Path, http_folder: Any,
                                                            exact_walks: list[int]) -> None:
    """Without a lake there is nowhere to keep a copy: the exact walk reads it, as before."""
    base, folder, requests = http_folder
    (folder / "e.json").write_bytes(json.dumps(_documents()["valid"]).encode())
    assert validate(f"{base}/e.json").status == "valid"
    assert exact_walks == [1]
    assert [r for r in requests if r[0] == "GET"] == [("GET", "/e.json")]


def test_a_copy_that_cannot_be_kept_fails_only_a_file_that_needs_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk under the lake: a file the fast walk vouches for is ingested; one it leaves to the exact
    walk fails with a message saying why, not with a wrong verdict."""
    def full(self: KeptCopy, data: Any) -> None:
        self._failure = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(KeptCopy, "_keep", full)
    documents = _documents()
    for kind, status in (("valid", "ingested"), ("doubtful", "failed")):
        stream, feeder = _pipe_reader(json.dumps(documents[kind]).encode())
        with stream:
            result = ingest(stream, lake=tmp_path / "lake", name=f"{kind}.json")
        feeder.join()
        assert result.status == status
        if status == "failed":
            assert isinstance(result.error, SourceError)
            assert "could not keep a copy of the input" in str(result.error)
            assert "No space left on device" in str(result.error)
    assert staging_leftovers(tmp_path / "lake") == []


class _Chunky(io.RawIOBase):
    """A stream that hands out its bytes in the sizes it is given (at most what is asked)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes, self._at = data, sizes, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._sizes.pop(0) if self._sizes else len(buffer), len(self._data) - self._at)
        buffer[:size] = self._data[self._at : self._at + size]
        self._at += size
        return size


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=5000), sizes=st.lists(st.integers(1, 700), max_size=30),
       first_reads=st.integers(0, 40), buffer=st.integers(1, 900))
def test_a_second_reading_gives_every_byte_once_in_order(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                                         sizes: list[int], first_reads: int, buffer: int) -> None:
    """Whatever the first reading took (nothing, part, all) and however the input hands its bytes out."""
    path = tmp_path_factory.mktemp("kept") / "input"
    with open(path, "w+b") as copy:
        kept = KeptCopy(_Chunky(data, sizes), copy, "x")  # type: ignore[arg-type]
        first = kept.first()
        taken = b"".join(first.read(buffer) for _ in range(first_reads))
        assert data.startswith(taken)
        again = kept.again()
        assert again.read() == data
        with pytest.raises(RuntimeError):
            kept.again()
