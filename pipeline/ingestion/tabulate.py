"""Checked steps -> column batches of the three step tables (schemas in :mod:`pipeline.lake.tables`).

The per-step path (``add_step``) and the bulk per-batch path (``add_steps``) build the same columns and
summaries and are kept side by side so they stay equal (tests/ingestion/test_batches.py). The
``episodes`` and ``episode_agents`` rows are made from those summaries by :mod:`.summaries`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import reduce
from itertools import chain, islice
from operator import add, lt
from typing import TYPE_CHECKING, Any

from ..lake.writer import IMAGE_GROUP_BYTES
from .columns import FloatListColumn, ImageColumn, Piece
from .summaries import AgentSummary, row_total, row_totals

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported by the first conversion (arrowrows.py), not with this module: a small episode
# is written without it (see SMALL_ROWS).

# A batch is flushed when it holds this many rows, or this many numbers (and image bytes / 8) in
# its lists: Python objects cost ~4x their Arrow size, so this keeps a batch to a few tens of MB.
BATCH_ROWS = 16_384
BATCH_VALUES = 1_000_000
# ... or when the rows pending came from this many bytes of the file. Values count observations and
# images only; custom metrics, action distributions, enemy healths and reward vectors are not counted
# per row (it would cost every row), so a file of steps each holding megabytes of them kept all of them
# until the end: its memory grew with its size (found by the hostile-input campaign: 80 MB of 5 MB
# custom metrics, 352 MB peak against 126 MB for 20 MB). The file's own bytes bound every kind of row
# at once, at no cost per row; real files reach the bounds above long before this one.
BATCH_TEXT_BYTES = 32 * 1024 * 1024
# Rows are converted to Arrow in smaller pieces than a batch, while their Python objects are still
# in the CPU cache: freeing 16k parsed rows at once cost 0.29 s of a 100 MB teams ingest, freeing
# them 1k at a time 0.11 s (measured). A batch is then the pieces together, one row group.
CONVERT_ROWS = 1024
# An episode whose step tables never hold more than SMALL_ROWS rows each, SMALL_VALUES numbers in
# their lists (and image bytes / 8) and IMAGE_GROUP_BYTES of images (one row group's worth) is
# written by pipeline.lake.smallparquet, without importing pyarrow (~0.12 s a process): its rows are
# kept until the end, then encoded in Python. CPU of the whole ingest, imports included (measured on
# a busy machine): `vector` rows cost ~22 us small against ~8 us through pyarrow, so the two meet
# near 13,000 rows (4,096: 0.18 s against 0.31 s); long floats, 395,000 numbers: 0.31 s against
# 0.48 s. But rows held past CONVERT_ROWS cost a large file memory before its first conversion
# (4,096: +10 MiB peak on a 100 MB vector file), so the limit is CONVERT_ROWS: a large file holds
# no more than it did. See BENCHMARKS.md, Start-up.
SMALL_ROWS = CONVERT_ROWS
SMALL_VALUES = 400_000
# For tests: the rows limit (0: every episode through pyarrow; at most BATCH_ROWS, and the values
# limit scales with it, so the small path never holds more than one batch).
SMALL_ROWS_VARIABLE = "INGEST_PIPELINE_SMALL_ROWS"


def small_limits() -> tuple[int, int]:
    """(rows, values): the limits under which an episode is written without pyarrow (see SMALL_ROWS)."""
    forced = os.environ.get(SMALL_ROWS_VARIABLE)
    if forced is None:
        return SMALL_ROWS, SMALL_VALUES
    rows = min(int(forced), BATCH_ROWS)
    return rows, min(BATCH_VALUES, rows * (SMALL_VALUES // SMALL_ROWS))


def _put_frames_back(steps: list[dict[str, Any]], lengths: list[int], chunks: list[bytes]) -> None:
    """Each step's frame back in it, as bytes, from ``frames`` (see :meth:`EpisodeTables.add_steps`)."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    start = 0
    for step, length in zip(steps, lengths, strict=True):
        if length >= 0:
            step["image"] = data[start : start + length]
            start += length


