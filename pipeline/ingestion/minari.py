"""Minari datasets into the lake: ``ingest-pipeline import minari`` (needs ``pip install 'ingest-pipeline[minari]'``).

Minari keeps N+1 observations per episode of N steps: the observation before each action, and the one
after the last. The lake keeps one observation per step, the one before its action. So each Minari
episode becomes one episode document in the lake's JSON format, step ``t`` holding ``observations[t]``,
``actions[t]`` and ``rewards[t]`` for the one agent ``"agent"``, and is ingested like any file (every rule
checked, one atomic commit, its id the hash of the document, so importing a dataset twice stores each
episode once). What has no place in a step (the last observation, the steps that terminate or truncate,
the reset seed) goes to the episode's ``inference.config["minari"]``; the dataset id, spaces and env spec
to ``training.config["minari"]``. :mod:`pipeline.minari_export` reads them back, so an imported episode
goes back to Minari unchanged.

Observations must be numbers in 1-D or 2-D arrays (Box, Discrete, MultiDiscrete, MultiBinary spaces of at
most 2 dimensions), and each action one number (Discrete, or a Box of one value): what the episode format
holds. Minari's per-step ``infos`` and reset ``options`` are not carried over.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import MissingExtra, SourceError

if TYPE_CHECKING:
    from .run import IngestResult

AGENT = "agent"  # the one agent of an imported episode
ALGORITHM = "minari"  # an imported episode's algorithm when the dataset names none


def _minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise MissingExtra("Minari datasets", "minari", "minari") from exc
    return minari


def open_dataset(dataset: str | os.PathLike[str]) -> Any:
    """A local Minari dataset, by folder (the dataset's, or its ``data`` folder) or by dataset id.

    An id is looked up in Minari's datasets folder (``$MINARI_DATASETS_PATH``, else
    ``~/.minari/datasets``); nothing is ever downloaded.
    """
    minari = _minari()
    path = Path(dataset)
    if path.is_dir():
        data = path / "data" if (path / "data" / "metadata.json").is_file() else path
        if not (data / "metadata.json").is_file():
            raise SourceError("is a folder but not a Minari dataset (no metadata.json in it or in data/)",
                              source=str(dataset))
        return minari.MinariDataset(data)
    try:
        return minari.load_dataset(str(dataset), download=False)
    except FileNotFoundError as exc:
        from minari.storage import get_dataset_path

        raise SourceError(f"no local Minari dataset with this id in {get_dataset_path()} (and no such folder); "
                          f"nothing is downloaded", source=str(dataset)) from exc
    except ValueError as exc:  # a malformed id
        raise SourceError(str(exc), source=str(dataset)) from exc


def episode_documents(dataset: Any, *, environment: str | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, document)`` for each episode of a Minari dataset, the document in the lake's JSON format.

    ``dataset`` is a ``MinariDataset`` or what :func:`open_dataset` takes. ``environment`` defaults
    to the id of the dataset's ``env_spec``, else its dataset id; the algorithm is the dataset's
    ``algorithm_name``, else ``"minari"``.
    """
    if not hasattr(dataset, "iterate_episodes"):
        dataset = open_dataset(dataset)
    from minari.serialization import serialize_space

    spec = dataset.spec
    metadata = dataset.storage.metadata
    dataset_id = str(spec.dataset_id)
    observation_space, action_space = spec.observation_space, spec.action_space
    _check_spaces(observation_space, action_space, dataset_id)
    env_spec = spec.env_spec
    training = {
        "environment": environment or (env_spec.id if env_spec is not None else dataset_id),
        "algorithm": metadata.get("algorithm_name") or ALGORITHM,
        "iterations": 1,
        "config": {"minari": {
            "dataset_id": dataset_id,
            # Spaces and spec as Minari serialises them: JSON text (a Box's bounds may be infinite,
            # which JSON numbers cannot be).
            "observation_space": serialize_space(observation_space),
            "action_space": serialize_space(action_space),
            **({"env_spec": env_spec.to_json()} if env_spec is not None else {}),
        }},
    }
    indices = [int(i) for i in dataset.episode_indices]
    seeds = [episode.get("seed") for episode in dataset.storage.get_episode_metadata(indices)]
    for index, seed, episode in zip(indices, seeds, dataset.iterate_episodes(indices), strict=True):
        name = f"minari:{dataset_id}#episode-{index}"
        yield name, _document(episode, index, seed, training, observation_space, action_space, name)


def _document(episode: Any, index: int, seed: int | None, training: dict[str, Any], observation_space: Any,
              action_space: Any, name: str) -> bytes:
    count = len(episode.rewards)
    observations = np.asarray(episode.observations)
    if len(observations) != count + 1:
        raise SourceError(f"has {len(observations)} observations for {count} steps; Minari keeps steps + 1",
                          source=name)
    observations = _as_rows(observations)
    actions = np.asarray(episode.actions).reshape(count)
    rewards = np.asarray(episode.rewards, dtype=np.float64).reshape(count)
    record: dict[str, Any] = {
        "episode": index,
        "agent": AGENT,
        "final_observation": observations[count].tolist(),
        "terminated_steps": np.flatnonzero(np.asarray(episode.terminations)).tolist(),
        "truncated_steps": np.flatnonzero(np.asarray(episode.truncations)).tolist(),
    }
    if seed is not None:
        record["seed"] = int(seed)
    steps = [
        {"number": t, "agent_steps": [{"agent": AGENT, "action": action, "reward": reward, "observation_space": obs}]}
        for t, (action, reward, obs) in enumerate(zip(actions.tolist(), rewards.tolist(),
                                                      observations[:count].tolist(), strict=True))
    ]
    document = {"training": training, "inference": {"config": {"minari": record}, "steps": steps}}
    if all(np.isfinite(array).all() for array in (observations, actions, rewards)):
        return orjson.dumps(document)
    # orjson would write NaN and infinities as null; the json module writes them as NaN and Infinity,
    # which the ingest refuses with its own rule and the step's path, as in any other file.
    return json.dumps(document, separators=(",", ":")).encode()


def _check_spaces(observation_space: Any, action_space: Any, dataset_id: str) -> None:
    from gymnasium import spaces

    arrays = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    if not isinstance(observation_space, arrays) or len(observation_space.shape or ()) > 2:
        raise SourceError(f"observation space {observation_space} does not fit the episode format "
                          f"(numbers in 1-D or 2-D arrays)", source=dataset_id)
    if not (isinstance(action_space, spaces.Discrete)
            or (isinstance(action_space, spaces.Box) and int(np.prod(action_space.shape)) == 1)):
        raise SourceError(f"action space {action_space} does not fit the episode format "
                          f"(one number per action)", source=dataset_id)


def _as_rows(observations: np.ndarray) -> np.ndarray:
    """Observations as the episode format holds them: 0-D values as one-element rows."""
    return observations.reshape(len(observations), 1) if observations.ndim == 1 else observations


def import_minari(dataset: Any, *, lake: str | os.PathLike[str] | None = None,
                  environment: str | None = None) -> Iterator[IngestResult]:
    """Ingest every episode of a local Minari dataset into the lake, one :class:`IngestResult` each.

    Each episode goes through :func:`pipeline.ingest` as an episode document (see
    :func:`episode_documents`): the same validation, the same atomic commit, a content-derived id.
    """
    from .run import ingest

    for name, document in episode_documents(dataset, environment=environment):
        yield ingest(io.BytesIO(document), lake=lake, name=name)
