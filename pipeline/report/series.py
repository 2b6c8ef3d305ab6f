"""One episode's data as the report draws it: header facts, and per agent and unit, numpy series.

Everything is read through the engine's tables (``Lake.describe``, ``Lake.agent_steps``,
``Lake.unit_steps``), filtered by ``episode_id`` so only that episode's files are opened. Optional
per-step values come back as float arrays with NaN where a step did not give them; list values
(action distributions, enemy health) as ``[T, width]`` matrices padded with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

if TYPE_CHECKING:
    from ..query import Lake

_COMMON = ["step", "agent", "action", "rewards", "total_reward", "action_distribution", "health",
           "value_estimate", "predicted_reward", "custom_metrics"]
_AGENT_ONLY = ["enemy_agent_health", "enemy_unit_health"]
DEFAULT_GAMMA = 0.99


@dataclass
class Subject:
    """One agent's (or one unit's) steps in step order; every array has one entry per step."""

    agent: str
    unit: str | None
    steps: np.ndarray
    rewards: np.ndarray
    actions: np.ndarray
    components: np.ndarray | None = None
    action_distribution: np.ndarray | None = None
    health: np.ndarray | None = None
    value_estimate: np.ndarray | None = None
    predicted_reward: np.ndarray | None = None
    enemy_agent_health: np.ndarray | None = None
    enemy_unit_health: np.ndarray | None = None
    custom_metrics: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.agent if self.unit is None else f"{self.agent} / {self.unit}"

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class EpisodeData:
    """An episode's metadata (the row of ``episodes`` and of ``episode_agents``) and its subjects."""

    info: dict[str, Any]                   # Lake.describe(): episode, agents, actions, unit_actions, reward_names
    agents: list[Subject]
    units: dict[str, list[Subject]]       # agent -> its units, by first appearance
    gamma: float
    gamma_source: str

    @property
    def episode(self) -> dict[str, Any]:
        return self.info["episode"]

    @property
    def episode_id(self) -> str:
        return str(self.episode["episode_id"])


def load_episode(lake: Lake, episode_id: str, *, gamma: float | None = None) -> EpisodeData:
    """Read everything the report of one episode draws (``episode_id`` may be a unique prefix)."""
    info = lake.describe(episode_id)
    full_id = info["episode"]["episode_id"]
    only = pl.col("episode_id") == full_id
    agent_frame = (lake.agent_steps(episodes=full_id).filter(only)
                   .select(*_COMMON, *_AGENT_ONLY).collect())
    order = [row["agent"] for row in info["agents"]]
    agents = [_subject(part, agent, None) for agent, part in _split(agent_frame, ["agent"], order)]
    units: dict[str, list[Subject]] = {}
    if info["episode"]["unit_steps"]:
        unit_frame = lake.unit_steps(episodes=full_id).filter(only).select(*_COMMON, "unit").collect()
        for (agent, unit), part in _split(unit_frame, ["agent", "unit"], None):
            units.setdefault(agent, []).append(_subject(part, agent, unit))
    chosen, source = _discount(info["episode"]["training_config"], gamma)
    return EpisodeData(info=info, agents=agents, units=units, gamma=chosen, gamma_source=source)


def _split(frame: pl.DataFrame, keys: list[str], order: list[str] | None) -> list[tuple[Any, pl.DataFrame]]:
    """``frame`` split by ``keys``; groups in ``order`` (agents) or by first appearance (units)."""
    parts = frame.partition_by(keys, maintain_order=True, as_dict=True)
    groups = [(key if len(keys) > 1 else key[0], part) for key, part in parts.items()]
    if order is not None:
        rank: dict[Any, int] = {name: i for i, name in enumerate(order)}
        groups.sort(key=lambda group: rank.get(group[0], len(rank)))
    else:
        groups.sort(key=lambda group: int(group[1]["step"].min()))  # type: ignore[arg-type]
    return groups


def _subject(frame: pl.DataFrame, agent: str, unit: str | None) -> Subject:
    frame = frame.sort("step", maintain_order=True)
    metrics = frame.filter(pl.col("custom_metrics").is_not_null()).select("step", "custom_metrics")
    return Subject(
        agent=agent,
        unit=unit,
        steps=frame["step"].to_numpy().astype(np.int64),
        rewards=_floats(frame["total_reward"]),
        actions=_floats(frame["action"]),
        components=_padded(frame["rewards"]),
        action_distribution=_padded(frame["action_distribution"]),
        health=_optional(frame["health"]),
        value_estimate=_optional(frame["value_estimate"]),
        predicted_reward=_optional(frame["predicted_reward"]),
        enemy_agent_health=_padded(frame["enemy_agent_health"]) if "enemy_agent_health" in frame else None,
        enemy_unit_health=_padded(frame["enemy_unit_health"]) if "enemy_unit_health" in frame else None,
        custom_metrics=[(step, orjson.loads(text)) for step, text in metrics.iter_rows()],
    )


def _floats(column: pl.Series) -> np.ndarray:
    return column.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64, copy=True)


def _optional(column: pl.Series) -> np.ndarray | None:
    """The column as floats with NaN for missing values, or None when no step gave one."""
    if column.null_count() == len(column):
        return None
    return _floats(column)


def _padded(column: pl.Series) -> np.ndarray | None:
    """A list column as a ``[T, widest]`` float matrix, NaN where a row is shorter or missing."""
    lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    if width == 0:
        return None
    array = column.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    starts = np.asarray(array.offsets)[:-1].astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False).astype(np.float64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    matrix = np.full((len(lengths), width), np.nan)
    matrix[rows, within] = values[np.repeat(starts, lengths) + within]
    return matrix


def _discount(training_config: str, gamma: float | None) -> tuple[float, str]:
    """The discount for the realised return: given, else the training config's ``gamma``, else 0.99."""
    if gamma is not None:
        return float(gamma), "given"
    try:
        config = orjson.loads(training_config) if training_config else {}
    except orjson.JSONDecodeError:
        config = {}
    value = config.get("gamma") if isinstance(config, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value), "training config"
    return DEFAULT_GAMMA, "default"


def discounted_return(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1}, over one subject's steps (missing rewards count as 0)."""
    returns = np.empty_like(rewards, dtype=np.float64)
    running = 0.0
    values = np.nan_to_num(rewards, nan=0.0).tolist()
    for i in range(len(values) - 1, -1, -1):
        running = values[i] + gamma * running
        returns[i] = running
    return returns
