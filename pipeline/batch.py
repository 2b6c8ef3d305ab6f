"""Many inputs through :func:`pipeline.ingest`, in parallel, on any ``concurrent.futures.Executor``.

:func:`expand_sources` turns what a user names (files, folders, glob patterns, URLs, ``-``) into
the list of inputs; :func:`ingest_many` ingests them and yields one :class:`IngestResult` per
input, in input order, while :class:`BatchSummary` keeps the running totals. Each input is one
call of :func:`pipeline.ingest`, so each is still published by one atomic rename, and a bad input
costs only its own result. Ingestion is a map over files: a process pool by default, or any
executor (a Dask or Ray cluster's) with the lake on a filesystem every worker sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .errors import PipelineError, SourceError
from .ingest import IngestResult, ingest
from .lake import resolve_lake
from .nopandas import keep_pandas_out
from .split import usable_cores

log = logging.getLogger(__name__)

STDIN = "-"
EPISODE_SUFFIXES = (".json", ".json.gz", ".json.bz2", ".json.xz", ".json.zst")
# Protocols whose "paths" are not listable, and where "?" starts a query string rather than a glob.
_UNLISTABLE = ("http", "https")
_GLOB_CHARS = frozenset("*?[")

Input = str | os.PathLike[str] | IO[bytes]
BatchProgress = Callable[["BatchSummary"], None]


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


@dataclass
class BatchSummary:
    """Running totals of a batch: files per status, bytes read, time; live while it runs."""

    files: int = 0
    ingested: int = 0
    exists: int = 0
    invalid: int = 0
    failed: int = 0
    skipped: int = 0  # never started: ``fail_fast`` stopped the batch first
    bytes_read: int = 0
    bytes_total: int | None = None  # None when some input's size is unknown (a URL, standard input)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        """Files finished, whatever their status."""
        return self.ingested + self.exists + self.invalid + self.failed

    @property
    def ok(self) -> bool:
        """True when every file was ingested or already present."""
        return self.invalid == self.failed == self.skipped == 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds still to go, estimated from bytes when every size is known, else from files."""
        left = self.files - self.done - self.skipped
        if left <= 0:
            return 0.0
        if self.seconds <= 0:
            return None
        if self.bytes_total is not None and self.bytes_read > 0:
            return max(self.bytes_total - self.bytes_read, 0) * self.seconds / self.bytes_read
        return left * self.seconds / self.done if self.done else None

    def add(self, result: IngestResult) -> None:
        if result.status == "ingested":
            self.ingested += 1
        elif result.status == "exists":
            self.exists += 1
        elif result.status == "invalid":
            self.invalid += 1
        else:
            self.failed += 1
        self.bytes_read += result.bytes_read

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "ingested": self.ingested, "exists": self.exists, "invalid": self.invalid,
            "failed": self.failed, "skipped": self.skipped, "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 3),
        }


def default_jobs() -> int:
    """The number of cores this process may run on."""
    return usable_cores()