class EpisodeTables:
    """Collects checked steps into batches of the three step tables and hands them to ``sink``.

    ``sink(table_name, batch)`` is called whenever a batch is full and by :meth:`flush`; a batch
    is a record batch or a table of a few record batches, and becomes one Parquet row group.
    Rows are the parsed dicts themselves, converted by pyarrow in C++ every :data:`CONVERT_ROWS`
    rows; the columns they lack (``step``, ``total_reward``, the flattened ``observation`` and its
    shape; a unit's ``agent``) are kept beside them in lists and converted in bulk. Per-agent
    summaries and episode counts accumulate on the way, for the two small tables.
    :meth:`add_steps` takes many steps at once and does per batch what :meth:`add_step` does per row.

    ``small=(rows, values)`` (see :func:`small_limits`): nothing is converted while the episode is
    within those limits; if it ends within them, :meth:`small_pieces` gives all its rows, for the
    small writer, and nothing went to the sink. ``(0, 0)``: every episode goes through pyarrow.
    """

    def __init__(self, sink: Callable[[str, pa.RecordBatch | pa.Table], None], *,
                 batch_rows: int = BATCH_ROWS, batch_values: int = BATCH_VALUES,
                 small: tuple[int, int] = (0, 0)) -> None:
        self._sink = sink
        self._small_rows, self._small_values = small
        self._small = self._small_rows > 0
        self._image_bytes = 0  # while small
        self._batch_rows = batch_rows
        self._batch_values = batch_values
        self._agents: dict[str, AgentSummary] = {}
        self.steps = 0
        self.agent_steps = 0
        self.unit_steps = 0
        self.images = 0
        self.total_reward = 0.0
        self.first_step: int | None = None
        self.last_step: int | None = None
        self._new_batches()

    def _new_batches(self) -> None:
        self._step_numbers: list[int] = []
        self._step_indexes: list[int] = []
        self._images = ImageColumn()
        self._converted: dict[str, list[pa.RecordBatch]] = {"agent_steps": [], "unit_steps": []}
        self._batch_agent_rows = 0
        self._batch_unit_rows = 0
        self._pending_values = 0
        self._pending_text = 0
        self._new_rows()

    def _new_rows(self) -> None:
        self._agent_rows: list[dict[str, Any]] = []
        self._agent_numbers: list[int] = []
        self._agent_totals: list[Any] = []
        self._observations = FloatListColumn()
        self._shapes: list[list[int]] = []
        self._unit_rows: list[dict[str, Any]] = []
        self._unit_numbers: list[int] = []
        self._unit_agents: list[str] = []
        self._unit_totals: list[Any] = []

    def add_steps(self, steps: list[dict[str, Any]], first: int, raw: bool = False,
                  frames: tuple[list[int], list[bytes]] | None = None, text_bytes: int = 0) -> None:
        """:meth:`add_step` of each of consecutive checked steps (``first``: the index of the first).

        ``raw``: the agent steps kept their 1-D ``observation_space`` (see
        :meth:`pipeline.ingestion.rules.EpisodeChecker.check_steps`) instead of ``observation`` and its shape.
        ``frames``: the steps' decoded frames, taken out of them, as lengths (-1: none) and the
        bytes, joined in one or more chunks (see :class:`ImageColumn`).
        ``text_bytes``: how much of the file the steps came from (see :data:`BATCH_TEXT_BYTES`).
        Steps whose numbers increase past every number seen go through in bulk; others one by one.
        """
        self._pending_text += text_bytes
        numbers = [step["number"] for step in steps]
        last = self.last_step
        if (last is not None and numbers[0] <= last) or not all(map(lt, numbers, islice(numbers, 1, None))):
            if frames is not None:
                _put_frames_back(steps, *frames)
            for i, step in enumerate(steps):
                if raw:
                    for row in step.get("agent_steps") or ():
                        obs = row.pop("observation_space")
                        row["observation"], row["observation_shape"] = obs, [len(obs)]
                self.add_step(step, first + i)
            return
        self._step_numbers += numbers
        self._step_indexes += range(first, first + len(steps))
        column = self._images
        before = column.count
        if frames is None:
            images = [step.get("image") for step in steps]
            if images.count(None) == len(images):
                column.extend_joined([-1] * len(images), [])
            else:
                for image in images:
                    column.append(image)
                sizes = [len(image) for image in images if image is not None]
                self._pending_values += sum(size >> 3 for size in sizes)
                self._image_bytes += sum(sizes)
        else:
            lengths, chunks = frames
            column.extend_joined(lengths, chunks)
            self._pending_values += sum(n >> 3 for n in lengths if n > 0)
            self._image_bytes += sum(map(len, chunks))
        self.images += column.count - before
        self.steps += len(steps)
        if self.first_step is None:
            self.first_step = numbers[0]
        self.last_step = numbers[-1]
        lists = [step.get("agent_steps") or () for step in steps]
        rows = list(chain.from_iterable(lists))
        if rows:
            self._add_rows(numbers, lists, rows, raw)
        if self._small and self._still_small():
            return
        if (self._pending_values >= self._batch_values or len(self._step_numbers) >= self._batch_rows
                or self._batch_agent_rows >= self._batch_rows or self._batch_unit_rows >= self._batch_rows
                or self._pending_text >= BATCH_TEXT_BYTES):
            self.flush()
        elif len(self._agent_rows) >= CONVERT_ROWS or len(self._unit_rows) >= CONVERT_ROWS:
            self._convert()

    def _add_rows(self, numbers: list[int], lists: list[Any], rows: list[dict[str, Any]], raw: bool) -> None:
        """The agent rows (and their unit rows) of steps with increasing numbers, in bulk.

        Over our ~60-line guide: it is the hot loop of the commonest shapes, kept in one frame so that
        its locals stay locals (a helper call per row cost measurably on ~200-byte steps).
        """
        lengths = list(map(len, lists))
        if len(rows) == len(lists) and min(lengths) == 1:  # one agent step in each step
            row_numbers, positions = numbers, [0] * len(rows)
        else:
            row_numbers = [number for number, n in zip(numbers, lengths, strict=True) for _ in range(n)]
            positions = [j for n in lengths for j in range(n)]
        totals = row_totals(rows)
        self._agent_rows += rows
        self._agent_numbers += row_numbers
        self._agent_totals += totals
        if raw:
            observations = [row["observation_space"] for row in rows]
            self._observations.extend(observations)
            self._shapes += [[len(obs)] for obs in observations]
            self._pending_values += sum(map(len, observations))
        else:
            column, shapes = self._observations, self._shapes
            values = 0
            for row in rows:
                observation = row.pop("observation")
                column.append(observation)
                values += len(observation)
                shapes.append(row["observation_shape"])
            self._pending_values += values
        self.total_reward = reduce(add, totals, self.total_reward)  # in file order, as += does
        names = [row["agent"] for row in rows]
        summaries = self._agents
        if names.count(names[0]) == len(names):
            groups: dict[str, list[int]] | None = None
            agent = names[0]
            if agent not in summaries:
                summaries[agent] = AgentSummary(row_numbers[0], positions[0])
            summaries[agent].add_rows(row_numbers, positions, totals, rows)
        else:
            groups = {}
            for i, name in enumerate(names):
                group = groups.get(name)
                if group is None:
                    groups[name] = [i]
                    if name not in summaries:
                        summaries[name] = AgentSummary(row_numbers[i], positions[i])
                else:
                    group.append(i)
            for name, group in groups.items():
                summaries[name].add_rows([row_numbers[i] for i in group], [positions[i] for i in group],
                                         [totals[i] for i in group], [rows[i] for i in group])
        unit_lists: list[Any] = [row.get("unit_steps") for row in rows]
        if unit_lists.count(None) != len(unit_lists):
            owners = [i for i, units in enumerate(unit_lists) if units]
            units = list(chain.from_iterable(unit_lists[i] for i in owners))
            counts = [len(unit_lists[i]) for i in owners]
            self._unit_rows += units
            self._unit_numbers += [row_numbers[i] for i, n in zip(owners, counts, strict=True) for _ in range(n)]
            owner_names = [names[i] for i, n in zip(owners, counts, strict=True) for _ in range(n)]
            self._unit_agents += owner_names
            self._unit_totals += row_totals(units)
            unit_names = [unit["unit"] for unit in units]
            if groups is None:  # one agent
                summary = summaries[names[0]]
                summary.units.update(unit_names)
                summary.unit_steps += len(units)
            else:
                for name, unit in zip(owner_names, unit_names, strict=True):
                    summaries[name].units.add(unit)
                for i, n in zip(owners, counts, strict=True):
                    summaries[names[i]].unit_steps += n
            self.unit_steps += len(units)
            self._batch_unit_rows += len(units)
        self.agent_steps += len(rows)
        self._batch_agent_rows += len(rows)

    def add_step(self, step: dict[str, Any], index: int) -> None:
        """Add one checked, normalised step (see :meth:`pipeline.ingestion.rules.EpisodeChecker.check_step`)."""
        number = step["number"]
        image = step.get("image")
        self._step_numbers.append(number)
        self._step_indexes.append(index)
        self._images.append(image)
        if image is not None:
            self.images += 1
            self._pending_values += len(image) >> 3
            self._image_bytes += len(image)
        self.steps += 1
        if self.first_step is None or number < self.first_step:
            self.first_step = number
        if self.last_step is None or number > self.last_step:
            self.last_step = number
        agent_steps = step.get("agent_steps")
        if agent_steps:
            self._add_agent_steps(number, agent_steps)
        if self._small and self._still_small():
            return
        if (self._pending_values >= self._batch_values or len(self._step_numbers) >= self._batch_rows
                or self._batch_agent_rows >= self._batch_rows or self._batch_unit_rows >= self._batch_rows
                or self._pending_text >= BATCH_TEXT_BYTES):
            self.flush()
        elif len(self._agent_rows) >= CONVERT_ROWS or len(self._unit_rows) >= CONVERT_ROWS:
            self._convert()

    def _add_agent_steps(self, number: int, agent_steps: list[dict[str, Any]]) -> None:
        agent_rows, unit_rows, summaries = self._agent_rows, self._unit_rows, self._agents
        observations = self._observations
        for position, row in enumerate(agent_steps):
            agent = row["agent"]
            total = row_total(row)
            agent_rows.append(row)
            self._agent_numbers.append(number)
            self._agent_totals.append(total)
            observation = row.pop("observation")
            observations.append(observation)
            self._shapes.append(row["observation_shape"])
            self._pending_values += len(observation)
            self.total_reward += total
            summary = summaries.get(agent)
            if summary is None:
                summary = summaries[agent] = AgentSummary(number, position)
            summary.add(number, position, total, row)
            units = row.get("unit_steps")
            if units:
                names = summary.units
                for unit_row in units:
                    self._unit_totals.append(row_total(unit_row))
                    names.add(unit_row["unit"])
                unit_rows.extend(units)
                self._unit_numbers += [number] * len(units)
                self._unit_agents += [agent] * len(units)
                summary.unit_steps += len(units)
                self.unit_steps += len(units)
                self._batch_unit_rows += len(units)
        self.agent_steps += len(agent_steps)
        self._batch_agent_rows += len(agent_steps)

    def _still_small(self) -> bool:
        """Whether the episode so far is within the small limits (once it is not, it never is again)."""
        if (len(self._step_numbers) <= self._small_rows and len(self._agent_rows) <= self._small_rows
                and len(self._unit_rows) <= self._small_rows and self._pending_values <= self._small_values
                and self._image_bytes <= IMAGE_GROUP_BYTES and self._pending_text < BATCH_TEXT_BYTES):
            return True
        self._small = False
        return False

    def _row_pieces(self) -> dict[str, Piece]:
        """The pending agent and unit rows (those not converted yet), with the columns they lack."""
        pieces = {}
        if self._agent_rows:
            pieces["agent_steps"] = Piece(len(self._agent_rows), self._agent_rows, {
                "step": self._agent_numbers, "total_reward": self._agent_totals,
                "observation": self._observations, "observation_shape": self._shapes})
        if self._unit_rows:
            pieces["unit_steps"] = Piece(len(self._unit_rows), self._unit_rows, {
                "step": self._unit_numbers, "agent": self._unit_agents, "total_reward": self._unit_totals})
        return pieces

    def _steps_piece(self) -> Piece:
        return Piece(len(self._step_numbers), columns={
            "step": self._step_numbers, "index": self._step_indexes, "image": self._images})

    def small_pieces(self) -> dict[str, Piece] | None:
        """Every row of the three step tables, when the episode stayed small (nothing converted), else None."""
        if not self._small:
            return None
        return {"steps": self._steps_piece(), "agent_steps": Piece(0), "unit_steps": Piece(0),
                **self._row_pieces()}

    def _convert(self) -> None:
        """Turn the pending agent and unit rows into record batches, freeing their Python objects."""
        from .arrowrows import to_batch

        for table, piece in self._row_pieces().items():
            self._converted[table].append(to_batch(table, piece))
        self._new_rows()

    def flush(self) -> None:
        """Hand every non-empty pending batch to the sink."""
        self._small = False
        self._convert()
        if self._step_numbers:
            from .arrowrows import to_batch

            self._sink("steps", to_batch("steps", self._steps_piece()))
        for table, pieces in self._converted.items():
            if pieces:
                import pyarrow as pa

                self._sink(table, pieces[0] if len(pieces) == 1 else pa.Table.from_batches(pieces))
        self._new_batches()

    def flush_ahead(self) -> None:
        """Hand the pending rows to the sink now, because the file ends soon
        (:data:`~pipeline.ingestion.parts.FLUSH_AHEAD_BYTES`), unless the episode is still small
        (written whole at the end)."""
        if not (self._small and self._still_small()):
            self.flush()

    def agent_rows(self) -> Piece:
        """The ``episode_agents`` rows: one per agent, in order of appearance (first step, then as
        that step lists them)."""
        ordered = sorted(self._agents.items(), key=lambda item: (item[1].first_step, item[1].position))
        return Piece(len(ordered), [summary.row(agent) for agent, summary in ordered])

    def episode_agents(self) -> pa.Table:
        """:meth:`agent_rows` as an Arrow table."""
        import pyarrow as pa

        from .arrowrows import to_batch

        # rows_to_batch, not Table.from_pylist: 0.055 ms against 0.3 ms a call (measured), which
        # counts for the thousands of small episodes a batch run tabulates per second.
        return pa.Table.from_batches([to_batch("episode_agents", self.agent_rows())])

    @property
    def agents(self) -> int:
        return len(self._agents)
