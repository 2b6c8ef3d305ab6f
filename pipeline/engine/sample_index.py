"""What a sampler draws from: the selection's (episode, agent) entries and how many transitions each has.

From the small ``episode_agents`` table alone (:func:`selected_entries`), so a sampler knows every
entry's count of kept steps (:func:`kept_count`) without reading a step; :func:`entry_runs` groups a
batch's rows by entry, so each entry a batch touches is read once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from ..lake.layout import EpisodeLocation

if TYPE_CHECKING:
    from .lake import Lake, Selection


def kept_count(length: int, frequency: int, offset: int) -> int:
    """How many of ``length`` steps downsampling keeps (positions ``offset, offset + frequency, …``)."""
    return max(0, -(-(length - offset) // frequency))


def selected_entries(lake: Lake, episodes: Selection, agent: str | None, frequency: int,
                     offset: int) -> tuple[list[EpisodeLocation], list[str], np.ndarray]:
    """The selection's (location, agent) entries with at least one kept step, and their kept counts.

    From ``episode_agents`` alone: its rows hold each episode's agents in order of appearance, so
    an episode's first row is the agent ``trajectory()`` picks by default.
    """
    selected = lake.select(episodes)
    if not selected:
        raise DatasetError("no episode selected: nothing to sample")
    ids = list(dict.fromkeys(location.episode_id for location, _ in selected))
    rows = lake.episode_agents(episodes=ids).select("episode_id", "agent", "length").collect()
    by_episode: dict[str, dict[str, int]] = {}
    for episode_id, name, length in rows.iter_rows():
        by_episode.setdefault(episode_id, {})[name] = length
    locations, agents, lengths = [], [], []
    for location, chosen in selected:
        known = by_episode.get(location.episode_id, {})
        name = agent or chosen or next(iter(known), None)
        if name is None:
            raise DatasetError(f"episode {location.episode_id} has no agent steps", episode_id=location.episode_id)
        if name not in known:
            raise DatasetError(f"episode {location.episode_id} has no agent {name!r}; its agents: {', '.join(known)}",
                               episode_id=location.episode_id, agent=name)
        kept = kept_count(known[name], frequency, offset)
        if kept:  # an episode too short to keep a step has no transition to draw
            locations.append(location)
            agents.append(name)
            lengths.append(kept)
    return locations, agents, np.asarray(lengths, dtype=np.int64)


def entry_runs(episode: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The batch rows grouped by entry: a stable ``order``, ``episode[order]``, and each entry's
    ``(first, end)`` run in it."""
    order = np.argsort(episode, kind="stable")
    ordered = episode[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist()
    return order, ordered, list(zip(starts, [*starts[1:], len(order)], strict=True))
