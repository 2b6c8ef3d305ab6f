"""One agent's trajectory as numpy arrays, with frames decoded, resized, stacked on request.

:func:`load_trajectory` reads one committed episode folder: the agent's rows of
``agent_steps.parquet`` and, only when frames are asked for, the images of the steps it keeps from
``steps.parquet``. Nothing else of the episode is read, and no image is decoded unless asked for.

Downsampling (``downsample_frequency=f``, ``downsample_offset=o``) keeps the agent's steps
``o, o+f, o+2f, …`` (positions in its trajectory). Like frame skipping, each kept step's reward is
the sum of the rewards from it up to the next kept step, so no reward after the offset is lost.
Frame stacking then runs over the kept steps: the frame of a kept step is stacked with those of the
``stack_n - 1`` kept steps before it, the first frame repeated where the trajectory has none, unless
the options say otherwise (``FrameOptions.atari()``: CrowdPlay's frame buffer, see :mod:`.framestack`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..lake.layout import EpisodeLocation
from ..lake.segments import episode_rows
from .agentrows import AgentRows, AgentStepsFile
from .framestack import no_image, raw_indices, stacked_frames
from .pngdecode import raw_frame

_TRAJECTORY_COLUMNS = ["action", "rewards", "total_reward", "observation", "observation_shape"]  # and step


@dataclass(frozen=True)
class FrameOptions:
    """How frames are decoded: size, colour, stacking, and what a step without an image gets.

    ``resize`` is ``(height, width)``; ``stack_n=None`` adds no stack axis, an ``int`` adds one of
    that length, first (``[n, H, W(, C)]``) or last (``[H, W(, C), n]``) in each frame, oldest first.
    ``missing="previous"`` gives a step without an image the latest image before it.

    The frame buffer (:mod:`pipeline.framestack`): each stacked element is the pixel-wise max of
    ``max_n`` consecutive raw frames; elements are ``skip_n`` raw steps apart (None: the kept steps,
    i.e. ``downsample_frequency`` apart); before the episode's start, ``pad="repeat"`` repeats the
    stack's earliest element and ``pad="zeros"`` gives black. ``resample`` is ``"bilinear"``
    (Pillow) or ``"area"`` (area averaging, as OpenCV's ``INTER_AREA``); ``luma`` the grayscale
    formula, Pillow's ``"L"`` or OpenCV's ``RGB2GRAY`` (they differ by at most 1 grey level).
    """

    resize: tuple[int, int] | None = None
    grayscale: bool = False
    stack_n: int | None = None
    framestack_axis_first: bool = False
    missing: Literal["error", "previous"] = "error"
    max_n: int = 1
    skip_n: int | None = None
    pad: Literal["repeat", "zeros"] = "repeat"
    resample: Literal["bilinear", "area"] = "bilinear"
    luma: Literal["pillow", "opencv"] = "pillow"

    @classmethod
    def atari(cls, *, stack_n: int | None = 4, framestack_axis_first: bool = False,
              missing: Literal["error", "previous"] = "error") -> FrameOptions:
        """CrowdPlay's processing, exactly: its DeepMind-style frame buffer (max 2, skip 4, zeros before
        the start), OpenCV's grayscale, 84x84 by area averaging, four stacked elements, stack axis last."""
        return cls(resize=(84, 84), grayscale=True, stack_n=stack_n, framestack_axis_first=framestack_axis_first,
                   missing=missing, max_n=2, skip_n=4, pad="zeros", resample="area", luma="opencv")


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One agent's steps of one episode, in step order, as numpy arrays of length ``T``.

    ``observations`` is ``[T, *observation_shape]`` (float64), ``actions``, ``rewards`` (the total
    per step) and ``steps`` (the step numbers) are ``[T]``, ``terminals`` is true on the last step.
    ``reward_components`` is ``[T, K]`` when the episode gave reward vectors, named by
    ``reward_names`` when it had a ``reward_mapping``. ``frames`` is uint8, present when asked for;
    ``frame_layout`` names its axes: T (time), H, W, C (colour) and N (the stack), e.g. ``"TNHW"``.
    """

    episode_id: str
    environment: str
    agent: str
    steps: np.ndarray
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    reward_components: np.ndarray | None = None
    reward_names: tuple[str, ...] | None = None
    frames: np.ndarray | None = None
    frame_layout: str | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        frames = "" if self.frames is None else f", frames={list(self.frames.shape)}"
        return (f"Trajectory(episode_id={self.episode_id!r}, agent={self.agent!r}, T={len(self)}, "
                f"observations={list(self.observations.shape)}{frames})")


def agents(location: EpisodeLocation) -> list[str]:
    """The episode's agents in order of appearance: by first step, then as that step lists them.

    ``episode_agents.parquet`` holds its rows in that order (see ``EpisodeTables.episode_agents``).
    """
    # ParquetFile, not pq.read_table: read_table imports pyarrow.dataset, 0.24 s on a first call (measured).
    return episode_rows(location, "episode_agents", ["agent"]).column("agent").to_pylist()


# Frames from elsewhere than the PNGs (a prepared frame store, :mod:`.prepared_episode`), given
# (location, agent, step numbers, options, kept raw steps, downsampling frequency); None: decode them.
FrameReader = Callable[[EpisodeLocation, str, np.ndarray, FrameOptions, np.ndarray, int], np.ndarray | None]


def load_trajectory(
    location: EpisodeLocation,
    agent: str | None = None,
    *,
    frames: bool | FrameOptions = False,
    downsample_frequency: int = 1,
    downsample_offset: int = 0,
    frame_reader: FrameReader | None = None,
) -> Trajectory:
    """Read one agent's trajectory (default: the episode's first agent) from a committed episode.

    ``frame_reader`` may give the frames instead of decoding them (it must give the same values).
    """
    episode_id = location.episode_id
    if downsample_frequency < 1 or not 0 <= downsample_offset < downsample_frequency:
        raise DatasetError(
            f"downsampling needs frequency >= 1 and 0 <= offset < frequency, "
            f"got frequency {downsample_frequency} and offset {downsample_offset}", episode_id=episode_id)
    file = AgentStepsFile(str(location.table("agent_steps")), episode_id if location.segment else None)
    if agent is None:
        agent = file.only_agent(_TRAJECTORY_COLUMNS) or next(iter(agents(location)), None)
        if agent is None:
            raise DatasetError(f"episode {episode_id} has no agent steps", episode_id=episode_id)
    rows = file.rows(agent, _TRAJECTORY_COLUMNS)
    if len(rows) == 0:
        raise DatasetError(f"episode {episode_id} has no agent {agent!r}; its agents: {', '.join(agents(location))}",
                           episode_id=episode_id, agent=agent)
    steps = rows.steps
    observations = _observations(rows, episode_id, agent)
    rewards = rows.numbers("total_reward")
    components = _reward_components(rows, episode_id, agent)

    kept = np.arange(downsample_offset, len(steps), downsample_frequency)
    if len(kept) == 0:
        raise DatasetError(f"episode {episode_id}, agent {agent!r}: downsampling keeps no step "
                           f"of its {len(steps)}", episode_id=episode_id, agent=agent)
    if downsample_frequency > 1:
        rewards = np.add.reduceat(rewards[downsample_offset:], kept - downsample_offset)
        if components is not None:
            components = np.add.reduceat(components[downsample_offset:], kept - downsample_offset, axis=0)
    actions = rows.numbers("action")
    if downsample_frequency > 1:
        steps, observations, actions = steps[kept], observations[kept], actions[kept]
    terminals = np.zeros(len(kept), dtype=bool)
    terminals[-1] = True

    options = FrameOptions() if frames is True else (frames or None)
    frame_array = None
    if options is not None and frame_reader is not None:
        frame_array = frame_reader(location, agent, rows.steps, options, kept, downsample_frequency)
    if options is not None and frame_array is None:
        frame_array = load_frames(location, rows.steps, options, kept=kept, skip=downsample_frequency)
    return Trajectory(
        episode_id=episode_id,
        environment=location.environment,
        agent=agent,
        steps=steps,
        observations=observations,
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        reward_components=components,
        reward_names=_reward_names(location) if components is not None else None,
        frames=frame_array,
        frame_layout=None if options is None else frame_layout(options),
    )


def _observations(rows: AgentRows, episode_id: str, agent: str) -> np.ndarray:
    """``[T, *shape]``, after checking that every row has the first row's shape."""
    ndims, dims = rows.lists("observation_shape")
    shape = dims[:ndims[0]].tolist()
    same = ndims == len(shape)
    if bool(same.all()):
        same = (dims.reshape((len(rows), len(shape))) == np.asarray(shape, dtype=dims.dtype)).all(axis=1)
    if not bool(same.all()):
        changed = int(np.argmin(same))
        start = int(ndims[:changed].sum())
        other = dims[start:start + ndims[changed]].tolist()
        raise DatasetError(
            f"episode {episode_id}, agent {agent!r}: observation shape changes from {shape} to {other} "
            f"at step {rows.steps[changed]}; one trajectory needs one shape", episode_id=episode_id, agent=agent)
    sizes, values = rows.lists("observation")
    size = int(np.prod(shape))
    if bool((sizes != size).any()):
        changed = int(np.argmax(sizes != size))
        raise DatasetError(
            f"episode {episode_id}, agent {agent!r}: step {rows.steps[changed]} has {sizes[changed]} observation "
            f"values, its shape {shape} needs {size}", episode_id=episode_id, agent=agent)
    return values.reshape((len(rows), *shape))


