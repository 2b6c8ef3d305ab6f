"""ingest-pipeline: stream RL episode files into a Parquet lake that polars reads.

>>> from pipeline import ingest
>>> result = ingest("episode.json", lake="lake")        # doctest: +SKIP
>>> result.status, result.episode_id                     # doctest: +SKIP
('ingested', '3f2a...')
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    AmbiguousEpisodeId,
    EpisodeNotFound,
    InvalidEpisode,
    LakeError,
    PipelineError,
    SourceError,
)
from .ingest import IngestResult, ingest, validate  # noqa: E402

__all__ = [
    "AmbiguousEpisodeId",
    "EpisodeNotFound",
    "IngestResult",
    "InvalidEpisode",
    "LakeError",
    "PipelineError",
    "SourceError",
    "__version__",
    "ingest",
    "validate",
]
