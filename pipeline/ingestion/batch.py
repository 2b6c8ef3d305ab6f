"""Many inputs through :func:`pipeline.ingest`, in parallel, on any ``concurrent.futures.Executor``.

:func:`expand_sources` turns what a user names (files, folders, glob patterns, URLs, ``-``) into
the list of inputs; :func:`ingest_many` ingests them and yields one :class:`IngestResult` per
input, in input order, while :class:`BatchSummary` keeps the running totals. Each input is one
call of :func:`pipeline.ingest`, so each is still published by one atomic rename, and a bad input
costs only its own result. Ingestion is a map over files: a process pool by default, or any
executor (a Dask or Ray cluster's) with the lake on a filesystem every worker sees.

Input expansion lives in :mod:`.inputs`; the tasks the workers run (one file, or a chunk of small
files published as a group commit) and how inputs are cut into them, in :mod:`.tasks`. Here: the
executor loop, with its progress, fail-fast and per-input results.
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

from ..cores import usable_cores
from ..errors import PipelineError
from ..lake.layout import AUTO_COMPACT_ENTRIES, entry_count, resolve_lake
from .inputs import STDIN, Input, expand_sources, is_episode_file
from .nopandas import keep_pandas_out
from .run import IngestResult, ingest
from .tasks import Task, ingest_file, ingest_group, plan_tasks

log = logging.getLogger(__name__)

BatchProgress = Callable[["BatchSummary"], None]


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
    compact: bool = True,
) -> Batch:
    """Ingest many inputs, each with :func:`pipeline.ingest`, on a process pool or any executor.

    ``sources`` may name files, folders, glob patterns, URLs and ``-`` (see :func:`expand_sources`,
    which runs at once: ``batch.summary.files`` is known before the first file starts). The work
    starts when the returned :class:`Batch` is iterated and yields one
    :class:`~pipeline.ingestion.IngestResult` per input, in input order; ``list(batch)`` runs it all.

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

    At the end, an environment the batch committed into that then holds 16 or more episode
    folders and small segments is compacted (:func:`pipeline.compact`); ``compact=False`` leaves
    it as it is.

    A script that uses the default process pool must guard its entry point with
    ``if __name__ == "__main__":``, as the worker processes import it.
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return Batch(expand_sources(sources, recursive=recursive), resolve_lake(lake), executor=executor, jobs=jobs,
                 fail_fast=fail_fast, progress=progress, compact=compact)


class Batch(Iterator[IngestResult]):
    """A batch ingest: iterate it for one result per input, in input order; ``summary`` is live.

    Closing it (or leaving a ``with`` block, or stopping iteration early) cancels the inputs not
    yet started; inputs already running finish, each all or nothing.
    """

    def __init__(self, sources: list[str | IO[bytes]], lake: Path, *, executor: Executor | None,
                 jobs: int | None, fail_fast: bool, progress: BatchProgress | None, compact: bool = True) -> None:
        self.sources = sources
        self.lake = lake
        self.summary = BatchSummary(files=len(sources), bytes_total=_total_size(sources))
        self._executor = executor
        self._jobs = jobs
        self._fail_fast = fail_fast
        self._progress = progress
        self._compact = compact
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
        jobs = self._jobs or usable_cores()
        touched: set[str] = set()
        results = self._run_here() if self._executor is None and (jobs == 1 or len(self.sources) <= 1) \
            else self._run_pooled(jobs)
        for result in results:
            if result.status == "ingested" and result.environment is not None:
                touched.add(result.environment)
            yield result
        # A batch is when many small entries appear at once (see the README's "The lake"). They are
        # counted before the compaction module is imported: it imports pyarrow, which the reading
        # process of a two-process ingest does without (~60 ms at the end of every such ingest).
        due = {env for env in touched if entry_count(self.lake, env) >= AUTO_COMPACT_ENTRIES} \
            if self._compact else set()
        if due:
            from ..lake.compact import compact_if_fragmented

            try:
                compact_if_fragmented(self.lake, due)
            except PipelineError as exc:  # the ingests are committed; compaction can wait
                log.warning("automatic compaction of %s skipped: %s", self.lake, exc)
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
        """Results in input order from an executor, at most ``2 * jobs`` tasks in flight.

        One loop on purpose (over our ~60-line guide): submission, in-order yielding, fail-fast and the
        pool's shutdown on any exit share the in-flight queue; split, that queue would be threaded
        through every piece.
        """
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
        # --fail-fast takes files one at a time, so that nothing starts after the first bad one.
        waiting = deque(plan_tasks(self.sources, grouped=executor is not None and not self._fail_fast, jobs=jobs))
        running: dict[Future[Any], Task] = {}
        busy: set[object] = set()  # inputs in flight: a repeated input waits for its first run
        finished: dict[int, IngestResult] = {}
        skipped: set[int] = set()
        next_out = 0
        clean = False
        try:
            while True:
                while len(running) < window and (item := _next_ready(waiting, busy)) is not None:
                    if item.grouped:
                        assert executor is not None
                        future = _submit(executor, ingest_group, item.sources, str(self.lake), uuid.uuid4().hex)
                    elif _is_stream(item.sources[0]):
                        assert streams is not None
                        future = _submit(streams, _ingest_here, item.sources[0], self.lake, None)
                    else:
                        assert executor is not None
                        # The token keeps each call distinct for executors that reuse the result
                        # of an identical earlier call (Dask's does, by default).
                        future = _submit(executor, ingest_file, item.sources[0], str(self.lake), uuid.uuid4().hex)
                    running[future] = item
                    busy.update(item.keys)
                while next_out in finished or next_out in skipped:
                    if next_out in finished:
                        yield finished.pop(next_out)
                    next_out += 1
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    busy.difference_update(item.keys)
                    if item.grouped and future.exception() is not None:
                        # A lost worker (or an executor that failed the task) costs no file its
                        # result: each file of the chunk runs again on its own.
                        singles = [Task([i], [s]) for i, s in zip(item.indices, item.sources, strict=True)]
                        waiting.extendleft(reversed(singles))
                        continue
                    if item.grouped:
                        results = future.result()
                        for index, result in zip(item.indices, results, strict=True):
                            finished[index] = result
                            self.summary.add(result)
                    else:
                        result = _outcome(future, item.sources[0])
                        finished[item.indices[0]] = result
                        self.summary.add(result)
                        results = [result]
                    if self._fail_fast and not all(result.ok for result in results):
                        skipped.update(i for queued in waiting for i in queued.indices)
                        waiting.clear()
                        for queued in [f for f in running if f.cancel()]:  # submitted, not started
                            skipped.update(running.pop(queued).indices)
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


def _next_ready(waiting: deque[Task], busy: set[object]) -> Task | None:
    """The first waiting item none of whose inputs is already in flight, taken off the queue."""
    for position, item in enumerate(waiting):
        if busy.isdisjoint(item.keys):
            item = waiting[position]
            del waiting[position]
            return item
    return None


def _submit(executor: Executor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    try:
        return executor.submit(fn, *args)
    except Exception as exc:  # a broken or shut-down executor: this input fails, the loop goes on
        future: Future[Any] = Future()
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


def _ingest_here(source: str | IO[bytes], lake: Path,
                 progress: Callable[[int, int | None], None] | None) -> IngestResult:
    if source == STDIN:
        return ingest(sys.stdin.buffer, lake=lake, name=STDIN, progress=progress)
    return ingest(source, lake=lake, progress=progress)


__all__ = ["Batch", "BatchSummary", "expand_sources", "ingest_many", "is_episode_file"]
