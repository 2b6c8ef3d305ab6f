"""Changes to a committed lake other than ingests: removing episodes, collecting crashed staging folders."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EpisodeNotFound, LakeError
from .commit import Staging
from .layout import OWNER_LOCK, STAGING, EpisodeLocation, resolve_lake
from .writer import fsync_path

log = logging.getLogger(__name__)


def remove_episodes(lake: Path, locations: list[EpisodeLocation]) -> list[EpisodeLocation]:
    """Remove committed episodes, each atomically: one rename out of the lake, then delete.

    Each episode folder is renamed into a private staging folder (so a reader sees all of the
    episode or none of it, and a crash leaves only staging leftovers for ``gc``) and deleted there.
    Raises :class:`~pipeline.errors.EpisodeNotFound` for an episode already gone; the ones before
    it stay removed. Returns the removed locations.
    """
    removed = []
    for location in locations:
        with Staging(lake) as staging:
            log.info("remove %s -> %s", location.path, staging.root)
            try:
                os.rename(location.path, staging.root / "removed")
            except FileNotFoundError as exc:
                raise EpisodeNotFound(f"episode {location.episode_id} is no longer in {lake}") from exc
            except OSError as exc:
                raise LakeError(f"could not remove episode {location.episode_id}: {exc.strerror or exc}") from exc
            fsync_path(location.path.parent)
        removed.append(location)
    return removed


@dataclass
class GcReport:
    """What :func:`gc` did with each staging folder."""

    removed: list[Path]
    running: list[Path]  # still locked by a live ingest
    recent: list[Path]  # younger than ``older_than``


# A staging folder without a lock file is either being created right now or was left by a crash
# in the microseconds between mkdir and lock; only this old is it certainly the latter.
_UNLOCKED_GRACE_SECONDS = 60.0


def gc(lake: str | os.PathLike[str] | None = None, *, older_than: float = 0.0) -> GcReport:
    """Remove staging folders of ingests that are no longer running (crashed or killed).

    An ingest holds an exclusive ``flock`` on its ``owner.lock`` while it runs; a folder whose
    lock can be taken belongs to a dead process. ``older_than`` (seconds) spares recent folders.
    Locks are per host: on a filesystem shared between machines, run ``gc`` with an
    ``older_than`` longer than any ingest takes.
    """
    lake = resolve_lake(lake)
    report = GcReport([], [], [])
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
            shutil.rmtree(folder, ignore_errors=True)
            report.removed.append(folder)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report.running.append(folder)
                continue
            log.info("gc: removing %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
            report.removed.append(folder)
        finally:
            os.close(fd)
    return report
