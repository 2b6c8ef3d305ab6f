"""The five tables: their Arrow schemas (declared once, here) and checked steps -> column batches.

Partition keys are not stored in the files: ``environment`` and ``episode_id`` come from the
lake path (``environment=<name>/episode_id=<id>/``), the same way for every table. The episode
id is the hash of the whole input, known only after its last byte, so a streamed step file
could not carry it anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa

F64 = pa.float64()
I64 = pa.int64()
LIST_F64 = pa.list_(F64)

STEPS = pa.schema(
    [
        pa.field("step", I64, nullable=False),
        pa.field("index", I64, nullable=False),  # position in the file's steps array
        pa.field("image", pa.binary()),
    ]
)

_SCORED = [
    pa.field("action", F64, nullable=False),
    pa.field("reward", F64),
    pa.field("rewards", LIST_F64),
    pa.field("total_reward", F64, nullable=False),  # reward, or the sum of rewards
]
_OPTIONAL_METRICS = [
    pa.field("action_distribution", LIST_F64),
    pa.field("health", F64),
    pa.field("value_estimate", F64),
    pa.field("predicted_reward", F64),
]

AGENT_STEPS = pa.schema(
    [
        pa.field("step", I64, nullable=False),
        pa.field("agent", pa.string(), nullable=False),
        *_SCORED,
        pa.field("observation", LIST_F64, nullable=False),
        pa.field("observation_shape", pa.list_(pa.int32()), nullable=False),
        *_OPTIONAL_METRICS,
        pa.field("enemy_agent_health", LIST_F64),
        pa.field("enemy_unit_health", LIST_F64),
        pa.field("custom_metrics", pa.string()),  # JSON text
    ]
)

UNIT_STEPS = pa.schema(
    [
        pa.field("step", I64, nullable=False),
        pa.field("agent", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        *_SCORED,
        *_OPTIONAL_METRICS,
        pa.field("custom_metrics", pa.string()),
    ]
)

EPISODE_AGENTS = pa.schema(
    [
        pa.field("agent", pa.string(), nullable=False),
        pa.field("length", I64, nullable=False),  # number of this agent's steps
        pa.field("first_step", I64, nullable=False),
        pa.field("last_step", I64, nullable=False),
        pa.field("total_reward", F64, nullable=False),
        pa.field("reward_totals", LIST_F64),  # per reward component, when rewards were vectors
        pa.field("mean_reward", F64, nullable=False),
        pa.field("min_reward", F64, nullable=False),
        pa.field("max_reward", F64, nullable=False),
        pa.field("last_health", F64),
        pa.field("mean_value_estimate", F64),
        pa.field("unit_steps", I64, nullable=False),
        pa.field("units", pa.int32(), nullable=False),
    ]
)

EPISODES = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),  # sha256 of the decompressed input
        pa.field("source_bytes", I64, nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("algorithm", pa.string(), nullable=False),
        pa.field("training_parallel", pa.bool_(), nullable=False),
        pa.field("num_gpus", F64, nullable=False),
        pa.field("iterations", I64, nullable=False),
        pa.field("training_config", pa.string(), nullable=False),  # JSON text
        pa.field("reward_mapping", pa.list_(pa.string())),
        pa.field("inference_parallel", pa.bool_(), nullable=False),
        pa.field("inference_config", pa.string(), nullable=False),  # JSON text
        pa.field("action_mapping", pa.string()),  # JSON text, with unit_mapping inside when given
        pa.field("length", I64, nullable=False),  # number of steps
        pa.field("agent_steps", I64, nullable=False),
        pa.field("unit_steps", I64, nullable=False),
        pa.field("agents", pa.int32(), nullable=False),
        pa.field("images", I64, nullable=False),
        pa.field("first_step", I64, nullable=False),
        pa.field("last_step", I64, nullable=False),
        pa.field("total_reward", F64, nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "episodes": EPISODES,
    "episode_agents": EPISODE_AGENTS,
    "steps": STEPS,
    "agent_steps": AGENT_STEPS,
    "unit_steps": UNIT_STEPS,
}
STREAMED = ("steps", "agent_steps", "unit_steps")

# A batch is flushed when it holds this many rows, or this many numbers/bytes in its lists and
# binaries (Python objects cost ~4x their Arrow size, so this bounds memory to tens of MB).
BATCH_ROWS = 65_536
BATCH_VALUES = 1_000_000


def json_text(value: Any) -> str | None:
    """Lossless JSON text of a config or custom-metrics value (key order and numbers kept)."""
    return None if value is None else orjson.dumps(value).decode()


def floats(values: list[Any]) -> pa.Array:
    """float64 array from Python numbers and None; integers beyond 2^53 are rounded, not refused."""
    try:
        return pa.array(values, F64)
    except (pa.ArrowInvalid, OverflowError):
        return pa.array([None if v is None else float(v) for v in values], F64)


class _Lists:
    """A list<float64> column built from flat values and offsets (no per-row Python lists)."""

    __slots__ = ("values", "offsets", "nulls", "has_null")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.offsets = [0]
        self.nulls: list[bool] = []
        self.has_null = False

    def append(self, seq: list[Any] | None) -> None:
        if seq is None:
            self.has_null = True
            self.nulls.append(True)
        else:
            self.values.extend(seq)
            self.nulls.append(False)
        self.offsets.append(len(self.values))

    def array(self) -> pa.Array:
        mask = pa.array(self.nulls, pa.bool_()) if self.has_null else None
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), floats(self.values), mask=mask)


class _AgentSummary:
    __slots__ = ("length", "first_step", "last_step", "total", "totals", "min", "max",
                 "health", "health_step", "value_sum", "value_count", "unit_steps", "units")

    def __init__(self, step: int) -> None:
        self.length = 0
        self.first_step = step
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


class _ScoredColumns:
    """Columns shared by agent and unit steps (action, rewards and optional metrics)."""

    def __init__(self) -> None:
        self.step: list[int] = []
        self.agent: list[str] = []
        self.action: list[Any] = []
        self.reward: list[Any] = []
        self.rewards = _Lists()
        self.total_reward: list[float] = []
        self.action_distribution = _Lists()
        self.health: list[Any] = []
        self.value_estimate: list[Any] = []
        self.predicted_reward: list[Any] = []
        self.custom_metrics: list[str | None] = []

    def add(self, number: int, agent: str, row: dict[str, Any]) -> float:
        """Append one agent or unit step; return its total reward."""
        self.step.append(number)
        self.agent.append(agent)
        self.action.append(row["action"])
        rewards = row.get("rewards")
        if rewards is None:
            total = row["reward"]
            self.reward.append(total)
            self.rewards.append(None)
        else:
            total = sum(rewards)
            self.reward.append(None)
            self.rewards.append(rewards)
        self.total_reward.append(total)
        get = row.get
        self.action_distribution.append(get("action_distribution"))
        self.health.append(get("health"))
        self.value_estimate.append(get("value_estimate"))
        self.predicted_reward.append(get("predicted_reward"))
        metrics = get("custom_metrics")
        self.custom_metrics.append(None if metrics is None else orjson.dumps(metrics).decode())
        return total

    def scored_arrays(self) -> list[pa.Array]:
        return [floats(self.action), floats(self.reward), self.rewards.array(), floats(self.total_reward)]

    def metric_arrays(self) -> list[pa.Array]:
        return [self.action_distribution.array(), floats(self.health),
                floats(self.value_estimate), floats(self.predicted_reward)]


class _AgentStepColumns(_ScoredColumns):
    def __init__(self) -> None:
        super().__init__()
        self.observation = _Lists()
        self.observation_shape: list[list[int]] = []
        self.enemy_agent_health = _Lists()
        self.enemy_unit_health = _Lists()

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.step, I64), pa.array(self.agent, pa.string()),
                *self.scored_arrays(),
                self.observation.array(), pa.array(self.observation_shape, pa.list_(pa.int32())),
                *self.metric_arrays(),
                self.enemy_agent_health.array(), self.enemy_unit_health.array(),
                pa.array(self.custom_metrics, pa.string()),
            ],
            schema=AGENT_STEPS,
        )


class _UnitStepColumns(_ScoredColumns):
    def __init__(self) -> None:
        super().__init__()
        self.unit: list[str] = []

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.step, I64), pa.array(self.agent, pa.string()), pa.array(self.unit, pa.string()),
                *self.scored_arrays(), *self.metric_arrays(),
                pa.array(self.custom_metrics, pa.string()),
            ],
            schema=UNIT_STEPS,
        )


class _StepColumns:
    def __init__(self) -> None:
        self.step: list[int] = []
        self.index: list[int] = []
        self.image: list[bytes | None] = []

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [pa.array(self.step, I64), pa.array(self.index, I64), pa.array(self.image, pa.binary())],
            schema=STEPS,
        )


class EpisodeTables:
    """Collects checked steps into column batches and hands full batches to ``sink``.

    ``sink(table_name, record_batch)`` is called whenever a batch is full and by :meth:`flush`.
    Per-agent summaries and episode counts are accumulated on the way, for the two small tables.
    """

    def __init__(self, sink: Callable[[str, pa.RecordBatch], None], *,
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
        self._step_cols = _StepColumns()
        self._agent_cols = _AgentStepColumns()
        self._unit_cols = _UnitStepColumns()
        self._pending_values = 0

    def add_step(self, step: dict[str, Any], index: int) -> None:
        """Add one checked, normalised step (see :meth:`pipeline.rules.EpisodeChecker.check_step`)."""
        number = step["number"]
        image = step.get("image")
        cols = self._step_cols
        cols.step.append(number)
        cols.index.append(index)
        cols.image.append(image)
        if image is not None:
            self.images += 1
            self._pending_values += len(image) >> 3
        self.steps += 1
        if self.first_step is None or number < self.first_step:
            self.first_step = number
        if self.last_step is None or number > self.last_step:
            self.last_step = number
        for agent_step in step.get("agent_steps") or ():
            self._add_agent_step(number, agent_step)
        if len(cols.step) >= self._batch_rows or self._pending_values >= self._batch_values \
                or len(self._agent_cols.step) >= self._batch_rows or len(self._unit_cols.step) >= self._batch_rows:
            self.flush()

    def _add_agent_step(self, number: int, row: dict[str, Any]) -> None:
        agent = row["agent"]
        cols = self._agent_cols
        total = cols.add(number, agent, row)
        obs = row["observation_space"]
        cols.observation.append(obs)
        cols.observation_shape.append(row["observation_shape"])
        cols.enemy_agent_health.append(row.get("enemy_agent_health"))
        cols.enemy_unit_health.append(row.get("enemy_unit_health"))
        self._pending_values += len(obs)
        self.agent_steps += 1
        self.total_reward += total

        summary = self._agents.get(agent)
        if summary is None:
            summary = self._agents[agent] = _AgentSummary(number)
        _summarise(summary, number, total, row)
        units = row.get("unit_steps")
        if units:
            unit_cols = self._unit_cols
            for unit_step in units:
                unit_cols.add(number, agent, unit_step)
                unit_cols.unit.append(unit_step["unit"])
                summary.units.add(unit_step["unit"])
            summary.unit_steps += len(units)
            self.unit_steps += len(units)

    def flush(self) -> None:
        """Hand every non-empty pending batch to the sink."""
        for name, cols in (("steps", self._step_cols), ("agent_steps", self._agent_cols),
                           ("unit_steps", self._unit_cols)):
            if cols.step:
                self._sink(name, cols.batch())
        self._new_batches()

    def episode_agents(self) -> pa.Table:
        """One row per agent: length, reward totals and the other summary figures."""
        rows = []
        for agent, s in self._agents.items():
            rows.append({
                "agent": agent, "length": s.length, "first_step": s.first_step, "last_step": s.last_step,
                "total_reward": s.total, "reward_totals": s.totals,
                "mean_reward": s.total / s.length, "min_reward": s.min, "max_reward": s.max,
                "last_health": s.health,
                "mean_value_estimate": s.value_sum / s.value_count if s.value_count else None,
                "unit_steps": s.unit_steps, "units": len(s.units),
            })
        return pa.Table.from_pylist(rows, schema=EPISODE_AGENTS)

    @property
    def agents(self) -> int:
        return len(self._agents)


def _summarise(s: _AgentSummary, number: int, total: Any, row: dict[str, Any]) -> None:
    s.length += 1
    if number < s.first_step:
        s.first_step = number
    if number > s.last_step:
        s.last_step = number
    s.total += total
    if total < s.min:
        s.min = total
    if total > s.max:
        s.max = total
    rewards = row.get("rewards")
    if rewards is not None:
        if s.totals is None:
            s.totals = [0.0] * len(rewards)
        for i, r in enumerate(rewards):
            s.totals[i] += r
    health = row.get("health")
    if health is not None and number >= s.health_step:
        s.health, s.health_step = health, number
    value = row.get("value_estimate")
    if value is not None:
        s.value_sum += value
        s.value_count += 1


def episode_table(header: dict[str, Any], tables: EpisodeTables, **facts: Any) -> pa.Table:
    """The one-row ``episodes`` table from the header values, counts and ingest facts."""
    training = header["training"]
    row = {
        **facts,
        "algorithm": training["algorithm"],
        "training_parallel": bool(training.get("parallel") or False),
        "num_gpus": float(training.get("num_gpus") or 0.0),
        "iterations": training["iterations"],
        "training_config": json_text(training.get("config") or {}),
        "reward_mapping": training.get("reward_mapping"),
        "inference_parallel": bool(header.get("inference.parallel") or False),
        "inference_config": json_text(header.get("inference.config") or {}),
        "action_mapping": json_text(header.get("action_mapping")),
        "length": tables.steps,
        "agent_steps": tables.agent_steps,
        "unit_steps": tables.unit_steps,
        "agents": tables.agents,
        "images": tables.images,
        "first_step": tables.first_step,
        "last_step": tables.last_step,
        "total_reward": tables.total_reward,
    }
    return pa.Table.from_pylist([row], schema=EPISODES)

