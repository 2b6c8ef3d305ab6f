"""The exception tree. Library code raises these; only ``cli.py`` turns them into exit codes.

Every error carries the context it applies to as attributes (``source``, ``path``, ``step``,
``rule``) and formats its message once, so the CLI, the JSON output and the Python API all say
the same thing.
"""

from __future__ import annotations

import copyreg
from typing import Any

# A name or key quoted from the file is cut to this many characters in a message (a key may be 16 MiB).
QUOTE_LIMIT = 80


def shorten(text: str) -> str:
    """``text`` as a message quotes it: whole up to ``QUOTE_LIMIT`` characters, else cut, with its length."""
    return text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}... ({len(text)} characters)"


class PipelineError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.message = message
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than ``args``, so rebuild without calling
        # ``__init__`` and restore the attributes: errors cross process boundaries in batch ingests.
        return copyreg.__newobj__, (type(self), *self.args), self.__dict__  # type: ignore[attr-defined]

    def with_source(self, source: str) -> PipelineError:
        """Attach the input's name to an error raised below the layer that knows it."""
        if self.source is None:
            self.source = source
            self.args = (self._format(),)
        return self


class InvalidEpisode(PipelineError):
    """The file breaks a rule of the episode format; nothing of it reaches the lake.

    ``rule`` is a stable identifier of the broken rule (for example ``reward.exactly_one``),
    ``path`` the JSON path of the offending value (``inference.steps[41].agent_steps[0]``),
    ``step`` the step's ``number`` when it is known, ``offset`` the byte offset where parsing
    stopped when the file itself is malformed.
    """

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        path: str | None = None,
        step: int | None = None,
        offset: int | None = None,
        source: str | None = None,
    ) -> None:
        self.rule = rule
        self.path = path
        self.step = step
        self.offset = offset
        super().__init__(message, source=source)

    def _format(self) -> str:
        where = self.path or ""
        if self.step is not None:
            where = f"{where} (step number {self.step})" if where else f"step number {self.step}"
        if self.offset is not None:
            where = f"{where} (at or before byte {self.offset})" if where else f"at or before byte {self.offset}"
        text = f"{where}: {self.message}" if where else self.message
        return f"{self.source}: {text}" if self.source else text


class SourceError(PipelineError):
    """The input could not be opened, downloaded or decompressed."""


class LakeError(PipelineError):
    """The lake could not be written (disk full, permissions, a failed commit)."""


class EpisodeNotFound(PipelineError):
    """No committed episode matches the given id or prefix."""


class AmbiguousEpisodeId(PipelineError):
    """An abbreviated episode id matches more than one episode."""


class DatasetError(PipelineError):
    """A trajectory or export cannot be built as asked: unknown agent, mixed shapes, missing frames.

    ``episode_id`` and ``agent`` name what was asked for, when they apply.
    """

    def __init__(self, message: str, *, episode_id: str | None = None, agent: str | None = None) -> None:
        self.episode_id = episode_id
        self.agent = agent
        super().__init__(message)


class DamagedFile(DatasetError):
    """A file of the lake cannot be read: damaged on disk, cut short, or not Parquet at all.

    ``file`` is the file's path (None when a reader failed without naming it), ``episode_id`` the
    episode it belongs to (when known), ``detail`` what the reader said. Nothing an ingest writes
    is ever damaged: the disk or a copy did it.
    """

    HINT = "run `ingest-pipeline check --deep` to list every damaged file, then `ingest-pipeline rm` its episodes"

    def __init__(self, file: str | None, detail: str, *, episode_id: str | None = None) -> None:
        self.file = file
        self.detail = " ".join(detail.split())  # one line, whatever the reader's message was
        episode = f"episode {episode_id}: " if episode_id else ""
        what = f"damaged file {file}" if file else "a Parquet file of the lake cannot be read"
        super().__init__(f"{episode}{what}: {self.detail}; {self.HINT}", episode_id=episode_id)


class ExportError(PipelineError):
    """An export's output file could not be written (disk full, no such folder, permissions)."""


class StaleSnapshot(DatasetError):
    """A :class:`~pipeline.Lake` snapshot refers to files a compaction or a removal has since replaced.

    Nothing wrong was read: the snapshot's files are gone. ``lake.refresh()`` takes a new snapshot.
    """


class MissingExtra(PipelineError, ImportError):
    """An optional dependency is not installed; the message gives the exact ``pip install`` line."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        self.extra = extra
        self.package = package
        self.install = f"pip install 'ingest-pipeline[{extra}]'"
        super().__init__(f"{feature} needs {package}, which is not installed: {self.install}")
