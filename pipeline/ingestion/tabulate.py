"""Checked steps -> column batches of the five tables (schemas in :mod:`pipeline.lake.tables`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ..lake.tables import AGENT_STEPS, EPISODE_AGENTS, EPISODES, F64, I64, LIST_F64, STEPS, UNIT_STEPS

# A batch is flushed when it holds this many rows, or this many numbers (and image bytes / 8) in
# its lists: Python objects cost ~4x their Arrow size, so this keeps a batch to a few tens of MB.
BATCH_ROWS = 16_384
BATCH_VALUES = 1_000_000
# Rows are converted to Arrow in smaller pieces than a batch, while their Python objects are still
# in the CPU cache: freeing 16k parsed rows at once cost 0.29 s of a 100 MB teams ingest, freeing
# them 1k at a time 0.11 s (measured). A batch is then the pieces together, one row group.
CONVERT_ROWS = 1024


def _float_fields(schema: pa.Schema) -> list[tuple[str, bool]]:
    """Names of float64 and list<float64> fields, each with whether it is a list."""
    return [(f.name, f.type == LIST_F64) for f in schema if f.type in (F64, LIST_F64)]


def _as_floats(rows: list[dict[str, Any]], fields: list[tuple[str, bool]]) -> None:
    """Turn every number in the float fields into a float (slow path for integers beyond 2^53)."""
    for row in rows:
        for name, is_list in fields:
            value = row.get(name)
            if value is not None:
                row[name] = [float(v) for v in value] if is_list else float(value)


def rows_to_batch(rows: list[dict[str, Any]], schema: pa.Schema,
                  columns: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    """Convert row dicts to a record batch of ``schema`` in one pass of pyarrow's C++ converter.

    Keys a row lacks become nulls; keys the schema does not name are ignored. ``columns`` are
    ready-made arrays for some fields (rows need not hold those keys). Integers beyond 2^53
    cannot become float64 exactly, which pyarrow refuses; docs/format.md accepts the rounding.
    """
    columns = columns or {}
    fields = [field for field in schema if field.name not in columns]
    struct = pa.struct(fields)
    try:
        array = pa.array(rows, type=struct)
    except (pa.ArrowInvalid, OverflowError):
        _as_floats(rows, _float_fields(pa.schema(fields)))
        array = pa.array(rows, type=struct)
    converted = dict(zip([field.name for field in fields], array.flatten(), strict=True))
    converted.update(columns)
    return pa.RecordBatch.from_arrays([converted[field.name] for field in schema], schema=schema)


def _floats(values: list[Any]) -> pa.Array:
    """A float64 array of Python numbers (integers beyond 2^53 rounded, as docs/format.md allows)."""
    try:
        return pa.array(values, F64)
    except (pa.ArrowInvalid, OverflowError):
        return pa.array([float(v) for v in values], F64)


class FloatListColumn:
    """A ``list<float64>`` column built row by row from flat values, converted in bulk.

    A row's values are either bytes (every value an integer 0..255, one byte each; see
    :func:`pipeline.ingestion.rules.flatten_observation`) or a list of numbers. Consecutive rows of the same
    kind share one buffer, so a run of pixel observations is one ``uint8 -> float64`` cast.
    """

    def __init__(self) -> None:
        self.offsets = [0]
        self.values = 0
        self._chunks: list[bytearray | list[Any]] = []  # runs of rows of one kind

    def append(self, values: bytes | bytearray | list[Any]) -> None:
        """One row's values: bytes (``marshal`` turns a bytearray into bytes) or numbers."""
        self.values += len(values)
        self.offsets.append(self.values)
        chunks = self._chunks
        last = chunks[-1] if chunks else None
        if isinstance(values, list):
            if isinstance(last, list):
                last += values
            else:
                chunks.append(list(values))  # a copy: the chunk grows, the row's list must not
        elif isinstance(last, bytearray):
            last += values
        else:
            chunks.append(bytearray(values))

    def array(self) -> pa.ListArray:
        parts = [pa.array(np.frombuffer(chunk, np.uint8).astype(np.float64)) if isinstance(chunk, bytearray)
                 else _floats(chunk) for chunk in self._chunks]
        values = parts[0] if len(parts) == 1 else pa.concat_arrays(parts) if parts else pa.array([], F64)
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), values)


