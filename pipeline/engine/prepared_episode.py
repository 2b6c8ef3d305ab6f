"""A whole trajectory's frames from a prepared frame store: what ``trajectory()``, ``to_numpy`` and
``to_d3rlpy`` read instead of decoding PNGs.

:func:`~pipeline.engine.preparing.prepare_frames` stores every processed element of an (episode,
agent) (:mod:`pipeline.lake.framestore`); :class:`StoredFrames` is the reader
:func:`~pipeline.engine.trajectory.load_trajectory` calls for the frames of one trajectory. It reads
the entry's index, checks that the raw frames the kept steps need can be shown (raising what decoding
would raise, naming the same step), reads the needed elements' bytes with one ``pread``, decompresses
them (zstd, in C on two threads) and stacks them with the same function as the decode path
(:func:`~pipeline.engine.framestack.stack_elements`), so the frames are the same, bit for bit.

``prepared`` is the sampler's switch: ``None`` uses the store when it holds the (episode, agent) and
decodes the PNGs otherwise; ``True`` requires it (an error names the command that prepares it);
``False`` never opens it. A damaged entry (every byte of it is covered by a checksum) is never read
as frames: with ``None`` the frames are decoded (and a :class:`DamagedFramesWarning` says which file
to rebuild), with ``True`` it is :class:`~pipeline.lake.framestore.DamagedEntry`. An entry that is
whole but does not describe this trajectory (other steps, episode, agent or options: only a file
copied in by hand can be one) counts as damaged.
"""

from __future__ import annotations

import json
import os
import shlex
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..lake.framestore import OPTIONS_FILE, DamagedEntry, EntryIndex, element_bytes, read_index
from ..lake.layout import EpisodeLocation, frame_entry_name, frame_store_path
from .framestack import element_ends, no_image, stack_elements
from .prepared import element_options, store_key
from .trajectory import FrameOptions, agents

_THREADS = 2  # zstd decompression threads for a large read (it runs in C, without the GIL)
_MERGE_GAP = 1 << 16  # element ranges closer than this are read with one pread (see _read)


class DamagedFramesWarning(UserWarning):
    """A prepared frame store file is damaged; its frames were decoded from the PNGs instead."""


class StoredFrames:
    """Frames of whole trajectories from the store of ``options`` (a ``FrameReader``; see the module doc).

    ``read`` and ``decoded`` count the trajectories served from the store and left to the decode path.
    """

    def __init__(self, lake_path: Path, options: FrameOptions, prepared: bool | None = None) -> None:
        self.lake_path = lake_path
        self.options = options
        self.prepared = prepared
        self.read = 0
        self.decoded = 0
        self._decompressor: Any = None

    @cached_property
    def key(self) -> str:
        """The store's key (asked for when first needed: bad options fail where decoding would fail)."""
        return store_key(self.options)

    @property
    def store(self) -> Path:
        return frame_store_path(self.lake_path, self.key)

    def __call__(self, location: EpisodeLocation, agent: str, steps: np.ndarray, options: FrameOptions,
                 kept: np.ndarray, skip: int) -> np.ndarray | None:
        if self.prepared is False or store_key(options) != self.key:
            self.decoded += 1
            return None
        path = self.store / frame_entry_name(location.episode_id, agent)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if self.prepared:
                raise DatasetError(f"episode {location.episode_id}, agent {agent!r}: {self.not_prepared()}",
                                   episode_id=location.episode_id, agent=agent) from None
            self.decoded += 1
            return None
        try:
            frames = self._stacks(fd, path, location.episode_id, agent, steps, options, kept, skip)
        except DamagedEntry as exc:
            if self.prepared:
                raise
            warnings.warn(f"{exc}; decoded its PNGs instead", DamagedFramesWarning, stacklevel=2)
            self.decoded += 1
            return None
        finally:
            os.close(fd)
        self.read += 1
        return frames

    def require_prepared(self, selection: list[tuple[EpisodeLocation, str | None]]) -> None:
        """Raise DatasetError unless the store holds every (episode, agent) of ``selection`` (agent None:
        the episode's first): ``prepared=True`` checks a whole selection before any of it is read."""
        lacking = missing_entries(self.lake_path, self.options, selection)
        if lacking:
            episode_id, name = lacking[0]
            raise DatasetError(self.not_prepared(f"no prepared frames for {len(lacking)} of the {len(selection)} "
                                                 f"selected episodes (first: {episode_id}, agent {name!r})"),
                               episode_id=episode_id, agent=name)

    def not_prepared(self, what: str = "no prepared frames") -> str:
        """Why ``prepared=True`` fails: the store lacks an entry; what to run."""
        return (f"{what} with these frame options (store {self.key}); run `{prepare_command(self.options)}` "
                f"(or lake.prepare_frames(options, ...)), or read the PNGs instead (prepared=None; `export` without "
                f"--prepared)")

    def _stacks(self, fd: int, path: Path, episode_id: str, agent: str, steps: np.ndarray, options: FrameOptions,
                kept: np.ndarray, skip: int) -> np.ndarray:
        index = read_index(fd, path)
        if (index.episode_id, index.agent, index.key) != (episode_id, agent, self.key) or not np.array_equal(
                index.steps, steps):
            raise DamagedEntry(path, "it holds other frames than its name says (its episode, agent, options or "
                                     "steps differ from the lake's)")
        ends = element_ends(kept, options, skip=skip)
        unique = np.unique(ends[ends >= 0])
        _check_present(index, unique, options, episode_id)
        starts, stops = index.offsets[unique], index.offsets[unique + 1]
        if bool((stops == starts).any()):  # an element the index says can be shown was not stored
            raise DamagedEntry(path, f"no element at step {int(index.steps[unique[stops == starts][0]])}, "
                                     f"whose frames its index says are there")
        blobs = _read(fd, path, starts, stops)
        if self._decompressor is None and index.codec == "zstd":
            import zstandard

            self._decompressor = zstandard.ZstdDecompressor()
        try:
            decoded = element_bytes(blobs, index.element_size, index.codec, self._decompressor,
                                    threads=_THREADS if len(blobs) >= 64 else 1)
        except DamagedEntry as exc:
            where = "" if exc.item is None else f" (the element of step {int(index.steps[unique[exc.item]])})"
            raise DamagedEntry(path, f"{exc.detail}{where}") from exc
        size = index.element_size
        elements = np.empty((len(unique) + 1, *index.shape), dtype=np.uint8)  # the last one black: padding
        flat = elements.reshape(len(unique) + 1, size)
        for i, element in enumerate(decoded):
            flat[i] = np.frombuffer(element, dtype=np.uint8)
        flat[-1] = 0
        return stack_elements(elements, unique, ends, options)


