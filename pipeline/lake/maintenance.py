"""Changes to a committed lake other than ingests: removing episodes, collecting crashed staging folders."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LakeError
from .commit import Staging, environment_lock
from .framestore import remove_stale_entries
from .layout import (
    FRAMES,
    FRAMES_SUFFIX,
    OWNER_LOCK,
    STAGING,
    EpisodeLocation,
    frame_entry_episode,
    frame_store_path,
    list_episodes,
    resolve_lake,
)
from .writer import fsync_path

log = logging.getLogger(__name__)


def remove_episodes(lake: Path, locations: list[EpisodeLocation]) -> list[EpisodeLocation]:
    """Remove committed episodes, each atomically: no reader ever sees part of one.

    An episode folder is renamed into a private staging folder (one rename out of the lake, under
    the environment's exclusive lock) and deleted there; episodes in segments are removed by
    publishing their segments without them, one atomic swap per environment
    (:func:`pipeline.lake.compact.remove_from_environment`). A crash leaves only staging leftovers
    for ``gc``. Raises :class:`~pipeline.errors.EpisodeNotFound` for an episode already gone; the
    ones before it stay removed. Returns the removed locations.
    """
    from .compact import remove_from_environment

    removed = []
    in_segments: dict[str, set[str]] = {}
    for location in locations:
        if location.segment:
            in_segments.setdefault(location.environment, set()).add(location.episode_id)
            continue
        if _remove_folder(lake, location):
            removed.append(location)
        else:  # compacted into a segment since the caller looked
            in_segments.setdefault(location.environment, set()).add(location.episode_id)
    for environment, ids in in_segments.items():
        removed.extend(remove_from_environment(lake, environment, ids))
    return removed


def _remove_folder(lake: Path, location: EpisodeLocation) -> bool:
    """Rename one episode folder out of the lake and delete it; False if it is no longer there."""
    with Staging(lake) as staging:
        log.info("remove %s -> %s", location.path, staging.root)
        with environment_lock(lake, location.path.parent.name, exclusive=True):
            try:
                os.rename(location.path, staging.root / "removed")
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise LakeError(f"could not remove episode {location.episode_id}: {exc.strerror or exc}") from exc
            fsync_path(location.path.parent)
    return True


def remove_frames(lake: Path, key: str, episode_ids: list[str] | None = None) -> list[Path]:
    """Delete the prepared frame store ``key`` (one rename out of the lake), or only the entries of
    ``episode_ids`` (ids or unique prefixes; every agent's) from it. Returns what was removed.

    A store is derived from the lake: nothing is lost, ``frames prepare`` makes it again. A sampler
    reading it meanwhile keeps its open files and says an entry was removed when it opens another.
    """
    store = frame_store_path(lake, key)
    if "/" in key or key.startswith(".") or not store.is_dir():
        raise LakeError(f"no prepared frame store {key!r} in {lake}; `ingest-pipeline frames ls` lists them")
    if episode_ids is None:
        with Staging(lake) as staging:
            os.rename(store, staging.root / "frames")
            fsync_path(store.parent)
        return [store]
    entries = [p for p in sorted(store.iterdir()) if p.name.endswith(FRAMES_SUFFIX)]
    chosen: list[Path] = []
    for prefix in episode_ids:
        wanted = prefix.strip().lower()
        matches = [p for p in entries if wanted and (frame_entry_episode(p.name) or "").startswith(wanted)]
        episodes = sorted({frame_entry_episode(p.name) or "" for p in matches})
        if not matches:
            raise LakeError(f"no prepared frames of episode {prefix!r} in store {key}")
        if len(episodes) > 1:
            raise LakeError(f"episode id prefix {prefix!r} is ambiguous in store {key}: it matches "
                            f"{len(episodes)} episodes ({', '.join(episodes[:5])})")
        chosen.extend(p for p in matches if p not in chosen)
    for path in chosen:  # checked every id first: all or none of the asked-for removals start
        path.unlink(missing_ok=True)
    fsync_path(store)
    return chosen


@dataclass
class GcReport:
    """What :func:`gc` did with each staging folder."""

    removed: list[Path]
    running: list[Path]  # still locked by a live ingest
    recent: list[Path]  # younger than ``older_than``
    frames: list[Path] = field(default_factory=list)  # frame store entries of episodes no longer in the lake


# A staging folder without a lock file is either being created right now or was left by a crash
# in the microseconds between mkdir and lock; only this old is it certainly the latter.
_UNLOCKED_GRACE_SECONDS = 60.0
# A staging folder being removed by gc is first renamed with this suffix (see _remove_staging).
_REMOVING = ".removing"


def gc(lake: str | os.PathLike[str] | None = None, *, older_than: float = 0.0) -> GcReport:
    """Remove staging folders of ingests that are no longer running (crashed or killed), and prepared
    frame store entries (:mod:`pipeline.lake.framestore`) of episodes no longer in the lake.

    An ingest holds an exclusive ``flock`` on its ``owner.lock`` while it runs; a folder whose
    lock can be taken belongs to a dead process. ``older_than`` (seconds) spares recent folders.
    Locks are per host: on a filesystem shared between machines, run ``gc`` with an
    ``older_than`` longer than any ingest takes.
    """
    lake = resolve_lake(lake)
    report = GcReport([], [], [])
    if (lake / FRAMES).is_dir():
        listed_at = time.time()
        live = {location.episode_id for location in list_episodes(lake)}
        report.frames = remove_stale_entries(lake, live, listed_at)
    staging = lake / STAGING
    try:
        entries = sorted(staging.iterdir())
    except FileNotFoundError:
        return report
    except OSError as exc:  # the lake is a file, or under one, or not ours to read
        raise LakeError(f"cannot read the lake {lake}: {exc.strerror or exc}") from exc
    now = time.time()
    for folder in entries:
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:  # finished while we looked
            continue
        if age < older_than:
            report.recent.append(folder)
            continue
        lock = folder / OWNER_LOCK
        if not folder.is_dir():
            folder.unlink(missing_ok=True)
            report.removed.append(folder)
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            if age < max(older_than, _UNLOCKED_GRACE_SECONDS):
                report.recent.append(folder)
                continue
            (report.removed if _remove_staging(folder) else report.running).append(folder)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.running.append(folder)
                continue
            log.info("gc: removing %s", folder)
            (report.removed if _remove_staging(folder) else report.running).append(folder)
        finally:
            os.close(fd)
    return report


def _remove_staging(folder: Path) -> bool:
    """Remove a dead ingest's staging folder; False if some of it is left (reported running, for the
    next gc).

    The lock dies with the ingest's own process, but the process that writes its tables (two-process
    ingest) may live on for a moment, until it sees the pipe from its reader close, and open a table
    file meanwhile: removed in place, the folder then kept that file, and gc reported it removed all
    the same. So the folder is first renamed out of the writer's way (its paths then lead nowhere, and
    a file it opens fails), then removed.
    """
    doomed = folder.with_name(folder.name + _REMOVING)
    try:
        os.rename(folder, doomed)
    except FileNotFoundError:
        return True
    except OSError:
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)
    return not doomed.exists()