def _mp_context() -> Any:
    # Never fork: the parent may have threads (ours read standard input; polars and pyarrow keep
    # pools), and a forked child can inherit a lock some other thread held at the fork.
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def ingest_many(
    sources: Iterable[Input],
    *,
    lake: str | os.PathLike[str] | None = None,
    executor: Executor | None = None,
    jobs: int | None = None,
    recursive: bool = False,
    fail_fast: bool = False,
    progress: BatchProgress | None = None,
) -> Batch:
    """Ingest many inputs, each with :func:`pipeline.ingest`, on a process pool or any executor.

    ``sources`` may name files, folders, glob patterns, URLs and ``-`` (see :func:`expand_sources`,
    which runs at once: ``batch.summary.files`` is known before the first file starts). The work
    starts when the returned :class:`Batch` is iterated and yields one
    :class:`~pipeline.ingest.IngestResult` per input, in input order; ``list(batch)`` runs it all.

    ``executor`` is any :class:`concurrent.futures.Executor`, for example a Dask client's
    ``client.get_executor()``; it is left running. Without one, ``jobs`` worker processes
    (default: the number of cores) run in a process pool of our own, and ``jobs=1`` (or a single
    input) runs in this process. ``jobs`` also bounds how many inputs are in flight on a given
    executor (twice that many). Open streams and ``-`` are read in this process, in a thread.
    The same input named twice is not ingested twice at once: the second waits for the first and
    reports ``exists``.

    An invalid or unreadable input gives a result with status ``invalid`` or ``failed`` and the
    others go on; with ``fail_fast=True`` nothing new starts after the first such result (the
    ones already running finish; the rest count as ``skipped``). ``progress(summary)`` is called
    in the iterating thread as files finish (and as bytes are read, when running in this process).

    A script that uses the default process pool must guard its entry point with
    ``if __name__ == "__main__":``, as the worker processes import it.
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return Batch(expand_sources(sources, recursive=recursive), resolve_lake(lake), executor=executor, jobs=jobs,
                 fail_fast=fail_fast, progress=progress)


class Batch(Iterator[IngestResult]):
    """A batch ingest: iterate it for one result per input, in input order; ``summary`` is live.

    Closing it (or leaving a ``with`` block, or stopping iteration early) cancels the inputs not
    yet started; inputs already running finish, each all or nothing.
    """

    def __init__(self, sources: list[str | IO[bytes]], lake: Path, *, executor: Executor | None,
                 jobs: int | None, fail_fast: bool, progress: BatchProgress | None) -> None:
        self.sources = sources
        self.lake = lake
        self.summary = BatchSummary(files=len(sources), bytes_total=_total_size(sources))
        self._executor = executor
        self._jobs = jobs
        self._fail_fast = fail_fast
        self._progress = progress
        self._started = 0.0
        self._results = self._run()

    def __iter__(self) -> Batch:
        return self

    def __next__(self) -> IngestResult:
        return next(self._results)

    def close(self) -> None:
        self._results.close()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _report(self) -> None:
        self.summary.seconds = time.perf_counter() - self._started
        if self._progress is not None:
            self._progress(self.summary)

    def _run(self) -> Generator[IngestResult, None, None]:
        self._started = time.perf_counter()
        self._report()
        jobs = self._jobs or default_jobs()
        if self._executor is None and (jobs == 1 or len(self.sources) <= 1):
            yield from self._run_here()
        else:
            yield from self._run_pooled(jobs)
        self._report()

    def _run_here(self) -> Iterator[IngestResult]:
        """One input after the other in this process, with byte-level progress."""
        for index, source in enumerate(self.sources):
            before = self.summary.bytes_read

            def advance(done: int, total: int | None, before: int = before) -> None:
                self.summary.bytes_read = before + done
                self._report()

            try:
                result = _ingest_here(source, self.lake, advance)
            except Exception as exc:
                result = _crashed(source, exc)
            self.summary.bytes_read = before
            self.summary.add(result)
            stop = self._fail_fast and not result.ok
            if stop:
                self.summary.skipped = len(self.sources) - index - 1
            self._report()
            yield result
            if stop:
                return

    def _run_pooled(self, jobs: int) -> Iterator[IngestResult]:
        files = sum(1 for s in self.sources if isinstance(s, str) and s != STDIN)
        owned: list[Executor] = []
        executor = self._executor
        if executor is None and files:
            from concurrent.futures import ProcessPoolExecutor

            executor = ProcessPoolExecutor(max_workers=min(jobs, files), mp_context=_mp_context(),
                                           initializer=keep_pandas_out)
            owned.append(executor)
        streams: Executor | None = None
        if files < len(self.sources):  # streams can't cross to another process: read them here
            streams = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-stream")
            owned.append(streams)
        window = 2 * jobs
        waiting = deque(enumerate(self.sources))
        running: dict[Future[IngestResult], int] = {}
        busy: set[object] = set()  # inputs in flight: a repeated input waits for its first run
        finished: dict[int, IngestResult] = {}
        skipped: set[int] = set()
        next_out = 0
        clean = False
        try:
            while True:
                while len(running) < window and (item := _next_ready(waiting, busy)) is not None:
                    index, source = item
                    if _is_stream(source):
                        assert streams is not None
                        future = _submit(streams, _ingest_here, source, self.lake, None)
                    else:
                        assert executor is not None
                        # The token keeps each call distinct for executors that reuse the result
                        # of an identical earlier call (Dask's does, by default).
                        future = _submit(executor, _ingest_file, source, str(self.lake), uuid.uuid4().hex)
                    running[future] = index
                    busy.add(_key(source))
                while next_out in finished or next_out in skipped:
                    if next_out in finished:
                        yield finished.pop(next_out)
                    next_out += 1
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    source = self.sources[index]
                    busy.discard(_key(source))
                    result = _outcome(future, source)
                    finished[index] = result
                    self.summary.add(result)
                    if self._fail_fast and not result.ok:
                        skipped.update(i for i, _ in waiting)
                        waiting.clear()
                        for queued in [f for f in running if f.cancel()]:  # submitted, not started
                            skipped.add(running.pop(queued))
                        self.summary.skipped = len(skipped)
                self._report()
            clean = True
        finally:
            for future in running:
                future.cancel()
            for pool in owned:
                pool.shutdown(wait=clean, cancel_futures=True)


def _total_size(sources: list[str | IO[bytes]]) -> int | None:
    total = 0
    for source in sources:
        if not isinstance(source, str) or "://" in source or source == STDIN:
            return None
        with contextlib.suppress(OSError):  # a missing file reads zero bytes
            total += os.stat(source).st_size
    return total


def _is_stream(source: str | IO[bytes]) -> bool:
    return not isinstance(source, str) or source == STDIN


def _key(source: str | IO[bytes]) -> object:
    return source if isinstance(source, str) else id(source)


def _next_ready(waiting: deque[tuple[int, str | IO[bytes]]], busy: set[object]) -> tuple[int, str | IO[bytes]] | None:
    """The first waiting input not already in flight, taken off the queue."""
    for position, (_, source) in enumerate(waiting):
        if _key(source) not in busy:
            item = waiting[position]
            del waiting[position]
            return item
    return None


def _submit(executor: Executor, fn: Callable[..., IngestResult], *args: Any) -> Future[IngestResult]:
    try:
        return executor.submit(fn, *args)
    except Exception as exc:  # a broken or shut-down executor: this input fails, the loop goes on
        future: Future[IngestResult] = Future()
        future.set_exception(exc)
        return future


def _outcome(future: Future[IngestResult], source: str | IO[bytes]) -> IngestResult:
    """The future's result, or a "failed" result if the task itself died."""
    try:
        return future.result()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return _crashed(source, exc)