def _reward_components(rows: AgentRows, episode_id: str, agent: str) -> np.ndarray | None:
    """``[T, K]`` when the agent's rewards were vectors of K components, else None."""
    given = rows.valid("rewards")
    if not bool(given.any()):
        return None
    lengths, values = rows.lists("rewards")
    if not bool(given.all()) or bool((lengths != lengths[0]).any()):
        raise DatasetError(f"episode {episode_id}, agent {agent!r}: reward vectors of different lengths",
                           episode_id=episode_id, agent=agent)
    return values.reshape((len(rows), int(lengths[0])))


def _reward_names(location: EpisodeLocation) -> tuple[str, ...] | None:
    mapping = episode_rows(location, "episodes", ["reward_mapping"]).column("reward_mapping")[0].as_py()
    return None if mapping is None else tuple(mapping)


def agent_step_numbers(location: EpisodeLocation, agent: str) -> np.ndarray:
    """One agent's step numbers in step order: the raw steps its frames are indexed by."""
    file = AgentStepsFile(str(location.table("agent_steps")), location.episode_id if location.segment else None)
    return file.rows(agent, []).steps


def load_frames(location: EpisodeLocation, steps: np.ndarray, options: FrameOptions, *,
                kept: np.ndarray | None = None, skip: int = 1) -> np.ndarray:
    """Decode, process and stack the frames of ``steps[kept]`` (default: every step) as one uint8 array.

    ``steps`` are the trajectory's step numbers in order: its raw frames, of which the frame buffer
    (:func:`pipeline.framestack.stacked_frames`) reads only those it needs, each decoded once.
    ``skip`` is the downsampling frequency (the spacing of stacked frames when ``skip_n`` is None).
    """
    episode_id = location.episode_id
    kept = np.arange(len(steps)) if kept is None else kept
    needed = raw_indices(kept, options, skip=skip)
    images = _images(location)
    sources = _previous_images(location, images, steps[needed]) if options.missing == "previous" else steps[needed]
    wanted = sorted(set(sources.tolist()))
    lacking = [step for step in wanted if images.get(step) is None]
    if lacking:
        raise no_image(episode_id, lacking[0])
    source_of = dict(zip(needed.tolist(), sources.tolist(), strict=True))

    @lru_cache(maxsize=options.max_n + 1)  # missing="previous" shows one image at several steps in a row
    def decoded(step: int) -> np.ndarray:
        # none lacking (checked above); a grey image stays [H, W] when it becomes grey anyway
        return raw_frame(images[step] or b"", gray_ok=options.grayscale)

    return stacked_frames(lambda index: decoded(source_of[index]), kept, options, skip=skip, episode_id=episode_id)


