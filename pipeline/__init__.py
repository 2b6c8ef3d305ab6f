"""ingest-pipeline: stream RL episode files into a Parquet lake that polars reads.

>>> from pipeline import ingest
>>> result = ingest("episode.json", lake="lake")        # doctest: +SKIP
>>> result.status, result.episode_id                     # doctest: +SKIP
('ingested', '3f2a...')
>>> from pipeline import Lake
>>> Lake("lake").episodes().collect()                     # doctest: +SKIP
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .batch import ingest_many
from .errors import (
    AmbiguousEpisodeId,
    DatasetError,
    EpisodeNotFound,
    InvalidEpisode,
    LakeError,
    MissingExtra,
    PipelineError,
    SourceError,
)
from .ingest import IngestResult, ingest, validate

if TYPE_CHECKING:
    from .query import Lake
    from .trajectory import FrameOptions, Trajectory

# The dataset engine needs polars, which an ingest does not: loading it costs ~100 MB of memory,
# and its thread pool makes forking (for the two-process ingest) unsafe. Import it on first use.
_LAZY = {"Lake": "query", "FrameOptions": "trajectory", "Trajectory": "trajectory"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AmbiguousEpisodeId",
    "DatasetError",
    "EpisodeNotFound",
    "FrameOptions",
    "IngestResult",
    "InvalidEpisode",
    "Lake",
    "LakeError",
    "MissingExtra",
    "PipelineError",
    "SourceError",
    "Trajectory",
    "__version__",
    "ingest",
    "ingest_many",
    "validate",
]
