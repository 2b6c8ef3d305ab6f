"""Shared helpers: build valid episodes, write them, and snapshot a lake byte for byte."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image


def png_bytes(width: int = 4, height: int = 3, color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()


def agent_step(agent: str = "p0", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"agent": agent, "action": 1, "reward": 0.5, "observation_space": [0.0, 1.0, 2.0]}
    row.update(fields)
    return row


def episode(steps: int = 3, **training: Any) -> dict[str, Any]:
    """A minimal valid episode with ``steps`` single-agent steps and scalar rewards."""
    return {
        "training": {"environment": "CartPole-v1", "algorithm": "PPO", "iterations": 10, **training},
        "inference": {
            "steps": [{"number": i, "agent_steps": [agent_step(reward=float(i))]} for i in range(steps)]
        },
    }


def full_episode() -> dict[str, Any]:
    """A valid episode with every optional field: units, 2-D observations, images, vector rewards."""
    return {
        "action_mapping": {"0": "noop", "1": "fire", "-1": "unknown", "unit_mapping": {"0": "hold", "1": "move"}},
        "training": {
            "environment": "StarCraft/2m_vs_1z",
            "algorithm": "QMIX",
            "parallel": True,
            "num_gpus": 0.5,
            "iterations": 3,
            "config": {"lr": 0.0005, "layers": [64, 64], "nested": {"a": None, "b": True, "c": "x"}},
            "reward_mapping": ["damage", "kills"],
        },
        "inference": {
            "parallel": False,
            "config": {"seed": 7},
            "steps": [
                {
                    "number": 0,
                    "image": PNG_B64,
                    "agent_steps": [
                        {
                            "agent": "team_red",
                            "action": 1,
                            "rewards": [1.5, 0],
                            "observation_space": [[0.1, 0.2, 0.3], [1, 2, 3]],
                            "action_distribution": [0.25, 0.75],
                            "health": 90,
                            "value_estimate": 1.25,
                            "predicted_reward": 0.5,
                            "enemy_agent_health": [100, 50.5],
                            "enemy_unit_health": [10, 20, 30],
                            "custom_metrics": {"Loss": {"x": [0, 1], "y": [0.5, 0.25], "x_label": "t"}},
                            "unit_steps": [
                                {"unit": "marine_1", "action": 0, "rewards": [0.5, 0], "health": 45,
                                 "value_estimate": 0.1, "predicted_reward": 0.2, "action_distribution": [1.0],
                                 "custom_metrics": {"Speed": {"y": [3]}}},
                                {"unit": "marine_2", "action": -1, "rewards": [1, 1]},
                            ],
                        },
                        {"agent": "team_blue", "action": 0, "rewards": [-1, 0], "observation_space": [[0, 0, 0], [0, 0, 0]]},
                    ],
                },
                {"number": 1, "image": None, "agent_steps": None},
                {
                    "number": 2,
                    "agent_steps": [
                        {"agent": "team_red", "action": 0, "rewards": [2.25, 1], "observation_space": [[4, 5, 6], [7, 8, 9]],
                         "health": 80, "value_estimate": 0.75, "unit_steps": []},
                    ],
                },
            ],
        },
    }


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def lake_snapshot(lake: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under the lake, for byte-for-byte comparisons.

    Lock files (``_locks/``: empty, created on first use, never removed) are left out.
    """
    if not lake.exists():
        return {}
    return {
        str(p.relative_to(lake)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(lake.rglob("*")) if p.relative_to(lake).parts[0] != "_locks"
    }


def staging_leftovers(lake: Path) -> list[str]:
    staging = lake / "_staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def mutate(document: dict[str, Any], path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """A deep copy of ``document`` with the value at a dotted path (``a.b.0.c``) replaced, appended or deleted."""
    doc = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key: Any = int(last) if isinstance(node, list) else last
    if delete:
        del node[key]
    elif isinstance(node, list) and key == len(node):
        node.append(value)
    else:
        node[key] = value
    return doc
