"""ingest-pipeline: stream RL episode files into a Parquet lake that polars reads.

>>> from pipeline import ingest
>>> result = ingest("episode.json", lake="lake")        # doctest: +SKIP
>>> result.status, result.episode_id                     # doctest: +SKIP
('ingested', '3f2a...')
>>> from pipeline import Lake
>>> Lake("lake").episodes().collect()                     # doctest: +SKIP
"""

__version__ = "0.1.0"

from .batch import ingest_many
from .errors import (  # noqa: E402
    AmbiguousEpisodeId,
    DatasetError,
    EpisodeNotFound,
    InvalidEpisode,
    LakeError,
    MissingExtra,
    PipelineError,
    SourceError,
)
from .ingest import IngestResult, ingest, validate  # noqa: E402
from .query import Lake
from .trajectory import FrameOptions, Trajectory

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