def _images(location: EpisodeLocation) -> dict[int, bytes | None]:
    """Step number -> image bytes (None for a step without one), read with page checksums verified."""
    table = episode_rows(location, "steps", ["step", "image"])
    return dict(zip(table.column("step").to_pylist(), table.column("image").to_pylist(), strict=True))


def _previous_images(location: EpisodeLocation, images: dict[int, bytes | None], steps: np.ndarray) -> np.ndarray:
    """For each step, the step whose image it shows: itself, or the latest step before it with one."""
    with_image = np.array(sorted(step for step, image in images.items() if image is not None), dtype=np.int64)
    position = np.searchsorted(with_image, steps, side="right") - 1
    if len(position) and position.min() < 0:
        first = int(steps[position < 0][0])
        raise no_image(location.episode_id, first, none_before=True)
    return with_image[position]


_RAW = FrameOptions()  # a raw frame: RGB as decoded


def frame_layout(options: FrameOptions) -> str:
    """The axes of the frames ``options`` produce: ``T`` then e.g. ``HWC``, ``NHW`` or ``HWN``."""
    frame = "HW" if options.grayscale else "HWC"
    if options.stack_n is not None:
        frame = "N" + frame if options.framestack_axis_first else frame + "N"
    return "T" + frame


def decode_frame(data: bytes, options: FrameOptions) -> np.ndarray:
    """One image file's bytes as a uint8 array ``[H, W, C]`` (``[H, W]`` in grayscale)."""
    with Image.open(io.BytesIO(data)) as source:
        image = source.convert("L" if options.grayscale else "RGB")
        if options.resize is not None:
            height, width = options.resize
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def stack_frames(frames: np.ndarray, n: int, *, axis_first: bool) -> np.ndarray:
    """``[T, *F]`` -> ``[T, n, *F]`` (or ``[T, *F, n]``): each frame with the ``n - 1`` before it.

    The oldest frame comes first along the stack axis; before the first frame, the first repeats.
    """
    if n < 1:
        raise DatasetError(f"stack_n must be at least 1, got {n}")
    index = np.arange(len(frames))[:, None] + np.arange(1 - n, 1)[None, :]
    stacked = frames[np.maximum(index, 0)]  # [T, n, *F]
    return stacked if axis_first else np.moveaxis(stacked, 1, -1)
