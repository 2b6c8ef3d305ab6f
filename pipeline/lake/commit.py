"""Staging folders and the commit: an ingest is written privately, then published by one rename.

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
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ..errors import LakeError
from .layout import (
    EPISODE_PREFIX,
    LOCKS,
    MAX_FOLDER_BYTES,
    OWNER_LOCK,
    SEGMENT_PREFIX,
    STAGING,
    episode_path,
)
from .writer import fsync_path

log = logging.getLogger(__name__)


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
        _remove_tree(self.root)
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
            # Shared: ingests commit side by side; a compaction's swap (exclusive) waits for them,
            # and they for it, so the episode lands in the generation that stays live.
            with environment_lock(self.lake, env_dir.name, exclusive=False):
                if target.exists() or in_segments(env_dir, episode_id):
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


@contextlib.contextmanager
def environment_lock(lake: Path, env_folder: str, *, exclusive: bool) -> Iterator[None]:
    """Hold the environment's lock: shared for an ingest's rename, exclusive to swap or add segments."""
    locks = lake / LOCKS
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / env_folder, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def live_ids(env_dir: Path) -> set[str]:
    """Every episode id in the live environment folder (call with its lock held)."""
    ids: set[str] = set()
    try:
        entries = list(os.scandir(env_dir))
    except FileNotFoundError:
        return ids
    for entry in entries:
        if entry.name.startswith(EPISODE_PREFIX):
            ids.add(entry.name[len(EPISODE_PREFIX):])
        elif entry.name.startswith(SEGMENT_PREFIX):
            from .segments import segment_ids  # pyarrow: only for a lake that has segments

            ids.update(segment_ids(Path(entry.path)))
    return ids


def in_segments(env_dir: Path, episode_id: str) -> bool:
    """Whether a segment of the live environment folder holds ``episode_id`` (call with the lock held)."""
    try:
        entries = [e for e in os.scandir(env_dir) if e.name.startswith(SEGMENT_PREFIX)]
    except FileNotFoundError:
        return False
    if not entries:
        return False
    from .segments import segment_holds  # pyarrow: only for a lake that has segments

    return any(segment_holds(Path(e.path), episode_id) for e in entries)


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this process created, unless another ingest has put an episode in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _remove_tree(folder: Path) -> None:
    """Remove ``folder`` and what it holds, if it exists; errors ignored, as ``shutil.rmtree(...,
    ignore_errors=True)``. A committed ingest leaves plain files only (the lock, a kept copy): those are
    removed here without importing shutil (~4 ms of the command's start-up), the owner lock last, so
    that a process killed part-way leaves a locked folder that gc removes at once, never an unlocked one
    it must spare as maybe being created. A folder holding anything else goes to shutil whole, untouched
    until then."""
    try:
        with os.scandir(folder) as scan:
            entries = list(scan)
    except FileNotFoundError:
        return
    except OSError:
        entries = None
    if entries is None or any(entry.is_dir(follow_symlinks=False) for entry in entries):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        return
    entries.sort(key=lambda entry: entry.name == OWNER_LOCK)
    try:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError:  # something appeared meanwhile, or a file we may not remove
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
