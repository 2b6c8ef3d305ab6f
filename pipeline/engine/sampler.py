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
fancy indexing over resident arrays), else in an LRU of per-episode arrays bounded by bytes. Frames
are decoded only for sampled steps and the steps their stacks need: a batch reads each row group of
images it needs once (:mod:`.frameread`), decodes on two threads (:mod:`.pngdecode`) and stacks every
entry at once; image bytes (by row group) and decoded raw frames are kept in two LRUs bounded by
bytes (with ``missing="previous"``, finished stacks per entry, the earlier path). ``epochs=`` mode
also holds one permutation of the selection's transition indices (8 bytes each).

When a prepared frame store (:mod:`.prepared`) holds every selected entry for the frame options, the
stacks are made from its stored elements instead (``preadv`` and zstd, no PNG decoding;
:mod:`.storeread`): the same values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DatasetError, EpisodeNotFound
from ..lake.layout import EpisodeLocation
from .frameread import ByteLRU as _LRU
from .frameread import ImageReader, check_images
from .framestack import element_ends, grayscale, raw_indices, resize, stacked_frames
from .pngdecode import raw_frame
from .prepared import PreparedFrames, covering_store, store_key
from .trajectory import FrameOptions, agent_step_numbers, frame_layout, load_frames, load_trajectory

if TYPE_CHECKING:
    from .lake import Lake, Selection

DEFAULT_CACHE_BYTES = 1 << 30
# With frames, the per-episode arrays get at most this share of the cache; the decoded frames the rest.
_ARRAY_SHARE = 0.25
_BLOCK = 64  # endless mode: batches whose indices are drawn together
_ELEMENT_CHUNK = 1024  # stacked elements converted together: bounded memory for large RGB frames
_FRAME_OVERHEAD = 112  # bytes a cached numpy array costs beyond its pixels
_WORKING_COPIES = 6  # a batch's raw frames, this many times over: its working memory
_POOL_MIN = 64  # fewer frames than this are decoded on the calling thread
_DECODE_THREADS = 2  # the cores a training machine's loader usually has to itself


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


@dataclass(frozen=True)
class _Arrays:
    """One episode-agent's per-step arrays, as ``load_trajectory`` computes them."""

    steps: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    observations: np.ndarray | None  # [T, D]; None when sampling frames

    @property
    def nbytes(self) -> int:
        arrays = (self.steps, self.actions, self.rewards, self.observations)
        return sum(a.nbytes for a in arrays if a is not None)


