"""``check``: verify that every committed episode of a lake is whole and self-consistent.

Nothing that ``run`` writes may ever fail these checks; a problem means the lake was damaged
from outside (a disk error, a hand edit, a copy interrupted half-way). The cheap check reads every
file's footer (so a file cut short or not Parquet at all is found); ``deep`` also reads every page
of every file, verifying its checksum. Each damaged file is one problem naming its episode; the
check never stops at the first. Prepared frame stores are checked too (:mod:`.framecheck`): a
damaged one is a problem of the store, derived and rebuildable, not of its episode.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import LakeError
from .damage import READ_ERRORS, describe, page_problem
from .framecheck import DAMAGED_FRAMES, check_stores
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
    episode_id: str | None = None

    def __str__(self) -> str:
        episode = f" (episode {self.episode_id})" if self.episode_id else ""
        return f"{self.path}{episode}: {self.message}"


DAMAGED = "damaged"  # the start of a damaged file's message: "damaged: <what the reader said>"


@dataclass
class CheckReport:
    episodes: int
    problems: list[Problem]
    frame_files: int = 0  # prepared frame store entries checked

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_episodes(self) -> list[str]:
        """The episodes with a damaged file of their own (not a prepared frame file), in the order found."""
        return list(dict.fromkeys(p.episode_id for p in self.problems if p.episode_id and
                                  p.message.startswith(DAMAGED) and not p.message.startswith(DAMAGED_FRAMES)))

    @property
    def damaged_frames(self) -> dict[str, list[str]]:
        """Store key -> the episodes whose prepared frame files in it are damaged (delete, prepare again)."""
        found: dict[str, list[str]] = {}
        for p in self.problems:
            if p.episode_id and p.message.startswith(DAMAGED_FRAMES):
                found.setdefault(p.path.parent.name, []).append(p.episode_id)
        return found


def check(lake: str | os.PathLike[str] | None = None, *, deep: bool = False) -> CheckReport:
    """Check every committed episode: tables present and readable, schemas and row counts right;
    and every prepared frame store file: index whole, element sizes within bounds.

    A lake folder that does not exist or cannot be read is :class:`~pipeline.errors.LakeError`.

    With ``deep=True`` also read every page of every file, verifying page checksums, and the key
    columns: step numbers unique, every agent step's step in ``steps``, every unit step's (step,
    agent) in ``agent_steps``, agents matching ``episode_agents``; and decode every prepared frame
    element, verifying its checksum and size.
    """
    root = resolve_lake(lake)
    try:
        mode = root.stat().st_mode
    except FileNotFoundError as exc:
        raise LakeError(f"no lake at {root} (no such folder); give the lake's folder") from exc
    except OSError as exc:
        raise LakeError(f"cannot read the lake {root}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(mode):
        raise LakeError(f"{root} is a file, not a lake folder; give the lake's folder")
    try:
        problems = _stray_entries(root)
        locations = list_episodes(root)
    except OSError as exc:
        raise LakeError(f"cannot read the lake {root}: {exc.strerror or exc}") from exc
    for location in locations:
        if not location.segment:
            try:
                problems.extend(_check_episode(location, deep))
            except OSError as exc:  # a folder that cannot be listed, a file that cannot be opened
                problems.append(Problem(location.path, f"cannot be read: {exc.strerror or exc}", location.episode_id))
    problems.extend(_check_segments(locations, deep))
    try:
        frame_files, frame_problems = check_stores(root, deep=deep)
    except OSError as exc:
        raise LakeError(f"cannot read the prepared frames of {root}: {exc.strerror or exc}") from exc
    problems.extend(Problem(p.path, p.message, p.episode_id) for p in frame_problems)
    return CheckReport(len(locations), problems, frame_files)


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
    episode = location.episode_id
    problems: list[Problem] = []
    files: dict[str, pq.ParquetFile] = {}
    expected = {f"{t}.parquet" for t in TABLES}
    for entry in location.path.iterdir():
        if entry.name not in expected:
            problems.append(Problem(entry, "unexpected file in an episode folder", episode))
    for table in TABLES:
        path = location.table(table)
        if not path.exists():
            problems.append(Problem(path, "missing table", episode))
            continue
        try:
            parquet = pq.ParquetFile(path, page_checksum_verification=True)
        except READ_ERRORS as exc:
            problems.append(Problem(path, f"{DAMAGED}: cannot be read as Parquet: {describe(exc)}", episode))
            continue
        if not parquet.schema_arrow.equals(SCHEMAS[table]):
            problems.append(Problem(path, "schema differs from the table's declared schema", episode))
            continue
        if deep:
            damage = page_problem(path)
            if damage is not None:
                problems.append(Problem(path, f"{DAMAGED}: {damage}", episode))
                continue
        files[table] = parquet
    if "episodes" not in files:
        return problems
    if files["episodes"].metadata.num_rows != 1:
        return [*problems, Problem(location.table("episodes"), "must hold exactly one row", episode)]
    try:
        counts = files["episodes"].read(columns=list(_COUNTS.values())).to_pylist()[0]
    except READ_ERRORS as exc:
        return [*problems, Problem(location.table("episodes"), f"{DAMAGED}: {describe(exc)}", episode)]
    for table, column in _COUNTS.items():
        if table in files and files[table].metadata.num_rows != counts[column]:
            problems.append(Problem(
                location.table(table),
                f"holds {files[table].metadata.num_rows} rows but the episode records {column}={counts[column]}",
                episode,
            ))
    if deep and not problems:
        try:
            problems.extend(_check_keys(location, files))
        except READ_ERRORS as exc:  # the pages were just verified; this is a file changed since
            problems.append(Problem(location.path, f"{DAMAGED}: {describe(exc)}", episode))
    return problems


def _check_keys(location: EpisodeLocation, files: dict[str, pq.ParquetFile]) -> list[Problem]:
    problems = []
    episode = location.episode_id
    steps = files["steps"].read(columns=["step"]).column("step")
    if pc.count_distinct(steps).as_py() != len(steps):
        problems.append(Problem(location.table("steps"), "step numbers are not unique", episode))
    agent_steps = files["agent_steps"].read(columns=["step", "agent"])
    if not pc.all(pc.is_in(agent_steps.column("step"), value_set=steps)).as_py() and len(agent_steps):
        problems.append(Problem(location.table("agent_steps"), "has steps that are not in steps.parquet", episode))
    agent_keys = _keys(agent_steps, ["step", "agent"])
    if len(set(agent_keys)) != len(agent_keys):
        problems.append(Problem(location.table("agent_steps"), "an agent appears twice in one step", episode))
    unit_steps = files["unit_steps"].read(columns=["step", "agent", "unit"])
    if not set(_keys(unit_steps, ["step", "agent"])) <= set(agent_keys):
        problems.append(Problem(location.table("unit_steps"), "has unit steps without their agent step", episode))
    unit_keys = _keys(unit_steps, ["step", "agent", "unit"])
    if len(set(unit_keys)) != len(unit_keys):
        problems.append(Problem(location.table("unit_steps"), "a unit appears twice in one agent step", episode))
    summary_agents = set(files["episode_agents"].read(columns=["agent"]).column("agent").to_pylist())
    if summary_agents != {agent for _, agent in agent_keys}:
        problems.append(Problem(location.table("episode_agents"), "agents differ from those in agent_steps", episode))
    return problems


def _keys(table: pa.Table, columns: list[str]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
