"""The five tables of the lake: each one's Arrow schema, declared once, here.

This is the only list of tables. Every episode writes every column (nullable where optional), so
all episodes read as one table. ``environment`` and ``episode_id`` are not columns of these
schemas: they are Hive partition keys, taken from the lake path (see :mod:`pipeline.lake.layout`).
"""

from __future__ import annotations

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

TABLES: tuple[str, ...] = tuple(SCHEMAS)