class _AgentSummary:
    """Running per-agent figures, summed in file order like a reader of the JSON would."""

    __slots__ = ("first_step", "health", "health_step", "last_step", "length", "max", "min", "position",
                 "total", "totals", "unit_steps", "units", "value_count", "value_sum")

    def __init__(self, step: int, position: int) -> None:
        self.length = 0
        self.first_step = step
        self.position = position  # where the agent is listed in its first step
        self.last_step = step
        self.total = 0.0
        self.totals: list[float] | None = None
        self.min = float("inf")
        self.max = float("-inf")
        self.health: float | None = None
        self.health_step = -1
        self.value_sum = 0.0
        self.value_count = 0
        self.unit_steps = 0
        self.units: set[str] = set()

    def add(self, number: int, position: int, total: Any, row: dict[str, Any]) -> None:
        self.length += 1
        if number < self.first_step:
            self.first_step, self.position = number, position
        if number > self.last_step:
            self.last_step = number
        self.total += total
        if total < self.min:
            self.min = total
        if total > self.max:
            self.max = total
        rewards = row.get("rewards")
        if rewards is not None:
            totals = self.totals
            if totals is None:
                totals = self.totals = [0.0] * len(rewards)
            for i, r in enumerate(rewards):
                totals[i] += r
        health = row.get("health")
        if health is not None and number >= self.health_step:
            self.health, self.health_step = health, number
        value = row.get("value_estimate")
        if value is not None:
            self.value_sum += value
            self.value_count += 1

    def row(self, agent: str) -> dict[str, Any]:
        return {
            "agent": agent, "length": self.length, "first_step": self.first_step, "last_step": self.last_step,
            "total_reward": self.total, "reward_totals": self.totals,
            "mean_reward": self.total / self.length, "min_reward": self.min, "max_reward": self.max,
            "last_health": self.health,
            "mean_value_estimate": self.value_sum / self.value_count if self.value_count else None,
            "unit_steps": self.unit_steps, "units": len(self.units),
        }


def _scored(row: dict[str, Any]) -> Any:
    """Set and return a row's total reward: ``reward``, or the sum of ``rewards``."""
    rewards = row.get("rewards")
    total = row["total_reward"] = row["reward"] if rewards is None else sum(rewards)
    return total


