"""Reading the lake's Parquet files so that damage (a flipped byte, a file cut short) is an error that says so.

Every table is written with a CRC32 per page (``writer.py``). The readers here verify them: a damaged
page is :class:`~pipeline.errors.DamagedFile`, naming the file and its episode, never a wrong value
or a pyarrow traceback. polars does not verify page checksums; :func:`find_damaged` is how the engine
names the file behind a polars error (a footer that cannot be read), and ``check --deep`` reads and
verifies every page of every file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DamagedFile
from .layout import EPISODE_PREFIX

# What pyarrow raises for a damaged file: OSError (bad page, checksum, thrift), ArrowInvalid (footer,
# magic bytes, a file cut short). Found by fuzzing files with random bytes, cuts and footer damage.
READ_ERRORS = (OSError, pa.ArrowException)

# Whether the engine's pyarrow reads verify page checksums; off only to measure what they cost.
VERIFY_PAGES = True


def episode_of(path: str | os.PathLike[str]) -> str | None:
    """The episode a table file belongs to, from its folder name (None when the folder names none)."""
    folder = Path(path).parent.name
    return folder[len(EPISODE_PREFIX):] if folder.startswith(EPISODE_PREFIX) else None


def describe(exc: BaseException) -> str:
    """A reader's error as one line of text."""
    if isinstance(exc, FileNotFoundError):
        return "the file is missing"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a pyarrow read error of ``path`` into :class:`DamagedFile` naming the file and its episode."""
    try:
        yield
    except DamagedFile:
        raise
    except READ_ERRORS as exc:
        raise DamagedFile(str(path), describe(exc), episode_id=episode_of(path)) from exc


def open_verified(path: str | os.PathLike[str], **options: object) -> pq.ParquetFile:
    """A Parquet file whose reads verify page checksums; a footer that cannot be read is DamagedFile."""
    with reading(path):
        return pq.ParquetFile(path, page_checksum_verification=VERIFY_PAGES, **options)


def footer_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a file's footer (missing, cut short, not Parquet), or None: a cheap check."""
    try:
        pq.read_metadata(path)
    except READ_ERRORS as exc:
        return describe(exc)
    return None


def page_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with any page of a file (checksum, decoding), or None: reads the whole file."""
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
        for _ in file.iter_batches(batch_size=65536, use_threads=False):
            pass
    except READ_ERRORS as exc:
        return describe(exc)
    return None


def find_damaged(paths: Iterable[str | os.PathLike[str]], *, page_budget: int = 0) -> list[DamagedFile]:
    """The files among ``paths`` that are damaged: first by their footers (missing, cut short, not
    Parquet); if every footer reads, by reading and verifying the pages of files, up to
    ``page_budget`` bytes of them, stopping at the first damaged one."""
    files = [Path(path) for path in paths]
    found = []
    for path in files:
        problem = footer_problem(path)
        if problem is not None:
            found.append(DamagedFile(str(path), problem, episode_id=episode_of(path)))
    if found:
        return found
    for path in files:
        try:
            page_budget -= path.stat().st_size
        except OSError:
            continue
        if page_budget < 0:
            break
        problem = page_problem(path)
        if problem is not None:
            return [DamagedFile(str(path), problem, episode_id=episode_of(path))]
    return []
