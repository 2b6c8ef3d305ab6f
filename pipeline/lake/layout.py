"""The lake's layout on disk: where the lake is, how folders are named, and listing a snapshot.

::

    lake/
      _staging/<token>/            one in-flight ingest: owner.lock (held while it runs), episode/
      _locks/environment=<name>    one lock file per environment (see :mod:`pipeline.lake.compact`)
      _frames/<options-key>/       a prepared frame store (:mod:`pipeline.lake.framestore`): derived,
        <id>-<agent>.frames        rebuildable, one file per (episode, agent); never read as episodes
      environment=<name>/          the name percent-encoded, so "ALE/Pong-v5" is one folder
        _generation                a token, new each time the folder is swapped for a rebuilt one
        episode_id=<id>/           one committed episode: its five tables, published by one rename
        segment=<token>/           many episodes in five files, each with an episode_id column
                                   (see :mod:`pipeline.lake.segments`), and episode_ids.idx, their
                                   ids sorted (see :mod:`pipeline.lake.segment_index`), and
                                   footers.json (see :mod:`pipeline.lake.footer_map`)

An ingest writes everything under ``_staging/<token>/episode`` and publishes it with a single
``rename`` to ``environment=<name>/episode_id=<id>``. A reader sees the whole episode or none
of it. If that folder already exists the same content was ingested before (or is being
committed by another process right now): the rename fails and the ingest reports "exists".
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from ..errors import LakeError

log = logging.getLogger(__name__)

ENV_VAR = "INGEST_PIPELINE_LAKE"
DEFAULT_LAKE = "lake"
STAGING = "_staging"
ENVIRONMENT_PREFIX = "environment="
EPISODE_PREFIX = "episode_id="
SEGMENT_PREFIX = "segment="
SEGMENT_INDEX = "episode_ids.idx"  # in a segment folder, beside its five tables
FOOTER_MAP = "footers.json"  # in a segment folder: where each row group lies in its step tables' footers
OWNER_LOCK = "owner.lock"
LOCKS = "_locks"
GENERATION = "_generation"
FRAMES = "_frames"
FRAMES_SUFFIX = ".frames"
# An episode id is this many hex digits (of the SHA-256 of its file); a shorter one is a prefix.
ID_LENGTH = 32
# How often a listing is retried when a compaction swaps an environment folder while it lists.
_LIST_ATTEMPTS = 20


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


# A batch compacts an environment by itself once it holds this many episode folders and segments
# (pipeline.lake.compact.compact_if_fragmented; small ones are merged, see the README's "The lake").
AUTO_COMPACT_ENTRIES = 16


def entry_count(lake: Path, environment: str) -> int:
    """How many episode folders and segments the environment's folder holds (0 if it has none).

    Cheap (one listing, no pyarrow): whether a batch should compact is asked after every ingest.
    """
    try:
        with os.scandir(lake / environment_folder(environment)) as entries:
            return sum(1 for e in entries if e.name.startswith((EPISODE_PREFIX, SEGMENT_PREFIX)))
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class EpisodeLocation:
    """Where one committed episode lives: its own folder, or a segment (``segment`` is then True).

    In a segment, ``table()`` is the segment's file, which holds other episodes' rows too: read
    this episode's rows by its ``episode_id`` column (:mod:`pipeline.lake.segments`).
    """

    environment: str
    episode_id: str
    path: Path
    segment: bool = False

    def table(self, name: str) -> Path:
        return self.path / f"{name}.parquet"


class Entry:
    """One folder of an environment: an episode folder (one id) or a segment (many ids, sorted).

    A segment's ids are read only when something needs them (:attr:`ids`, :meth:`holds`), once:
    a snapshot of 100,000 episodes is a listing of folder names. A segment never changes, so what
    is read later is what the listing saw; if the segment has been swapped out meanwhile, the read
    raises ``FileNotFoundError`` (the snapshot is stale).
    """

    __slots__ = ("_ids", "environment", "path", "segment")

    def __init__(self, environment: str, path: Path, segment: bool, ids: list[str] | None = None) -> None:
        self.environment = environment
        self.path = path
        self.segment = segment
        self._ids = ids

    def __repr__(self) -> str:
        return f"Entry({self.environment!r}, {str(self.path)!r}, segment={self.segment})"

    @property
    def ids(self) -> list[str]:
        """The ids, sorted (a segment's are read from its ``episodes.parquet`` on first use)."""
        if self._ids is None:
            from .segments import segment_ids  # segments imports this module

            self._ids = segment_ids(self.path)
        return self._ids

    def count(self) -> int:
        """How many episodes it holds (a segment's from its footer, unless its ids are read)."""
        if self._ids is not None:
            return len(self._ids)
        from .segments import segment_count

        return segment_count(self.path)

    def holds(self, episode_id: str) -> bool:
        """Whether it holds exactly ``episode_id``: for a segment whose ids are not read yet, the
        row-group statistics of its ``episodes.parquet`` first, then only the ids of the row group
        whose range covers it."""
        if self._ids is None and self.segment:
            from .segments import segment_holds

            return segment_holds(self.path, episode_id)
        at = bisect.bisect_left(self.ids, episode_id)
        return at < len(self.ids) and self.ids[at] == episode_id

    def locations(self) -> list[EpisodeLocation]:
        return [EpisodeLocation(self.environment, episode_id, self.path, self.segment) for episode_id in self.ids]


@dataclass
class Listing:
    """One consistent listing of a lake: its entries, and each environment's generation token."""

    entries: list[Entry]
    generations: dict[str, str]  # environment folder name -> token ("" before its first swap)

    @property
    def episodes(self) -> list[EpisodeLocation]:
        """Every episode, sorted by environment then id (one object each: costly for 100k episodes)."""
        return locations_of(self.entries)


def locations_of(entries: list[Entry]) -> list[EpisodeLocation]:
    """The episodes of ``entries``, sorted by environment (folder name) then id."""
    found = [location for entry in entries for location in entry.locations()]
    return sorted(found, key=lambda loc: (loc.path.parent.name, loc.episode_id))


def episode_path(lake: Path, environment: str, episode_id: str) -> Path:
    return lake / environment_folder(environment) / (EPISODE_PREFIX + episode_id)


def frame_store_path(lake: Path, key: str) -> Path:
    """The folder of the prepared frame store ``key`` (one per set of frame-element options)."""
    return lake / FRAMES / key


def frame_entry_name(episode_id: str, agent: str) -> str:
    """The file name of one (episode, agent) in a frame store: the id, then a hash of the agent's name
    (any string, so not itself a safe file name)."""
    return f"{episode_id}-{hashlib.sha256(agent.encode()).hexdigest()[:16]}{FRAMES_SUFFIX}"


def frame_entry_episode(name: str) -> str | None:
    """The episode id a frame store file belongs to (None: not an entry's name)."""
    if not name.endswith(FRAMES_SUFFIX) or len(name) < ID_LENGTH + 1 or name[ID_LENGTH] != "-":
        return None
    return name[:ID_LENGTH]


def list_episodes(lake: Path) -> list[EpisodeLocation]:
    """Every committed episode in the lake, sorted by environment then id."""
    return list_lake(lake).episodes


def read_generation(env_dir: Path) -> str:
    """The environment folder's generation token ("" when it was never swapped)."""
    try:
        return (env_dir / GENERATION).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def list_lake(lake: Path) -> Listing:
    """Every committed episode, folders and segments, with each environment's generation.

    Each environment is listed between two reads of its generation token: a compaction that swaps
    the folder meanwhile changes the token, and that environment is listed again. So the listing
    of each environment is one generation's, whole: no episode twice, none missing.
    """
    found: list[Entry] = []
    generations: dict[str, str] = {}
    try:
        env_dirs = sorted(os.scandir(lake), key=lambda e: e.name)
    except FileNotFoundError:
        return Listing([], {})
    for env_dir in env_dirs:
        if not env_dir.name.startswith(ENVIRONMENT_PREFIX) or not env_dir.is_dir():
            continue
        listed = _list_environment(Path(env_dir.path))
        if listed is not None:
            generations[env_dir.name], entries = listed
            found.extend(entries)
    return Listing(found, generations)


def _list_environment(env_dir: Path) -> tuple[str, list[Entry]] | None:
    environment = environment_name(env_dir.name)
    for _ in range(_LIST_ATTEMPTS):
        before = read_generation(env_dir)
        try:
            entries = sorted(os.scandir(env_dir), key=lambda e: e.name)
        except FileNotFoundError:  # removed while we looked
            return None
        found: list[Entry] = []
        for entry in entries:
            if entry.name.startswith(EPISODE_PREFIX) and entry.is_dir():
                found.append(Entry(environment, Path(entry.path), False, [entry.name[len(EPISODE_PREFIX):]]))
            elif entry.name.startswith(SEGMENT_PREFIX) and entry.is_dir():
                found.append(Entry(environment, Path(entry.path), True))  # ids read when needed
        if read_generation(env_dir) == before:
            return before, found
    raise LakeError(f"{env_dir} was rebuilt {_LIST_ATTEMPTS} times while it was being listed; try again")
