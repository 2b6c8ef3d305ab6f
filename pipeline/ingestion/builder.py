"""Everything after parsing: an episode's parts, in file order, checked, tabulated and written.

The header parts and steps that :func:`pipeline.ingestion.parts.read_document` yields go, in the same
order, through two halves: :class:`EpisodeChecks` runs the schema and the other rules and
normalises each part in place; :class:`EpisodeTabulator` fills the table batches and (with a
folder) writes the Parquet files. :class:`EpisodeBuilder` runs both in one process; the
two-process ingest (:mod:`pipeline.ingestion.parallel`) runs the checks where the file is read and the
tabulator in a second process.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..version import __version__
from .framesapart import StepsApart
from .rules import UNPLANNED, EpisodeChecker, decode_frame_texts, json_text
from .schema import check_part, check_step, steps_are_valid

# What EpisodeChecks.steps_batch returns, for EpisodeTabulator.steps_batch: the agent steps were
# normalised (NORMALISED), or kept their 1-D observation_space (RAW); and, with UNCHECKED, the schema
# check of the batch was left to the tabulator (the two-process ingest's writer, which has time).
NORMALISED, RAW, UNCHECKED = 0, 1, 2

if TYPE_CHECKING:
    import pyarrow as pa

# tables and writer (pyarrow) are imported by EpisodeTabulator, not here: the reading process of the
# two-process ingest only checks, and leaves importing pyarrow to the writer it forks.


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


class EpisodeChecks:
    """The rules, part by part, in file order: each part is checked and normalised in place.

    This is the half of the work that decides whether the file is valid; in the two-process
    ingest it runs in the reading process, so every rule error is raised there, in file order.
    """

    def __init__(self, *, integer_rows: bool = True) -> None:
        self._checker = EpisodeChecker(integer_rows=integer_rows)  # see EpisodeChecker
        self.steps = 0

    def part(self, name: str, value: Any) -> dict[str, Any]:
        """Check a header part; return what the ``episodes`` table needs from it."""
        check_part(name, value)
        header = {name: value}
        if name == "training":
            self._checker.set_reward_mapping(value.get("reward_mapping"))
            header["training.config_json"] = json_text(value.get("config") or {}, path="training.config")
        elif name in ("inference.config", "action_mapping"):
            header[f"{name}_json"] = json_text(value, path=name)
        return header

    def step(self, step: Any) -> None:
        """Check the next step of ``inference.steps`` and normalise it for the table stage."""
        index = self.steps
        check_step(step, index)
        self._checker.check_step(step, index)
        self.steps = index + 1

    def steps_batch(self, steps: list[Any], *, defer_schema: bool = False, schema_valid: bool = False) -> int:
        """:meth:`step` for each of the next steps, in order; returns NORMALISED or RAW (| UNCHECKED).

        One schema call checks the whole batch; if it fails, or the batch is not in the common shape
        (see :meth:`pipeline.ingestion.rules.EpisodeChecker.check_steps`), the steps go one by one, so the first
        error in file order is the one raised, with its usual message.

        ``defer_schema``: a batch that passes every other rule without being changed (1-D float
        observations, no image, no metrics; see :meth:`~.rules.EpisodeChecker.check_steps_as_they_are`)
        is returned ``RAW | UNCHECKED`` without its schema check, which the tabulator then runs. No
        other rule is broken in it, so a schema error there is the first error of the file from
        that batch on; the two-process ingest reports the writer's errors before its own later ones.

        ``schema_valid``: the batch is known to pass the schema (the reader checked it; see
        ``parallel._send_steps``), so that check is not run again.
        """
        index = self.steps
        checker = self._checker
        plan = UNPLANNED
        if defer_schema:
            plan = checker.plan_of(steps)  # made once, used by both calls below
            if checker.check_steps_as_they_are(steps, plan):
                self.steps = index + len(steps)
                return RAW | UNCHECKED
        if schema_valid or steps_are_valid(steps):
            state = RAW if checker.check_steps(steps, index, plan) else NORMALISED
        else:
            for i, step in enumerate(steps):
                check_step(step, index + i)
                checker.check_step(step, index + i)
            state = NORMALISED
        self.steps = index + len(steps)
        return state


class EpisodeTabulator:
    """Tabulates checked parts; writes them under ``folder`` (None: build the batches, drop them).

    With ``collect=True`` (and no folder) the batches are kept in memory instead, for a group
    commit of small files: :meth:`tables` returns them after :meth:`finish`.

    With a folder, a small episode (``tabulate.SMALL_ROWS``) is written by the small Parquet writer
    (:mod:`pipeline.lake.smallparquet`) from the same rows, and pyarrow is never imported.
    """

    def __init__(self, folder: Path | None, *, collect: bool = False) -> None:
        self._header: dict[str, Any] = {}
        from ..lake.writer import EpisodeWriter
        from .tabulate import EpisodeTables, small_limits

        self._writer = EpisodeWriter(folder) if folder is not None else None
        self._collected: dict[str, list[pa.RecordBatch | pa.Table]] | None = {} if collect else None
        sink = self._writer.write if self._writer else (self._collect if collect else _discard)
        self._tables = EpisodeTables(sink, small=small_limits() if self._writer is not None else (0, 0))
        self.steps = 0

    def _collect(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        assert self._collected is not None
        self._collected.setdefault(table, []).append(batch)

    def tables(self) -> dict[str, pa.Table]:
        """The collected rows of each table (``collect=True``), one Arrow table each."""
        import pyarrow as pa

        from ..lake.tables import SCHEMAS

        assert self._collected is not None
        return {name: pa.Table.from_batches(
                    [b for part in self._collected.get(name, []) for b in
                     (part.to_batches() if isinstance(part, pa.Table) else [part])], schema=schema)
                for name, schema in SCHEMAS.items()}

    def header(self, entries: dict[str, Any]) -> None:
        """What :meth:`EpisodeChecks.part` returned for a header part."""
        self._header.update(entries)

    def step(self, step: dict[str, Any]) -> None:
        """The next step, as :meth:`EpisodeChecks.step` left it."""
        self._tables.add_step(step, self.steps)
        self.steps += 1

    def steps_batch(self, steps: list[dict[str, Any]], state: int = NORMALISED,
                    frames: tuple[list[int], list[bytes]] | None = None, text_bytes: int = 0) -> None:
        """The next steps, as :meth:`EpisodeChecks.steps_batch` left them (``state``: what it returned).

        An UNCHECKED batch is schema-checked here first (the first invalid step raises its error).
        ``frames``: their decoded frames, taken out of the steps, in chunks (see
        :meth:`~.tabulate.EpisodeTables.add_steps`). ``text_bytes``: how much of the file they came from.
        """
        if state & UNCHECKED and not steps_are_valid(steps):
            for i, step in enumerate(steps):
                check_step(step, self.steps + i)
        self._tables.add_steps(steps, self.steps, bool(state & RAW), frames, text_bytes)
        self.steps += len(steps)

    def flush_ahead(self) -> None:
        """The file ends soon: write what is pending now (see ``parts.FLUSH_AHEAD_BYTES``)."""
        self._tables.flush_ahead()

    def finish(self, facts: Facts) -> Built:
        """Flush the last batches, write the two summary tables, close and fsync every file."""
        from .columns import python_columns
        from .summaries import episode_row, episode_table

        tables = self._tables
        small = tables.small_pieces()
        if small is not None:
            assert self._writer is not None  # a small episode only with a folder
            small["episode_agents"] = tables.agent_rows()
            small["episodes"] = episode_row(self._header, tables, **self._facts(facts))
            for name, piece in small.items():
                self._writer.write_columns(name, python_columns(name, piece), piece.count)
        else:
            tables.flush()
        write = (self._writer.write if self._writer is not None
                 else self._collect if self._collected is not None else None)
        if write is not None and small is None:
            write("episode_agents", tables.episode_agents())
            write("episodes", episode_table(self._header, tables, **self._facts(facts)))
        if self._writer is not None:
            self._writer.close()
        return Built(self._header["training"]["environment"], tables.steps, tables.agent_steps, tables.unit_steps)

    @staticmethod
    def _facts(facts: Facts) -> dict[str, Any]:
        """The ``episodes`` row's ingest facts."""
        return {"source": facts.source, "content_hash": facts.content_hash, "source_bytes": facts.source_bytes,
                "ingested_at": dt.datetime.now(dt.UTC), "pipeline_version": __version__}

    def abort(self) -> None:
        """Stop after a failure; the caller removes the folder."""
        if self._writer is not None:
            self._writer.abort()


