"""Random-access training batches over a lake selection, in bounded memory.

:class:`Sampler` draws transitions uniformly at random over every transition of the selected
episodes (one agent each) without loading the selection first. It knows, from the small
``episode_agents`` table alone, how many transitions each episode has; a batch's global transition
indices map to (episode, position) with ``searchsorted`` over their cumulative counts, and only the
episodes (and, for frames, only the steps) a batch touches are read.

Alignment is that of :func:`~pipeline.engine.trajectory.load_trajectory`: transition ``i`` of an
episode is its ``i``-th kept step (after downsampling, each kept step's reward summing the rewards up
to the next kept one); ``next_observations[i]`` is the observation of kept step ``i + 1`` of the same
episode, never of another; the last kept step is terminal and its next observation is all zeros
(d3rlpy's convention for a terminal transition).

Batch ``j`` is a function of ``(seed, j)`` and the selection only, never of cache state or timing,
so ``DataLoader`` workers can each make every ``W``-th batch (see :mod:`pipeline.engine.torch_data`).

Memory: episode arrays (steps, actions, rewards and, for ``observation="vector"``, observations) are
kept in contiguous arrays over the whole selection when they fit in the budget (then sampling is numpy
fancy indexing over resident arrays), else in an LRU of per-episode arrays bounded by bytes
(:mod:`.episode_arrays`). Frames are decoded only for sampled steps and the steps their stacks need: a
batch reads each row group of images it needs once (:mod:`.frameread`), decodes on two threads
(:mod:`.pngdecode`) and stacks every entry at once; image bytes (by row group) and decoded raw frames
are kept in two LRUs bounded by bytes (with ``missing="previous"``, finished stacks per entry, the
earlier path; :mod:`.decoded_frames`). ``epochs=`` mode also holds one permutation of the selection's
transition indices (8 bytes each).

When a prepared frame store (:mod:`.prepared`) holds every selected entry for the frame options, the
stacks are made from its stored elements instead (``preadv`` and zstd, no PNG decoding;
:mod:`.storeread`): the same values.

This module is the sampler itself: its arguments, which transitions batch ``j`` draws, and a batch put
together from the entries' arrays and frames. Which entries there are and how many transitions each
has is :mod:`.sample_index`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DatasetError
from .decoded_frames import DecodedFrames
from .episode_arrays import EpisodeArrays
from .prepared import PreparedFrames, covering_store, store_key
from .sample_index import kept_count, selected_entries
from .trajectory import FrameOptions, frame_layout

if TYPE_CHECKING:
    from .lake import Lake, Selection

DEFAULT_CACHE_BYTES = 1 << 30
# With frames, the per-episode arrays get at most this share of the cache; the decoded frames the rest.
_ARRAY_SHARE = 0.25
_BLOCK = 64  # endless mode: batches whose indices are drawn together


@dataclass(frozen=True, eq=False)
class Batch:
    """``batch_size`` transitions; unpacks as ``observations, actions, rewards, next_observations, terminals``.

    ``episodes`` indexes :attr:`Sampler.episodes` (the sampled transition's episode and agent),
    ``positions`` is the kept step's position in that trajectory, ``steps`` its step number and
    ``indices`` the global transition index the batch drew.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    episodes: np.ndarray
    positions: np.ndarray
    steps: np.ndarray
    indices: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.observations, self.actions, self.rewards, self.next_observations, self.terminals))

    def __len__(self) -> int:
        return len(self.indices)



