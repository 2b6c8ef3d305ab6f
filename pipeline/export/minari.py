"""Lake trajectories as a local Minari dataset: ``Lake.to_minari`` (needs ``pip install 'ingest-pipeline[minari]'``).

Minari keeps N+1 observations per episode of N steps: the observation before each action, and the one
after the last. The lake keeps one per step, the one before its action. So the N+1st observation is the
one Minari had, for an episode imported from Minari (:mod:`pipeline.minari_import` keeps it in the
episode's ``inference.config["minari"]``); otherwise the last step's observation repeated: the lake never
saw what followed the last action. Likewise the termination and truncation flags: Minari's own for an
imported episode, otherwise the last step terminates (the lake's terminal flag) and nothing is truncated.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import DatasetError, MissingExtra

if TYPE_CHECKING:
    from ..engine.lake import Lake, Selection
    from ..engine.trajectory import Trajectory


def _minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise MissingExtra("Minari datasets", "minari", "minari") from exc
    return minari


@dataclass
class _Episode:
    trajectory: Trajectory
    final_observation: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None
    spaces: tuple[str, str] | None  # Minari's serialised spaces, for an imported episode


def to_minari(
    lake: Lake,
    dataset_id: str,
    *,
    episodes: Selection = None,
    agent: str | None = None,
    env: Any = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    author_email: str | None = None,
    code_permalink: str | None = None,
    description: str | None = None,
    data_format: str | None = None,
) -> Any:
    """Write the selected trajectories as a local Minari dataset; return it (a ``MinariDataset``).

    The dataset goes to Minari's datasets folder (``$MINARI_DATASETS_PATH``, else
    ``~/.minari/datasets``), where ``minari.load_dataset(dataset_id)`` opens it. One Minari episode
    per trajectory (``agent``, else the one a selection frame names, else each episode's first);
    observations ``[N+1, …]`` (the last one: see the module docstring), actions, rewards (the total
    per step), terminations and truncations ``[N]``. The spaces are those of the Minari dataset the
    episodes came from, if they all came from one; otherwise a float64 ``Box`` of the observation
    shape, and ``Discrete`` actions when every action is a whole number (covering the
    ``action_mapping`` too), else a ``Box`` of one float. ``env`` (an id, spec or environment) lets
    ``dataset.recover_environment()`` work; Minari makes it once. ``algorithm_name`` defaults to the
    episodes' algorithm when they share one. A dataset that cannot be written is not left half made.
    """
    minari = _minari()
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    target = get_dataset_path(dataset_id)
    if target.exists():
        raise DatasetError(f"a Minari dataset {dataset_id!r} already exists at {target}; "
                           f"choose another name or version (-vN)")
    selected = [location.episode_id for location, _ in lake.select(episodes)]
    if not selected:
        raise DatasetError("no episode selected: nothing to export")
    columns = ("episode_id", "algorithm", "action_mapping", "training_config", "inference_config")
    frame = lake.episodes(episodes=selected).select(columns).collect()
    rows = {row["episode_id"]: row for row in frame.iter_rows(named=True)}
    items = [_episode(t, rows[t.episode_id]) for t in lake.trajectories(episodes, agent)]
    observation_space, action_space = _spaces(items, rows)
    buffers = [_buffer(item, observation_space, action_space) for item in items]
    algorithms = {row["algorithm"] for row in rows.values()}
    options: dict[str, Any] = {"jpeg_encoding": False} if _has_parameter(minari, "jpeg_encoding") else {}
    try:
        with warnings.catch_warnings():
            # Minari warns about each optional field left as None (env too); leaving them out is a choice.
            warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None)", category=UserWarning)
            return minari.create_dataset_from_buffers(
                dataset_id, buffers, env=env, algorithm_name=algorithm_name or (
                    algorithms.pop() if len(algorithms) == 1 else None),
                author=author, author_email=author_email, code_permalink=code_permalink, description=description,
                observation_space=observation_space, action_space=action_space, data_format=data_format, **options)
    except BaseException as exc:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, (ValueError, TypeError, OSError)):
            raise DatasetError(f"Minari could not write dataset {dataset_id!r}: {exc}") from exc
        raise


def _has_parameter(minari: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(minari.create_dataset_from_buffers).parameters


def _episode(trajectory: Trajectory, row: dict[str, Any]) -> _Episode:
    training = _minari_record(row["training_config"])
    record = _minari_record(row["inference_config"])
    if record.get("agent") != trajectory.agent:  # kept for the imported agent only
        record = {}
    count = len(trajectory)
    terminations = np.zeros(count, dtype=bool)
    truncations = np.zeros(count, dtype=bool)
    final = trajectory.observations[-1]
    if "final_observation" in record:
        given = np.asarray(record["final_observation"], dtype=np.float64)
        if given.size == final.size:
            final = given.reshape(final.shape)
        positions = {int(step): i for i, step in enumerate(trajectory.steps.tolist())}
        for flags, key in ((terminations, "terminated_steps"), (truncations, "truncated_steps")):
            for step in record.get(key) or ():
                if step in positions:
                    flags[positions[step]] = True
    else:
        terminations[-1] = bool(trajectory.terminals[-1])
    spaces = training.get("observation_space"), training.get("action_space")
    return _Episode(
        trajectory=trajectory,
        final_observation=final,
        terminations=terminations,
        truncations=truncations,
        seed=record.get("seed") if isinstance(record.get("seed"), int) else None,
        spaces=spaces if all(isinstance(s, str) for s in spaces) else None,  # type: ignore[arg-type]
    )


def _minari_record(config_text: str | None) -> dict[str, Any]:
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        record = orjson.loads(config_text or "{}").get("minari")
        if isinstance(record, dict):
            return record
    return {}


def _spaces(items: list[_Episode], rows: dict[str, dict[str, Any]]) -> tuple[Any, Any]:
    from gymnasium import spaces

    shapes = {item.trajectory.observations.shape[1:] for item in items}
    if len(shapes) > 1:
        raise DatasetError(f"the trajectories differ in observation shape: {sorted(shapes)}; export them separately")
    stored = {item.spaces for item in items}
    if len(stored) == 1 and None not in stored:
        from minari.serialization import deserialize_space

        observation_text, action_text = next(iter(stored))  # type: ignore[misc]
        observation_space, action_space = deserialize_space(observation_text), deserialize_space(action_text)
        if int(np.prod(observation_space.shape)) == int(np.prod(next(iter(shapes)))):
            return observation_space, action_space
    observation_space = spaces.Box(-np.inf, np.inf, shape=next(iter(shapes)), dtype=np.float64)
    actions = np.concatenate([item.trajectory.actions for item in items])
    if np.array_equal(actions, np.round(actions)):
        mapped = [int(key) for row in rows.values() if row["action_mapping"]
                  for key in orjson.loads(row["action_mapping"]) if key != "unit_mapping"]
        low = int(min(0, actions.min(), *mapped))
        high = int(max(actions.max(), *mapped)) if mapped else int(actions.max())
        return observation_space, spaces.Discrete(high - low + 1, start=low)
    return observation_space, spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float64)


def _buffer(item: _Episode, observation_space: Any, action_space: Any) -> Any:
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    trajectory = item.trajectory
    observations = np.concatenate([trajectory.observations, item.final_observation[None]])
    if isinstance(observation_space, spaces.Discrete):
        observations = observations.reshape(len(observations)).astype(np.int64)
    else:
        observations = observations.reshape(len(observations), *observation_space.shape).astype(observation_space.dtype)
    if isinstance(action_space, spaces.Discrete):
        actions = trajectory.actions.astype(np.int64)
    else:
        actions = trajectory.actions.reshape(len(trajectory), *action_space.shape).astype(action_space.dtype)
    return EpisodeBuffer(
        seed=item.seed,
        observations=observations,
        actions=actions,
        rewards=trajectory.rewards.astype(np.float64),
        terminations=item.terminations,
        truncations=item.truncations,
        infos={},
    )
