"""Changes that replace what an environment folder holds: compaction, group commits, removals from segments.

The protocol (the README's "Commit and retire protocol" states it for readers):

* **Adding** an episode folder (an ingest) or a segment (a group commit) is one ``rename`` of a
  folder prepared in ``_staging`` into ``environment=<name>/``.
* **Replacing** entries (a compaction: folders and small segments -> new segments; a removal: a
  segment -> the same segment without some episodes) builds a whole new environment folder in
  staging -- hard links to every entry it keeps, the new segments, a new ``_generation`` token --
  and swaps it with the live one in one ``renameat2(RENAME_EXCHANGE)``. Readers see the old
  generation or the new one, never a mix; the old folder lands in staging, where it is deleted
  (or ``gc`` deletes it after a kill).
* Each environment has a lock file, ``_locks/environment=<name>``. An ingest holds it shared while
  it checks for its id and renames; whoever swaps or adds a segment holds it exclusively while it
  re-lists the live folder, checks, and renames. So no ingest lands in a generation that is about
  to be swapped away, and no id is published twice. The slow part of a compaction (reading and
  writing the segments) runs without the lock; under it, the compaction checks that everything it
  read is still there (else it starts again) and links whatever arrived meanwhile.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import EpisodeNotFound, LakeError
from .commit import Staging, environment_lock, live_ids
from .layout import (
    AUTO_COMPACT_ENTRIES,
    ENVIRONMENT_PREFIX,
    EPISODE_PREFIX,
    GENERATION,
    SEGMENT_PREFIX,
    EpisodeLocation,
    entry_count,
    environment_folder,
    list_lake,
    locations_of,
    resolve_lake,
)
from .segments import ID, folder_bytes, new_segment_name, read_tables, write_segment
from .writer import fsync_path

log = logging.getLogger(__name__)

# A segment is written up to about this many bytes of Parquet (estimated from its inputs' sizes);
# one under half of it is "small" and merged by the next compaction.
TARGET_SEGMENT_BYTES = 96 * 1024 * 1024
# An episode folder bigger than this stays a folder: rewriting it gains nothing.
LARGE_EPISODE_BYTES = TARGET_SEGMENT_BYTES // 2
_ATTEMPTS = 5

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc: Any = None  # ctypes.CDLL, loaded (with ctypes) by the first exchange


def exchange(a: Path, b: Path) -> None:
    """Swap two folders' names in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``)."""
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        raise LakeError("compaction needs renameat2 (Linux 3.15+, glibc 2.28+), which this system lacks")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise LakeError(f"the filesystem of {b.parent} cannot swap two folders atomically "
                            "(RENAME_EXCHANGE); compaction and removal from segments need it")
        raise LakeError(f"could not swap {a} with {b}: {os.strerror(code)}")


# -- group commits ------------------------------------------------------------------------------


def publish_segment(lake: Path, environment: str, tables: dict[str, pa.Table]) -> set[str]:
    """Publish many episodes of one environment as one new segment, with one rename.

    ``tables`` hold every table's rows with ``episode_id``. An episode already in the lake (or
    published by someone else meanwhile) is left out. Returns the ids published.
    """
    env_dir = lake / environment_folder(environment)
    ids = set(tables["episodes"].column(ID).to_pylist())
    with Staging(lake) as staging:
        env_dir.mkdir(parents=True, exist_ok=True)
        fresh = ids - live_ids(env_dir)  # most duplicates are known before the lock; check again under it
        folder = staging.root / "segment"
        if fresh:
            write_segment(folder, _only(tables, fresh, ids))
        with environment_lock(lake, env_dir.name, exclusive=True):
            now = ids - live_ids(env_dir)
            if not now:
                return set()
            if now != fresh:
                _remove_tree(folder)
                write_segment(folder, _only(tables, now, ids))
            target = env_dir / new_segment_name()
            log.info("commit segment %s -> %s (%d episodes)", folder, target, len(now))
            try:
                os.rename(folder, target)
            except OSError as exc:
                raise LakeError(f"could not publish a segment into {env_dir}: {exc.strerror or exc}") from exc
            fsync_path(env_dir)
        return now