class Sampler:
    """Batches of transitions drawn uniformly at random from a lake selection (see the module doc).

    Made by :meth:`pipeline.Lake.sampler`. Iterating gives batch 0, 1, 2, … (endlessly, or
    ``epochs`` passes over a fresh permutation each); :meth:`batch` gives any batch by number.
    """

    def __init__(
        self,
        lake: Lake,
        episodes: Selection = None,
        agent: str | None = None,
        *,
        batch_size: int = 256,
        observation: Literal["vector", "frames"] = "vector",
        frames: bool | FrameOptions = False,
        downsample_frequency: int = 1,
        downsample_offset: int = 0,
        seed: int = 0,
        epochs: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        prepared: bool | None = None,
    ) -> None:
        if observation not in ("vector", "frames"):
            raise DatasetError(f"observation must be 'vector' or 'frames', not {observation!r}")
        if batch_size < 1:
            raise DatasetError(f"batch_size must be at least 1, got {batch_size}")
        if epochs is not None and epochs < 1:
            raise DatasetError(f"epochs must be at least 1 (or None: endless), got {epochs}")
        if downsample_frequency < 1 or not 0 <= downsample_offset < downsample_frequency:
            raise DatasetError(
                f"downsampling needs frequency >= 1 and 0 <= offset < frequency, "
                f"got frequency {downsample_frequency} and offset {downsample_offset}")
        if seed < 0:
            raise DatasetError(f"seed must be 0 or more, got {seed}")
        options = FrameOptions() if frames is True else (frames or None)
        if observation == "frames" and options is None:
            options = FrameOptions()
        self.lake_path = lake.path
        self.batch_size = batch_size
        self.observation = observation
        self.frame_options: FrameOptions | None = options if observation == "frames" else None
        self.frame_layout = None if self.frame_options is None else frame_layout(self.frame_options)
        self.downsample_frequency = downsample_frequency
        self.downsample_offset = downsample_offset
        self.seed = seed
        self.epochs = epochs
        self.cache_bytes = cache_bytes
        self._locations, agents, lengths = selected_entries(lake, episodes, agent, downsample_frequency,
                                                            downsample_offset)
        self.episodes: list[tuple[str, str]] = [(loc.episode_id, a) for loc, a in zip(self._locations, agents,
                                                                                       strict=True)]
        # A prepared frame store that holds every entry serves the frames (None: auto; False: decode PNGs)
        self.prepared: str | None = None
        if self.frame_options is not None and prepared is not False:
            self.prepared = covering_store(lake.path, self.frame_options, self.episodes)
            if self.prepared is None and prepared:
                raise DatasetError(f"no prepared frames for every selected episode with these options (store "
                                   f"{store_key(self.frame_options)}); run lake.prepare_frames(options, ...) or "
                                   f"`ingest-pipeline frames prepare`, or pass prepared=None to decode the PNGs")
        self.lengths = lengths  # transitions (kept steps) per entry of ``episodes``
        # At most this many raw steps behind the kept ones: the most frame elements there are to keep
        self.raw_steps = int(lengths.sum()) * downsample_frequency + len(lengths) * downsample_offset
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.transitions = int(self.offsets[-1])
        if self.transitions == 0:
            raise DatasetError("the selection has no transitions to sample")
        self._permutation: tuple[int, np.ndarray] | None = None
        self._block: tuple[int, np.ndarray] | None = None
        self._reset_caches()

    # -- what batch j is -------------------------------------------------------------------

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.transitions // self.batch_size)

    @property
    def num_batches(self) -> int | None:
        """How many batches iteration gives: None when endless."""
        return None if self.epochs is None else self.epochs * self.batches_per_epoch

    def indices(self, j: int) -> np.ndarray:
        """The global transition indices of batch ``j``: a function of ``(seed, j)`` only."""
        if j < 0 or (self.num_batches is not None and j >= self.num_batches):
            raise DatasetError(f"batch {j} is out of range (this sampler gives {self.num_batches})")
        if self.epochs is None:  # with replacement: every transition equally likely in every slot
            # Drawn _BLOCK batches at a time from a stream seeded by (seed, block): making a generator
            # per batch cost ~45 us, a third of a resident batch's time (measured).
            block, row = divmod(j, _BLOCK)
            drawn = self._block
            if drawn is None or drawn[0] != block:
                rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, block])))
                drawn = self._block = (block, rng.integers(0, self.transitions, size=(_BLOCK, self.batch_size),
                                                           dtype=np.int64))
            return drawn[1][row]
        epoch, chunk = divmod(j, self.batches_per_epoch)
        permutation = self._permutation
        if permutation is None or permutation[0] != epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 1 << 32, epoch])))
            permutation = self._permutation = (epoch, rng.permutation(self.transitions))
        return permutation[1][chunk * self.batch_size:(chunk + 1) * self.batch_size]

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global transition indices -> (entry of :attr:`episodes`, kept position in that trajectory)."""
        episode = np.searchsorted(self.offsets, indices, side="right") - 1
        return episode, indices - self.offsets[episode]

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, start: int = 0, step: int = 1) -> Iterator[Batch]:
        """Batches ``start, start + step, …`` (to the end of the last epoch, or endlessly)."""
        j = start
        while self.num_batches is None or j < self.num_batches:
            yield self.batch(j)
            j += step

    def batch(self, j: int) -> Batch:
        """Batch number ``j``."""
        indices = self.indices(j)
        episode, position = self.locate(indices)
        terminal = position == self.lengths[episode] - 1
        steps, actions, rewards, observations = self._arrays.gather(episode, position, indices)
        if self.frame_options is None:
            assert observations is not None
            resident = self._arrays.resident
            if resident is not None:  # every sampled episode is resident now: one gather
                assert resident.observations is not None
                next_observations = resident.observations[np.where(terminal, indices, indices + 1)]
            else:
                following = self._arrays.gather(episode, np.where(terminal, position, position + 1),
                                                np.where(terminal, indices, indices + 1))[3]
                assert following is not None
                next_observations = following
        else:
            observations, next_observations = self._frames(episode, position, terminal)
        next_observations[terminal] = 0
        return Batch(observations=observations, actions=actions, rewards=rewards,
                     next_observations=next_observations, terminals=terminal, episodes=episode,
                     positions=position, steps=steps, indices=indices)

    # -- caches: each process fills its own ------------------------------------------------

    def _reset_caches(self) -> None:
        self._permutation = None
        self._block = None
        array_budget = self.cache_bytes if self.frame_options is None else int(self.cache_bytes * _ARRAY_SHARE)
        frame_budget = self.cache_bytes - array_budget
        self._arrays = EpisodeArrays(self._locations, self.episodes, self.lengths, self.offsets,
                                     frequency=self.downsample_frequency, offset=self.downsample_offset,
                                     observations=self.frame_options is None, budget=array_budget,
                                     on_missing=self._check_present)
        # Frames come from the prepared store when one holds every entry, else from the PNGs
        self._prepared: PreparedFrames | None = None
        self._decoded_frames: DecodedFrames | None = None
        if self.prepared is not None:
            assert self.frame_options is not None
            self._prepared = PreparedFrames(self.lake_path, self.prepared, self.episodes, self.frame_options,
                                            index_budget=max(array_budget // 4, 1 << 20),
                                            element_budget=frame_budget, elements=self.raw_steps,
                                            on_missing=self._check_present)
        elif self.frame_options is not None:
            self._decoded_frames = DecodedFrames(self._locations, self.episodes, self.frame_options,
                                                 frequency=self.downsample_frequency,
                                                 offset=self.downsample_offset, array_budget=array_budget,
                                                 frame_budget=frame_budget, on_missing=self._check_present)

    def __getstate__(self) -> dict[str, Any]:
        # Caches stay behind: each process (a DataLoader worker) fills its own.
        state = self.__dict__.copy()
        for name in ("_permutation", "_block", "_arrays", "_prepared", "_decoded_frames"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def _check_present(self, e: int, exc: BaseException) -> None:
        location = self._locations[e]
        if not location.path.exists():
            raise DatasetError(
                f"episode {location.episode_id} was removed from the lake after this sampler's snapshot "
                f"was taken: call lake.refresh() and make a new sampler", episode_id=location.episode_id,
                agent=self.episodes[e][1]) from exc

    def _frames(self, episode: np.ndarray, position: np.ndarray,
                terminal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stacked frames of the sampled steps and of the steps after them (a terminal's: its own)."""
        k = len(position)
        both_episode = np.concatenate([episode, episode])
        both_position = np.concatenate([position, np.where(terminal, position, position + 1)])
        if self._prepared is not None:  # elements decoded and processed ahead of time (.prepared)
            kept = self.downsample_offset + both_position * self.downsample_frequency
            stacks = self._prepared.stacks(both_episode, kept, skip=self.downsample_frequency)
            return stacks[:k], stacks[k:]
        assert self._decoded_frames is not None
        return self._decoded_frames.stacks(both_episode, both_position, k)


__all__ = ["DEFAULT_CACHE_BYTES", "Batch", "Sampler", "kept_count"]