def _read(fd: int, path: Path, starts: np.ndarray, stops: np.ndarray) -> list[memoryview]:
    """The bytes of each range (sorted), one ``pread`` for each run of ranges less than :data:`_MERGE_GAP`
    apart: copying a skipped element out of the page cache costs less than a system call of its own
    (one ``pread`` per element of a 4x downsampled read cost 0.7 s of CPU for 15,000 ~2 KB elements,
    against 0.35 s reading the whole span, on the loaded machine: measured)."""
    breaks = np.flatnonzero(starts[1:] - stops[:-1] > _MERGE_GAP) + 1
    blobs: list[memoryview] = []
    for run_starts, run_stops in zip(np.split(starts, breaks), np.split(stops, breaks), strict=True):
        low, high = int(run_starts[0]), int(run_stops[-1])
        data = os.pread(fd, high - low, low)
        if len(data) != high - low:
            raise DamagedEntry(path, f"cut short: {low + len(data)} of {high} bytes")
        view = memoryview(data)
        blobs.extend(view[a:b] for a, b in zip((run_starts - low).tolist(), (run_stops - low).tolist(), strict=True))
    return blobs


def _check_present(index: EntryIndex, unique: np.ndarray, options: FrameOptions, episode_id: str) -> None:
    """Raise what decoding the PNGs raises when a raw frame the elements need cannot be shown."""
    spans = (unique[:, None] - np.arange(options.max_n)[None, :]).ravel()
    spans = spans[spans >= 0]
    if bool(index.present[spans].all()):
        return
    step = int(index.steps[np.unique(spans[~index.present[spans]])].min())
    raise no_image(episode_id, step, none_before=options.missing == "previous")


def missing_entries(lake_path: Path, options: FrameOptions,
                    selection: list[tuple[EpisodeLocation, str | None]]) -> list[tuple[str, str]]:
    """The (episode id, agent) of ``selection`` (agent None: the episode's first) the store of ``options``
    does not hold."""
    store = frame_store_path(lake_path, store_key(options))
    try:
        have = set(os.listdir(store))
    except (FileNotFoundError, NotADirectoryError):
        have = set()
    lacking = []
    for location, agent in selection:
        name = agent if agent is not None else next(iter(agents(location)), "")
        if frame_entry_name(location.episode_id, name) not in have:
            lacking.append((location.episode_id, name))
    return lacking


def prepare_command(options: FrameOptions) -> str:
    """The ``ingest-pipeline frames prepare`` command that prepares the store ``options`` read."""
    mine = element_options(options)
    atari = element_options(FrameOptions.atari(missing=options.missing))
    if mine == atari:
        flags = ["--atari"]
    else:
        default = element_options(FrameOptions(missing=options.missing))
        flags = [] if mine["resize"] is None else ["--resize", "x".join(map(str, mine["resize"]))]
        flags += ["--grayscale"] if mine["grayscale"] else []
        flags += [f"--{name.replace('_', '-')}={mine[name]}" for name in ("max_n", "resample", "luma")
                  if mine[name] != default[name]]
    if options.missing != "error":
        flags.append(f"--missing-frames={options.missing}")
    return shlex.join(["ingest-pipeline", "frames", "prepare", *flags])


def store_options(lake_path: Path, key: str) -> FrameOptions:
    """The frame options store ``key`` was prepared with (from its options file): to prepare it again."""
    store = frame_store_path(lake_path, key)
    try:
        recorded = json.loads((store / OPTIONS_FILE).read_text())
        options = FrameOptions(**{name: recorded[name] for name in ("grayscale", "max_n", "resample", "luma",
                                                                   "missing")},
                               resize=None if recorded["resize"] is None else tuple(recorded["resize"]))
    except FileNotFoundError:
        raise DatasetError(f"no prepared frame store {key!r} in {lake_path} (or it has no {OPTIONS_FILE}); "
                           f"`ingest-pipeline frames ls` lists them, or give the options") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{store / OPTIONS_FILE} does not say which options made the store ({exc}); "
                           f"give the options") from exc
    if store_key(options) != key:
        raise DatasetError(f"store {key!r} is of another format version or its {OPTIONS_FILE} was changed (its "
                           f"options make store {store_key(options)!r}); give the options")
    return options
