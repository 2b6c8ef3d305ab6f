"""Labels: the names an episode gives its actions, unit actions and reward components, as tables.

Each episode's ``action_mapping`` (with its ``unit_mapping`` inside) and ``reward_mapping`` become the
label tables ``action_labels``, ``unit_action_labels`` (episode_id, action, action_label) and
``reward_labels`` (episode_id, component, reward_name) that :class:`pipeline.Lake` joins and registers
for SQL.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl

ACTION_LABELS = {"episode_id": pl.String, "action": pl.Float64, "action_label": pl.String}
REWARD_LABELS = {"episode_id": pl.String, "component": pl.Int64, "reward_name": pl.String}


def mappings(action_mapping: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """An episode's ``action_mapping`` JSON text as (action labels, unit action labels), keys as written."""
    mapping: dict[str, Any] = orjson.loads(action_mapping) if action_mapping else {}
    unit_mapping = mapping.pop("unit_mapping", None) or {}
    return mapping, unit_mapping


def sorted_labels(mapping: dict[str, str]) -> dict[int, str]:
    """A mapping's labels by integer action, in order."""
    return {int(key): label for key, label in sorted(mapping.items(), key=lambda item: int(item[0]))}


def label_tables(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The action, unit action and reward label tables of ``rows`` (episode_id, action_mapping, reward_mapping)."""
    actions: list[tuple[str, float, str]] = []
    unit_actions: list[tuple[str, float, str]] = []
    rewards: list[tuple[str, int, str]] = []
    for episode_id, mapping_text, reward_mapping in rows.iter_rows():
        mapping, unit_mapping = mappings(mapping_text)
        actions.extend((episode_id, float(key), label) for key, label in mapping.items())
        unit_actions.extend((episode_id, float(key), label) for key, label in unit_mapping.items())
        rewards.extend((episode_id, i, name) for i, name in enumerate(reward_mapping or ()))
    return (
        pl.DataFrame(actions, schema=ACTION_LABELS, orient="row"),
        pl.DataFrame(unit_actions, schema=ACTION_LABELS, orient="row"),
        pl.DataFrame(rewards, schema=REWARD_LABELS, orient="row"),
    )