def _only(tables: dict[str, pa.Table], keep: set[str], ids: set[str]) -> dict[str, pa.Table]:
    if keep == ids:
        return tables
    import pyarrow.compute as pc  # ~30 ms to import: not on the way of an ingest that compacts nothing

    wanted = pa.array(sorted(keep), pa.string())
    return {name: rows.filter(pc.is_in(rows.column(ID), value_set=wanted)) for name, rows in tables.items()}


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# -- swapping an environment folder -------------------------------------------------------------


def _swap(lake: Path, env_dir: Path, staging: Staging, consumed: set[str], added: list[Path]) -> bool:
    """Replace ``consumed`` entries of the live folder by the folders ``added``, in one exchange.

    Takes the exclusive lock; returns False (nothing changed) if a consumed entry is gone.
    """
    new_dir = staging.root / "next" / env_dir.name
    with environment_lock(lake, env_dir.name, exclusive=True):
        try:
            live = {entry.name: entry for entry in os.scandir(env_dir)}
        except FileNotFoundError:
            return False
        if not consumed <= live.keys():
            return False
        new_dir.mkdir(parents=True)
        for name, entry in live.items():
            if name in consumed or name == GENERATION:
                continue
            if entry.is_dir(follow_symlinks=False):
                (new_dir / name).mkdir()
                for file in os.scandir(entry.path):
                    os.link(file.path, new_dir / name / file.name)
                fsync_path(new_dir / name)
            else:
                os.link(entry.path, new_dir / name)
        for folder in added:
            os.rename(folder, new_dir / new_segment_name())
        (new_dir / GENERATION).write_text(uuid.uuid4().hex + "\n")
        fsync_path(new_dir / GENERATION)
        fsync_path(new_dir)
        log.info("swap %s <-> %s (%d entries replaced by %d)", new_dir, env_dir, len(consumed), len(added))
        exchange(new_dir, env_dir)  # new_dir now names the old generation, inside our staging
        fsync_path(env_dir.parent)
    return True


# -- compaction ---------------------------------------------------------------------------------


@dataclass
class CompactReport:
    """What :func:`compact` did: per environment, episodes rewritten, entries replaced, segments written."""

    environments: int = 0
    episodes: int = 0
    replaced: int = 0  # episode folders and segments retired
    segments: int = 0  # segments written
    skipped: list[str] = field(default_factory=list)  # environments with nothing worth compacting


def compact(lake: str | os.PathLike[str] | None = None, *, environment: str | None = None,
            target_bytes: int = TARGET_SEGMENT_BYTES, min_entries: int = 2) -> CompactReport:
    """Turn committed episode folders into segments and merge small segments, per environment.

    Each environment is compacted by one atomic swap of its folder: a reader sees every episode
    exactly once before, during and after. Safe to run while ingests, removals and readers run; a
    compaction killed at any moment leaves only staging folders for ``gc``. An environment with
    fewer than ``min_entries`` small entries (folders and small segments) is left as it is.
    """
    root = resolve_lake(lake)
    report = CompactReport()
    for env_folder in _environments(root, environment):
        for _ in range(_ATTEMPTS):
            done = _compact_environment(root, root / env_folder, target_bytes, min_entries, report)
            if done is not None:
                break
        else:
            raise LakeError(f"{env_folder} kept changing under compaction ({_ATTEMPTS} attempts); try again")
    return report


def _environments(root: Path, environment: str | None) -> list[str]:
    if environment is not None:
        return [environment_folder(environment)]
    try:
        return sorted(e.name for e in os.scandir(root) if e.name.startswith(ENVIRONMENT_PREFIX) and e.is_dir())
    except FileNotFoundError:
        return []


