"""The summary tables of an episode: ``episode_agents`` (one row per agent) and ``episodes`` (one row).

:class:`AgentSummary` keeps an agent's running figures while :mod:`.tabulate` adds its steps, summed
in file order as a reader of the JSON would; :func:`episode_row` makes the episode's row from the
header values, the step tables' counts and the ingest's facts.
"""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import TYPE_CHECKING, Any

from .columns import Piece

if TYPE_CHECKING:
    import pyarrow as pa

    from .tabulate import EpisodeTables


class AgentSummary:
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

    def add_rows(self, numbers: list[int], positions: list[int], totals: list[Any], rows: list[dict[str, Any]]) -> None:
        """:meth:`add` of each row in turn, for rows whose step numbers increase past every one seen."""
        self.length += len(numbers)
        if numbers[0] < self.first_step:
            self.first_step, self.position = numbers[0], positions[0]
        if numbers[-1] > self.last_step:
            self.last_step = numbers[-1]
        self.total = reduce(add, totals, self.total)  # in order, as += does (sum() may compensate)
        low, high = min(totals), max(totals)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        rewards = [row.get("rewards") for row in rows]
        if rewards.count(None) != len(rewards):
            vectors = [r for r in rewards if r is not None]
            totals_ = self.totals
            if totals_ is None:
                totals_ = self.totals = [0.0] * len(vectors[0])
            # Vectors of unequal length never reach a written episode (reward.length refuses it).
            for i, column in enumerate(zip(*vectors, strict=False)):
                totals_[i] = reduce(add, column, totals_[i])
        health = [row.get("health") for row in rows]
        for i in range(len(health) - 1, -1, -1):
            if health[i] is not None:
                if numbers[i] >= self.health_step:
                    self.health, self.health_step = health[i], numbers[i]
                break
        values = [row.get("value_estimate") for row in rows]
        present = len(values) - values.count(None)
        if present:
            self.value_sum = reduce(add, (v for v in values if v is not None), self.value_sum)
            self.value_count += present

    def row(self, agent: str) -> dict[str, Any]:
        return {
            "agent": agent, "length": self.length, "first_step": self.first_step, "last_step": self.last_step,
            "total_reward": self.total, "reward_totals": self.totals,
            "mean_reward": self.total / self.length, "min_reward": self.min, "max_reward": self.max,
            "last_health": self.health,
            "mean_value_estimate": self.value_sum / self.value_count if self.value_count else None,
            "unit_steps": self.unit_steps, "units": len(self.units),
        }


def row_total(row: dict[str, Any]) -> Any:
    """A row's total reward: ``reward``, or the sum of ``rewards``."""
    rewards = row.get("rewards")
    return row["reward"] if rewards is None else sum(rewards)


def row_totals(rows: list[dict[str, Any]]) -> list[Any]:
    """:func:`row_total` of each row."""
    rewards: list[Any] = [row.get("rewards") for row in rows]
    absent = rewards.count(None)
    if absent == len(rows):
        return [row["reward"] for row in rows]
    if not absent:
        return list(map(sum, rewards))
    return [row["reward"] if r is None else sum(r) for row, r in zip(rows, rewards, strict=True)]


def episode_row(header: dict[str, Any], tables: EpisodeTables, **facts: Any) -> Piece:
    """The one ``episodes`` row from the header values, counts and ingest facts.

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
    return Piece(1, [row])


def episode_table(header: dict[str, Any], tables: EpisodeTables, **facts: Any) -> pa.Table:
    """:func:`episode_row` as a one-row Arrow table."""
    import pyarrow as pa

    from .arrowrows import to_batch

    return pa.Table.from_batches([to_batch("episodes", episode_row(header, tables, **facts))])

