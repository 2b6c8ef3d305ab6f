"""ingest-pipeline: stream RL episode files into a Parquet lake that polars reads.

>>> from pipeline import ingest
>>> result = ingest("episode.json", lake="lake")        # doctest: +SKIP
>>> result.status, result.episode_id                     # doctest: +SKIP
('ingested', '3f2a...')
>>> from pipeline import Lake
>>> Lake("lake").episodes().collect()                     # doctest: +SKIP

Packages, one per part of the flow (the dependency rule is in the README's code map and enforced
by ``tests/test_layers.py``): ``ingestion`` (a file -> checked rows -> a staged episode), ``lake`` (the
lake on disk and every change to it), ``engine`` (reading: ``Lake``, trajectories), ``export``
(arrays, d3rlpy) and ``report``.

Every public name is imported on first use: reading a lake never loads the ingest stack (ijson,
fsspec, the schema validator), and an ingest never loads polars, whose thread pool makes forking
the two-process ingest unsafe and which costs ~100 MB of memory.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AmbiguousEpisodeId,
    DamagedFile,
    DatasetError,
    EpisodeNotFound,
    ExportError,
    InvalidEpisode,
    LakeError,
    MissingExtra,
    PipelineError,
    SourceError,
    StaleSnapshot,
)
from .version import __version__

if TYPE_CHECKING:
    from .engine.lake import Lake
    from .engine.sampler import Sampler
    from .engine.trajectory import FrameOptions, Trajectory
    from .export.arrays import dump_d3rlpy, to_npz, to_numpy
    from .ingestion.batch import Batch, BatchSummary, ingest_many
    from .ingestion.inputs import expand_sources
    from .ingestion.minari import import_minari
    from .ingestion.nopandas import keep_pandas_out
    from .ingestion.run import IngestResult, ingest, validate
    from .lake.check import CheckReport, check
    from .lake.compact import CompactReport, compact
    from .lake.layout import ENV_VAR as LAKE_ENV_VAR
    from .lake.layout import resolve_lake
    from .lake.maintenance import GcReport, gc

_LAZY = {
    "Lake": "engine.lake",
    "FrameOptions": "engine.trajectory",
    "Trajectory": "engine.trajectory",
    "Sampler": "engine.sampler",
    "IngestResult": "ingestion.run",
    "ingest": "ingestion.run",
    "validate": "ingestion.run",
    "Batch": "ingestion.batch",
    "BatchSummary": "ingestion.batch",
    "expand_sources": "ingestion.inputs",
    "ingest_many": "ingestion.batch",
    "resolve_lake": "lake.layout",
    "LAKE_ENV_VAR": "lake.layout:ENV_VAR",
    "gc": "lake.maintenance",
    "GcReport": "lake.maintenance",
    "check": "lake.check",
    "compact": "lake.compact",
    "CompactReport": "lake.compact",
    "CheckReport": "lake.check",
    "keep_pandas_out": "ingestion.nopandas",
    "to_numpy": "export.arrays",
    "import_minari": "ingestion.minari",
    "to_npz": "export.arrays",
    "dump_d3rlpy": "export.arrays",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, _, attribute = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attribute or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "LAKE_ENV_VAR",
    "AmbiguousEpisodeId",
    "Batch",
    "BatchSummary",
    "CheckReport",
    "CompactReport",
    "DamagedFile",
    "DatasetError",
    "EpisodeNotFound",
    "ExportError",
    "FrameOptions",
    "GcReport",
    "IngestResult",
    "InvalidEpisode",
    "Lake",
    "LakeError",
    "MissingExtra",
    "PipelineError",
    "Sampler",
    "SourceError",
    "StaleSnapshot",
    "Trajectory",
    "__version__",
    "check",
    "compact",
    "dump_d3rlpy",
    "expand_sources",
    "gc",
    "import_minari",
    "ingest",
    "ingest_many",
    "keep_pandas_out",
    "resolve_lake",
    "to_npz",
    "to_numpy",
    "validate",
]
