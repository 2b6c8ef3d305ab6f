"""Trajectories out of the lake: numpy arrays, ``.npz`` files and d3rlpy datasets.

Every exporter takes an iterable of :class:`~pipeline.engine.trajectory.Trajectory` (as
:meth:`pipeline.Lake.trajectories` yields them) and concatenates them in order; ``terminals``
marks where each one ends. d3rlpy is an optional extra: ``pip install 'ingest-pipeline[rl]'``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from ..engine.trajectory import Trajectory
from ..errors import DatasetError, ExportError, MissingExtra

_PER_STEP = ("observations", "actions", "rewards", "terminals", "steps")


def to_numpy(trajectories: Iterable[Trajectory]) -> dict[str, np.ndarray]:
    """Concatenate trajectories into one array per field, plus which episode each row came from.

    Keys: ``observations``, ``actions``, ``rewards``, ``terminals``, ``steps`` and ``episode``
    (row -> index into ``episode_ids``, ``environments`` and ``agents``, one entry per
    trajectory); ``reward_components`` and ``reward_names`` when every trajectory has the same
    components; ``frames`` and ``frame_layout`` when frames were loaded.
    """
    items = list(trajectories)
    if not items:
        raise DatasetError("no episode selected: nothing to export")
    _same("observation shape", [t.observations.shape[1:] for t in items])
    arrays = {name: np.concatenate([getattr(t, name) for t in items]) for name in _PER_STEP}
    arrays["episode"] = np.repeat(np.arange(len(items)), [len(t) for t in items])
    arrays["episode_ids"] = np.array([t.episode_id for t in items])
    arrays["environments"] = np.array([t.environment for t in items])
    arrays["agents"] = np.array([t.agent for t in items])
    components = [t.reward_components for t in items]
    if all(c is not None for c in components) and len({c.shape[1] for c in components if c is not None}) == 1:
        arrays["reward_components"] = np.concatenate(components)  # type: ignore[arg-type]
        if len({t.reward_names for t in items}) == 1 and items[0].reward_names is not None:
            arrays["reward_names"] = np.array(items[0].reward_names)
    frames = [t.frames for t in items]
    if all(f is not None for f in frames):
        _same("frame shape", [f.shape[1:] for f in frames if f is not None])
        arrays["frames"] = np.concatenate(frames)  # type: ignore[arg-type]
        arrays["frame_layout"] = np.array(items[0].frame_layout)
    return arrays


def to_npz(path: str | os.PathLike[str], trajectories: Iterable[Trajectory]) -> Path:
    """Write :func:`to_numpy`'s arrays to a compressed ``.npz`` file; ``np.load`` reads it back."""
    arrays: dict[str, Any] = to_numpy(trajectories)
    with _replacing(Path(path)) as file:  # a file object also keeps numpy from appending ".npz"
        np.savez_compressed(file, **arrays)
    return Path(path)


def dump_d3rlpy(dataset: Any, path: str | os.PathLike[str]) -> Path:
    """Write a d3rlpy dataset to an HDF5 file that ``d3rlpy.dataset.ReplayBuffer.load`` reads."""
    with _replacing(Path(path)) as file:
        dataset.dump(file)
    return Path(path)


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[IO[bytes]]:
    """A file that replaces ``target`` once written in full; a failure leaves ``target`` as it was.

    A target that exists and is not a regular file (``/dev/stdout``, a pipe) is written directly:
    renaming over it would replace the device. A failure to write is :class:`ExportError`.
    """
    if target.exists() and not target.is_file():
        try:
            with open(target, "wb") as file:
                yield file
        except OSError as exc:
            raise _export_error(target, exc) from exc
        return
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "w+b") as file:  # h5py reads back what it writes
            yield file
        os.replace(partial, target)
    except OSError as exc:
        raise _export_error(target, exc) from exc
    finally:
        partial.unlink(missing_ok=True)


def _export_error(target: Path, exc: OSError) -> ExportError:
    advice = {errno.ENOSPC: "; free some space or write elsewhere", errno.ENOENT: "; create its folder first",
              errno.EACCES: "; choose a folder you may write to"}.get(exc.errno or 0, "")
    return ExportError(f"could not write {target}: {exc.strerror or exc}{advice}")


def to_d3rlpy(trajectories: Iterable[Trajectory], *, observation: Literal["vector", "frames"] = "vector",
              **dataset_options: Any) -> Any:
    """A ``d3rlpy.dataset.MDPDataset`` of the trajectories, one d3rlpy episode each.

    ``observation="vector"`` flattens each observation to 1-D float32 (d3rlpy's vector encoders
    take 1-D input); ``"frames"`` uses the uint8 frames, channels first (stack and colour axes
    merged), as d3rlpy's pixel encoders expect. Integral actions make a discrete action space.
    """
    try:
        import d3rlpy
    except ImportError as exc:
        raise MissingExtra("d3rlpy export", "rl", "d3rlpy") from exc
    if observation not in ("vector", "frames"):
        raise DatasetError(f"observation must be 'vector' or 'frames', not {observation!r}")
    arrays = to_numpy(trajectories)
    if observation == "frames":
        if "frames" not in arrays:
            raise DatasetError("observation='frames' needs trajectories loaded with frames")
        observations = channels_first(arrays["frames"], str(arrays["frame_layout"]))
    else:
        observations = arrays["observations"].reshape(len(arrays["observations"]), -1).astype(np.float32)
    actions = arrays["actions"]
    if np.array_equal(actions, np.round(actions)):
        if actions.min() < 0:
            raise DatasetError(f"discrete actions must be 0 or more for d3rlpy, found {actions.min():g} "
                               f"(-1 conventionally means no/unknown action)")
        actions = actions.astype(np.int64)
    else:
        actions = actions.astype(np.float32).reshape(-1, 1)
    return d3rlpy.dataset.MDPDataset(
        observations=observations,
        actions=actions,
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"].astype(np.float32),
        **dataset_options,
    )


def channels_first(frames: np.ndarray, layout: str) -> np.ndarray:
    """Frames ``[T, …]`` of ``layout`` (e.g. ``THWC``, ``TNHW``, ``THWCN``) as ``[T, channels, H, W]``.

    The stack axis (N) comes before colour (C) in the merged channel axis.
    """
    order = [layout.index(axis) for axis in "TNCHW" if axis in layout]
    moved = frames.transpose(order)
    height, width = frames.shape[layout.index("H")], frames.shape[layout.index("W")]
    return np.ascontiguousarray(moved.reshape(len(frames), -1, height, width))


def _same(what: str, shapes: list[tuple[int, ...]]) -> None:
    if len(set(shapes)) > 1:
        raise DatasetError(f"the trajectories differ in {what}: {sorted(set(shapes))}; export them separately")
