"""The tasks a batch hands its executor, and how its inputs are cut into them.

A task is one input, streamed into its own episode folder by :func:`ingest_file`, or a chunk of
small local files, checked and tabulated in memory and published as one segment per environment
by :func:`ingest_group` (a group commit). :func:`plan_tasks` makes the chunks. Both task functions
run in the executor's workers (any process or thread), so they take and return plain values.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import LakeError, PipelineError
from .inputs import STDIN
from .run import IngestResult, ingest, tabulate_file

# Files up to this size are checked and tabulated in memory by the workers and committed in groups:
# a task takes a chunk of them, and the worker publishes each environment's valid ones as one
# segment (a file's Arrow rows take about its size); bigger files stream to their own folder with
# bounded memory. Chunks are as large as _TASK_FILES files and _TASK_BYTES bytes allow, sized so
# that each worker gets the same number of equal chunks: few round trips and few segments (a
# batch of 100,000 small files on 2 workers: 8 chunks, 8 segments per environment), and no
# worker left alone with the last chunk.
GROUP_FILE_BYTES = 4 * 1024 * 1024
_TASK_FILES = 16_384
_TASK_BYTES = 128 * 1024 * 1024


@dataclass
class Task:
    """One task: one input, or a chunk of small files tabulated in memory and committed as segments."""

    indices: list[int]
    sources: list[Any]
    grouped: bool = False

    @property
    def keys(self) -> list[object]:
        return [source_key(source) for source in self.sources]


def plan_tasks(sources: list[str | IO[bytes]], *, grouped: bool, jobs: int = 1) -> list[Task]:
    items: list[Task] = []
    sizes = [local_size(source) if grouped else None for source in sources]
    small = [size for size in sizes if size is not None and size <= GROUP_FILE_BYTES]
    per_task, task_bytes = _TASK_FILES, _TASK_BYTES
    if small:
        rounds = max(-(-len(small) // (jobs * _TASK_FILES)), -(-sum(small) // (jobs * _TASK_BYTES)))
        per_task = -(-len(small) // (jobs * rounds))
        task_bytes = max(_TASK_BYTES, sum(small) // (jobs * rounds) * 5 // 4)  # room for uneven sizes
    chunk: Task | None = None
    chunk_bytes = 0
    for index, (source, size) in enumerate(zip(sources, sizes, strict=True)):
        if size is None or size > GROUP_FILE_BYTES:
            items.append(Task([index], [source]))
            continue
        if chunk is None or len(chunk.sources) >= per_task or chunk_bytes + size > task_bytes:
            chunk = Task([], [], grouped=True)
            chunk_bytes = 0
            items.append(chunk)
        chunk.indices.append(index)
        chunk.sources.append(source)
        chunk_bytes += size
    return items


def local_size(source: str | IO[bytes]) -> int | None:
    if not isinstance(source, str) or source == STDIN or "://" in source:
        return None
    try:
        return os.stat(source).st_size
    except OSError:
        return None


# One group commit at a time per process: on a thread executor, tasks tabulate in parallel but
# commit in turn (as a process's commits always did), so a kill leaves at most one staging folder
# half made.
_COMMITTING = threading.Lock()


def ingest_group(sources: list[str], lake: str, token: str) -> list[IngestResult]:
    """The task of a worker for a chunk of small files: a group commit. ``token`` only makes the call unique.

    Each file is checked and tabulated in memory; then each environment's valid files are
    published as one segment, with one rename (:func:`pipeline.lake.compact.publish_segment`),
    here in the worker: only the results go back. Each file keeps its own status: ``invalid``
    and ``failed`` ones are left out of the group; one whose content is already in the lake (or
    earlier in the chunk, or published meanwhile by another worker) is ``exists``.
    """
    from ..lake.compact import publish_segment

    results, by_env = tabulate_group(sources, token)
    waiting: dict[str, list[IngestResult]] = {}
    for result in results:
        if result.status == "valid":
            waiting.setdefault(result.environment or "", []).append(result)
    for env, tables in by_env.items():
        started = time.perf_counter()
        try:
            with _COMMITTING:
                published = publish_segment(Path(lake), env, tables)
            error: PipelineError | None = None
        except PipelineError as exc:
            published, error = set(), exc
        except OSError as exc:
            published, error = set(), LakeError(f"{exc.strerror or exc}")
        group = waiting.get(env, [])
        seconds = (time.perf_counter() - started) / max(len(group), 1)
        for result in group:
            result.seconds += seconds
            if error is not None:
                result.status = "failed"
                result.error = PipelineError(f"the group commit failed: {error}", source=result.source)
            else:
                result.status = "ingested" if result.episode_id in published else "exists"
    return results


def tabulate_group(sources: list[str], token: str) -> tuple[list[IngestResult], dict[str, dict[str, Any]]]:
    """A chunk of small files, each checked and tabulated, nothing written.

    Returns each file's result (``valid`` when its rows are in the tables) and, per environment,
    the rows of the valid ones, one Arrow table per lake table. The same content twice in the
    chunk is kept once; the second copy is ``exists``.
    """
    import pyarrow as pa

    results: list[IngestResult] = []
    parts: dict[str, dict[str, list[Any]]] = {}
    seen: set[str] = set()
    for source in sources:
        result, tables = tabulate_file(source)
        if tables is not None and result.episode_id in seen:
            result.status, tables = "exists", None
        if tables is not None:
            seen.add(result.episode_id or "")
            by_table = parts.setdefault(result.environment or "", {})
            for name, rows in tables.items():
                by_table.setdefault(name, []).append(rows)
        results.append(result)
    return results, {env: {name: pa.concat_tables(rows).combine_chunks() for name, rows in by_table.items()}
                     for env, by_table in parts.items()}


def source_key(source: str | IO[bytes]) -> object:
    return source if isinstance(source, str) else id(source)



def ingest_file(source: str, lake: str, token: str) -> IngestResult:
    """The task each worker runs: one input into the lake. ``token`` only makes the call unique.

    The workers already keep the cores busy, so a worker does not split its file over two
    processes (:mod:`pipeline.ingestion.parallel`).
    """
    return ingest(source, lake=lake, parallel=False)
