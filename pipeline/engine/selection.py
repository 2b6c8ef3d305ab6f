"""Which episodes a call means: episode ids and unique prefixes resolved against a snapshot, and selections.

An id is resolved as git resolves a commit: the whole id, or a prefix that only one episode's id starts
with. A whole id is found from folder names and each segment's row-group statistics without reading
any segment's ids whole; a prefix, or more than a few ids, reads every segment's ids once (sorted, so
each id is then a bisection). A :data:`Selection` is None (every episode), one id, several, or a polars
frame with an ``episode_id`` column and optionally ``agent``.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterable

import polars as pl

from ..errors import AmbiguousEpisodeId, DatasetError, EpisodeNotFound
from ..lake.layout import ID_LENGTH, EpisodeLocation
from .snapshot import Snapshot

# What selects episodes: ids or unique prefixes, or a frame with an episode_id (and maybe agent) column.
Selection = str | Iterable[str] | pl.DataFrame | pl.LazyFrame | None

# Up to this many ids are resolved one by one from row-group statistics; more read every segment's ids.
_LAZY_RESOLVES = 8


def resolve(snapshot: Snapshot, episode_id: str) -> EpisodeLocation:
    """The snapshot's episode whose id is ``episode_id`` or starts with it (as git does)."""
    prefix = episode_id.strip().lower()
    if not prefix:
        raise EpisodeNotFound("an episode id cannot be empty")
    with snapshot.ids_read():
        if len(prefix) >= ID_LENGTH:
            # A whole id: episode folders by name, then each segment by its row-group statistics
            # and one row group's ids, without reading any segment's ids whole.
            for entry in sorted(snapshot.entries, key=lambda entry: entry.segment):
                if entry.holds(prefix):
                    return EpisodeLocation(entry.environment, prefix, entry.path, entry.segment)
        return _resolve_prefix(snapshot, episode_id, prefix)


def _resolve_prefix(snapshot: Snapshot, episode_id: str, prefix: str) -> EpisodeLocation:
    matches = []
    for entry in snapshot.entries:  # a segment's ids are sorted: bisect them
        at = bisect.bisect_left(entry.ids, prefix)
        while at < len(entry.ids) and entry.ids[at].startswith(prefix):
            if entry.ids[at] == prefix:
                return EpisodeLocation(entry.environment, prefix, entry.path, entry.segment)
            matches.append(EpisodeLocation(entry.environment, entry.ids[at], entry.path, entry.segment))
            at += 1
    if not matches:
        raise EpisodeNotFound(f"no episode {episode_id!r} in {snapshot.path}")
    if len(matches) > 1:
        shown = ", ".join(loc.episode_id for loc in matches[:5]) + (", …" if len(matches) > 5 else "")
        raise AmbiguousEpisodeId(
            f"episode id prefix {episode_id!r} is ambiguous: it matches {len(matches)} episodes ({shown})")
    return matches[0]


def select(snapshot: Snapshot, episodes: Selection,
           reading: Callable[[], contextlib.AbstractContextManager[None]]) -> list[tuple[EpisodeLocation, str | None]]:
    """The selected episodes, each with the agent the selection names (or None), in order.

    A selection frame is collected inside ``reading()`` (the lake's translation of read errors).
    """
    if episodes is None:
        return [(location, None) for location in snapshot.locations]
    if isinstance(episodes, str):
        return [(resolve(snapshot, episodes), None)]
    if isinstance(episodes, pl.LazyFrame | pl.DataFrame):
        frame = episodes.lazy()
        columns = [c for c in ("episode_id", "agent") if c in frame.collect_schema()]
        if "episode_id" not in columns:
            raise DatasetError("an episode selection frame needs an episode_id column")
        with reading():
            rows = frame.select(columns).unique(maintain_order=True).collect().rows()
        _read_ids(snapshot, len(rows))
        return [(resolve(snapshot, row[0]), row[1] if len(row) > 1 else None) for row in rows]
    chosen = list(episodes)
    _read_ids(snapshot, len(chosen))
    return [(resolve(snapshot, episode_id), None) for episode_id in chosen]


def _read_ids(snapshot: Snapshot, selected: int) -> None:
    """Read every segment's ids (once) before resolving more than a few ids: then each is a bisection."""
    if selected > _LAZY_RESOLVES:
        with snapshot.ids_read():
            for entry in snapshot.entries:
                entry.ids  # noqa: B018 -- read and kept by the entry
