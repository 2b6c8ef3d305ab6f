"""Reports: what a person looks at. One self-contained HTML file per call, no network needed to open it.

>>> from pipeline import Lake                                        # doctest: +SKIP
>>> Lake("lake").report("report.html", "257a0fe1")                   # doctest: +SKIP
>>> Lake("lake").report("lake.html", environment="LunarLander-v3")   # doctest: +SKIP

Needs the ``report`` extra (plotly, for the plotly.js it bundles): ``pip install 'ingest-pipeline[report]'``.
"""

from .build import write_report
from .frames import DEFAULT_FRAMES
from .reduce import DEFAULT_MAX_POINTS

__all__ = ["DEFAULT_FRAMES", "DEFAULT_MAX_POINTS", "write_report"]
