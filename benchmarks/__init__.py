"""The benchmark suite: a streaming episode generator, per-run measurements and the runner.

``python -m benchmarks.generate`` writes large valid episode files, ``python -m benchmarks.measure``
runs one measurement in its own process, and ``python -m benchmarks.run`` (``make bench``,
``make bench-quick``) runs them all and writes ``BENCHMARKS.md``.
"""
