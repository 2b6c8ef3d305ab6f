"""Lake: a snapshot of the committed episodes, read as polars LazyFrames, SQL, labels and trajectories.

A :class:`Lake` lists the committed episode folders once, when it opens (or on :meth:`Lake.refresh`),
and builds every table over exactly the files of those folders. Every table it returns therefore
describes the same episodes, whatever ingests commit or fail alongside. ``environment`` and
``episode_id`` come from the folder names; a filter on either is pushed down to the file list,
so other episodes' files are not opened (``lake.agent_steps().filter(...).explain()`` shows it).

``Lake`` is the user's one object, so this module is its face: most methods are a few lines handing
the work to the module that does it. The snapshot and the tables over its files are :mod:`.snapshot`,
episode ids and selections :mod:`.selection`, the translation of read errors :mod:`.read_errors`, the
label tables :mod:`.labels`; trajectories, sampling, prepared frames, exports and reports live in
their own modules (the last two imported inside the methods that use them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from ..errors import DatasetError, PipelineError
from ..lake.compact import CompactReport, compact
from ..lake.framestore import StoreSummary, list_stores
from ..lake.layout import EpisodeLocation, resolve_lake
from ..lake.maintenance import remove_episodes, remove_frames
from ..lake.tables import TABLES
from .labels import ACTION_LABELS, REWARD_LABELS, label_tables, mappings, sorted_labels
from .read_errors import read_error
from .selection import Selection, resolve, select
from .snapshot import PARTITIONS, Snapshot
from .trajectory import FrameOptions, Trajectory, agents, load_trajectory

if TYPE_CHECKING:
    from .prepared_episode import StoredFrames
    from .preparing import PrepareReport
    from .sampler import Sampler


class Lake:
    """The committed episodes of a lake at one moment, with polars LazyFrames over their tables.

    >>> lake = Lake("lake")                                        # doctest: +SKIP
    >>> lake.episode_agents().filter(pl.col("total_reward") >= 100).collect()   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: Path = resolve_lake(path)
        self._labels: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None = None
        self.refresh()

    def refresh(self) -> Lake:
        """Take a new snapshot: episodes committed or removed since become visible."""
        self._snapshot = Snapshot(self.path)
        self._labels = None
        return self

    @property
    def locations(self) -> tuple[EpisodeLocation, ...]:
        """Where the snapshot's episodes live (folders or segments), sorted by environment then id."""
        return self._snapshot.locations

    def __len__(self) -> int:
        return len(self._snapshot)

    def __repr__(self) -> str:
        return f"Lake({str(self.path)!r}, {len(self)} episodes)"

    # -- tables -------------------------------------------------------------------------------

    def scan(self, table: str, *, episodes: Selection = None) -> pl.LazyFrame:
        """One table of the snapshot (or of the selected episodes only) as a LazyFrame.

        ``environment`` and ``episode_id`` come first; the other columns are the table's schema.
        """
        if table not in TABLES:
            raise DatasetError(f"unknown table {table!r}; the tables are {', '.join(TABLES)}")
        locations = None if episodes is None else [loc for loc, _ in self.select(episodes)]
        return self._snapshot.scan(table, locations)

    def check_fresh(self, locations: Iterable[EpisodeLocation] | None = None) -> None:
        """Raise :class:`~pipeline.errors.StaleSnapshot` if a compaction or removal has since
        rebuilt an environment folder the snapshot (or ``locations``) reads."""
        self._snapshot.check_fresh(locations)

    def episodes(self, *, episodes: Selection = None) -> pl.LazyFrame:
        """One row per episode: source, training and inference metadata, counts, total reward."""
        return self.scan("episodes", episodes=episodes)

    def episode_agents(self, *, episodes: Selection = None) -> pl.LazyFrame:
        """One row per agent of each episode: length, total reward, per-component totals, …"""
        return self.scan("episode_agents", episodes=episodes)

    def steps(self, *, episodes: Selection = None) -> pl.LazyFrame:
        """One row per step: step number, position in the file, image bytes."""
        return self.scan("steps", episodes=episodes)

    def agent_steps(self, *, episodes: Selection = None) -> pl.LazyFrame:
        """One row per agent step: action, reward(s), observation, health, …"""
        return self.scan("agent_steps", episodes=episodes)

    def unit_steps(self, *, episodes: Selection = None) -> pl.LazyFrame:
        """One row per unit step."""
        return self.scan("unit_steps", episodes=episodes)

    def sql(self, query: str, *, eager: bool = False) -> pl.LazyFrame | pl.DataFrame:
        """Run polars SQL over the five tables and the label tables, registered by name.

        The label tables are ``action_labels`` and ``unit_action_labels`` (episode_id, action,
        action_label) and ``reward_labels`` (episode_id, component, reward_name). With ``eager=True``
        the result is collected here, and a damaged file is :class:`~pipeline.errors.DamagedFile`.
        """
        frames: dict[str, pl.LazyFrame] = {table: self.scan(table) for table in TABLES}
        frames["action_labels"] = self.action_labels()
        frames["unit_action_labels"] = self.action_labels(units=True)
        frames["reward_labels"] = self.reward_labels()
        with pl.SQLContext(frames) as context:
            if not eager:
                return context.execute(query)
            with self.reading():
                return context.execute(query, eager=True)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Collect polars frames of this lake inside this: a damaged file becomes DamagedFile.

        polars names no file in its errors; :mod:`.read_errors` finds the damaged one (footers first,
        then up to 1 GB of pages) or says to run ``ingest-pipeline check --deep``.

        >>> with lake.reading():                                    # doctest: +SKIP
        ...     frame = lake.agent_steps().filter(pl.col("reward") > 1).collect()
        """
        try:
            yield
        except PipelineError:
            raise
        except (pl.exceptions.ComputeError, OSError, pl.exceptions.PanicException) as exc:
            error = read_error(self._snapshot, exc)
            if error is exc:
                raise
            raise error from exc

    # -- episode ids --------------------------------------------------------------------------

    def resolve(self, episode_id: str) -> EpisodeLocation:
        """The snapshot's episode whose id is ``episode_id`` or starts with it (as git does)."""
        return resolve(self._snapshot, episode_id)

    def select(self, episodes: Selection = None) -> list[tuple[EpisodeLocation, str | None]]:
        """The selected episodes, each with the agent the selection names (or None), in order.

        ``episodes`` is None (every episode), an id or prefix, several, or a polars frame with an
        ``episode_id`` column (and optionally ``agent``), such as a filtered ``episode_agents()``.
        """
        return select(self._snapshot, episodes, self.reading)

    def agents(self, episode_id: str) -> list[str]:
        """An episode's agents in order of appearance (by first step, then as that step lists them)."""
        return agents(self.resolve(episode_id))

    def listing(self, environment: str | None = None) -> pl.DataFrame:
        """One row per episode, oldest ingest first: what ``ingest-pipeline ls`` prints."""
        frame = self.episodes()
        if environment is not None:
            frame = frame.filter(pl.col("environment") == environment)
        with self.reading():
            return frame.select(
                "episode_id", "environment", "algorithm", pl.col("length").alias("steps"), "agents",
                "agent_steps", "unit_steps", "total_reward", "ingested_at", "source",
            ).sort("ingested_at", "episode_id").collect()

    def describe(self, episode_id: str) -> dict[str, Any]:
        """An episode's metadata, per-agent summary and labels, as plain Python values."""
        location = self.resolve(episode_id)
        with self.reading():
            episode = self.episodes(episodes=location.episode_id).collect().row(0, named=True)
            agent_rows = self.episode_agents(episodes=location.episode_id).drop("environment", "episode_id").collect()
        mapping, unit_mapping = mappings(episode["action_mapping"])
        order = {agent: i for i, agent in enumerate(agents(location))}
        return {
            "episode": episode,
            "agents": sorted(agent_rows.to_dicts(), key=lambda row: order.get(row["agent"], len(order))),
            "actions": sorted_labels(mapping),
            "unit_actions": sorted_labels(unit_mapping),
            "reward_names": list(episode["reward_mapping"] or []),
        }

    def compact(self, *, environment: str | None = None) -> CompactReport:
        """Compact the lake (see :func:`pipeline.lake.compact.compact`); then refresh."""
        try:
            return compact(self.path, environment=environment)
        finally:
            self.refresh()

    def remove(self, episode_ids: Iterable[str]) -> list[EpisodeLocation]:
        """Remove episodes (ids or unique prefixes, all resolved first) atomically; then refresh."""
        locations = list(dict.fromkeys(self.resolve(episode_id) for episode_id in episode_ids))
        try:
            return remove_episodes(self.path, locations)
        finally:
            self.refresh()

    # -- labels -------------------------------------------------------------------------------

    def action_labels(self, *, units: bool = False) -> pl.LazyFrame:
        """(episode_id, action, action_label) from each episode's ``action_mapping`` (or ``unit_mapping``)."""
        return pl.defer(lambda: self._label_tables()[1 if units else 0], schema=ACTION_LABELS)

    def reward_labels(self) -> pl.LazyFrame:
        """(episode_id, component, reward_name) from each episode's ``reward_mapping``."""
        return pl.defer(lambda: self._label_tables()[2], schema=REWARD_LABELS)

    def label_actions(self, frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
        """``frame`` with an ``action_label`` column; a frame with a ``unit`` column uses ``unit_mapping``."""
        frame = frame.lazy()
        units = "unit" in frame.collect_schema()
        return frame.join(self.action_labels(units=units), on=["episode_id", "action"], how="left",
                          maintain_order="left")

    def label_rewards(self, frame: pl.LazyFrame | pl.DataFrame, column: str = "rewards") -> pl.LazyFrame:
        """One row per reward component of the list ``column``, with ``component`` and ``reward_name``.

        ``column`` is ``rewards`` (agent and unit steps) or ``reward_totals`` (episode agents); in the
        result it holds that component's value.
        """
        exploded = (frame.lazy().filter(pl.col(column).is_not_null())
                    .with_columns(pl.int_ranges(pl.col(column).list.len()).alias("component"))
                    .explode(column, "component"))
        return exploded.join(self.reward_labels(), on=["episode_id", "component"], how="left",
                             maintain_order="left")

    def _label_tables(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        if self._labels is None:
            with self.reading():
                rows = self.episodes().select("episode_id", "action_mapping", "reward_mapping").collect()
            self._labels = label_tables(rows)
        return self._labels

    # -- trajectories and exports -------------------------------------------------------------

    def trajectory(
        self,
        episode_id: str,
        agent: str | None = None,
        *,
        frames: bool | FrameOptions = False,
        downsample_frequency: int = 1,
        downsample_offset: int = 0,
        prepared: bool | None = None,
    ) -> Trajectory:
        """One agent's trajectory (default: the episode's first agent) as numpy arrays.

        ``frames=True`` (or a :class:`FrameOptions`) also gives the frames of the kept steps: from a
        prepared frame store (:meth:`prepare_frames`) when one holds the episode, with the same values,
        else decoded from the PNGs; ``prepared=True`` requires the store, ``False`` decodes.
        """
        location = self.resolve(episode_id)
        self.check_fresh([location])
        return load_trajectory(location, agent, frames=frames, downsample_frequency=downsample_frequency,
                               downsample_offset=downsample_offset, frame_reader=self._frame_reader(frames, prepared))

    def trajectories(
        self,
        episodes: Selection = None,
        agent: str | None = None,
        *,
        frames: bool | FrameOptions = False,
        downsample_frequency: int = 1,
        downsample_offset: int = 0,
        prepared: bool | None = None,
    ) -> Iterator[Trajectory]:
        """The trajectories of the selected episodes, one at a time.

        The agent is ``agent``, else the one a selection frame's ``agent`` column names, else each
        episode's first agent. Frames come from a prepared store as for :meth:`trajectory`; with
        ``prepared=True`` every selected episode must be prepared, checked before any is read.
        """
        selection = self.select(episodes)
        reader = self._frame_reader(frames, prepared)
        if reader is not None and prepared:
            reader.require_prepared([(loc, agent or a) for loc, a in selection])
        for location, selected in selection:
            self.check_fresh([location])
            yield load_trajectory(location, agent or selected, frames=frames, downsample_frequency=downsample_frequency,
                                  downsample_offset=downsample_offset, frame_reader=reader)

    def _frame_reader(self, frames: bool | FrameOptions, prepared: bool | None) -> StoredFrames | None:
        """The prepared store's reader for these frame options (None: no frames, or decoding asked for)."""
        options = FrameOptions() if frames is True else (frames or None)
        if options is None or prepared is False:
            return None
        from .prepared_episode import StoredFrames

        return StoredFrames(self.path, options, prepared)

    def to_numpy(self, episodes: Selection = None, agent: str | None = None, **options: Any) -> dict[str, Any]:
        """The selected trajectories concatenated into arrays (see :func:`pipeline.to_numpy`).

        ``options`` are :meth:`trajectories`'s, ``prepared`` included.
        """
        from ..export import arrays as export  # the facade reaches down to export only when asked

        return export.to_numpy(self.trajectories(episodes, agent, **options))

    def to_npz(self, path: str | os.PathLike[str], episodes: Selection = None, agent: str | None = None,
               **options: Any) -> Path:
        """Write the arrays of :meth:`to_numpy` to a compressed ``.npz`` file."""
        from ..export import arrays as export

        return export.to_npz(path, self.trajectories(episodes, agent, **options))

    def to_d3rlpy(
        self,
        episodes: Selection = None,
        agent: str | None = None,
        *,
        observation: Literal["vector", "frames"] = "vector",
        frames: bool | FrameOptions = False,
        downsample_frequency: int = 1,
        downsample_offset: int = 0,
        prepared: bool | None = None,
        **dataset_options: Any,
    ) -> Any:
        """A ``d3rlpy.dataset.MDPDataset`` of the selected trajectories (needs the ``rl`` extra).

        ``observation="frames"`` uses the frames (``frames`` says how to process them) as
        observations, channels first, read from a prepared frame store when one holds them
        (``prepared`` as for :meth:`trajectories`); extra keywords go to ``MDPDataset``.
        """
        if observation == "frames" and not frames:
            frames = True
        trajectories = self.trajectories(episodes, agent, frames=frames, downsample_frequency=downsample_frequency,
                                         downsample_offset=downsample_offset, prepared=prepared)
        from ..export import arrays as export

        return export.to_d3rlpy(trajectories, observation=observation, **dataset_options)

    def to_minari(self, dataset_id: str, episodes: Selection = None, agent: str | None = None,
                  **options: Any) -> Any:
        """Write the selected trajectories as a local Minari dataset (needs the ``minari`` extra).

        ``minari.load_dataset(dataset_id)`` opens it; see :func:`pipeline.export.minari.to_minari` for
        the options and for what the N+1st observation of each episode is.
        """
        from ..export import minari as minari_export

        return minari_export.to_minari(self, dataset_id, episodes=episodes, agent=agent, **options)

    def sampler(
        self,
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
        cache_bytes: int = 1 << 30,
        prepared: bool | None = None,
    ) -> Sampler:
        """Batches of transitions drawn uniformly at random from the selection, in bounded memory.

        See :class:`pipeline.engine.sampler.Sampler`: endless (or ``epochs`` passes), deterministic
        for a ``seed``, aligned as :meth:`trajectory` is, within ``cache_bytes`` of cached arrays.
        Frames come from a prepared frame store (:meth:`prepare_frames`) when one holds the whole
        selection, with the same values; ``prepared=True`` requires one, ``False`` decodes the PNGs.
        """
        from .sampler import Sampler

        return Sampler(self, episodes, agent, batch_size=batch_size, observation=observation, frames=frames,
                       downsample_frequency=downsample_frequency, downsample_offset=downsample_offset,
                       seed=seed, epochs=epochs, cache_bytes=cache_bytes, prepared=prepared)

    def prepare_frames(
        self,
        options: FrameOptions,
        episodes: Selection = None,
        agent: str | None = None,
        *,
        codec: Literal["zstd", "raw"] = "zstd",
        workers: int | None = None,
        progress: Callable[[PrepareReport, int], None] | None = None,
    ) -> PrepareReport:
        """Decode and process the selection's frames once into the lake's frame store for ``options``.

        Only entries not prepared yet are written (``workers`` processes; default: the usable cores);
        a sampler with the same element options then reads them instead of decoding PNGs. See
        :mod:`pipeline.engine.prepared`; ``gc`` removes entries of episodes no longer in the lake.
        """
        from .preparing import prepare_frames

        return prepare_frames(self, options, episodes, agent, codec=codec, workers=workers, progress=progress)

    def frame_stores(self) -> list[StoreSummary]:
        """The lake's prepared frame stores: options, entries, bytes, and how many of this snapshot's
        episodes each holds (``ingest-pipeline frames ls``)."""
        return list_stores(self.path, {location.episode_id for location in self.locations})

    def remove_frames(self, key: str, episode_ids: Iterable[str] | None = None) -> list[Path]:
        """Delete the prepared frame store ``key``, or only its entries of ``episode_ids`` (ids or prefixes).

        Stores are derived from the lake: :meth:`prepare_frames` makes them again. See
        :func:`pipeline.lake.maintenance.remove_frames`.
        """
        return remove_frames(self.path, key, None if episode_ids is None else list(episode_ids))

    def store_options(self, key: str) -> FrameOptions:
        """The frame options the store ``key`` was prepared with (to prepare it again)."""
        from .prepared_episode import store_options

        return store_options(self.path, key)

    # -- reports ------------------------------------------------------------------------------

    def report(self, output: str | os.PathLike[str], episodes: Selection = None, **options: Any) -> Path:
        """Write a self-contained HTML report (needs the ``report`` extra); see :func:`pipeline.report.write_report`.

        Episode ids give an episode report (several: compared side by side); nothing, a selection frame,
        ``environment=``, ``where=`` or ``sql=`` give an overview of those episodes.
        """
        from ..report import write_report

        return write_report(self, output, episodes, **options)


__all__ = ["PARTITIONS", "Lake", "Selection"]
