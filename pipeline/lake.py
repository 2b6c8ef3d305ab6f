"""The lake on disk: where it is, its layout, staging folders, and the commit by one rename.

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

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote

from .errors import LakeError
from .writer import fsync_path

log = logging.getLogger(__name__)

ENV_VAR = "INGEST_PIPELINE_LAKE"
DEFAULT_LAKE = "lake"
STAGING = "_staging"
ENVIRONMENT_PREFIX = "environment="
EPISODE_PREFIX = "episode_id="
OWNER_LOCK = "owner.lock"
TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")


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


def find_episode(lake: Path, episode_id: str) -> EpisodeLocation | None:
    """The committed episode with exactly this id, in any environment."""
    for location in list_episodes(lake):
        if location.episode_id == episode_id:
            return location
    return None


class Staging:
    """A private folder for one ingest, removed on failure; :meth:`commit` publishes it.

    The staging folder holds an exclusive ``flock`` on ``owner.lock`` for as long as the ingest
    runs, so a later ``gc`` can tell a crashed ingest's leftovers from one still in progress.
    """

    def __init__(self, lake: Path) -> None:
        self.lake = lake
        token = f"{time.strftime('%Y%m%dT%H%M%S')}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.root = lake / STAGING / token
        self.folder = self.root / "episode"
        self._lock_fd: int | None = None

    def __enter__(self) -> Staging:
        try:
            self.folder.mkdir(parents=True)
            self._lock_fd = os.open(self.root / OWNER_LOCK, os.O_CREAT | os.O_WRONLY, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._lock_fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        except OSError as exc:
            self._cleanup()
            raise LakeError(f"cannot create a staging folder in {self.lake}: {exc.strerror or exc}") from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def lock_fd(self) -> int | None:
        """The descriptor holding the owner lock (a forked helper must close its copy)."""
        return self._lock_fd

    def commit(self, environment: str, episode_id: str) -> bool:
        """Publish the staged episode with one rename; False if it is already in the lake."""
        target = episode_path(self.lake, environment, episode_id)
        env_dir = target.parent
        size = len(env_dir.name.encode())
        if size > MAX_FOLDER_BYTES:
            raise LakeError(
                f"the environment name is too long for a folder of the lake ({size} bytes once encoded, "
                f"at most {MAX_FOLDER_BYTES}); use a shorter training.environment"
            )
        created_env = False
        try:
            if not env_dir.is_dir():
                env_dir.mkdir(exist_ok=True)
                created_env = True
                fsync_path(self.lake)
            if target.exists():
                return False
            log.info("commit %s -> %s", self.folder, target)
            os.rename(self.folder, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            if created_env:
                _remove_if_empty(env_dir)
            raise LakeError(f"could not publish the episode into {env_dir}: {exc.strerror or exc}") from exc
        try:
            fsync_path(env_dir)
        except OSError as exc:  # published and visible; only its durability is in doubt
            log.warning("episode %s published but %s could not be flushed: %s", episode_id, env_dir, exc)
        return True


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this process created, unless another ingest has put an episode in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_episodes(lake: Path, locations: list[EpisodeLocation]) -> list[EpisodeLocation]:
    """Remove committed episodes, each atomically: one rename out of the lake, then delete.

    Each episode folder is renamed into a private staging folder (so a reader sees all of the
    episode or none of it, and a crash leaves only staging leftovers for ``gc``) and deleted there.
    Raises :class:`~pipeline.errors.EpisodeNotFound` for an episode already gone; the ones before
    it stay removed. Returns the removed locations.
    """
    from .errors import EpisodeNotFound

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


def gc(lake: Path, *, older_than: float = 0.0) -> GcReport:
    """Remove staging folders of ingests that are no longer running (crashed or killed).

    An ingest holds an exclusive ``flock`` on its ``owner.lock`` while it runs; a folder whose
    lock can be taken belongs to a dead process. ``older_than`` (seconds) spares recent folders.
    Locks are per host: on a filesystem shared between machines, run ``gc`` with an
    ``older_than`` longer than any ingest takes.
    """
    report = GcReport([], [], [])
    staging = lake / STAGING
    try:
        entries = sorted(staging.iterdir())
    except FileNotFoundError:
        return report
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
