"""Lake: a snapshot of the committed episodes, read as polars LazyFrames, SQL, labels and trajectories.

A :class:`Lake` lists the committed episode folders once, when it opens (or on :meth:`Lake.refresh`),
and builds every table over exactly the files of those folders. Every table it returns therefore
describes the same episodes, whatever ingests commit or fail alongside. ``environment`` and
``episode_id`` come from the folder names; a filter on either is pushed down to the file list,
so other episodes' files are not opened (``lake.agent_steps().filter(...).explain()`` shows it).

Longer than our ~400-line guide: ``Lake`` is the user's one object, and most of its methods are a few
lines handing work to trajectory, sampler, export and report; what remains is the snapshot, selection,
id resolution and the translation of read errors, which depend on each other.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
import polars as pl
import pyarrow as pa

from ..errors import (
    AmbiguousEpisodeId,
    DamagedFile,
    DatasetError,
    EpisodeNotFound,
    LakeError,
    PipelineError,
    StaleSnapshot,
)
from ..lake.compact import CompactReport, compact
from ..lake.damage import find_damaged
from ..lake.framestore import StoreSummary, list_stores
from ..lake.layout import (
    ID_LENGTH,
    Entry,
    EpisodeLocation,
    list_lake,
    locations_of,
    read_generation,
    resolve_lake,
)
from ..lake.maintenance import remove_episodes, remove_frames
from ..lake.tables import SCHEMAS, TABLES
from .trajectory import FrameOptions, Trajectory, agents, load_trajectory

if TYPE_CHECKING:
    from .prepared import PrepareReport
    from .prepared_episode import StoredFrames
    from .sampler import Sampler

PARTITIONS = {"environment": pl.String, "episode_id": pl.String}
_SEGMENT_PARTITIONS = {"environment": pl.String, "segment": pl.String}
# What selects episodes: ids or unique prefixes, or a frame with an episode_id (and maybe agent) column.
Selection = str | Iterable[str] | pl.DataFrame | pl.LazyFrame | None

# How much of the snapshot's files a failed polars read verifies, page by page, to name the damaged one.
_PAGE_SEARCH_BYTES = 1 << 30
# Up to this many ids are resolved one by one from row-group statistics; more read every segment's ids.
_LAZY_RESOLVES = 8
_ACTION_LABELS = {"episode_id": pl.String, "action": pl.Float64, "action_label": pl.String}
_REWARD_LABELS = {"episode_id": pl.String, "component": pl.Int64, "reward_name": pl.String}


def _sorted_labels(mapping: dict[str, str]) -> dict[int, str]:
    return {int(key): label for key, label in sorted(mapping.items(), key=lambda item: int(item[0]))}


@cache
def _table_schema(table: str) -> pl.Schema:
    """The table's Arrow schema in polars types.

    From an empty table made of no batches: ``Schema.empty_table()`` imports pandas, which was 0.22 s
    of a fresh process's first query (measured).
    """
    empty = pa.Table.from_batches([], schema=SCHEMAS[table])
    return pl.Schema(pl.from_arrow(empty).schema)  # type: ignore[union-attr]


class Lake:
    """The committed episodes of a lake at one moment, with polars LazyFrames over their tables.

    >>> lake = Lake("lake")                                        # doctest: +SKIP
    >>> lake.episode_agents().filter(pl.col("total_reward") >= 100).collect()   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: Path = resolve_lake(path)
        self._entries: list[Entry] = []
        self._locations: tuple[EpisodeLocation, ...] | None = None
        self._generations: dict[str, str] = {}
        self._labels: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None = None
        self.refresh()

    def refresh(self) -> Lake:
        """Take a new snapshot: episodes committed or removed since become visible."""
        if self.path.exists() and not self.path.is_dir():
            raise LakeError(f"{self.path} is a file, not a lake folder; give --lake the lake's folder")
        try:
            listing = list_lake(self.path)
        except OSError as exc:
            raise LakeError(f"cannot read the lake {self.path}: {exc.strerror or exc}") from exc
        # Entries (folders and segments), not one object per episode: a snapshot of 100,000
        # episodes in a few segments is taken in milliseconds; locations are made when asked for.
        self._entries = listing.entries
        self._generations = listing.generations
        self._locations = None
        self._labels = None
        return self

    @property
    def locations(self) -> tuple[EpisodeLocation, ...]:
        """Where the snapshot's episodes live (folders or segments), sorted by environment then id."""
        if self._locations is None:
            with self._ids_read():
                self._locations = tuple(locations_of(self._entries))
        return self._locations

    def __len__(self) -> int:
        with self._ids_read():
            return sum(entry.count() for entry in self._entries)

    @contextlib.contextmanager
    def _ids_read(self) -> Iterator[None]:
        """Around a read of segments' ids (made lazily, after the listing): a segment gone means
        a compaction or removal swapped its environment folder since the snapshot was taken."""
        try:
            yield
        except FileNotFoundError as exc:
            folder = Path(exc.filename or "").parent.parent.name or "an environment"
            raise StaleSnapshot(f"the snapshot of {self.path} is stale: {folder} was compacted or had episodes "
                                "removed since it was taken; call lake.refresh() and query again") from exc

    def __repr__(self) -> str:
        return f"Lake({str(self.path)!r}, {len(self)} episodes)"

    # -- tables -------------------------------------------------------------------------------

    def scan(self, table: str, *, episodes: Selection = None) -> pl.LazyFrame:
        """One table of the snapshot (or of the selected episodes only) as a LazyFrame.

        ``environment`` and ``episode_id`` come first; the other columns are the table's schema.
        """
        if table not in TABLES:
            raise DatasetError(f"unknown table {table!r}; the tables are {', '.join(TABLES)}")
        schema = _table_schema(table)
        name = f"{table}.parquet"
        files: list[str] = []
        segments: dict[str, list[str]] = {}
        if episodes is None:
            self.check_fresh()
            for entry in self._entries:
                if entry.segment:  # every row of it: its ids are not needed
                    segments[os.path.join(entry.path, name)] = []
                else:
                    files.append(os.path.join(entry.path, name))
        else:
            locations = [loc for loc, _ in self.select(episodes)]
            self.check_fresh(locations)
            files = list(dict.fromkeys(str(loc.table(table)) for loc in locations if not loc.segment))
            for location in locations:
                if location.segment:
                    segments.setdefault(str(location.table(table)), []).append(location.episode_id)
        if not files and not segments:
            return pl.LazyFrame(schema={**PARTITIONS, **schema})
        frames = []
        if files:
            frame = pl.scan_parquet(files, schema=schema, hive_partitioning=True, hive_schema=PARTITIONS,
                                    missing_columns="insert", extra_columns="ignore")
            frames.append(frame.select(*PARTITIONS, *schema))
        if segments:
            # A segment holds its episodes' rows with an episode_id column; its files never change,
            # so the snapshot's episodes of a segment are all its rows unless a selection picks some.
            frame = pl.scan_parquet(list(segments), schema={"episode_id": pl.String, **schema},
                                    hive_partitioning=True, hive_schema=_SEGMENT_PARTITIONS,
                                    missing_columns="insert", extra_columns="ignore")
            if episodes is not None:
                frame = frame.filter(pl.col("episode_id").is_in([i for ids in segments.values() for i in ids]))
            frames.append(frame.select(*PARTITIONS, *schema))
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")

    def check_fresh(self, locations: Iterable[EpisodeLocation] | None = None) -> None:
        """Raise :class:`~pipeline.errors.StaleSnapshot` if a compaction or removal has since
        rebuilt an environment folder the snapshot (or ``locations``) reads."""
        folders = ({entry.path.parent.name: entry.path.parent for entry in self._entries} if locations is None
                   else {loc.path.parent.name: loc.path.parent for loc in locations})
        for name, folder in folders.items():
            if read_generation(folder) != self._generations.get(name, ""):
                raise StaleSnapshot(f"the snapshot of {self.path} is stale: {name} was compacted or had "
                                    "episodes removed since it was taken; call lake.refresh() and query again")

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

        polars names no file in its errors (and verifies no page checksums), so on a polars error
        the footers of the snapshot's files are read (~0.1 ms each) to find the damaged one; when
        every footer reads, the pages of up to 1 GB of files are verified, and past that the error
        names no file but says to run ``ingest-pipeline check --deep``.

        >>> with lake.reading():                                    # doctest: +SKIP
        ...     frame = lake.agent_steps().filter(pl.col("reward") > 1).collect()
        """
        try:
            yield
        except PipelineError:
            raise
        except (pl.exceptions.ComputeError, OSError, pl.exceptions.PanicException) as exc:
            error = self._read_error(exc)
            if error is exc:
                raise
            raise error from exc

    def _read_error(self, exc: BaseException) -> BaseException:
        """The error behind a failed polars read of the snapshot: DamagedFile when a file is damaged."""
        locations = self.locations
        gone = [location for location in locations if not location.path.exists()]
        if gone:
            return StaleSnapshot(f"episode {gone[0].episode_id} was removed or compacted after this snapshot of "
                                 f"{self.path} was taken; take a new one (Lake.refresh())",
                                 episode_id=gone[0].episode_id)
        # A segment's files hold many episodes: each file is searched once.
        files = dict.fromkeys(location.table(table) for location in locations for table in TABLES)
        damaged = find_damaged(files, page_budget=_PAGE_SEARCH_BYTES)
        if damaged:
            return damaged[0]
        text = " ".join(str(exc).split("\n\n", 1)[0].split())
        if any(word in text.lower() for word in ("parquet", "decompress", "thrift", "page", "out of spec")):
            return DamagedFile(None, f"polars: {text}")
        if isinstance(exc, pl.exceptions.PanicException):  # a BaseException: never let it through as such
            return DatasetError(f"polars failed reading {self.path}: {text}")
        return exc

    # -- episode ids --------------------------------------------------------------------------

    def resolve(self, episode_id: str) -> EpisodeLocation:
        """The snapshot's episode whose id is ``episode_id`` or starts with it (as git does)."""
        prefix = episode_id.strip().lower()
        if not prefix:
            raise EpisodeNotFound("an episode id cannot be empty")
        with self._ids_read():
            if len(prefix) >= ID_LENGTH:
                # A whole id: episode folders by name, then each segment by its row-group statistics
                # and one row group's ids, without reading any segment's ids whole.
                for entry in sorted(self._entries, key=lambda entry: entry.segment):
                    if entry.holds(prefix):
                        return EpisodeLocation(entry.environment, prefix, entry.path, entry.segment)
            return self._resolve_prefix(episode_id, prefix)

    def _resolve_prefix(self, episode_id: str, prefix: str) -> EpisodeLocation:
        matches = []
        for entry in self._entries:  # a segment's ids are sorted: bisect them
            at = bisect.bisect_left(entry.ids, prefix)
            while at < len(entry.ids) and entry.ids[at].startswith(prefix):
                if entry.ids[at] == prefix:
                    return EpisodeLocation(entry.environment, prefix, entry.path, entry.segment)
                matches.append(EpisodeLocation(entry.environment, entry.ids[at], entry.path, entry.segment))
                at += 1
        if not matches:
            raise EpisodeNotFound(f"no episode {episode_id!r} in {self.path}")
        if len(matches) > 1:
            shown = ", ".join(loc.episode_id for loc in matches[:5]) + (", …" if len(matches) > 5 else "")
            raise AmbiguousEpisodeId(
                f"episode id prefix {episode_id!r} is ambiguous: it matches {len(matches)} episodes ({shown})")
        return matches[0]

    def select(self, episodes: Selection = None) -> list[tuple[EpisodeLocation, str | None]]:
        """The selected episodes, each with the agent the selection names (or None), in order.

        ``episodes`` is None (every episode), an id or prefix, several, or a polars frame with an
        ``episode_id`` column (and optionally ``agent``), such as a filtered ``episode_agents()``.
        """
        if episodes is None:
            return [(location, None) for location in self.locations]
        if isinstance(episodes, str):
            return [(self.resolve(episodes), None)]
        if isinstance(episodes, pl.LazyFrame | pl.DataFrame):
            frame = episodes.lazy()
            columns = [c for c in ("episode_id", "agent") if c in frame.collect_schema()]
            if "episode_id" not in columns:
                raise DatasetError("an episode selection frame needs an episode_id column")
            with self.reading():
                rows = frame.select(columns).unique(maintain_order=True).collect().rows()
            self._read_ids(len(rows))
            return [(self.resolve(row[0]), row[1] if len(row) > 1 else None) for row in rows]
        chosen = list(episodes)
        self._read_ids(len(chosen))
        return [(self.resolve(episode_id), None) for episode_id in chosen]

    def _read_ids(self, selected: int) -> None:
        """Read every segment's ids (once) before resolving more than a few ids: then each is a bisection."""
        if selected > _LAZY_RESOLVES:
            with self._ids_read():
                for entry in self._entries:
                    entry.ids  # noqa: B018 -- read and kept by the entry

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
        mapping: dict[str, Any] = orjson.loads(episode["action_mapping"]) if episode["action_mapping"] else {}
        unit_mapping = mapping.pop("unit_mapping", None) or {}
        order = {agent: i for i, agent in enumerate(agents(location))}
        return {
            "episode": episode,
            "agents": sorted(agent_rows.to_dicts(), key=lambda row: order.get(row["agent"], len(order))),
            "actions": _sorted_labels(mapping),
            "unit_actions": _sorted_labels(unit_mapping),
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
        return pl.defer(lambda: self._label_tables()[1 if units else 0], schema=_ACTION_LABELS)

    def reward_labels(self) -> pl.LazyFrame:
        """(episode_id, component, reward_name) from each episode's ``reward_mapping``."""
        return pl.defer(lambda: self._label_tables()[2], schema=_REWARD_LABELS)

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
            actions: list[tuple[str, float, str]] = []
            unit_actions: list[tuple[str, float, str]] = []
            rewards: list[tuple[str, int, str]] = []
            for episode_id, mapping_text, reward_mapping in rows.iter_rows():
                mapping: dict[str, Any] = orjson.loads(mapping_text) if mapping_text else {}
                unit_mapping = mapping.pop("unit_mapping", None) or {}
                actions.extend((episode_id, float(key), label) for key, label in mapping.items())
                unit_actions.extend((episode_id, float(key), label) for key, label in unit_mapping.items())
                rewards.extend((episode_id, i, name) for i, name in enumerate(reward_mapping or ()))
            self._labels = (
                pl.DataFrame(actions, schema=_ACTION_LABELS, orient="row"),
                pl.DataFrame(unit_actions, schema=_ACTION_LABELS, orient="row"),
                pl.DataFrame(rewards, schema=_REWARD_LABELS, orient="row"),
            )
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
            from .prepared_episode import missing_entries

            lacking = missing_entries(self.path, reader.options, [(loc, agent or a) for loc, a in selection])
            if lacking:
                episode_id, name = lacking[0]
                raise DatasetError(reader.not_prepared(f"no prepared frames for {len(lacking)} of the "
                                                       f"{len(selection)} selected episodes (first: {episode_id}, "
                                                       f"agent {name!r})"), episode_id=episode_id, agent=name)
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
        from .prepared import prepare_frames

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
