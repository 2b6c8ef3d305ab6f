"""What a user names -> the episode inputs: files, folders, glob patterns, URLs and ``-``.

:func:`expand_sources` is the command line's and :func:`pipeline.ingest_many`'s reading of their
arguments. It lists folders and matches patterns (locally, or through fsspec for listable URLs) and
keeps everything else as it is, so that ingesting the input itself reports what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO

from ..errors import SourceError

STDIN = "-"
EPISODE_SUFFIXES = (".json", ".json.gz", ".json.bz2", ".json.xz", ".json.zst")
# Protocols whose "paths" are not listable, and where "?" starts a query string rather than a glob.
_UNLISTABLE = ("http", "https")
_GLOB_CHARS = frozenset("*?[")

Input = str | os.PathLike[str] | IO[bytes]


def is_episode_file(name: str) -> bool:
    """Whether a file name looks like an episode file a folder is searched for (``*.json``, ``*.json.gz``, …)."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(EPISODE_SUFFIXES)


def expand_sources(inputs: Iterable[Input], *, recursive: bool = False) -> list[str | IO[bytes]]:
    """The episode inputs that ``inputs`` name, in order: folders and glob patterns expanded.

    A folder gives its ``*.json`` files and their compressed forms (``.gz``, ``.bz2``, ``.xz``,
    ``.zst``), sorted by name; its sub-folders too with ``recursive=True``. Hidden files and
    folders are skipped. A glob pattern (``runs/*.json``, ``runs/**/*.json.gz``) gives its
    matches. ``http(s)://`` URLs, ``-`` (standard input), open streams and paths that do not
    exist are kept as they are: :func:`pipeline.ingest` reports what is wrong with each. Other
    fsspec URLs (``file://``, ``s3://``, …) are expanded like local paths. Raises
    :class:`~pipeline.errors.SourceError` for a folder that cannot be listed.
    """
    found: list[str | IO[bytes]] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):  # an open stream
            found.append(item)
            continue
        text = os.fspath(item)
        if text == STDIN:
            found.append(text)
        elif "://" in text:
            found.extend(_expand_url(text, recursive))
        else:
            found.extend(_expand_local(text, recursive))
    return found


def _has_glob(text: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(text)


def _expand_local(text: str, recursive: bool) -> list[str]:
    path = os.path.expanduser(text) if text.startswith("~") else text
    if os.path.isdir(path):
        return _folder_files(path, recursive)
    if os.path.exists(path) or not _has_glob(path):
        return [path]
    import glob

    matches = sorted(glob.glob(path, recursive=True))
    if not matches:
        return [path]  # reported as "no such file", like a shell that passes an unmatched pattern on
    found: list[str] = []
    for match in matches:
        found.extend(_folder_files(match, recursive) if os.path.isdir(match) else [match])
    return found


def _folder_files(folder: str, recursive: bool) -> list[str]:
    try:
        if not recursive:
            with os.scandir(folder) as entries:
                return sorted(os.path.join(folder, e.name) for e in entries if is_episode_file(e.name) and e.is_file())
        found: list[str] = []
        for root, dirs, files in os.walk(folder, onerror=_raise):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(root, name) for name in files if is_episode_file(name))
        return sorted(found)
    except OSError as exc:
        raise SourceError(f"cannot list the folder: {exc.strerror or exc}", source=exc.filename or folder) from exc


def _raise(exc: OSError) -> None:
    raise exc


def _expand_url(url: str, recursive: bool) -> list[str]:
    protocol = url.split("://", 1)[0].lower()
    if protocol in _UNLISTABLE:
        return [url]
    try:
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(url)
        if _has_glob(path):
            matches = sorted(fs.glob(path))
        elif fs.isdir(path):
            matches = [path]
        else:
            return [url]
        found: list[str] = []
        for match in matches:
            if fs.isdir(match):
                listed = fs.find(match) if recursive else fs.ls(match, detail=False)
                found.extend(sorted(p for p in listed if is_episode_file(p) and fs.isfile(p)))
            else:
                found.append(match)
        return [fs.unstrip_protocol(p) for p in found] if matches else [url]
    except Exception:  # an unreachable store: let the ingest of the URL itself report why
        return [url]


__all__ = ["EPISODE_SUFFIXES", "STDIN", "Input", "expand_sources", "is_episode_file"]