def kept_count(length: int, frequency: int, offset: int) -> int:
    """How many of ``length`` steps downsampling keeps (positions ``offset, offset + frequency, …``)."""
    return max(0, -(-(length - offset) // frequency))


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
        self._locations, agents, lengths = _index(lake, episodes, agent, downsample_frequency, downsample_offset)
        self.episodes: list[tuple[str, str]] = [(loc.episode_id, a) for loc, a in zip(self._locations, agents,
                                                                                       strict=True)]
        self._steps_paths = [location.table("steps") for location in self._locations]
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
        steps, actions, rewards, observations = self._gather(episode, position, indices)
        if self.frame_options is None:
            assert observations is not None
            if self._resident is not None:  # every sampled episode is resident now: one gather
                assert self._resident.observations is not None
                next_observations = self._resident.observations[np.where(terminal, indices, indices + 1)]
            else:
                following = self._gather(episode, np.where(terminal, position, position + 1),
                                         np.where(terminal, indices, indices + 1))[3]
                assert following is not None
                next_observations = following
        else:
            observations, next_observations = self._frames(episode, position, terminal)
        next_observations[terminal] = 0
        return Batch(observations=observations, actions=actions, rewards=rewards,
                     next_observations=next_observations, terminals=terminal, episodes=episode,
                     positions=position, steps=steps, indices=indices)

    # -- episode arrays --------------------------------------------------------------------

    def _reset_caches(self) -> None:
        self._permutation = None
        self._block = None
        array_budget = self.cache_bytes if self.frame_options is None else int(self.cache_bytes * _ARRAY_SHARE)
        self._lru = _LRU(array_budget)
        self._frames_lru = _LRU(self.cache_bytes - array_budget)  # missing="previous": finished stacks
        self._raw_steps = _LRU(max(array_budget // 16, 1 << 20))  # step numbers per entry, for the frame buffer
        self._frame_rows = _LRU(max(array_budget // 8, 1 << 20))  # raw index -> row of steps.parquet, per entry
        # The frames' share: up to half for image bytes (a row group at a time; a hit saves a read of
        # ~0.2 ms for ~1.5 KB), the rest for decoded raw frames (a hit saves a decode of ~30-50 us for 7 KB).
        frame_budget = self._frame_budget = self.cache_bytes - array_budget
        self._images = ImageReader(frame_budget - frame_budget // 2)
        self._decoded = _LRU(frame_budget // 2)  # (entry, raw index) -> raw frame as decoded
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._prepared: PreparedFrames | None = None
        if self.prepared is not None:
            assert self.frame_options is not None
            self._prepared = PreparedFrames(self.lake_path, self.prepared, self.episodes, self.frame_options,
                                            index_budget=max(array_budget // 4, 1 << 20),
                                            element_budget=frame_budget, elements=self.raw_steps,
                                            on_missing=self._check_present)
        self._resident: _Arrays | None = None
        self._loaded: np.ndarray | None = None
        self._complete = False  # every episode resident
        self._decided = False

    def __getstate__(self) -> dict[str, Any]:
        # Caches stay behind: each process (a DataLoader worker) fills its own.
        state = self.__dict__.copy()
        for name in ("_permutation", "_block", "_lru", "_frames_lru", "_raw_steps", "_frame_rows", "_images",
                     "_decoded", "_pool", "_pool_pid", "_prepared", "_resident", "_loaded", "_complete", "_decided"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def _load(self, e: int) -> _Arrays:
        location, agent = self._locations[e], self.episodes[e][1]
        try:
            t = load_trajectory(location, agent, downsample_frequency=self.downsample_frequency,
                                downsample_offset=self.downsample_offset)
        except (OSError, EpisodeNotFound, DatasetError) as exc:
            self._check_present(e, exc)
            raise
        if len(t) != self.lengths[e]:
            raise DatasetError(
                f"episode {location.episode_id}, agent {agent!r}: {len(t)} transitions where the lake's "
                f"episode_agents table says {self.lengths[e]}", episode_id=location.episode_id, agent=agent)
        observations = None if self.frame_options is not None else t.observations.reshape(len(t), -1)
        return _Arrays(t.steps, t.actions, t.rewards, observations)

    def _check_present(self, e: int, exc: BaseException) -> None:
        location = self._locations[e]
        if not location.path.exists():
            raise DatasetError(
                f"episode {location.episode_id} was removed from the lake after this sampler's snapshot "
                f"was taken: call lake.refresh() and make a new sampler", episode_id=location.episode_id,
                agent=self.episodes[e][1]) from exc

    def _decide(self, first: _Arrays, e: int) -> None:
        """Keep every episode's arrays in contiguous arrays when they fit in the budget (measured per step)."""
        self._decided = True
        per_step = first.nbytes / max(1, len(first.steps))
        if per_step * self.transitions > self._lru.budget:
            return
        n = self.transitions
        width = None if first.observations is None else first.observations.shape[1]
        self._resident = _Arrays(
            steps=np.empty(n, first.steps.dtype), actions=np.empty(n, first.actions.dtype),
            rewards=np.empty(n, first.rewards.dtype),
            observations=None if width is None else np.empty((n, width), first.observations.dtype),  # type: ignore[union-attr]
        )
        self._loaded = np.zeros(len(self.episodes), dtype=bool)
        self._store(e, first)

    def _store(self, e: int, arrays: _Arrays) -> None:
        resident = self._resident
        assert resident is not None and self._loaded is not None
        span = slice(self.offsets[e], self.offsets[e + 1])
        resident.steps[span] = arrays.steps
        resident.actions[span] = arrays.actions
        resident.rewards[span] = arrays.rewards
        if resident.observations is not None:
            assert arrays.observations is not None
            if arrays.observations.shape[1] != resident.observations.shape[1]:
                raise DatasetError(
                    f"episode {self.episodes[e][0]}: observations of {arrays.observations.shape[1]} values, "
                    f"other sampled episodes have {resident.observations.shape[1]}; sample them separately",
                    episode_id=self.episodes[e][0])
            resident.observations[span] = arrays.observations
        self._loaded[e] = True

    def _episode_arrays(self, e: int) -> _Arrays:
        if self._resident is not None:
            assert self._loaded is not None
            if not self._loaded[e]:
                self._store(e, self._load(e))
            span = slice(self.offsets[e], self.offsets[e + 1])
            r = self._resident
            return _Arrays(r.steps[span], r.actions[span], r.rewards[span],
                           None if r.observations is None else r.observations[span])
        arrays = self._lru.get(e)
        if arrays is None:
            arrays = self._load(e)
            if not self._decided:
                self._decide(arrays, e)
                if self._resident is not None:
                    return self._episode_arrays(e)
            self._lru.put(e, arrays, arrays.nbytes)
        return arrays

    def _gather(self, episode: np.ndarray, position: np.ndarray,
                indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """steps, actions, rewards and (vector) observations of the given transitions."""
        if not self._decided:
            self._episode_arrays(int(episode[0]))
        if self._resident is not None:
            assert self._loaded is not None
            if not self._complete:
                for e in np.unique(episode[~self._loaded[episode]]).tolist():
                    self._store(e, self._load(e))
                self._complete = bool(self._loaded.all())
            r = self._resident
            return (r.steps[indices], r.actions[indices], r.rewards[indices],
                    None if r.observations is None else r.observations[indices])
        order, ordered, runs = _runs(episode)
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

    # -- frames ----------------------------------------------------------------------------

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
        if self.frame_options is not None and self.frame_options.missing == "error":
            return self._batch_frames(both_episode, both_position, k)
        out: np.ndarray | None = None
        for e in np.unique(both_episode).tolist():
            rows = np.flatnonzero(both_episode == e)
            stacks = self._stacks(e, both_position[rows])
            if out is None:
                out = np.empty((2 * k, *stacks.shape[1:]), dtype=np.uint8)
            elif stacks.shape[1:] != out.shape[1:]:
                raise DatasetError(f"episode {self.episodes[e][0]}: frames of shape {list(stacks.shape[1:])}, "
                                   f"other sampled episodes have {list(out.shape[1:])}; pass resize=(height, width)",
                                   episode_id=self.episodes[e][0])
            out[rows] = stacks
        assert out is not None
        return out[:k], out[k:]

    def _batch_frames(self, both_episode: np.ndarray, both_position: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch's stacks, reading each row group of images they need once and decoding on every core.

        The same frame buffer as ``trajectory()`` over the same decoded raw frames (:func:`raw_frame`,
        as ``load_frames``): per entry :func:`stacked_frames`, or all entries at once
        (:func:`_stack_batch`, the same arithmetic) when every raw frame has one shape.
        """
        options = self.frame_options
        assert options is not None
        frequency, offset = self.downsample_frequency, self.downsample_offset
        order, ordered, runs = _runs(both_episode)
        plans = []
        for first, end in runs:
            e = int(ordered[first])
            kept = offset + both_position[order[first:end]] * frequency
            needed = raw_indices(kept, options, skip=frequency)
            file_rows = self._rows_of(e, needed)
            if bool((file_rows < 0).any()):
                self._no_image(e, needed[file_rows < 0])
            plans.append((self._steps_paths[e], int(file_rows[0]), e, order[first:end], kept, needed, file_rows))
        plans.sort(key=lambda plan: plan[:2])  # by file and row: row groups read in order
        images: list[bytes | None] = []
        at, held, fill, total = [], [], [], 0
        for path, _, e, _, _, needed, file_rows in plans:
            def failed(_: Any, exc: BaseException, e: int = e) -> None:
                self._check_present(e, exc)

            raw = needed.tolist()
            frames = [self._decoded.get((e, r)) for r in raw]
            missing = [i for i, frame in enumerate(frames) if frame is None]
            if missing:
                found = self._images.images(path, file_rows[missing], failed)
                if None in found:
                    self._no_image(e, needed[missing][[image is None for image in found]])
                fill.append((e, raw, frames, missing, len(images)))
                images.extend(found)
            at.append(total)
            total += len(frames)
            held.append(frames)
        fresh = self._decode(images)  # type: ignore[arg-type]
        # Decoded frames may use what the image bytes leave of the frames' share, less the batch's own
        # working memory (its raw frames a few times over: list, array, elements, outputs; measured
        # peak RSS with FrameOptions.atari() was 1397 MiB for a 1 GiB budget without this reserve)
        sample = fresh[0] if fresh else held[0][0] if held and held[0] else None
        working = _WORKING_COPIES * total * (0 if sample is None else sample.nbytes)
        # Half of what is left: ~60k small arrays cost about twice their bytes in the heap (clearing 412
        # MB of them returned 206 MB; peak RSS 1467 MiB for a 1 GiB budget after 212 batches without this)
        self._decoded.budget = max(0, (self._frame_budget - self._images.groups.bytes - working) // 2)
        for e, raw, frames, missing, start in fill:
            for i, frame in zip(missing, fresh[start:start + len(missing)], strict=True):
                frames[i] = frame
                self._decoded.put((e, raw[i]), frame, frame.nbytes + _FRAME_OVERHEAD)
        decoded = [frame for frames in held for frame in frames]
        shapes = {frame.shape for frame in decoded}
        out: np.ndarray | None = None
        if len(shapes) == 1:
            out = _stack_batch(decoded, [(plan[3], plan[4], plan[5], a) for plan, a in zip(plans, at, strict=True)],
                               2 * k, options, frequency)
        else:
            for (_, _, e, rows, kept, needed, _), a in zip(plans, at, strict=True):
                lookup = dict(zip(needed.tolist(), decoded[a:a + len(needed)], strict=True))
                stacks = stacked_frames(lookup.__getitem__, kept, options, skip=frequency,
                                        episode_id=self.episodes[e][0])
                if out is None:
                    out = np.empty((2 * k, *stacks.shape[1:]), dtype=np.uint8)
                elif stacks.shape[1:] != out.shape[1:]:
                    raise DatasetError(f"episode {self.episodes[e][0]}: frames of shape {list(stacks.shape[1:])}, "
                                       f"other sampled episodes have {list(out.shape[1:])}; pass "
                                       f"resize=(height, width)", episode_id=self.episodes[e][0])
                out[rows] = stacks
        assert out is not None
        return out[:k], out[k:]

    def _decode(self, images: list[bytes]) -> list[np.ndarray]:
        """Raw frames of image bytes, on two threads (Pillow's decoders release the GIL)."""
        gray = bool(self.frame_options is not None and self.frame_options.grayscale)

        def decode(part: list[bytes]) -> list[np.ndarray]:
            return [raw_frame(image, gray_ok=gray) for image in part]

        if len(images) < _POOL_MIN:
            return decode(images)
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker has no threads of its own
            self._pool = ThreadPoolExecutor(max_workers=_DECODE_THREADS, thread_name_prefix="frame-decode")
            self._pool_pid = os.getpid()
        size = -(-len(images) // (2 * _DECODE_THREADS))
        parts = self._pool.map(decode, [images[i:i + size] for i in range(0, len(images), size)])
        return [frame for part in parts for frame in part]

    def _rows_of(self, e: int, raw: np.ndarray) -> np.ndarray:
        """Rows of the entry's ``steps.parquet`` holding its raw steps ``raw`` (-1: none)."""
        index = self._frame_rows.get(e)
        if index is None:
            location = self._locations[e]
            try:
                steps = self._agent_steps(e)
                rows = self._images.rows(location, steps)
            except Exception as exc:
                self._check_present(e, exc)
                raise
            if len(rows) and rows[0] >= 0 and bool((np.diff(rows) == 1).all()):
                index = (int(rows[0]), None)  # the usual case: consecutive rows, nothing to keep
            else:
                index = (0, rows.astype(np.int32 if len(rows) and rows.max() < 2**31 else np.int64))
            self._frame_rows.put(e, index, 64 if index[1] is None else index[1].nbytes)
        first, rows = index
        return first + raw if rows is None else rows[raw].astype(np.int64)

    def _agent_steps(self, e: int) -> np.ndarray:
        raw_steps = self._raw_steps.get(e)
        if raw_steps is None:
            raw_steps = agent_step_numbers(self._locations[e], self.episodes[e][1])
            self._raw_steps.put(e, raw_steps, raw_steps.nbytes)
        return raw_steps

    def _no_image(self, e: int, raw: np.ndarray) -> None:
        episode_id = self.episodes[e][0]
        step = int(self._agent_steps(e)[raw].min())
        check_images([None], [step], episode_id)

    def _stacks(self, e: int, positions: np.ndarray) -> np.ndarray:
        """The stacked frames of entry ``e`` at kept ``positions``, through the frame cache.

        Made by the same frame buffer as ``trajectory()`` and ``to_d3rlpy`` (:func:`load_frames`, which
        reads and decodes only the raw frames these stacks need), so a sampled observation is exactly
        the trajectory's; cached per (entry, position) as the finished stack.
        """
        options = self.frame_options
        assert options is not None
        found: dict[int, np.ndarray] = {}
        missing = []
        for p in positions.tolist():
            frame = self._frames_lru.get((e, p))
            if frame is None:
                missing.append(p)
            else:
                found[p] = frame
        if missing:
            wanted = np.asarray(sorted(set(missing)), dtype=np.int64)
            location, agent = self._locations[e], self.episodes[e][1]
            try:
                raw_steps = self._raw_steps.get(e)
                if raw_steps is None:
                    raw_steps = agent_step_numbers(location, agent)
                    self._raw_steps.put(e, raw_steps, raw_steps.nbytes)
                kept = self.downsample_offset + wanted * self.downsample_frequency
                decoded = load_frames(location, raw_steps, options, kept=kept, skip=self.downsample_frequency)
            except Exception as exc:  # polars raises its own errors for a file removed underneath
                self._check_present(e, exc)
                raise
            for p, view in zip(wanted.tolist(), decoded, strict=True):
                frame = found[p] = view.copy()  # a view would keep the whole decoded batch alive
                self._frames_lru.put((e, p), frame, frame.nbytes)
        return np.stack([found[p] for p in positions.tolist()])


def _runs(episode: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The batch rows grouped by episode: a stable ``order``, ``episode[order]``, and each episode's
    ``(first, end)`` run in it."""
    order = np.argsort(episode, kind="stable")
    ordered = episode[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist()
    return order, ordered, list(zip(starts, [*starts[1:], len(order)], strict=True))


def _stack_batch(decoded: list[np.ndarray], plans: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]], rows: int,
                 options: FrameOptions, frequency: int) -> np.ndarray:
    """:func:`stacked_frames` for many entries at once, over raw frames of one shape.

    ``plans`` are, per entry: the output rows, the kept raw steps, the raw indices decoded (sorted)
    and where they start in ``decoded``. Each stacked element is the max over its ``max_n`` raw frames
    (fewer at the episode's start), converted and resized as :func:`stacked_frames` does; the
    arithmetic is per frame, so doing it for the whole batch at once gives the same values.
    """
    black = len(decoded)
    frames = np.empty((black + 1, *decoded[0].shape), dtype=np.uint8)  # [F + 1, H, W(, C)]: black last
    np.stack(decoded, out=frames[:black])
    frames[black] = 0
    count = options.stack_n or 1
    out_rows, element_keys = [], []
    for out, kept, needed, at in plans:
        ends = element_ends(kept, options, skip=frequency)  # [K, S], -1: black
        ids = at + np.searchsorted(needed, np.maximum(ends, 0))
        element_keys.append(np.where(ends >= 0, ids, -1))
        out_rows.append(out)
    keys = np.concatenate(element_keys)  # [rows, S]: the decoded frame each element ends at, or -1
    shape = frames.shape[1:]
    convert = options.grayscale and frames.ndim == 4
    shrink = options.resize is not None and tuple(options.resize) != shape[:2]
    if options.max_n == 1 and not convert and not shrink:  # each element is a raw frame as it is
        elements, slot = frames, np.where(keys < 0, black, keys)
    else:
        unique, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(keys.shape)
        real = unique[unique >= 0]
        # Each element's raw frames: the one it ends at and the max_n - 1 before it in its episode
        # (clipped at the episode's start). An entry's decoded frames are its raw indices, sorted
        # and without gaps within each element's span (raw_indices), so raw index - j is id - j.
        raw_of = np.concatenate([plan[2] for plan in plans])
        built: np.ndarray | None = None
        for chunk in range(0, len(real), _ELEMENT_CHUNK):
            ids = real[chunk:chunk + _ELEMENT_CHUNK]
            element = frames[ids]
            for j in range(1, options.max_n):
                np.maximum(element, frames[np.where(raw_of[ids] - j >= 0, ids - j, ids)], out=element)
            if convert:
                element = grayscale(element, options.luma)
            if shrink:
                assert options.resize is not None
                element = resize(element, options.resize, options.resample)
            if built is None:  # black last
                built = np.zeros((len(real) + 1, *element.shape[1:]), dtype=np.uint8)
            built[chunk:chunk + len(ids)] = element
        elements = np.zeros((1, *shape), dtype=np.uint8) if built is None else built
        shape = elements.shape[1:]
        slot = inverse - (1 if unique[0] < 0 else 0)
        slot = np.where(keys < 0, len(real), slot)
    by_row = np.empty((rows, count), dtype=np.int64)
    by_row[np.concatenate(out_rows)] = slot  # each output row's elements, oldest first
    if options.stack_n is None:
        return elements[by_row[:, 0]]
    if options.framestack_axis_first:
        return elements[by_row]
    # Stack axis last: one element at a time into its strided slot, 3x faster than a moveaxis copy
    stacked = np.empty((rows, *shape, count), dtype=np.uint8)
    for s in range(count):
        stacked[..., s] = elements[by_row[:, s]]
    return stacked


def _index(lake: Lake, episodes: Selection, agent: str | None, frequency: int,
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
