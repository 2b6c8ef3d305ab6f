"""The per-step arrays a sampler draws from: each entry's steps, actions, rewards and vector observations.

An entry's arrays are computed as :func:`~pipeline.engine.trajectory.load_trajectory` computes them
(downsampled, rewards summed up to the next kept step). After the first entry is loaded, its bytes per
step decide: when the whole selection fits in the budget, every entry is kept in contiguous arrays over
all transitions (then a batch is numpy fancy indexing over resident arrays); else entries live in an
LRU of per-entry arrays bounded by bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError, EpisodeNotFound
from ..lake.layout import EpisodeLocation
from .frameread import ByteLRU
from .sample_index import entry_runs
from .trajectory import load_trajectory


@dataclass(frozen=True)
class Arrays:
    """One episode-agent's per-step arrays, as ``load_trajectory`` computes them."""

    steps: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    observations: np.ndarray | None  # [T, D]; None when sampling frames

    @property
    def nbytes(self) -> int:
        arrays = (self.steps, self.actions, self.rewards, self.observations)
        return sum(a.nbytes for a in arrays if a is not None)


class EpisodeArrays:
    """The arrays of a sampler's entries, resident or in an LRU, within ``budget`` bytes.

    ``offsets`` are the entries' first global transition indices (and the total last);
    ``observations`` says whether to keep vector observations (not when sampling frames);
    ``on_missing(e, exc)`` raises the error for an entry whose episode left the lake.
    """

    def __init__(self, locations: list[EpisodeLocation], episodes: list[tuple[str, str]], lengths: np.ndarray,
                 offsets: np.ndarray, *, frequency: int, offset: int, observations: bool, budget: int,
                 on_missing: Callable[[int, BaseException], None]) -> None:
        self._locations = locations
        self._episodes = episodes
        self._lengths = lengths
        self._offsets = offsets
        self._transitions = int(offsets[-1])
        self._frequency = frequency
        self._offset = offset
        self._observations = observations
        self._on_missing = on_missing
        self._lru = ByteLRU(budget)
        self.resident: Arrays | None = None  # every entry's arrays over all transitions, when they fit
        self._loaded: np.ndarray | None = None
        self._complete = False  # every episode resident
        self._decided = False

    def gather(self, episode: np.ndarray, position: np.ndarray,
               indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """steps, actions, rewards and (vector) observations of the given transitions."""
        if not self._decided:
            self._episode_arrays(int(episode[0]))
        if self.resident is not None:
            assert self._loaded is not None
            if not self._complete:
                for e in np.unique(episode[~self._loaded[episode]]).tolist():
                    self._store(e, self._load(e))
                self._complete = bool(self._loaded.all())
            r = self.resident
            return (r.steps[indices], r.actions[indices], r.rewards[indices],
                    None if r.observations is None else r.observations[indices])
        order, ordered, runs = entry_runs(episode)
        parts = []
        for first, end in runs:
            rows = order[first:end]
            arrays = self._episode_arrays(int(ordered[first]))
            at = position[rows]
            parts.append((rows, arrays.steps[at], arrays.actions[at], arrays.rewards[at],
                          None if arrays.observations is None else arrays.observations[at]))
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[np.concatenate([rows for rows, *_ in parts])] = np.arange(len(order))
        columns = [np.concatenate([part[k] for part in parts])[inverse] for k in (1, 2, 3)]
        observations = None if parts[0][4] is None else np.concatenate([part[4] for part in parts])[inverse]
        return columns[0], columns[1], columns[2], observations

    def _load(self, e: int) -> Arrays:
        location, agent = self._locations[e], self._episodes[e][1]
        try:
            t = load_trajectory(location, agent, downsample_frequency=self._frequency,
                                downsample_offset=self._offset)
        except (OSError, EpisodeNotFound, DatasetError) as exc:
            self._on_missing(e, exc)
            raise
        if len(t) != self._lengths[e]:
            raise DatasetError(
                f"episode {location.episode_id}, agent {agent!r}: {len(t)} transitions where the lake's "
                f"episode_agents table says {self._lengths[e]}", episode_id=location.episode_id, agent=agent)
        observations = t.observations.reshape(len(t), -1) if self._observations else None
        return Arrays(t.steps, t.actions, t.rewards, observations)

    def _decide(self, first: Arrays, e: int) -> None:
        """Keep every episode's arrays in contiguous arrays when they fit in the budget (measured per step)."""
        self._decided = True
        per_step = first.nbytes / max(1, len(first.steps))
        if per_step * self._transitions > self._lru.budget:
            return
        n = self._transitions
        width = None if first.observations is None else first.observations.shape[1]
        self.resident = Arrays(
            steps=np.empty(n, first.steps.dtype), actions=np.empty(n, first.actions.dtype),
            rewards=np.empty(n, first.rewards.dtype),
            observations=None if width is None else np.empty((n, width), first.observations.dtype),  # type: ignore[union-attr]
        )
        self._loaded = np.zeros(len(self._episodes), dtype=bool)
        self._store(e, first)

    def _store(self, e: int, arrays: Arrays) -> None:
        resident = self.resident
        assert resident is not None and self._loaded is not None
        span = slice(self._offsets[e], self._offsets[e + 1])
        resident.steps[span] = arrays.steps
        resident.actions[span] = arrays.actions
        resident.rewards[span] = arrays.rewards
        if resident.observations is not None:
            assert arrays.observations is not None
            if arrays.observations.shape[1] != resident.observations.shape[1]:
                raise DatasetError(
                    f"episode {self._episodes[e][0]}: observations of {arrays.observations.shape[1]} values, "
                    f"other sampled episodes have {resident.observations.shape[1]}; sample them separately",
                    episode_id=self._episodes[e][0])
            resident.observations[span] = arrays.observations
        self._loaded[e] = True

    def _episode_arrays(self, e: int) -> Arrays:
        if self.resident is not None:
            assert self._loaded is not None
            if not self._loaded[e]:
                self._store(e, self._load(e))
            span = slice(self._offsets[e], self._offsets[e + 1])
            r = self.resident
            return Arrays(r.steps[span], r.actions[span], r.rewards[span],
                          None if r.observations is None else r.observations[span])
        arrays = self._lru.get(e)
        if arrays is None:
            arrays = self._load(e)
            if not self._decided:
                self._decide(arrays, e)
                if self.resident is not None:
                    return self._episode_arrays(e)
            self._lru.put(e, arrays, arrays.nbytes)
        return arrays
