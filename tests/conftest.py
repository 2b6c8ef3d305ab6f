"""Fixtures shared by every test package; plain helpers live in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import InvalidEpisode, ingest
from tests.helpers import episode, lake_snapshot, staging_leftovers, write_json


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def reject(tmp_path: Path, lake: Path):
    """Ingest ``document`` (a dict, or raw bytes/str) and assert it is rejected and changes nothing.

    Returns the :class:`InvalidEpisode` so the test can check its rule, path and message.
    """

    def _reject(document: Any, *, filename: str = "episode.json") -> InvalidEpisode:
        # Seed the lake with a valid episode first, so "unchanged" is checked against real content.
        seed = write_json(tmp_path / "seed.json", episode(steps=1))
        assert ingest(seed, lake=lake).status == "ingested"
        before = lake_snapshot(lake)
        path = tmp_path / filename
        if isinstance(document, bytes):
            path.write_bytes(document)
        elif isinstance(document, str):
            path.write_text(document, encoding="utf-8")
        else:
            write_json(path, document)
        result = ingest(path, lake=lake)
        assert result.status == "invalid", result
        assert isinstance(result.error, InvalidEpisode)
        assert lake_snapshot(lake) == before, "an invalid file changed the lake"
        assert staging_leftovers(lake) == []
        assert str(result.error).startswith(f"{path}: ")
        return result.error

    return _reject