class EpisodeBuilder:
    """Both halves in one process: checks each part, then tabulates it."""

    def __init__(self, folder: Path | None, *, collect: bool = False) -> None:
        self._checks = EpisodeChecks()
        self._tabulator = EpisodeTabulator(folder, collect=collect)

    def tables(self) -> dict[str, pa.Table]:
        """The rows, when built with ``collect=True``."""
        return self._tabulator.tables()

    @property
    def steps(self) -> int:
        return self._checks.steps

    def part(self, name: str, value: Any) -> None:
        """A header part (``training``, ``action_mapping``, ``inference.parallel``, ``inference.config``)."""
        self._tabulator.header(self._checks.part(name, value))

    def step(self, step: Any) -> None:
        """The next step of ``inference.steps``."""
        self._checks.step(step)
        self._tabulator.step(step)

    def steps_batch(self, steps: list[Any], text_bytes: int = 0) -> None:
        """The next steps of ``inference.steps``, in order (a batch from :func:`~.parts.read_batches`,
        read from ``text_bytes`` of the file; or from the fast walk, with the frames' text apart:
        a :class:`~.framesapart.StepsApart`, whose frames are decoded first)."""
        frames = None
        if type(steps) is StepsApart:
            frames = decode_frame_texts(steps.lengths, steps.texts, self._checks.steps, steps)
        self._tabulator.steps_batch(steps, self._checks.steps_batch(steps), frames, text_bytes=text_bytes)

    def flush_ahead(self) -> None:
        self._tabulator.flush_ahead()

    def finish(self, facts: Facts) -> Built:
        return self._tabulator.finish(facts)

    def abort(self) -> None:
        self._tabulator.abort()


def _discard(table: str, batch: Any) -> None:
    """The sink of a check-only build: batches are built (so their checks run) and dropped."""