def _crashed(source: str | IO[bytes], exc: BaseException) -> IngestResult:
    """A "failed" result for an input whose ingest raised what ``ingest`` itself does not catch."""
    label = source if isinstance(source, str) else getattr(source, "name", "<stream>")
    label = label if isinstance(label, str) else "<stream>"
    process = sys.modules.get("concurrent.futures.process")  # imported with the pool, if there was one
    if process is not None and isinstance(exc, process.BrokenProcessPool):
        message = "the worker process died before finishing (killed, or out of memory?)"
    else:
        message = f"the ingest stopped unexpectedly: {type(exc).__name__}: {exc}"
    log.debug("ingest of %s raised", label, exc_info=exc)
    return IngestResult(source=label, status="failed", error=PipelineError(message, source=label))


def _ingest_file(source: str, lake: str, token: str) -> IngestResult:
    """The task each worker runs: one input into the lake. ``token`` only makes the call unique.

    The workers already keep the cores busy, so a worker does not split its file over two
    processes (:mod:`pipeline.split`).
    """
    return ingest(source, lake=lake, parallel=False)


def _ingest_here(source: str | IO[bytes], lake: Path,
                 progress: Callable[[int, int | None], None] | None) -> IngestResult:
    if source == STDIN:
        return ingest(sys.stdin.buffer, lake=lake, name=STDIN, progress=progress)
    return ingest(source, lake=lake, progress=progress)


__all__ = ["Batch", "BatchSummary", "default_jobs", "expand_sources", "ingest_many", "is_episode_file"]
