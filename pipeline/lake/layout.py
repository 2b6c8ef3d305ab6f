"""The lake's layout on disk: where the lake is, how folders are named, and listing a snapshot.

::

    lake/
      _staging/<token>/            one in-flight ingest: owner.lock (held while it runs), episode/
      environment=<name>/          the name percent-encoded, so "ALE/Pong-v5" is one folder
        episode_id=<id>/           one committed episode: its five tables, published by one rename

An ingest writes everything under ``_staging/<token>/episode`` and publishes it with a single
``rename`` to ``environment=<name>/episode_id=<id>``. A reader sees the whole episode or none
of it. If that folder already exists the same content was ingested before (or is being
committed by another process right now): the rename fails and the ingest reports "exists".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

ENV_VAR = "INGEST_PIPELINE_LAKE"
DEFAULT_LAKE = "lake"
STAGING = "_staging"
ENVIRONMENT_PREFIX = "environment="
EPISODE_PREFIX = "episode_id="
OWNER_LOCK = "owner.lock"


def resolve_lake(path: str | os.PathLike[str] | None = None) -> Path:
    """The lake folder: ``path``, else ``$INGEST_PIPELINE_LAKE``, else ``./lake``."""
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_LAKE
    return Path(path).expanduser().absolute()


# ASCII characters kept as they are in a folder name; other ASCII is percent-encoded. Non-ASCII
# characters stay raw UTF-8 (polars, DuckDB and pyarrow all decode such names): percent-encoding
# them would triple their size against the 255-byte limit on a file name.
_FOLDER_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~(),;@!'")
MAX_FOLDER_BYTES = 255


def environment_folder(environment: str) -> str:
    """The partition folder name of an environment: ``/``, ``%``, ``=`` and the like escaped."""
    encoded = "".join(
        ch if ch in _FOLDER_SAFE or ord(ch) > 127 else quote(ch, safe="") for ch in environment
    )
    return ENVIRONMENT_PREFIX + encoded


def environment_name(folder: str) -> str:
    """Inverse of :func:`environment_folder`."""
    return unquote(folder[len(ENVIRONMENT_PREFIX):])


@dataclass(frozen=True)
class EpisodeLocation:
    """Where one committed episode lives."""

    environment: str
    episode_id: str
    path: Path

    def table(self, name: str) -> Path:
        return self.path / f"{name}.parquet"


def episode_path(lake: Path, environment: str, episode_id: str) -> Path:
    return lake / environment_folder(environment) / (EPISODE_PREFIX + episode_id)


def list_episodes(lake: Path) -> list[EpisodeLocation]:
    """Every committed episode in the lake, sorted by environment then id."""
    found = []
    try:
        env_dirs = sorted(os.scandir(lake), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for env_dir in env_dirs:
        if not env_dir.name.startswith(ENVIRONMENT_PREFIX) or not env_dir.is_dir():
            continue
        environment = environment_name(env_dir.name)
        try:
            entries = sorted(os.scandir(env_dir.path), key=lambda e: e.name)
        except FileNotFoundError:  # removed while we looked
            continue
        for entry in entries:
            if entry.name.startswith(EPISODE_PREFIX) and entry.is_dir():
                found.append(EpisodeLocation(environment, entry.name[len(EPISODE_PREFIX):], Path(entry.path)))
    return found