class EpisodeTables:
    """Collects checked steps into batches of the three step tables and hands them to ``sink``.

    ``sink(table_name, batch)`` is called whenever a batch is full and by :meth:`flush`; a batch
    is a record batch or a table of a few record batches, and becomes one Parquet row group.
    Rows are the parsed dicts themselves, completed in place with their keys (``step``,
    ``agent``, ``total_reward``), and converted by pyarrow in C++ every :data:`CONVERT_ROWS`
    rows. Per-agent summaries and episode counts accumulate on the way, for the two small tables.
    """

    def __init__(self, sink: Callable[[str, pa.RecordBatch | pa.Table], None], *,
                 batch_rows: int = BATCH_ROWS, batch_values: int = BATCH_VALUES) -> None:
        self._sink = sink
        self._batch_rows = batch_rows
        self._batch_values = batch_values
        self._agents: dict[str, _AgentSummary] = {}
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
        self._images: list[bytes | None] = []
        self._converted: dict[str, list[pa.RecordBatch]] = {"agent_steps": [], "unit_steps": []}
        self._batch_agent_rows = 0
        self._batch_unit_rows = 0
        self._pending_values = 0
        self._new_rows()

    def _new_rows(self) -> None:
        self._agent_rows: list[dict[str, Any]] = []
        self._observations = FloatListColumn()
        self._unit_rows: list[dict[str, Any]] = []

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
        self.steps += 1
        if self.first_step is None or number < self.first_step:
            self.first_step = number
        if self.last_step is None or number > self.last_step:
            self.last_step = number
        agent_steps = step.get("agent_steps")
        if agent_steps:
            self._add_agent_steps(number, agent_steps)
        if (self._pending_values >= self._batch_values or len(self._step_numbers) >= self._batch_rows
                or self._batch_agent_rows >= self._batch_rows or self._batch_unit_rows >= self._batch_rows):
            self.flush()
        elif len(self._agent_rows) >= CONVERT_ROWS or len(self._unit_rows) >= CONVERT_ROWS:
            self._convert()

    def _add_agent_steps(self, number: int, agent_steps: list[dict[str, Any]]) -> None:
        agent_rows, unit_rows, summaries = self._agent_rows, self._unit_rows, self._agents
        observations = self._observations
        for position, row in enumerate(agent_steps):
            agent = row["agent"]
            row["step"] = number
            total = _scored(row)
            agent_rows.append(row)
            observation = row.pop("observation")
            observations.append(observation)
            self._pending_values += len(observation)
            self.total_reward += total
            summary = summaries.get(agent)
            if summary is None:
                summary = summaries[agent] = _AgentSummary(number, position)
            summary.add(number, position, total, row)
            units = row.get("unit_steps")
            if units:
                names = summary.units
                for unit_row in units:
                    unit_row["step"] = number
                    unit_row["agent"] = agent
                    _scored(unit_row)
                    names.add(unit_row["unit"])
                unit_rows.extend(units)
                summary.unit_steps += len(units)
                self.unit_steps += len(units)
                self._batch_unit_rows += len(units)
        self.agent_steps += len(agent_steps)
        self._batch_agent_rows += len(agent_steps)

    def _convert(self) -> None:
        """Turn the pending agent and unit rows into record batches, freeing their Python objects."""
        if self._agent_rows:
            self._converted["agent_steps"].append(rows_to_batch(
                self._agent_rows, AGENT_STEPS, {"observation": self._observations.array()}))
        if self._unit_rows:
            self._converted["unit_steps"].append(rows_to_batch(self._unit_rows, UNIT_STEPS))
        self._new_rows()

    def flush(self) -> None:
        """Hand every non-empty pending batch to the sink."""
        self._convert()
        if self._step_numbers:
            self._sink("steps", pa.RecordBatch.from_arrays(
                [pa.array(self._step_numbers, I64), pa.array(self._step_indexes, I64),
                 pa.array(self._images, pa.binary())],
                schema=STEPS,
            ))
        for table, pieces in self._converted.items():
            if pieces:
                self._sink(table, pieces[0] if len(pieces) == 1 else pa.Table.from_batches(pieces))
        self._new_batches()

    def episode_agents(self) -> pa.Table:
        """One row per agent, in order of appearance (first step, then as that step lists them)."""
        ordered = sorted(self._agents.items(), key=lambda item: (item[1].first_step, item[1].position))
        rows = [summary.row(agent) for agent, summary in ordered]
        # rows_to_batch, not Table.from_pylist: 0.055 ms against 0.3 ms a call (measured), which
        # counts for the thousands of small episodes a batch run tabulates per second.
        return pa.Table.from_batches([rows_to_batch(rows, EPISODE_AGENTS)])

    @property
    def agents(self) -> int:
        return len(self._agents)


def episode_table(header: dict[str, Any], tables: EpisodeTables, **facts: Any) -> pa.Table:
    """The one-row ``episodes`` table from the header values, counts and ingest facts.

    ``header`` maps each header part to its value, plus ``<part>_json`` texts made by the rules
    stage for the JSON-valued ones (``training.config_json``, ``inference.config_json``,
    ``action_mapping_json``).
    """
    training = header["training"]
    row = {
        **facts,
        "algorithm": training["algorithm"],
        "training_parallel": bool(training.get("parallel") or False),
        "num_gpus": float(training.get("num_gpus") or 0.0),
        "iterations": int(training["iterations"]),  # 10.0 is an integer to JSON Schema
        "training_config": header["training.config_json"],
        "reward_mapping": training.get("reward_mapping"),
        "inference_parallel": bool(header.get("inference.parallel") or False),
        "inference_config": header.get("inference.config_json") or "{}",
        "action_mapping": header.get("action_mapping_json"),
        "length": tables.steps,
        "agent_steps": tables.agent_steps,
        "unit_steps": tables.unit_steps,
        "agents": tables.agents,
        "images": tables.images,
        "first_step": tables.first_step,
        "last_step": tables.last_step,
        "total_reward": tables.total_reward,
    }
    return pa.Table.from_batches([rows_to_batch([row], EPISODES)])

