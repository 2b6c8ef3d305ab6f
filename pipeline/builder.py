"""Everything after parsing: an episode's parts, in file order, checked, tabulated and written.

:class:`EpisodeBuilder` is fed the header parts and steps that :func:`pipeline.source.read_document`
yields, in the same order; it runs the schema and the other rules, fills the table batches and
(with a folder) writes the Parquet files. The same builder runs in the ingesting process or, for
large files, in a second process fed by the first (:mod:`pipeline.split`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .rules import EpisodeChecker, check_part, check_step, json_text
from .tables import EpisodeTables, episode_table
from .writer import EpisodeWriter


@dataclass(frozen=True)
class Facts:
    """What only the reader knows at the end: the content hash and the input's name and size."""

    source: str
    content_hash: str
    source_bytes: int


@dataclass(frozen=True)
class Built:
    """The outcome of a whole episode: its environment and counts."""

    environment: str
    steps: int
    agent_steps: int
    unit_steps: int


class EpisodeBuilder:
    """Checks and tabulates one episode's parts; writes them under ``folder`` (None: check only)."""

    def __init__(self, folder: Path | None) -> None:
        self._checker = EpisodeChecker()
        self._header: dict[str, Any] = {}
        self._writer = EpisodeWriter(folder) if folder is not None else None
        self._tables = EpisodeTables(self._writer.write if self._writer else _discard)
        self.steps = 0

    def part(self, name: str, value: Any) -> None:
        """A header part (``training``, ``action_mapping``, ``inference.parallel``, ``inference.config``)."""
        check_part(name, value)
        header = self._header
        header[name] = value
        if name == "training":
            self._checker.set_reward_mapping(value.get("reward_mapping"))
            header["training.config_json"] = json_text(value.get("config") or {}, path="training.config")
        elif name in ("inference.config", "action_mapping"):
            header[f"{name}_json"] = json_text(value, path=name)

    def step(self, step: Any) -> None:
        """The next step of ``inference.steps``."""
        index = self.steps
        check_step(step, index)
        self._checker.check_step(step, index)
        self._tables.add_step(step, index)
        self.steps = index + 1

    def finish(self, facts: Facts) -> Built:
        """Flush the last batches, write the two summary tables, close and fsync every file."""
        tables = self._tables
        tables.flush()
        if self._writer is not None:
            self._writer.write("episode_agents", tables.episode_agents())
            self._writer.write("episodes", episode_table(
                self._header, tables,
                source=facts.source,
                content_hash=facts.content_hash,
                source_bytes=facts.source_bytes,
                ingested_at=dt.datetime.now(dt.UTC),
                pipeline_version=__version__,
            ))
            self._writer.close()
        return Built(self._header["training"]["environment"], tables.steps, tables.agent_steps, tables.unit_steps)

    def abort(self) -> None:
        """Stop after a failure; the caller removes the folder."""
        if self._writer is not None:
            self._writer.abort()


def _discard(table: str, batch: Any) -> None:
    """The sink of a check-only build: batches are built (so their checks run) and dropped."""
