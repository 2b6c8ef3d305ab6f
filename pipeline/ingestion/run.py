"""One file through every stage: source -> rules -> tables -> writer -> lake.

:func:`ingest` streams one input into the lake and returns an :class:`IngestResult`;
:func:`validate` does all the same checks and writes nothing.
"""

from __future__ import annotations

import gc
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from ..errors import InvalidEpisode, LakeError, PipelineError
from ..lake.commit import Staging
from ..lake.layout import resolve_lake
from .parallel import build_in_two_processes, join_children, split_pays

if TYPE_CHECKING:
    from .builder import Built
    from .keptcopy import KeptCopy
    from .source import Source

# The parser, the rules and Arrow (source, builder) are imported by the first ingest, not with this
# module: `import pipeline` and the command line's start-up stay light (tests/test_startup.py).

Status = Literal["ingested", "exists", "valid", "invalid", "failed"]
ProgressCallback = Callable[[int, "int | None"], None]
SourceLike = str | os.PathLike[str] | IO[bytes]
# A walk of the document: parts.read_batches (exact) or fastwalk.fast_batches.
Walk = Callable[["Source"], Iterator[tuple[str, Any]]]
_T = TypeVar("_T")
EPISODE_ID_LENGTH = 32  # hex digits of the content hash: 128 bits


@dataclass
class IngestResult:
    """What happened to one input; ``to_dict()`` is the ``--json`` line."""

    source: str
    status: Status
    episode_id: str | None = None
    environment: str | None = None
    steps: int = 0
    agent_steps: int = 0
    unit_steps: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    error: PipelineError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("ingested", "exists", "valid")

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": self.status,
            "episode_id": self.episode_id,
            "steps": self.steps,
            "agent_steps": self.agent_steps,
            "unit_steps": self.unit_steps,
            "error": _error_dict(self.error),
        }


def _error_dict(error: PipelineError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, InvalidEpisode):
        return {"message": str(error), "path": error.path, "step": error.step, "rule": error.rule}
    return {"message": str(error), "path": None, "step": None, "rule": None}


def ingest(
    source: SourceLike,
    *,
    lake: str | os.PathLike[str] | None = None,
    name: str | None = None,
    raise_errors: bool = False,
    progress: ProgressCallback | None = None,
    parallel: bool | None = None,
) -> IngestResult:
    """Stream one episode file into the lake and publish it atomically.

    ``source`` is a path, a URL (``file://``, ``http(s)://``) or an open binary stream; ``name``
    labels a stream in messages and selects its decompression (``-`` or ``episode.json.gz``).
    Returns an :class:`IngestResult` whose ``status`` is ``"ingested"``, ``"exists"`` (the same
    content is already in the lake), ``"invalid"`` or ``"failed"``. With ``raise_errors=True``
    the last two raise :class:`~pipeline.errors.InvalidEpisode`,
    :class:`~pipeline.errors.SourceError` or :class:`~pipeline.errors.LakeError` instead.
    ``parallel`` splits the work over two processes (parsing and checking here, converting and
    writing in a forked child); by default (None) files of 32 MiB or more are split when two
    cores are free to use and forking is safe, ``False`` keeps to one process (see :mod:`pipeline.ingestion.parallel`).
    The lake is never left with part of an episode.
    """
    return _run(source, lake=resolve_lake(lake), name=name, raise_errors=raise_errors, progress=progress,
                parallel=parallel)


def validate(
    source: SourceLike,
    *,
    name: str | None = None,
    raise_errors: bool = False,
    progress: ProgressCallback | None = None,
    parallel: bool | None = None,
) -> IngestResult:
    """Check one episode file against every rule without writing anything (status ``"valid"``)."""
    return _run(source, lake=None, name=name, raise_errors=raise_errors, progress=progress, parallel=parallel)


