"""A small lake of hand-made episodes for the dataset-engine tests, and figures computed from their JSON.

The expected figures are computed here straight from the source documents, with plain Python, so
that the tests compare the lake against the files rather than against the ingest code.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline import ingest
from tests.helpers import agent_step, episode, full_episode, write_json

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lunar_lander.json"


def gray_png(value: int, size: tuple[int, int] = (2, 2)) -> str:
    """A base64 PNG whose every pixel is the gray level ``value`` (width, height = ``size``)."""
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def frames_episode() -> dict[str, Any]:
    """Six steps, rewards 1..6, step i shows a 2x2 frame of gray level 10 * (i + 1)."""
    return {
        "training": {"environment": "Frames-v0", "algorithm": "DQN", "iterations": 1},
        "inference": {"steps": [
            {"number": i, "image": gray_png(10 * (i + 1)),
             "agent_steps": [agent_step(action=i % 2, reward=float(i + 1), observation_space=[float(i), -float(i)])]}
            for i in range(6)
        ]},
    }


def multi_agent_episode() -> dict[str, Any]:
    """Two agents with scalar rewards; "zeta" acts from step 0, "alpha" only from step 1."""
    steps = []
    for i in range(4):
        agents = [agent_step("zeta", action=i % 3, reward=0.25 * i, observation_space=[i, i + 0.5],
                             health=100 - i, value_estimate=float(i))]
        if i >= 1:
            agents.append(agent_step("alpha", action=2, reward=-1.5, observation_space=[0.0, 1.0]))
        steps.append({"number": i, "agent_steps": agents})
    return {
        "action_mapping": {"0": "left", "1": "right", "2": "fire"},
        "training": {"environment": "Duel-v1", "algorithm": "MAPPO", "iterations": 5},
        "inference": {"steps": steps},
    }


def documents() -> dict[str, dict[str, Any]]:
    """Every episode of the test lake, by a short name."""
    return {
        "lander": json.loads(EXAMPLE.read_text()),
        "full": full_episode(),
        "cart": episode(steps=4),
        "numeric": episode(steps=2, environment="123"),
        "multi": multi_agent_episode(),
        "frames": frames_episode(),
    }


def build_lake(root: Path, names: list[str] | None = None) -> dict[str, str]:
    """Ingest the named documents (default: all) into ``root/lake``; return name -> episode id."""
    ids = {}
    sources = root / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    for name, document in documents().items():
        if names is not None and name not in names:
            continue
        result = ingest(write_json(sources / f"{name}.json", document), lake=root / "lake")
        assert result.status == "ingested", result.error
        ids[name] = result.episode_id
    return ids


def copy_lake(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def total(row: dict[str, Any]) -> float:
    """A step's total reward as the format defines it: ``reward``, or the sum of ``rewards``."""
    return row["reward"] if "reward" in row else sum(row["rewards"])


def agent_rows(document: dict[str, Any], agent: str) -> list[tuple[int, dict[str, Any]]]:
    """(step number, agent step) for one agent, in step order."""
    found = [(step["number"], row) for step in document["inference"]["steps"]
             for row in step.get("agent_steps") or () if row["agent"] == agent]
    return sorted(found, key=lambda item: item[0])


def expected_agents(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-agent summary figures computed from the source document."""
    names = {row["agent"] for step in document["inference"]["steps"] for row in step.get("agent_steps") or ()}
    figures = {}
    for agent in names:
        rows = agent_rows(document, agent)
        totals = [total(row) for _, row in rows]
        vectors = [row["rewards"] for _, row in rows if "rewards" in row]
        health = [(n, row["health"]) for n, row in rows if row.get("health") is not None]
        values = [row["value_estimate"] for _, row in rows if row.get("value_estimate") is not None]
        units = [unit for _, row in rows for unit in row.get("unit_steps") or ()]
        figures[agent] = {
            "length": len(rows),
            "first_step": rows[0][0],
            "last_step": rows[-1][0],
            "total_reward": sum(totals),
            "reward_totals": [sum(column) for column in zip(*vectors, strict=True)] if vectors else None,
            "mean_reward": sum(totals) / len(totals),
            "min_reward": min(totals),
            "max_reward": max(totals),
            "last_health": max(health)[1] if health else None,
            "mean_value_estimate": sum(values) / len(values) if values else None,
            "unit_steps": len(units),
            "units": len({unit["unit"] for unit in units}),
        }
    return figures


def expected_episode(document: dict[str, Any]) -> dict[str, Any]:
    """Episode-level figures computed from the source document."""
    steps = document["inference"]["steps"]
    agent_steps = [row for step in steps for row in step.get("agent_steps") or ()]
    return {
        "length": len(steps),
        "agent_steps": len(agent_steps),
        "unit_steps": sum(len(row.get("unit_steps") or ()) for row in agent_steps),
        "agents": len({row["agent"] for row in agent_steps}),
        "images": sum(1 for step in steps if step.get("image")),
        "first_step": min(step["number"] for step in steps),
        "last_step": max(step["number"] for step in steps),
        "total_reward": sum(total(row) for row in agent_steps),
        "algorithm": document["training"]["algorithm"],
        "reward_mapping": document["training"].get("reward_mapping"),
    }