def _compact_environment(root: Path, env_dir: Path, target_bytes: int, min_entries: int,
                         report: CompactReport) -> bool | None:
    """One attempt; None when the folder changed under it (try again)."""
    by_entry: dict[str, list[EpisodeLocation]] = {}
    try:  # a segment's ids are read after the listing: one swapped out meanwhile is a retry
        for location in locations_of([e for e in list_lake(root).entries if e.path.parent == env_dir]):
            by_entry.setdefault(location.path.name, []).append(location)
    except FileNotFoundError:
        return None
    sizes = {name: folder_bytes(env_dir / name) for name in by_entry}
    small = sorted((name for name, size in sizes.items()
                    if size < (LARGE_EPISODE_BYTES if name.startswith(EPISODE_PREFIX) else target_bytes // 2)),
                   key=lambda name: by_entry[name][0].episode_id)
    if len(small) < min_entries:
        report.skipped.append(env_dir.name)
        return True
    bins: list[list[str]] = [[]]
    filled = 0
    for name in small:
        if bins[-1] and filled + sizes[name] > target_bytes:
            bins.append([])
            filled = 0
        bins[-1].append(name)
        filled += sizes[name]
    with Staging(root) as staging:
        added: list[Path] = []
        for number, names in enumerate(bins):
            folder = staging.root / f"segment-{number}"
            try:
                write_segment(folder, read_tables(loc for name in names for loc in by_entry[name]))
            except FileNotFoundError:  # retired by a removal or another compaction since the listing
                return None
            added.append(folder)
        if not _swap(root, env_dir, staging, set(small), added):
            return None
    report.environments += 1
    report.episodes += sum(len(by_entry[name]) for name in small)
    report.replaced += len(small)
    report.segments += len(added)
    return True


def compact_if_fragmented(lake: Path, environments: set[str], *,
                          entries: int = AUTO_COMPACT_ENTRIES) -> CompactReport | None:
    """Compact the environments among ``environments`` that hold ``entries`` or more small entries."""
    report = None
    for environment in sorted(environments):
        if entry_count(lake, environment) >= entries:
            report = compact(lake, environment=environment, min_entries=entries)
    return report


# -- removal ------------------------------------------------------------------------------------


def remove_from_environment(lake: Path, environment: str, episode_ids: set[str]) -> list[EpisodeLocation]:
    """Remove episodes of one environment, wherever they live, in one atomic step.

    Episode folders are left out of the new generation and segments holding a removed episode
    are rewritten without it, all published by one swap. Raises ``EpisodeNotFound`` for an id not
    in the environment (nothing is removed then).
    """
    env_dir = lake / environment_folder(environment)
    for _ in range(_ATTEMPTS):
        try:
            listing = locations_of([e for e in list_lake(lake).entries if e.path.parent == env_dir])
        except FileNotFoundError:  # a segment swapped out since the listing
            continue
        found = {loc.episode_id: loc for loc in listing if loc.episode_id in episode_ids}
        missing = episode_ids - found.keys()
        if missing:
            raise EpisodeNotFound(f"episode {sorted(missing)[0]} is no longer in {lake}")
        consumed = {loc.path.name for loc in found.values()}
        with Staging(lake) as staging:
            added: list[Path] = []
            for name in sorted(n for n in consumed if n.startswith(SEGMENT_PREFIX)):
                kept = [loc for loc in listing if loc.path.name == name and loc.episode_id not in episode_ids]
                if kept:
                    folder = staging.root / f"segment-{len(added)}"
                    try:
                        write_segment(folder, read_tables(kept))
                    except FileNotFoundError:  # retired by a compaction since the listing
                        break
                    added.append(folder)
            else:
                if _swap(lake, env_dir, staging, consumed, added):
                    return sorted(found.values(), key=lambda loc: loc.episode_id)
    raise LakeError(f"{env_dir.name} kept changing during the removal ({_ATTEMPTS} attempts); try again")


__all__ = ["CompactReport", "compact", "exchange", "publish_segment", "remove_from_environment"]