def _run(source: SourceLike, *, lake: Path | None, name: str | None, raise_errors: bool,
         progress: ProgressCallback | None, parallel: bool | None) -> IngestResult:
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike))
                     else getattr(source, "name", "<stream>"))
    if not isinstance(label, str):
        label = "<stream>"
    result = IngestResult(source=label, status="failed")
    started = time.perf_counter()
    try:
        _walked(source, lake, name, lambda opened, label, size, walk: _attempt(
            opened, lake=lake, name=label, size=size, result=result, progress=progress, parallel=parallel, walk=walk))
    except (PipelineError, OSError) as exc:
        error = _record_error(result, exc)
        if raise_errors:
            if error is exc:
                raise
            raise error from exc
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _walked(source: SourceLike, lake: Path | None, name: str | None,
            attempt: Callable[[SourceLike, str | None, int | None, Walk], _T]) -> _T:
    """``attempt(opened, name, size, walk)``: with the fast walk first, and with the exact walk, from the
    start, if the fast walk could not vouch for the file or the file is invalid. The fast walk accepts
    what it can vouch for; every doubt and every refusal is the exact walk's, so an error is always
    reported with its usual message (see fastwalk).

    A local file is opened again for the exact walk. An input that can be read only once (a URL, a
    pipe, a stream) is read once still: with a lake, the fast walk keeps a copy of what it reads, which
    the exact walk reads first (:mod:`.keptcopy`); without one (a validation), only the exact walk
    reads it. ``opened`` is ``source`` or the stream over it, ``name`` the label to give it, ``size``
    its size as stored if known."""
    from .fastwalk import NotFast, fast_batches
    from .parts import read_batches

    if _can_read_again(source):
        with suppress(NotFast, InvalidEpisode):
            return attempt(source, name, None, fast_batches)
        return attempt(source, name, None, read_batches)
    if lake is None:
        return attempt(source, name, None, read_batches)
    if name is None and isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)  # the label a path or URL gets, and its compression
    with _kept_copy(source, lake, name) as (kept, size):
        with suppress(NotFast, InvalidEpisode):
            return attempt(kept.first(), name, size, fast_batches)
        return attempt(kept.again(), name, size, read_batches)


@contextmanager
def _kept_copy(source: SourceLike, lake: Path, name: str | None) -> Iterator[tuple[KeptCopy, int | None]]:
    """``source`` opened as stored, with a copy kept in a staging folder of ``lake`` (see :mod:`.keptcopy`)."""
    from .keptcopy import KeptCopy
    from .source import open_input

    if isinstance(source, (str, os.PathLike)):
        raw, size = open_input(os.fspath(source))
        close: Callable[[], None] | None = raw.close
    else:
        raw, size, close = source, None, None
    try:
        with Staging(lake) as holder, open(holder.root / "input", "w+b") as copy:
            yield KeptCopy(raw, copy, name or "<stream>"), size
    finally:
        if close is not None:
            close()


def _can_read_again(source: SourceLike) -> bool:
    """Whether ``source`` can be opened a second time and read from the start: a regular local file (a
    stream, or a path to a pipe such as ``<(zcat ep.json.gz)``, is read once; a URL would be fetched twice)."""
    from .source import _is_plain_local_path

    if not isinstance(source, (str, os.PathLike)) or not _is_plain_local_path(os.fspath(source)):
        return False
    try:
        return stat.S_ISREG(os.stat(source).st_mode)
    except OSError:  # missing, or no permission: the exact walk's open reports it
        return False


def _attempt(source: SourceLike, *, lake: Path | None, name: str | None, size: int | None, result: IngestResult,
             progress: ProgressCallback | None, parallel: bool | None, walk: Walk) -> None:
    """Open ``source`` (of ``size`` bytes as stored, if known and a stream) and ingest (or, without a
    lake, validate) it with ``walk``; fill ``result``."""
    from .source import open_source

    exiting: list[Any] = []  # the two-process ingest's child, once it has built the episode
    with open_source(source, name=name, size=size) as src:
        result.source = src.name
        if parallel is None:
            parallel = split_pays(src.size)
        try:
            if lake is None:
                _build(src, None, result, progress, parallel, walk=walk, exiting=exiting)
                result.status = "valid"
            else:
                with Staging(lake) as staging:
                    inherited = (staging.lock_fd,) if staging.lock_fd is not None else ()
                    built = _build(src, staging.folder, result, progress, parallel, inherited, walk=walk,
                                   exiting=exiting)
                    committed = staging.commit(built.environment, result.episode_id or "")
                    result.status = "ingested" if committed else "exists"
        finally:
            result.bytes_read = src.bytes_read
            join_children(exiting)  # after the commit: it only exits, it writes nothing more


def _record_error(result: IngestResult, exc: PipelineError | OSError) -> PipelineError:
    """Put what went wrong into ``result`` (an I/O failure no stage wrapped becomes a LakeError); return it."""
    error = exc if isinstance(exc, PipelineError) else LakeError(f"{exc.strerror or exc}", source=result.source)
    error.with_source(result.source)
    result.error = error
    result.status = "invalid" if isinstance(error, InvalidEpisode) else "failed"
    return error


