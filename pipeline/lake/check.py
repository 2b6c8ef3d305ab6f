"""``check``: verify that every committed episode of a lake is whole and self-consistent.

Nothing that ``run`` writes may ever fail these checks; a problem means the lake was damaged
from outside (a disk error, a hand edit, a copy interrupted half-way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .layout import (
    ENVIRONMENT_PREFIX,
    EPISODE_PREFIX,
    GENERATION,
    SEGMENT_PREFIX,
    EpisodeLocation,
    list_episodes,
    resolve_lake,
)
from .segments import check_segment
from .tables import SCHEMAS, TABLES

# What the episodes row says each table holds.
_COUNTS = {"steps": "length", "agent_steps": "agent_steps", "unit_steps": "unit_steps", "episode_agents": "agents"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the lake: where, and what."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckReport:
    episodes: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(lake: str | os.PathLike[str] | None = None, *, deep: bool = False) -> CheckReport:
    """Check every committed episode: tables present and readable, schemas and row counts right.

    With ``deep=True`` also read the key columns: step numbers unique, every agent step's step in
    ``steps``, every unit step's (step, agent) in ``agent_steps``, agents matching ``episode_agents``.
    """
    root = resolve_lake(lake)
    problems = _stray_entries(root)
    locations = list_episodes(root)
    for location in locations:
        if not location.segment:
            problems.extend(_check_episode(location, deep))
    problems.extend(_check_segments(locations, deep))
    return CheckReport(len(locations), problems)


def _check_segments(locations: list[EpisodeLocation], deep: bool) -> list[Problem]:
    """Each segment whole (:func:`pipeline.lake.segments.check_segment`); each episode in one place."""
    problems = [Problem(path, message) for folder in dict.fromkeys(loc.path for loc in locations if loc.segment)
                for path, message in check_segment(folder, deep)]
    seen: dict[str, EpisodeLocation] = {}
    for location in locations:
        if location.episode_id in seen:
            problems.append(Problem(location.path, f"episode {location.episode_id} is also in "
                                                   f"{seen[location.episode_id].path}"))
        seen[location.episode_id] = location
    return problems


def _stray_entries(lake: Path) -> list[Problem]:
    problems = []
    if not lake.is_dir():
        return [Problem(lake, "is not a lake folder (it does not exist)")]
    for entry in lake.iterdir():
        if entry.name.startswith(("_", ".")):
            continue  # _staging and other bookkeeping; readers skip these
        if not entry.name.startswith(ENVIRONMENT_PREFIX) or not entry.is_dir():
            problems.append(Problem(entry, "unexpected entry at the top of the lake"))
            continue
        for child in entry.iterdir():
            if child.name == GENERATION:
                continue
            if not child.name.startswith((EPISODE_PREFIX, SEGMENT_PREFIX)) or not child.is_dir():
                problems.append(Problem(child, "unexpected entry in an environment folder"))
    return problems


def _check_episode(location: EpisodeLocation, deep: bool) -> list[Problem]:
    problems: list[Problem] = []
    files: dict[str, pq.ParquetFile] = {}
    expected = {f"{t}.parquet" for t in TABLES}
    for entry in location.path.iterdir():
        if entry.name not in expected:
            problems.append(Problem(entry, "unexpected file in an episode folder"))
    for table in TABLES:
        path = location.table(table)
        if not path.exists():
            problems.append(Problem(path, "missing table"))
            continue
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            problems.append(Problem(path, f"cannot be read as Parquet: {exc}"))
            continue
        if not parquet.schema_arrow.equals(SCHEMAS[table]):
            problems.append(Problem(path, "schema differs from the table's declared schema"))
            continue
        files[table] = parquet
    if "episodes" not in files:
        return problems
    if files["episodes"].metadata.num_rows != 1:
        return [*problems, Problem(location.table("episodes"), "must hold exactly one row")]
    counts = files["episodes"].read(columns=list(_COUNTS.values())).to_pylist()[0]
    for table, column in _COUNTS.items():
        if table in files and files[table].metadata.num_rows != counts[column]:
            problems.append(Problem(
                location.table(table),
                f"holds {files[table].metadata.num_rows} rows but the episode records {column}={counts[column]}",
            ))
    if deep and not problems:
        problems.extend(_check_keys(location, files))
    return problems


def _check_keys(location: EpisodeLocation, files: dict[str, pq.ParquetFile]) -> list[Problem]:
    problems = []
    steps = files["steps"].read(columns=["step"]).column("step")
    if pc.count_distinct(steps).as_py() != len(steps):
        problems.append(Problem(location.table("steps"), "step numbers are not unique"))
    agent_steps = files["agent_steps"].read(columns=["step", "agent"])
    if not pc.all(pc.is_in(agent_steps.column("step"), value_set=steps)).as_py() and len(agent_steps):
        problems.append(Problem(location.table("agent_steps"), "has steps that are not in steps.parquet"))
    agent_keys = _keys(agent_steps, ["step", "agent"])
    if len(set(agent_keys)) != len(agent_keys):
        problems.append(Problem(location.table("agent_steps"), "an agent appears twice in one step"))
    unit_steps = files["unit_steps"].read(columns=["step", "agent", "unit"])
    if not set(_keys(unit_steps, ["step", "agent"])) <= set(agent_keys):
        problems.append(Problem(location.table("unit_steps"), "has unit steps without their agent step"))
    unit_keys = _keys(unit_steps, ["step", "agent", "unit"])
    if len(set(unit_keys)) != len(unit_keys):
        problems.append(Problem(location.table("unit_steps"), "a unit appears twice in one agent step"))
    summary_agents = set(files["episode_agents"].read(columns=["agent"]).column("agent").to_pylist())
    if summary_agents != {agent for _, agent in agent_keys}:
        problems.append(Problem(location.table("episode_agents"), "agents differ from those in agent_steps"))
    return problems


def _keys(table: pa.Table, columns: list[str]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