def tabulate_file(source: str) -> tuple[IngestResult, dict[str, Any] | None]:
    """Check and tabulate one (small) file in memory, for a group commit; write nothing.

    Returns the result (status ``"valid"``, or ``"invalid"``/``"failed"`` with the error) and,
    when valid, the episode's rows of each table as Arrow tables with an ``episode_id`` column.
    """
    result = IngestResult(source=source, status="failed")
    started = time.perf_counter()
    tables = None
    try:
        tables = _walked(source, None, None, lambda opened, name, size, walk: _tabulate(source, result, walk))
    except (PipelineError, OSError) as exc:
        _record_error(result, exc)
    finally:
        result.seconds = time.perf_counter() - started
    return result, tables


def _tabulate(source: str, result: IngestResult, walk: Walk) -> dict[str, Any]:
    """:func:`tabulate_file`'s work with ``walk``: fill ``result``, return the tables."""
    from ..lake.segments import with_id
    from .builder import EpisodeBuilder, Facts
    from .parts import STEPS
    from .source import open_source

    with open_source(source) as src:
        result.source = src.name
        try:
            with _gc_paused():
                builder = EpisodeBuilder(None, collect=True)
                for part, value in _parts(src, walk):
                    if part == STEPS:
                        builder.steps_batch(value)
                    else:
                        builder.part(part, value)
                built = builder.finish(Facts(src.name, src.reader.hexdigest(), src.reader.consumed))
            result.environment = built.environment
            result.steps, result.agent_steps, result.unit_steps = built.steps, built.agent_steps, built.unit_steps
            result.episode_id = src.reader.hexdigest()[:EPISODE_ID_LENGTH]
            tables = {name: with_id(name, rows, result.episode_id) for name, rows in builder.tables().items()}
            result.status = "valid"
            return tables
        finally:
            result.bytes_read = src.bytes_read


def _build(src: Source, folder: Path | None, result: IngestResult, progress: ProgressCallback | None,
           parallel: bool, inherited: tuple[int, ...] = (), *, walk: Walk, exiting: list[Any] | None = None) -> Built:
    """Read the whole document with ``walk`` and build the episode (writing it under ``folder``, if given);
    a child process that built it is left in ``exiting`` (see :func:`.parallel.build_in_two_processes`)."""
    with _gc_paused():
        if parallel:
            built = build_in_two_processes(src, folder, progress, close_in_child=inherited, walk=walk,
                                           exiting=exiting)
        else:
            built = _build_here(src, folder, progress, walk)
    result.environment = built.environment
    result.steps, result.agent_steps, result.unit_steps = built.steps, built.agent_steps, built.unit_steps
    result.episode_id = src.reader.hexdigest()[:EPISODE_ID_LENGTH]
    if progress is not None:
        progress(src.bytes_read, src.size)
    return built


def _build_here(src: Source, folder: Path | None, progress: ProgressCallback | None, walk: Walk) -> Built:
    from .builder import EpisodeBuilder, Facts
    from .parts import PROGRESS_EVERY, STEPS, flush_ahead_due

    builder = EpisodeBuilder(folder)
    reader, read = src.reader, 0
    flush_due = flush_ahead_due(src)
    try:
        for part, value in _parts(src, walk):
            if part == STEPS:
                before = builder.steps
                builder.steps_batch(value, reader.consumed - read)
                read = reader.consumed
                if flush_due():
                    builder.flush_ahead()
                if progress is not None and builder.steps // PROGRESS_EVERY != before // PROGRESS_EVERY:
                    progress(src.bytes_read, src.size)
            else:
                builder.part(part, value)
        return builder.finish(Facts(src.name, src.reader.hexdigest(), src.reader.consumed))
    except BaseException:
        builder.abort()
        raise


def _parts(src: Source, walk: Walk) -> Iterator[tuple[str, Any]]:
    """``walk(src)``, for one process: the fast walk keeps the frames' base64 text apart from its parse
    (:mod:`.framesapart`), and the builder decodes it."""
    from .fastwalk import fast_batches

    if walk is fast_batches:
        from .framesapart import FramesApart

        return fast_batches(src, frames_apart=FramesApart(enabled=True))
    return walk(src)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring the caller's setting afterwards.

    Parsed JSON is acyclic, so reference counting frees all of it; but the collector would
    rescan every pending row of a batch again and again (measured: 23% of a 24 MB ingest).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


__all__ = ["IngestResult", "ingest", "validate"]
